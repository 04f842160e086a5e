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
 * - unshare (multi-objective: task-specific parameters where objectives conflict): a term whose EMA cosine
 *   with CE (the same EMA as gradcos) has been below `unshareBelow` (0) for `unshareAfter` (3) consecutive
 *   measurements is unshared for the rest of the run: from the next step on, the hooks stop its gradient at
 *   the shared states / item embeddings and compute it through its own adapter (src/distill/hooks.ts). Its
 *   weight stays its lambda. A measurement that does not include the term (no teacher row in the batch)
 *   neither extends nor breaks its run of negative cosines; an unshared term is no longer measured.
 */
export type BalanceMode = 'none' | 'gradcos' | 'pcgrad' | 'unshare';

/** When and at which EMA cosine a term was unshared. It is unshared for every step > `step`. */
export interface UnshareEvent {
  step: number;
  cos: number;
}

export interface BalancerOptions {
  /** EMA decay of the cosines (gradcos, unshare). */
  emaDecay?: number;
  /** unshare: consecutive measurements with EMA cosine < unshareBelow that unshare a term. */
  unshareAfter?: number;
  /** unshare: the EMA-cosine threshold. */
  unshareBelow?: number;
  /** unshare: one line per term when it is unshared. */
  log?: (line: string) => void;
}

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
  /** unshare: whether `term` is unshared at `step` (decided at a measurement before it; always false in other modes). */
  isUnshared(term: string, step: number): boolean;
  /** unshare: the terms unshared so far, with when and at which EMA cosine. */
  unshared(): Record<string, UnshareEvent>;
  /**
   * What a resumed run needs to continue exactly: current weights, moving averages, measurement count, and
   * (unshare) each term's run of negative EMA cosines and the unshared terms.
   */
  state(): BalancerState;
  restore(s: { current?: unknown; ema?: unknown; measurements?: unknown; streak?: unknown; unshared?: unknown }): void;
}

export interface BalancerState {
  current: Record<string, number>;
  ema: Record<string, number>;
  measurements: number;
  streak: Record<string, number>;
  unshared: Record<string, UnshareEvent>;
}

/** A balancer for the given base lambdas. With mode 'none' the weights are the lambdas, ce = 1. */
export function createBalancer(mode: BalanceMode, lambdas: Record<string, number>, opts: BalancerOptions = {}): Balancer {
  const { emaDecay = 0.5, unshareAfter = 3, unshareBelow = 0, log } = opts;
  if (!(Number.isInteger(unshareAfter) && unshareAfter >= 1)) throw new Error(`unshareAfter must be an integer >= 1, got ${unshareAfter}`);
  let current: Record<string, number> = { ce: 1, ...lambdas };
  const ema: Record<string, number> = {};
  let streak: Record<string, number> = {};
  let unshared: Record<string, UnshareEvent> = {};
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
      } else if (mode === 'unshare') {
        for (const k of Object.keys(cos)) {
          if (unshared[k]) continue;
          streak[k] = ema[k]! < unshareBelow ? (streak[k] ?? 0) + 1 : 0;
          if (streak[k]! >= unshareAfter) {
            unshared[k] = { step, cos: ema[k]! };
            log?.(`balance unshare: term ${k} unshared after step ${step} (EMA gradient cosine with ce ${ema[k]!.toFixed(4)} < ${unshareBelow} for ${streak[k]} consecutive measurements); from step ${step + 1} its gradient no longer reaches the shared layers`);
          }
        }
      } else {
        next.ce = pcgradCeWeight(lambdas, s);
      }
      current = next;
      measurements++;
      window.push({ step, cos, weights: { ...next } });
    },
    isUnshared: (term, step) => unshared[term] !== undefined && step > unshared[term].step,
    unshared: () => ({ ...unshared }),
    state: () => ({ current: { ...current }, ema: { ...ema }, measurements, streak: { ...streak }, unshared: structuredClone(unshared) }),
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
      // Checkpoints written before mode unshare existed have neither: nothing unshared, no run in progress.
      const sk = st.streak === undefined ? {} : nums(st.streak);
      const un = st.unshared === undefined ? {} : st.unshared;
      const events = (o: unknown): o is Record<string, UnshareEvent> =>
        !!o && typeof o === 'object' && Object.values(o).every((e) => !!e && typeof e === 'object' && Number.isInteger((e as UnshareEvent).step) && Number.isFinite((e as UnshareEvent).cos));
      if (!sk || !Object.values(sk).every((v) => Number.isInteger(v) && v >= 0) || !events(un)) throw new Error('balancer state: expected streak: integers >= 0, unshared: {term: {step, cos}}');
      streak = { ...sk };
      unshared = structuredClone(un);
    },
    info() {
      const out: Record<string, unknown> = { balance: mode, weights: { ...current } };
      if (mode === 'unshare') out.unshared = structuredClone(unshared);
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
