import * as tf from '@tensorflow/tfjs-core';

/**
 * Loss balancing of the distillation terms against the task loss (CE), from each term's gradient on the
 * parameters every term touches (item embeddings + encoder). The trainer measures gradients every `every`
 * steps; between measurements the last weights hold.
 *
 * - gradcos (Du et al., 2018, "Adapting auxiliary losses using gradient similarity"): a term whose gradient
 *   points against CE's (cosine < 0) is switched off; a soft ramp over cosine in [-margin, 0] and an EMA of
 *   the cosine keep one noisy batch from flipping it.
 * - pcgrad (Yu et al., NeurIPS 2020, "Gradient surgery"): a conflicting term's gradient g_k is replaced by its
 *   projection on the normal plane of g_ce: g_k - (g_k.g_ce / |g_ce|^2) g_ce. The trainer only takes weights,
 *   so the projection is folded into CE's weight: sum_k λ_k proj(g_k) + g_ce = sum_k λ_k g_k + w_ce g_ce with
 *   w_ce = 1 - sum_{k conflicting} λ_k (g_k.g_ce) / |g_ce|^2 (>= 1). Exact at the measured step. CE is the
 *   primary task, so it is never projected onto the distillation terms.
 */
export type BalanceMode = 'none' | 'gradcos' | 'pcgrad';

export interface GradStats {
  /** g_k . g_ce for each term. */
  dot: Record<string, number>;
  /** |g_k|^2 for each term. */
  norm2: Record<string, number>;
  /** |g_ce|^2. */
  ceNorm2: number;
}

/** Dot products and squared norms of each term's gradient with CE's (lists in the same variable order). */
export function gradStats(grads: Record<string, tf.Tensor[]>, ceKey = 'ce'): GradStats {
  const ce = grads[ceKey];
  if (!ce) throw new Error(`gradient balancing needs the "${ceKey}" gradient; got ${Object.keys(grads).join(', ')}`);
  const sumOver = (a: tf.Tensor[], b: tf.Tensor[]): number =>
    tf.tidy(() => {
      let acc = tf.scalar(0);
      for (let i = 0; i < a.length; i++) acc = tf.add(acc, tf.sum(tf.mul(a[i]!, b[i]!)));
      return acc.dataSync()[0]!;
    });
  const out: GradStats = { dot: {}, norm2: {}, ceNorm2: sumOver(ce, ce) };
  for (const [k, g] of Object.entries(grads)) {
    if (k === ceKey) continue;
    out.dot[k] = sumOver(g, ce);
    out.norm2[k] = sumOver(g, g);
  }
  return out;
}

export function cosine(dot: number, norm2a: number, norm2b: number): number {
  const d = Math.sqrt(norm2a * norm2b);
  return d > 0 ? dot / d : 0;
}

/** gradcos factor in [0, 1]: 1 for cos >= 0, 0 for cos <= -margin, linear in between. */
export function gradcosFactor(cos: number, margin = 0.05): number {
  if (cos >= 0) return 1;
  return Math.max(0, 1 + cos / margin);
}

/** PCGrad folded into CE's weight (see the module comment). Returns w_ce. */
export function pcgradCeWeight(lambdas: Record<string, number>, s: GradStats): number {
  if (!(s.ceNorm2 > 0)) return 1;
  let w = 1;
  for (const [k, lam] of Object.entries(lambdas)) {
    const d = s.dot[k] ?? 0;
    if (d < 0) w -= (lam * d) / s.ceNorm2;
  }
  return w;
}

/** The PCGrad projection itself on flat vectors: g minus its component along ref when they conflict. */
export function projectConflicting(g: Float32Array, ref: Float32Array): Float32Array {
  let dot = 0;
  let rr = 0;
  for (let i = 0; i < g.length; i++) {
    dot += g[i]! * ref[i]!;
    rr += ref[i]! * ref[i]!;
  }
  const out = Float32Array.from(g);
  if (dot >= 0 || rr === 0) return out;
  for (let i = 0; i < g.length; i++) out[i] = g[i]! - (dot / rr) * ref[i]!;
  return out;
}

export interface Balancer {
  /** Weights of ce and each active term at this step. */
  weights(step: number): Record<string, number>;
  /** New gradient measurement (all terms + ce, same variable order). */
  update(grads: Record<string, tf.Tensor[]>, step: number): void;
  /** Weights and cosines since the last call (for history.jsonl), then resets the window. */
  info(): Record<string, unknown>;
  /** What a resumed run needs to continue exactly: current weights, moving averages, measurement count. */
  state(): { current: Record<string, number>; ema: Record<string, number>; measurements: number };
  restore(s: { current?: unknown; ema?: unknown; measurements?: unknown }): void;
}

/** A balancer for the given base lambdas. With mode 'none' the weights are the lambdas, ce = 1. */
export function createBalancer(mode: BalanceMode, lambdas: Record<string, number>, emaDecay = 0.5): Balancer {
  let current: Record<string, number> = { ce: 1, ...lambdas };
  const ema: Record<string, number> = {};
  let window: { step: number; cos: Record<string, number>; weights: Record<string, number> }[] = [];
  let measurements = 0;
  return {
    weights: () => current,
    update(grads, step) {
      if (mode === 'none') return;
      const s = gradStats(grads);
      const cos: Record<string, number> = {};
      for (const k of Object.keys(lambdas)) {
        if (s.dot[k] === undefined) continue;
        cos[k] = cosine(s.dot[k], s.norm2[k]!, s.ceNorm2);
        ema[k] = ema[k] === undefined ? cos[k] : emaDecay * ema[k] + (1 - emaDecay) * cos[k];
      }
      const next: Record<string, number> = { ce: 1, ...lambdas };
      if (mode === 'gradcos') {
        for (const k of Object.keys(lambdas)) if (ema[k] !== undefined) next[k] = lambdas[k]! * gradcosFactor(ema[k]);
      } else {
        next.ce = pcgradCeWeight(lambdas, s);
      }
      current = next;
      measurements++;
      window.push({ step, cos, weights: { ...next } });
    },
    state: () => ({ current: { ...current }, ema: { ...ema }, measurements }),
    restore(st) {
      const nums = (o: unknown): Record<string, number> | undefined =>
        o && typeof o === 'object' && Object.values(o).every((v) => typeof v === 'number' && Number.isFinite(v)) ? (o as Record<string, number>) : undefined;
      const c = nums(st.current);
      const e = nums(st.ema);
      if (!c || !e || !Number.isInteger(st.measurements)) throw new Error('balancer state: expected {current, ema: numbers, measurements: integer}');
      current = { ...c };
      for (const k of Object.keys(ema)) delete ema[k];
      Object.assign(ema, e);
      measurements = st.measurements as number;
    },
    info() {
      const out: Record<string, unknown> = { balance: mode, weights: { ...current } };
      if (window.length) {
        const meanCos: Record<string, number> = {};
        for (const k of Object.keys(lambdas)) {
          const vals = window.map((w) => w.cos[k]).filter((v): v is number => v !== undefined);
          if (vals.length) meanCos[k] = vals.reduce((a, b) => a + b, 0) / vals.length;
        }
        out.gradCos = meanCos;
        out.measurements = measurements;
      }
      window = [];
      return out;
    },
  };
}
