/**
 * Plain-JS float64 references of EMKD's loss terms (test/distill/emkd-*.test.ts): loops over arrays, no tfjs,
 * sharing no code with src/distill/emkd/losses.ts.
 */
import type * as tf from '@tensorflow/tfjs-core';

export type M = number[][];

/** A 2-D tensor as rows (a 1-D tensor is one row; a 3-D [B, L, D] one is [B * L] rows). */
export function asRows(t: tf.Tensor): M {
  const c = t.shape[t.rank - 1]!;
  const d = t.dataSync();
  return Array.from({ length: d.length / c }, (_, i) => Array.from({ length: c }, (_, j) => d[i * c + j]!));
}

export const lse = (x: number[]) => {
  const m = Math.max(...x);
  return m + Math.log(x.reduce((s, v) => s + Math.exp(v - m), 0));
};
export const logSoftmax = (x: number[]) => {
  const l = lse(x);
  return x.map((v) => v - l);
};
export const softmaxT = (x: number[], T: number) => logSoftmax(x.map((v) => v / T)).map(Math.exp);
export const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * b[i]!, 0);
export const norm = (a: number[]) => Math.sqrt(dot(a, a));
export const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
export const kl = (q: number[], logp: number[]) => q.reduce((s, qi, i) => s + qi * (Math.log(Math.max(qi, 1e-12)) - logp[i]!), 0);

/** Logits of state h over items 1..N of the item table E (row 0 = padding, not a class). */
export const itemLogits = (h: number[], E: M) => E.slice(1).map((e) => dot(h, e));

/** L1: mean over rows of the CE of item orig[i] (1..N) from state h[i]. */
export const jsMaskedCE = (h: M, E: M, orig: number[]) => mean(h.map((r, i) => {
  const z = itemLogits(r, E);
  return lse(z) - z[orig[i]! - 1]!;
}));
/** L2: mean over rows of -sum_a t_a log softmax(l)_a. */
export const jsAttrCE = (l: M, t: M) => mean(l.map((r, i) => -dot(t[i]!, logSoftmax(r))));
/** L3 / L4: InfoNCE, cosine / T, positive of anchor b = positive row b, the other rows negatives. */
export const jsInfoNCE = (a: M, p: M, T: number) => mean(a.map((ab, b) => {
  const c = p.map((pj) => dot(ab, pj) / Math.max(norm(ab) * norm(pj), 1e-8) / T);
  return lse(c) - c[b]!;
}));
/** L5: 0.5 (KL(fb || softmax(a / T)) + KL(fa || softmax(b / T))), mean over rows; fa / fb fixed distributions. */
export const jsMutualKL = (a: M, b: M, T: number, fa: M = a.map((r) => softmaxT(r, T)), fb: M = b.map((r) => softmaxT(r, T))) =>
  mean(a.map((ar, i) => 0.5 * (kl(fb[i]!, logSoftmax(ar.map((v) => v / T))) + kl(fa[i]!, logSoftmax(b[i]!.map((v) => v / T))))));
/** L5's teacher member: KL(teacher top-K probabilities brought from T0 to T || softmax(s / T)), mean over rows. */
export const jsTeacherKL = (s: M, p: M, T: number, T0: number) => mean(s.map((sr, i) => {
  const q = softmaxT(p[i]!.map((v) => Math.log(v) * T0), T);
  return kl(q, logSoftmax(sr.map((v) => v / T)));
}));
