import * as tf from '@tensorflow/tfjs-core';
import { makeRng, type Rng } from '../../src/util/rng.js';

/**
 * Finite-difference gradient checking for tfjs code (shared by test/backend/gradients.test.ts and
 * test/distill/fd-losses.test.ts).
 *
 * The analytic side is whatever tfjs computes on the active backend (tape + registered gradients, or a
 * customGrad). The numeric side is a central difference in float64 of the float32 forward pass:
 * (L(x + h e_j) - L(x - h e_j)) / 2h with L summed in float64 from the float32 outputs.
 */

/** Seed from a string (FNV-1a), so each table row has its own stable random stream. */
export function seedOf(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Random tensor factories on a seeded stream. All values are exactly representable in float32. */
export function gen(rng: Rng) {
  const fill = (shape: number[], f: () => number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return tf.tensor(Float32Array.from({ length: n }, f), shape, 'float32');
  };
  return {
    rng,
    /** Uniform in [lo, hi). */
    uniform: (shape: number[], lo = -1, hi = 1) => fill(shape, () => lo + (hi - lo) * rng.next()),
    /** |x| in [lo, hi) with a random sign: keeps kinks (relu, abs, step) out of the difference stencil. */
    away: (shape: number[], lo = 0.2, hi = 1.5) => fill(shape, () => (rng.next() < 0.5 ? -1 : 1) * (lo + (hi - lo) * rng.next())),
    /** Distinct values at least `gap` apart (no ties for max / maximum), in random order. */
    distinct: (shape: number[], gap = 0.1) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const v = Array.from({ length: n }, (_, i) => (i - n / 2) * gap + 0.3 * gap * rng.next());
      for (let i = n - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [v[i], v[j]] = [v[j]!, v[i]!];
      }
      return tf.tensor(Float32Array.from(v), shape, 'float32');
    },
    /** b = a + s with |s| in [0.1, 1): a pair with no ties (maximum / minimum). */
    apart: (a: tf.Tensor) => tf.add(a, fill(a.shape, () => (rng.next() < 0.5 ? -1 : 1) * (0.1 + 0.9 * rng.next()))),
  };
}
export type Gen = ReturnType<typeof gen>;
export const genFor = (name: string) => gen(makeRng(seedOf(name)));

export interface CheckResult {
  /** max over elements of |analytic - numeric| / max(|numeric|, floor), floor = 0.1 * max|numeric| + 1e-3. */
  worst: number;
  where: string;
  analytic: Float64Array[];
  numeric: Float64Array[];
}

/**
 * Compare analytic and numeric gradients. Per element, the error is relative to max(|numeric|,
 * 0.1 * max|numeric| + 1e-3): relative where the gradient is sizeable, absolute-ish near zero (where float32
 * cancellation in the difference makes a pure relative error meaningless).
 */
export function compareGrads(analytic: Float64Array[], numeric: Float64Array[]): { worst: number; where: string } {
  let worst = 0;
  let where = '';
  analytic.forEach((a, i) => {
    const n = numeric[i]!;
    if (a.length !== n.length) throw new Error(`input ${i}: analytic gradient has ${a.length} elements, numeric ${n.length}`);
    let maxN = 0;
    for (const v of n) maxN = Math.max(maxN, Math.abs(v));
    const floor = 0.1 * maxN + 1e-3;
    for (let j = 0; j < a.length; j++) {
      const e = Math.abs(a[j]! - n[j]!) / Math.max(Math.abs(n[j]!), floor);
      if (!(e <= worst)) {
        worst = Number.isNaN(e) ? Infinity : e;
        where = `input ${i}[${j}]: analytic ${a[j]}, numeric ${n[j]}`;
      }
    }
  });
  return { worst, where };
}

/**
 * Numeric gradient of a scalar loss (computed in float64 by `loss` from float32 tensors) w.r.t. each of `xs`.
 * `h` is the step for an element of magnitude <= 1; larger elements use h * |x| (relative step).
 */
export function numericGrads(loss: (xs: tf.Tensor[]) => number, xs: tf.Tensor[], h = 5e-3): Float64Array[] {
  const base = xs.map((x) => Float32Array.from(x.dataSync()));
  return base.map((v, i) => {
    const g = new Float64Array(v.length);
    for (let j = 0; j < v.length; j++) {
      const x0 = v[j]!;
      const step = h * Math.max(1, Math.abs(x0));
      const at = (x: number) => {
        const w = Float32Array.from(v);
        w[j] = x;
        const t = tf.tensor(w, xs[i]!.shape, 'float32');
        const args = xs.map((x2, k) => (k === i ? t : x2));
        const l = tf.tidy(() => loss(args));
        t.dispose();
        return l;
      };
      // The perturbed points are float32: difference over the step that was actually taken.
      const xp = Math.fround(x0 + step);
      const xm = Math.fround(x0 - step);
      g[j] = (at(xp) - at(xm)) / (xp - xm);
    }
    return g;
  });
}

/** sum_k w[k] * y[k] in float64 from a float32 tensor. */
export function dot64(y: tf.Tensor, w: Float32Array): number {
  const v = y.dataSync();
  if (v.length !== w.length) throw new Error(`output has ${v.length} elements, weights ${w.length}`);
  let s = 0;
  for (let k = 0; k < v.length; k++) s += v[k]! * w[k]!;
  return s;
}

export const toF64 = (t: tf.Tensor) => Float64Array.from(t.dataSync());
