import * as tf from '@tensorflow/tfjs-core';
import { RecdistillError } from '../errors.js';
import { makeRng, shuffle } from '../util/rng.js';
import type { LogFn } from '../util/progress.js';

/**
 * The teacher's soft-label head: a softmax layer over items read from one tapped hidden state,
 * logits = x W^T + b with x = (h - mean) / std the standardised state (per dimension, stats over the cache:
 * LLM residual streams have a few huge dimensions that would otherwise dominate), W [N+1, H], b [N+1].
 *
 * Initialisation (= the zero-shot head): centred, scaled similarity between the state and the item text
 * embeddings, W0[i, d] = c (E[i, d] - mean(E)[d]) std[d], b0 = 0, so logits_i = c (h - mean) . (e_i - mean e).
 * Centring removes the large shared direction LLM states have (every cosine near 1 otherwise); c makes a
 * typical logit c ||h - mean|| ||e - me|| equal INIT_SCALE, i.e. the softmax starts at temperature
 * 1 / INIT_SCALE on a cosine-like score. Training (Adam on cross-entropy over training positions only)
 * starts from there; epoch 0 (no training) takes part in model selection, so a head that does not beat
 * the zero-shot similarity on validation NDCG@10 falls back to it.
 */
const INIT_SCALE = 10;

export interface HeadParams {
  /** [N+1, H] */
  weight: Float32Array;
  /** [N+1] */
  bias: Float32Array;
}

/** Standardise rows in place: x[r, d] = (x[r, d] - mean[d]) / std[d] (std clamped at 1e-6). x [R, H]. */
export function standardise(x: Float32Array, H: number, mean: ArrayLike<number>, std: ArrayLike<number>): Float32Array {
  for (let i = 0; i < x.length; i++) {
    const d = i % H;
    x[i] = (x[i]! - mean[d]!) / Math.max(std[d]!, 1e-6);
  }
  return x;
}

export interface HeadTrainConfig {
  epochs: number;
  lr: number;
  batchSize: number;
  /** Stop after this many epochs without a better validation NDCG@10. */
  patience: number;
  seed: number;
  /** Training rows drawn (seeded, without replacement) per epoch; 0 = all. Bounds an epoch's cost. */
  rowsPerEpoch?: number;
}

/** Default training of the linear soft-label head: teacher:cache's flags and the ablation both start here. */
export const HEAD_DEFAULTS: Required<HeadTrainConfig> = { epochs: 10, lr: 0.01, batchSize: 256, patience: 2, seed: 42, rowsPerEpoch: 32768 };

export interface HeadTrainData {
  H: number;
  /** Number of items N (ids 1..N). */
  numItems: number;
  /** [R, H] standardised training states (the state after item p). */
  x: Float32Array;
  /** [R] targets: item p+1, a training item. */
  y: Int32Array;
}

/** Mean over rows of an [R, H] matrix (float64 accumulation). */
function rowMean(x: Float32Array, R: number, H: number, from = 0): Float64Array {
  const m = new Float64Array(H);
  for (let r = from; r < R; r++) for (let d = 0; d < H; d++) m[d]! += x[r * H + d]!;
  for (let d = 0; d < H; d++) m[d]! /= Math.max(1, R - from);
  return m;
}

function meanCentredNorm(x: Float32Array, R: number, H: number, mean: Float64Array, from = 0): number {
  let total = 0;
  for (let r = from; r < R; r++) {
    let s = 0;
    for (let d = 0; d < H; d++) s += (x[r * H + d]! - mean[d]!) ** 2;
    total += Math.sqrt(s);
  }
  return total / Math.max(1, R - from);
}

/**
 * The zero-shot head (also the linear head's starting point) on standardised inputs. itemEmb [N+1, H];
 * hMean, hStd [H] the input statistics; hNorm = mean ||h - hMean|| over the training rows.
 */
export function initHead(itemEmb: Float32Array, N: number, H: number, hStd: ArrayLike<number>, hNorm: number): HeadParams {
  const eMean = rowMean(itemEmb, N + 1, H, 1);
  const eNorm = meanCentredNorm(itemEmb, N + 1, H, eMean, 1);
  const c = INIT_SCALE / Math.max(hNorm * eNorm, 1e-12);
  const weight = new Float32Array((N + 1) * H);
  for (let i = 1; i <= N; i++) {
    for (let d = 0; d < H; d++) weight[i * H + d] = c * (itemEmb[i * H + d]! - eMean[d]!) * Math.max(hStd[d]!, 1e-6);
  }
  return { weight, bias: new Float32Array(N + 1) };
}

/** log((count_i + 1) / (R + N)) of each item among the targets y, centred over items 1..N; [N+1], 0 for padding. */
export function logPopularity(y: Int32Array, N: number): Float32Array {
  const c = new Float64Array(N + 1);
  for (let r = 0; r < y.length; r++) c[y[r]!]! += 1;
  const out = new Float32Array(N + 1);
  let mean = 0;
  for (let i = 1; i <= N; i++) mean += Math.log((c[i]! + 1) / (y.length + N)) / N;
  for (let i = 1; i <= N; i++) out[i] = Math.log((c[i]! + 1) / (y.length + N)) - mean;
  return out;
}

/** Logits for standardised rows x [B, H] -> [B, N+1] (column 0 is padding: callers mask it). */
export function headLogits(p: { weight: tf.Tensor2D; bias: tf.Tensor1D }, x: Float32Array, B: number, H: number): Float32Array {
  // An explicit transpose then a plain matMul: matMul(.., transposeB = true) takes a slow path on wasm (~50x).
  // The array is read after tidy: tidy walks a returned typed array element by element looking for tensors
  // (1.8 s for [1024, 1683] against 3 ms for the read itself).
  const t = tf.tidy(() => tf.add(tf.matMul(tf.tensor2d(x, [B, H]), tf.transpose(p.weight)), p.bias));
  const out = t.dataSync() as Float32Array;
  t.dispose();
  return out;
}

/**
 * Fit the linear head with Adam, seeded shuffles, model selection on `validate` (returns validation
 * NDCG@10 for the given parameters). Deterministic for a seed on one backend.
 */
export async function fitHead(
  data: HeadTrainData,
  init: HeadParams,
  cfg: HeadTrainConfig,
  validate: (p: { weight: tf.Tensor2D; bias: tf.Tensor1D }) => Promise<number>,
  log: LogFn,
): Promise<{ params: HeadParams; bestEpoch: number; history: Array<{ epoch: number; loss: number; validNdcg10: number }> }> {
  const { H, numItems: N } = data;
  const R = data.y.length;
  if (data.x.length !== R * H) throw new RecdistillError('E_INTERNAL', `head: x has ${data.x.length} values, expected ${R} x ${H}.`);
  const weight = tf.variable(tf.tensor2d(init.weight, [N + 1, H]), true, 'head_weight');
  // Training starts from the zero-shot weights plus a log-popularity bias over the training targets (the
  // strongest single signal in most logs); epoch 0 itself is evaluated as the pure zero-shot head.
  const bias = tf.variable(tf.tensor1d(logPopularity(data.y, N)), true, 'head_bias');
  const p = { weight: weight as tf.Tensor2D, bias: bias as tf.Tensor1D };
  const opt = tf.train.adam(cfg.lr);
  const rng = makeRng(cfg.seed);
  const order = Int32Array.from({ length: R }, (_, i) => i);
  const history: Array<{ epoch: number; loss: number; validNdcg10: number }> = [];
  let best = { ndcg: await validate(p), epoch: 0, params: init };
  history.push({ epoch: 0, loss: NaN, validNdcg10: best.ndcg });
  log(`teacher head: epoch 0 (zero-shot init) valid ndcg@10 ${best.ndcg.toFixed(4)}`);
  let stale = 0;
  try {
    for (let epoch = 1; epoch <= cfg.epochs && R > 0; epoch++) {
      const t0 = performance.now();
      shuffle(order, rng);
      const rows = cfg.rowsPerEpoch && cfg.rowsPerEpoch > 0 ? Math.min(R, cfg.rowsPerEpoch) : R;
      let lossSum = 0;
      let batches = 0;
      for (let s = 0; s < rows; s += cfg.batchSize) {
        const B = Math.min(cfg.batchSize, rows - s);
        const xb = new Float32Array(B * H);
        const yb = new Int32Array(B);
        for (let i = 0; i < B; i++) {
          const r = order[s + i]!;
          xb.set(data.x.subarray(r * H, (r + 1) * H), i * H);
          yb[i] = data.y[r]!;
        }
        const x = tf.tensor2d(xb, [B, H]);
        const labels = tf.tidy(() => tf.oneHot(tf.tensor1d(yb, 'int32'), N + 1));
        const loss = opt.minimize(() => tf.losses.softmaxCrossEntropy(labels, tf.add(tf.matMul(x, tf.transpose(weight)), bias)) as tf.Scalar, true);
        lossSum += loss!.dataSync()[0]!;
        tf.dispose([x, labels, loss!]);
        batches++;
      }
      const ndcg = await validate(p);
      const loss = lossSum / Math.max(1, batches);
      history.push({ epoch, loss, validNdcg10: ndcg });
      log(`teacher head: epoch ${epoch} loss ${loss.toFixed(4)} valid ndcg@10 ${ndcg.toFixed(4)} (${((performance.now() - t0) / 1000).toFixed(1)}s)`);
      if (ndcg > best.ndcg) {
        best = { ndcg, epoch, params: { weight: weight.dataSync().slice() as Float32Array, bias: bias.dataSync().slice() as Float32Array } };
        stale = 0;
      } else if (++stale >= cfg.patience) break;
    }
  } finally {
    weight.dispose();
    bias.dispose();
    opt.dispose();
  }
  return { params: best.params, bestEpoch: best.epoch, history };
}

/**
 * Soft labels for rows: softmax(logits / T) over the catalogue with padding and each row's history masked (-1e9),
 * then the top K, best first (value descending, ties by the lower index: tf.topk's order). logits [B, N+1] are
 * OVERWRITTEN (masked in place: on [1024, 12102] chunks a copy costs as much as the softmax); history(i) lists the
 * items to mask for row i. The top-K is one JS pass per row with a K-slot insertion list (tf.topk sorts the row),
 * the division is skipped at T = 1, and no typed array is returned from tf.tidy (tidy walks a returned value element
 * by element). Same bytes as tf.softmax + tf.topk (test/cache/soft-labels.test.ts keeps that form as its oracle).
 */
export function softLabelsFromLogits(logits: Float32Array, B: number, N: number, T: number, K: number, history: (i: number) => ArrayLike<number>): { index: Int32Array; prob: Float32Array } {
  const W = N + 1;
  const masked = logits; // in place (see above)
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
