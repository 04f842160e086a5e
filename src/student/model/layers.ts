import * as tf from '@tensorflow/tfjs-core';
import type { Rng } from '../../util/rng.js';

/** The network's building blocks: dense layers, batched matmul, LayerNorm, dropout and the attention masks. */
/**
 * x @ w + b for x [M, K], w [K, N]. Plain matMul + add rather than tf.fused.matMul: the fused op's gradient
 * uses transposed matmuls, which take a ~7x slower path on wasm (see src/backend/gradients.ts).
 */
export function linear(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, relu = false): tf.Tensor {
  const y = tf.add(tf.matMul(x as tf.Tensor2D, w as tf.Tensor2D), b);
  return relu ? tf.relu(y) : y;
}

/**
 * Batched a @ b (or a @ b^T) over [B, H, ., .]. With a single matrix (B * H = 1, the serving case) it takes
 * the 2-D path, which on wasm is XNNPACK and ~7x faster than the generic batched kernel.
 */
export function bmm(a: tf.Tensor4D, b: tf.Tensor4D, transposeB: boolean): tf.Tensor4D {
  const [B, H, M, K] = a.shape;
  if (B * H !== 1) return tf.matMul(a, b, false, transposeB);
  const b2 = tf.reshape(b, b.shape.slice(2) as [number, number]);
  const out = tf.matMul(tf.reshape(a, [M, K]), transposeB ? tf.transpose(b2) : b2);
  return tf.reshape(out, [1, 1, M, out.shape[1]!]);
}

export function layerNorm(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const mean = tf.mean(x, -1, true);
  const xc = tf.sub(x, mean);
  const variance = tf.mean(tf.square(xc), -1, true);
  return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(variance, 1e-8))), g), b);
}

/**
 * Inverted dropout with a mask drawn from the trainer's seeded RNG (so a resumed run replays exactly).
 * One 32-bit draw gives four 8-bit uniforms: the rate is applied at 1/256 resolution, 4x fewer draws.
 */
export function dropout(x: tf.Tensor, rate: number, rng: Rng | undefined): tf.Tensor {
  if (!rng || rate <= 0) return x;
  const n = x.size;
  const mask = new Float32Array(n);
  const keep = 1 / (1 - rate);
  const threshold = Math.round(rate * 256);
  for (let i = 0; i < n; i += 4) {
    const r = (rng.next() * 4294967296) >>> 0;
    mask[i] = (r & 255) >= threshold ? keep : 0;
    if (i + 1 < n) mask[i + 1] = ((r >>> 8) & 255) >= threshold ? keep : 0;
    if (i + 2 < n) mask[i + 2] = ((r >>> 16) & 255) >= threshold ? keep : 0;
    if (i + 3 < n) mask[i + 3] = (r >>> 24) >= threshold ? keep : 0;
  }
  return tf.mul(x, tf.tensor(mask, x.shape, 'float32'));
}

/** Causal mask only, [1, 1, L, L] (padKeys 'attend': padding keys are attended like any other). */
export function causalBias(L: number): tf.Tensor4D {
  const causal = new Float32Array(L * L);
  for (let i = 0; i < L; i++) for (let j = i + 1; j < L; j++) causal[i * L + j] = -1e9;
  return tf.tensor4d(causal, [1, 1, L, L]);
}

/**
 * Additive attention bias [B, 1, L, L]: -1e9 on future keys and on padding keys, else 0. Built as a causal
 * [1, 1, L, L] constant plus a per-row padding-key bias [B, 1, 1, L], so the JS work is O(L^2 + B L), not O(B L^2).
 */
export function attentionBias(items: Int32Array, B: number, L: number): tf.Tensor4D {
  const pad = new Float32Array(B * L);
  for (let b = 0; b < B; b++) for (let j = 0; j < L && items[b * L + j] === 0; j++) pad[b * L + j] = -1e9; // left padding
  return tf.add(causalBias(L), tf.tensor4d(pad, [B, 1, 1, L]));
}

/** Padding-key bias only [B, 1, 1, L] (a bidirectional network: every real slot sees every real slot). */
export function paddingBias(items: Int32Array, B: number, L: number): tf.Tensor4D {
  const pad = new Float32Array(B * L);
  for (let b = 0; b < B; b++) for (let j = 0; j < L; j++) if (items[b * L + j] === 0) pad[b * L + j] = -1e9;
  return tf.tensor4d(pad, [B, 1, 1, L]);
}
