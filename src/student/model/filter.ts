import * as tf from '@tensorflow/tfjs-core';

/**
 * The frequency-filter branch of a block: BSARec's "beyond self-attention" layer (Shin et al., AAAI 2024) made
 * causal. BSARec low-passes the whole window with an FFT (keep the first `bins` frequencies of an rfft over the
 * maxLen slots), so a slot's output sees later slots; it can do that because it trains on the last slot of every
 * prefix only. This student trains every slot of a window at once, so the filter must not look ahead. At the last
 * slot of a window, BSARec's low-pass is a convolution with the ideal low-pass kernel
 *   h[d] = (1 / M) (1 + sum_{k=1}^{bins-1} c_k cos(2 pi k d / M)),  c_k = 2 (1 at the Nyquist bin k = M / 2),
 * over the distance d = 0 .. M - 1 to the earlier slots (M = maxLen). Applying that kernel at every slot over the
 * slots up to it is the causal filter used here: `low[s] = sum_{j <= s} h[s - j] x[j]`, with padding slots zero.
 * A slot's output depends on its own and earlier slots only, and not on how far the batch is padded.
 * The branch's output is `low + beta^2 * (x - low)` (beta [D] learned, per dimension: BSARec's sqrt_beta).
 * Span 'window' is BSARec's filter itself (every slot sees the whole window); it is only trained with prefix
 * windows (batches.ts), where each window ends at the one slot that is trained.
 */
export function lowPassKernel(maxLen: number, bins: number): Float64Array {
  const M = maxLen;
  const h = new Float64Array(M);
  for (let d = 0; d < M; d++) {
    let sum = 1;
    for (let k = 1; k < bins && k <= M / 2; k++) sum += (2 * k === M ? 1 : 2) * Math.cos((2 * Math.PI * k * d) / M);
    h[d] = sum / M;
  }
  return h;
}

const matrices = new Map<string, Float32Array>();

/** What a slot's filter output sees: its own and earlier slots, or the whole window (BSARec's FFT filter). */
export type FilterSpan = 'causal' | 'window';

/**
 * The filter's matrix [L, L] for a window padded to L <= maxLen. causal: the Toeplitz T[s, j] = h[s - j] for
 * j <= s, else 0. window: BSARec's circular convolution over the maxLen window, T[s, j] = h[(s - j) mod maxLen]
 * for every j (the slots before the L kept ones are padding, zero, so they drop out). Both have the same last row,
 * and both are the top-left [L, L] of their maxLen matrix (the ONNX export slices it). Memoised: every block of
 * every step asks for it, and a run meets only its few batch lengths. Callers must not write to it.
 */
export function filterMatrix(maxLen: number, bins: number, L: number, span: FilterSpan = 'causal'): Float32Array {
  const key = `${maxLen},${bins},${L},${span}`;
  const hit = matrices.get(key);
  if (hit) return hit;
  const h = lowPassKernel(maxLen, bins);
  const t = new Float32Array(L * L);
  for (let s = 0; s < L; s++) {
    for (let j = 0; j <= s; j++) t[s * L + j] = h[s - j]!;
    if (span === 'window') for (let j = s + 1; j < L; j++) t[s * L + j] = h[maxLen + s - j]!;
  }
  matrices.set(key, t);
  return t;
}

/**
 * The branch for x [B, L, D] (padding rows already zero): low + beta^2 (x - low). The convolution is one 2-D
 * matmul [L, L] @ [L, B * D] (the fast path on wasm) between two transposes.
 */
export function filterBranch(x: tf.Tensor3D, beta: tf.Tensor, maxLen: number, bins: number, span: FilterSpan = 'causal'): tf.Tensor3D {
  const [B, L, D] = x.shape;
  const T = tf.tensor2d(filterMatrix(maxLen, bins, L, span), [L, L]);
  const cols = tf.reshape(tf.transpose(x, [1, 0, 2]), [L, B * D]);
  const low = tf.transpose(tf.reshape(tf.matMul(T, cols), [L, B, D]), [1, 0, 2]);
  return tf.add(low, tf.mul(tf.square(beta), tf.sub(x, low))) as tf.Tensor3D;
}
