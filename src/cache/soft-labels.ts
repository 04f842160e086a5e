import * as tf from '@tensorflow/tfjs-core';

/**
 * softLabelsFromLogits (teacher/head.ts) for a chunk of many rows, with the same bytes: the same masking
 * (logits / T, padding and each row's history at -1e9), the same tf.softmax kernel, and a top-K with the same
 * order as tf.topk (value descending, ties by the lower index). What differs is where the time goes, measured
 * on [1024, 12102] chunks (Amazon Beauty's catalogue) on wasm: the top-K is one JS pass per row with a K-slot
 * insertion list (tf.topk sorts the row), the division is skipped at T = 1 (x / 1 = x exactly), and no typed
 * array is returned from tf.tidy (tidy walks a returned value element by element), and the logits are masked
 * in place (no copy). logits [B, N+1], OVERWRITTEN; history(i) lists the items to mask for row i.
 */
export function softLabelsChunk(logits: Float32Array, B: number, N: number, T: number, K: number, history: (i: number) => ArrayLike<number>): { index: Int32Array; prob: Float32Array } {
  const W = N + 1;
  const masked = logits; // in place: a [1024, 12102] copy costs as much as the softmax
  if (T !== 1) for (let j = 0; j < B * W; j++) masked[j] = logits[j]! / T;
  for (let i = 0; i < B; i++) {
    const off = i * W;
    masked[off] = -1e9;
    const h = history(i);
    for (let t = 0; t < h.length; t++) masked[off + h[t]!] = -1e9;
  }
  const x = tf.tensor2d(masked, [B, W]);
  const p = tf.softmax(x);
  let probs: Float32Array;
  try {
    probs = p.dataSync() as Float32Array;
  } finally {
    tf.dispose([x, p]);
  }
  return topK(probs, B, W, Math.min(K, W));
}

/**
 * Top k of each row of x [B, W], best first: value descending, ties by the lower index (tf.topk's order).
 * Columns are scanned in increasing order, so an entry equal to the k-th kept value has a higher index than
 * every kept entry with that value: it only enters when strictly larger, after the entries >= it.
 */
export function topK(x: Float32Array, B: number, W: number, k: number): { index: Int32Array; prob: Float32Array } {
  const index = new Int32Array(B * k);
  const prob = new Float32Array(B * k);
  const v = new Float32Array(k);
  const ix = new Int32Array(k);
  for (let b = 0; b < B; b++) {
    const off = b * W;
    // The first k columns fill the list (insertion after the entries >= them), the rest must beat the k-th.
    for (let j = 0; j < k; j++) insert(v, ix, j, x[off + j]!, j);
    let thr = v[k - 1]!;
    for (let j = k; j < W; j++) {
      const val = x[off + j]!;
      if (val > thr) {
        insert(v, ix, k - 1, val, j);
        thr = v[k - 1]!;
      }
    }
    prob.set(v, b * k);
    index.set(ix, b * k);
  }
  return { index, prob };
}

/** Put (val, j) at slot `at` (free, or the dropped last one) and move it up past the entries smaller than val. */
function insert(v: Float32Array, ix: Int32Array, at: number, val: number, j: number): void {
  while (at > 0 && v[at - 1]! < val) {
    v[at] = v[at - 1]!;
    ix[at] = ix[at - 1]!;
    at--;
  }
  v[at] = val;
  ix[at] = j;
}
