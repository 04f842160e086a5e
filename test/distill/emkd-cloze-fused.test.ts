/**
 * The cloze step's output layer and losses (src/distill/emkd/cloze.ts: itemLogits, itemsCE, mutualKLSum, whose
 * gradients are written out) against the form they replaced, taped by autodiff: logits at EVERY position
 * (h E^T over all B x L states), the selected slots gathered afterwards, itemCrossEntropy per network and the pairwise
 * mutualKL with stop-gradient sides. Same values and same gradients (states and item tables), K = 3, on a small case
 * with repeated and masked-out rows.
 */
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { itemCrossEntropy } from '../../src/distill/losses.js';
import { itemLogits, itemsCE, mutualKL, mutualKLSum, stopGradient } from '../../src/distill/emkd/losses.js';
import { genFor } from '../backend/fd.js';

beforeAll(async () => {
  await initBackend('wasm');
});

/** The pairwise mutual KL as autodiff saw it before (two log-softmaxes per pair, stop-gradient copies). */
function oldMutualKL(a: tf.Tensor2D, b: tf.Tensor2D, T: number): tf.Scalar {
  const klRows = (q: tf.Tensor2D, logp: tf.Tensor2D) => tf.mean(tf.sum(tf.mul(q, tf.sub(tf.log(tf.maximum(q, 1e-12)), logp)), -1));
  const la = tf.logSoftmax(tf.div(a, T)) as tf.Tensor2D;
  const lb = tf.logSoftmax(tf.div(b, T)) as tf.Tensor2D;
  const pa = stopGradient(tf.exp(la)) as tf.Tensor2D;
  const pb = stopGradient(tf.exp(lb)) as tf.Tensor2D;
  return tf.mul(tf.add(klRows(pb, la), klRows(pa, lb)), 0.5) as tf.Scalar;
}

const K = 3;
const B = 3;
const L = 4;
const D = 5;
const N = 9; // items 1..9, table rows 0..9
const T = 0.3;
const slots = Int32Array.from([1, 2, 5, 7, 8, 11]); // selected slots of [B L]
const originals = Int32Array.from([4, 9, 1, 4, 7, 2]);

type Terms = (hs: tf.Tensor2D[], Es: tf.Tensor2D[]) => { cloze: tf.Scalar; kl: tf.Scalar };

/** Before: [B L, N + 1] logits at every position, then the selected rows; CE and KL on their own slices. */
const before: Terms = (hs, Es) => {
  const idx = tf.tensor1d(slots, 'int32');
  const logits = hs.map((h, n) => tf.gather(tf.matMul(h, tf.transpose(Es[n]!)), idx) as tf.Tensor2D); // [S, N + 1]
  let cloze: tf.Scalar = tf.scalar(0);
  for (let n = 0; n < K; n++) cloze = tf.add(cloze, itemCrossEntropy(logits[n]!, tf.tensor1d(originals, 'int32')));
  const items = logits.map((l) => tf.slice(l, [0, 1], [-1, -1]) as tf.Tensor2D);
  let kl: tf.Scalar = tf.scalar(0);
  for (let a = 0; a < K; a++) for (let b = a + 1; b < K; b++) kl = tf.add(kl, oldMutualKL(items[a]!, items[b]!, T));
  return { cloze, kl };
};

/** Now: the selected states gathered first, [S, N] logits over the items, the written-out gradients. */
const after: Terms = (hs, Es) => {
  const idx = tf.tensor1d(slots, 'int32');
  const items = hs.map((h, n) => itemLogits(tf.gather(h, idx) as tf.Tensor2D, Es[n]!));
  let cloze: tf.Scalar = tf.scalar(0);
  for (let n = 0; n < K; n++) cloze = tf.add(cloze, itemsCE(items[n]!, originals));
  return { cloze, kl: mutualKLSum(items, T) };
};

function run(terms: Terms, wCloze: number, wKl: number) {
  const g = genFor(`emkd-cloze-fused`);
  const xs = [...Array.from({ length: K }, () => g.uniform([B * L, D], -1.5, 1.5)), ...Array.from({ length: K }, () => g.uniform([N + 1, D], -1.5, 1.5))];
  return tf.tidy(() => {
    const parts: number[] = [];
    const r = tf.valueAndGrads((...a: tf.Tensor[]) => {
      const { cloze, kl } = terms(a.slice(0, K) as tf.Tensor2D[], a.slice(K) as tf.Tensor2D[]);
      parts.push(cloze.dataSync()[0]!, kl.dataSync()[0]!);
      return tf.add(tf.mul(cloze, wCloze), tf.mul(kl, wKl)) as tf.Scalar;
    })(xs);
    return { parts, grads: r.grads.map((t) => Array.from(t.dataSync())) };
  });
}

describe('cloze output layer and losses: gathered, written-out gradients = full-position autodiff', () => {
  it.each([
    ['cloze + kl (the run\'s weights 1, 0.001 scaled up)', 1, 0.5],
    ['kl alone', 0, 1],
    ['cloze alone', 1, 0],
  ] as const)('%s: values and d/dstates, d/dtables', (_, wc, wk) => {
    const old = run(before, wc, wk);
    const now = run(after, wc, wk);
    expect(now.parts[0]).toBeCloseTo(old.parts[0]!, 5);
    expect(now.parts[1]).toBeCloseTo(old.parts[1]!, 6);
    expect(old.parts[1]).toBeGreaterThan(0.01); // the networks disagree: not a vacuous KL
    now.grads.forEach((g, i) => {
      const o = old.grads[i]!;
      const scale = Math.max(1e-3, ...o.map(Math.abs));
      const worst = Math.max(...g.map((v, j) => Math.abs(v - o[j]!)));
      expect(worst / scale, `input ${i}`).toBeLessThan(1e-4);
      expect(scale).toBeGreaterThan(1e-4);
    });
    // The padding row of each item table gets no gradient from the output layer (column 0 is no class); the
    // states' unselected rows get none either.
    for (let n = 0; n < K; n++) {
      expect(now.grads[K + n]!.slice(0, D).every((v) => v === 0)).toBe(true);
      expect(now.grads[n]!.slice(0, D).every((v) => v === 0)).toBe(true); // slot 0 is not selected
    }
  });

  it('mutualKLSum of two networks is mutualKL; no rows or one network: 0 with a gradient path', () => {
    const g = genFor('emkd-kl-sum');
    const a = g.uniform([3, 6], -2, 2) as tf.Tensor2D;
    const b = g.uniform([3, 6], -2, 2) as tf.Tensor2D;
    const c = g.uniform([3, 6], -2, 2) as tf.Tensor2D;
    const pair = (x: tf.Tensor2D, y: tf.Tensor2D) => oldMutualKL(x, y, 0.7).dataSync()[0]!;
    expect(mutualKL(a, b, 0.7).dataSync()[0]).toBeCloseTo(pair(a, b), 6);
    expect(mutualKLSum([a, b, c], 0.7).dataSync()[0]).toBeCloseTo(pair(a, b) + pair(a, c) + pair(b, c), 6);
    expect(mutualKLSum([a], 0.7).dataSync()[0]).toBe(0);
    const empty = tf.zeros([0, 6]) as tf.Tensor2D;
    expect(mutualKLSum([empty, empty], 0.7).dataSync()[0]).toBe(0);
    expect(itemsCE(empty, new Int32Array(0)).dataSync()[0]).toBe(0);
  });
});
