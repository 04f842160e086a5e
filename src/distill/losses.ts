import * as tf from '@tensorflow/tfjs-core';
import { makeRng, type Rng } from '../util/rng.js';

/**
 * Distillation loss terms, pure functions on tensors. Every function takes only the rows that count
 * (callers gather the positions that have a teacher row and drop padding), so masking is "which rows
 * you pass"; an empty batch ([0, ...]) gives a zero loss rather than NaN.
 *
 * - hidden alignment (SLMRec, Xu et al., ICLR 2025): 1 - cosine and squared L2 between the projected
 *   student state and the teacher state at the same (user, position);
 * - soft labels: KL at temperature T over the teacher's top-K (Hinton et al.), or the importance-weighted
 *   ranking distillation of DLLM2Rec (Cui et al., RecSys 2024);
 * - item-embedding distillation (DLLM2Rec): student item embeddings toward projected teacher text embeddings;
 * - relational distillation (RKD, Park et al., CVPR 2019): the student's pairwise distances and triplet angles
 *   between the rows of a batch toward the teacher's (no projection: widths D and H may differ).
 */

const EPS = 1e-8;

function meanOrZero(perRow: tf.Tensor1D): tf.Scalar {
  return perRow.shape[0] === 0 ? tf.scalar(0) : tf.mean(perRow);
}

/** Per-row cosine similarity of a and b: [M, H] x [M, H] -> [M]. */
function rowCosine(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor1D {
  const dot = tf.sum(tf.mul(a, b), -1);
  const na = tf.sqrt(tf.sum(tf.square(a), -1));
  const nb = tf.sqrt(tf.sum(tf.square(b), -1));
  return tf.div(dot, tf.maximum(tf.mul(na, nb), EPS)) as tf.Tensor1D;
}

/** Dcos = mean over rows of (1 - cos(a_i, b_i)). a, b: [M, H]. */
export function cosineDistance(a: tf.Tensor2D, b: tf.Tensor2D): tf.Scalar {
  return meanOrZero(tf.sub(1, rowCosine(a, b)) as tf.Tensor1D);
}

/**
 * Dl2 = mean over rows of the squared L2 distance divided by the width H (per-dimension mean square),
 * so one lambda works for a 64-wide seqrec teacher and a 4096-wide LLM. a, b: [M, H].
 */
export function l2Distance(a: tf.Tensor2D, b: tf.Tensor2D): tf.Scalar {
  return meanOrZero(tf.mean(tf.squaredDifference(a, b), -1) as tf.Tensor1D);
}

/** Mean cross-entropy of logits [M, C] against integer targets [M] (the next item). */
export function crossEntropy(logits: tf.Tensor2D, targets: tf.Tensor1D): tf.Scalar {
  if (logits.shape[0] === 0) return tf.scalar(0);
  const logp = tf.logSoftmax(logits); // [M, C]
  const onehot = tf.oneHot(tf.cast(targets, 'int32'), logits.shape[1]); // [M, C]
  return tf.neg(tf.mean(tf.sum(tf.mul(logp, onehot), -1))) as tf.Scalar;
}

/**
 * Cross-entropy over the items only: scores [M, N + 1] whose column 0 is the padding id, targets [M] item
 * ids 1..N. The padding column takes no probability mass, as in the student's main CE.
 */
export function itemCrossEntropy(scores: tf.Tensor2D, targets: tf.Tensor1D): tf.Scalar {
  const items = tf.slice(scores, [0, 1], [-1, -1]) as tf.Tensor2D; // [M, N]
  return crossEntropy(items, tf.sub(tf.cast(targets, 'int32'), 1) as tf.Tensor1D);
}

/**
 * Teacher distribution over its top-K at temperature T, from cached probabilities that were computed at
 * temperature T0: log p = z / T0 + c, so softmax(z / T) = softmax(log p * T0 / T). probs: [M, K] -> [M, K].
 */
export function teacherAtTemperature(probs: tf.Tensor2D, cacheTemperature: number, temperature: number): tf.Tensor2D {
  return tf.softmax(tf.mul(tf.log(tf.maximum(probs, 1e-12)), cacheTemperature / temperature)) as tf.Tensor2D;
}

/**
 * Lkd (KL) = T^2 * mean over rows of KL(q_teacher || softmax(s / T)) over the teacher's top-K.
 * studentLogitsK: [M, K] student logits gathered at the teacher's top-K items; teacherProbs: [M, K] as cached.
 */
export function klTopK(studentLogitsK: tf.Tensor2D, teacherProbs: tf.Tensor2D, temperature: number, cacheTemperature = 1): tf.Scalar {
  if (studentLogitsK.shape[0] === 0) return tf.scalar(0);
  const q = teacherAtTemperature(teacherProbs, cacheTemperature, temperature); // [M, K]
  const logPs = tf.logSoftmax(tf.div(studentLogitsK, temperature)); // [M, K]
  const kl = tf.sum(tf.mul(q, tf.sub(tf.log(tf.maximum(q, 1e-12)), logPs)), -1) as tf.Tensor1D; // [M]
  return tf.mul(tf.mean(kl), temperature * temperature);
}

export interface RankingWeightOptions {
  /** Position decay λ in exp(-r / λ), r = 1..K (DLLM2Rec default 1). */
  lambda: number;
  gammaPosition: number;
  gammaConfidence: number;
  gammaConsistency: number;
}

/**
 * DLLM2Rec importance weights of each teacher top-K item, [M, K] row-major, rows summing to 1:
 *   w = normalise(γp * w_pos + γc * w_conf + γo * w_cons)
 * w_pos = exp(-r/λ) normalised over K (r = 1..K, the teacher's rank); w_conf = the teacher's probability
 * normalised over its top-K (the paper uses exp(-distance) of the generated item: a closer match is a surer
 * one; a probability says the same directly); w_cons = 1 when the item is also in the student's own top-K,
 * else 0 (unnormalised, as in the reference implementation). Constants: no gradient flows through them.
 */
export function rankingWeights(teacherProbs: Float32Array, inStudentTopK: Uint8Array, K: number, o: RankingWeightOptions): Float32Array {
  const M = teacherProbs.length / K;
  const pos = new Float64Array(K);
  let posSum = 0;
  for (let r = 0; r < K; r++) posSum += pos[r] = Math.exp(-(r + 1) / o.lambda);
  const w = new Float32Array(M * K);
  for (let i = 0; i < M; i++) {
    let pSum = 0;
    for (let k = 0; k < K; k++) pSum += teacherProbs[i * K + k]!;
    let rowSum = 0;
    const row = new Float64Array(K);
    for (let k = 0; k < K; k++) {
      const conf = pSum > 0 ? teacherProbs[i * K + k]! / pSum : 1 / K;
      row[k] = o.gammaPosition * (pos[k]! / posSum) + o.gammaConfidence * conf + o.gammaConsistency * inStudentTopK[i * K + k]!;
      rowSum += row[k]!;
    }
    for (let k = 0; k < K; k++) w[i * K + k] = rowSum > 0 ? row[k]! / rowSum : 1 / K;
  }
  return w;
}

/**
 * Lkd (ranking) = mean over rows of -sum_k w_k * log softmax(s)[i_k]: the teacher's top-K items as weighted
 * positives. DLLM2Rec writes it with a sigmoid (BCE against a sampled negative) because its student trains with
 * BCE; this student trains with a full softmax, so the same weighting is applied to the full-softmax log-probs.
 * studentLogProbsK: [M, K] full-softmax log-probabilities gathered at the teacher's top-K; weights: [M, K].
 */
export function rankingLoss(studentLogProbsK: tf.Tensor2D, weights: tf.Tensor2D): tf.Scalar {
  return meanOrZero(tf.neg(tf.sum(tf.mul(studentLogProbsK, weights), -1)) as tf.Tensor1D);
}

/**
 * For each row, whether each teacher top-K item is also in the student's top-K (from tf.topk on the scores).
 * studentTop: [M, Ks], teacherIdx: [M, K] -> [M, K] of 0/1.
 */
export function topKMembership(studentTop: Int32Array, Ks: number, teacherIdx: Int32Array, K: number): Uint8Array {
  const M = teacherIdx.length / K;
  const out = new Uint8Array(M * K);
  for (let i = 0; i < M; i++) {
    for (let k = 0; k < K; k++) {
      const item = teacherIdx[i * K + k]!;
      for (let j = 0; j < Ks; j++) {
        if (studentTop[i * Ks + j] === item) {
          out[i * K + k] = 1;
          break;
        }
      }
    }
  }
  return out;
}


/**
 * Lemb (DLLM2Rec embedding distillation) = mean over the given items of 1 - cos(E_s[i], E_t[i] W):
 * pulls the student's item embeddings toward a learned linear image of the teacher's text embeddings. Cosine,
 * not L2, so a shrinking W cannot trivially zero the loss. student: [n, D], teacherProjected: [n, D].
 */
export function embeddingDistance(student: tf.Tensor2D, teacherProjected: tf.Tensor2D): tf.Scalar {
  return cosineDistance(student, teacherProjected);
}

// ---- relational knowledge distillation (RKD, Park et al., CVPR 2019)

/**
 * Rows a relation term looks at, at most. The distance term costs O(M^2 W) time and O(M^2) memory, the angle
 * term O(M^3) (an [M, M, M] cosine tensor: 1 MB per intermediate at 64 rows, 1 GB at 640), so a batch with
 * more rows than this is subsampled (see relationRows).
 */
export const RKD_MAX_ROWS = 64;

/**
 * Squared distances below this (on the centred, unit-RMS-radius frame, i.e. points closer than 0.1% of the
 * batch's spread) are "the same point": an angle at such a pair is undefined and is left out of the angle mean.
 */
const RKD_DEGENERATE = 1e-6;
/** Floor of a squared distance before the square root (the paper's pdist eps): finite gradients on the diagonal. */
const RKD_SQ_EPS = 1e-12;

export interface RelationOptions {
  /** At most this many rows (default RKD_MAX_ROWS); more are subsampled uniformly without replacement. */
  maxRows?: number;
  /**
   * Draws the subsample. The distillation hooks subsample once per step themselves, with a generator seeded by
   * the run seed and the step (src/distill/hooks.ts), so a step is reproducible and a recomputed forward pass
   * (gradient balancing) sees the same rows; a caller without one gets a fixed seed.
   */
  rng?: Rng;
}

/**
 * Rows to keep, ascending, when M > maxRows (a uniform subset: partial Fisher-Yates on `rng`); undefined when
 * every row fits (no subsampling).
 */
export function relationRows(M: number, maxRows: number, rng: Rng): Int32Array | undefined {
  if (M <= maxRows) return undefined;
  const idx = Int32Array.from({ length: M }, (_, i) => i);
  for (let i = 0; i < maxRows; i++) {
    const j = i + rng.int(M - i);
    const t = idx[i]!;
    idx[i] = idx[j]!;
    idx[j] = t;
  }
  return idx.slice(0, maxRows).sort();
}

/** Huber (smooth L1) with delta 1, elementwise: 0.5 x^2 for |x| < 1, |x| - 0.5 beyond. */
export function huber(x: tf.Tensor): tf.Tensor {
  const a = tf.abs(x);
  const q = tf.minimum(a, 1);
  return tf.add(tf.mul(0.5, tf.square(q)), tf.sub(a, q));
}

/**
 * Distances and angles do not change under translation, and the terms are scale-free, so both sides are first
 * centred (subtract the batch mean row) and scaled to unit RMS radius. That keeps the Gram-matrix forms below
 * accurate in float32 (LLM states share a large common direction whose cancellation would eat the precision)
 * and makes the eps floors relative to the batch's spread. x: [M, W] -> [M, W].
 */
function relationFrame(x: tf.Tensor2D): tf.Tensor2D {
  const c = tf.sub(x, tf.mean(x, 0, true));
  const r = tf.sqrt(tf.maximum(tf.mean(tf.sum(tf.square(c), -1)), EPS * EPS));
  return tf.div(c, r) as tf.Tensor2D;
}

/** Gram matrix G = x x^T [M, M], its diagonal |x_i|^2 [M] and squared pairwise distances [M, M] (unclamped). */
function gramAndSq(x: tf.Tensor2D): { g: tf.Tensor2D; sq: tf.Tensor1D; d2: tf.Tensor2D } {
  const g = tf.matMul(x, x, false, true) as tf.Tensor2D;
  const sq = tf.sum(tf.square(x), -1) as tf.Tensor1D;
  const d2 = tf.sub(tf.add(tf.expandDims(sq, 1), tf.expandDims(sq, 0)), tf.mul(2, g)) as tf.Tensor2D;
  return { g, sq, d2 };
}

function subsample(student: tf.Tensor2D, teacher: tf.Tensor2D, o: RelationOptions): [tf.Tensor2D, tf.Tensor2D] {
  if (student.shape[0] !== teacher.shape[0]) throw new Error(`relation loss: ${student.shape[0]} student rows but ${teacher.shape[0]} teacher rows`);
  const rows = relationRows(student.shape[0], o.maxRows ?? RKD_MAX_ROWS, o.rng ?? makeRng(0x4e1));
  if (!rows) return [student, teacher];
  const r = tf.tensor1d(rows, 'int32');
  return [tf.gather(student, r), tf.gather(teacher, r)];
}

/** A zero that still depends on the student (a term must keep a gradient path even when it has nothing to compare). */
const zeroOf = (student: tf.Tensor2D): tf.Scalar => tf.mul(tf.sum(student), 0) as tf.Scalar;

/**
 * Distance-wise RKD: with d_ij = |x_i - x_j| and mu = mean over i != j of d_ij,
 *   Ld = mean over ordered pairs i != j of huber(d^s_ij / mu^s - d^t_ij / mu^t)
 * (the diagonal, always 0 on both sides, is excluded). student: [M, D], teacher: [M, H]; rows beyond
 * o.maxRows (default 64) are subsampled first. Fewer than 2 rows: 0.
 */
export function rkdDistance(student: tf.Tensor2D, teacher: tf.Tensor2D, o: RelationOptions = {}): tf.Scalar {
  const [s, t] = subsample(student, teacher, o);
  const M = s.shape[0];
  if (M < 2) return zeroOf(student);
  const off = tf.sub(1, tf.eye(M)); // [M, M]
  const n = M * (M - 1);
  const normalised = (x: tf.Tensor2D) => {
    const d = tf.sqrt(tf.maximum(gramAndSq(relationFrame(x)).d2, RKD_SQ_EPS)); // [M, M]
    const mu = tf.div(tf.sum(tf.mul(d, off)), n);
    return tf.div(d, tf.maximum(mu, EPS));
  };
  return tf.div(tf.sum(tf.mul(huber(tf.sub(normalised(s), normalised(t))), off)), n) as tf.Scalar;
}

/**
 * Cosines of the angle at vertex i of every triplet: cos_ijk = <x_j - x_i, x_k - x_i> / (|x_j - x_i| |x_k - x_i|),
 * [M, M, M], from the Gram matrix G (<x_j - x_i, x_k - x_i> = G_jk - G_ij - G_ik + G_ii): memory O(M^3) whatever
 * the width, where the paper's implementation builds the [M, M, W] difference tensor (64 MB for a 4096-wide
 * teacher at 64 rows). Clipped to [-1, 1] (float noise when a side is near zero).
 */
function tripletCosines(x: tf.Tensor2D): { cos: tf.Tensor3D; d2: tf.Tensor2D } {
  const { g, sq, d2 } = gramAndSq(relationFrame(x));
  const num = tf.add(tf.sub(tf.sub(tf.expandDims(g, 0), tf.expandDims(g, 2)), tf.expandDims(g, 1)), tf.reshape(sq, [-1, 1, 1])); // [i, j, k]
  const d = tf.sqrt(tf.maximum(d2, RKD_SQ_EPS));
  const den = tf.mul(tf.expandDims(d, 2), tf.expandDims(d, 1)); // d_ij * d_ik
  return { cos: tf.clipByValue(tf.div(num, den), -1, 1) as tf.Tensor3D, d2 };
}

/**
 * Angle-wise RKD: La = mean over triplets of distinct i, j, k of huber(cos^s_ijk - cos^t_ijk), the angle at
 * vertex i (the paper's normalised-difference Gram matrices, without its degenerate j = i, k = i, j = k entries).
 * Triplets with a side the teacher collapses (two teacher rows at the same point, e.g. two users with the same
 * history prefix) have no angle and are left out. student: [M, D], teacher: [M, H]; rows beyond o.maxRows
 * (default 64) are subsampled first. Fewer than 3 rows (or no usable triplet): 0.
 */
export function rkdAngle(student: tf.Tensor2D, teacher: tf.Tensor2D, o: RelationOptions = {}): tf.Scalar {
  const [s, t] = subsample(student, teacher, o);
  const M = s.shape[0];
  if (M < 3) return zeroOf(student);
  const cs = tripletCosines(s);
  const ct = tripletCosines(t);
  const off = tf.sub(1, tf.eye(M));
  const distinct = tf.mul(tf.mul(tf.expandDims(off, 2), tf.expandDims(off, 1)), tf.expandDims(off, 0)); // i != j, i != k, j != k
  const apart = tf.mul(off, tf.cast(tf.greater(ct.d2, RKD_DEGENERATE), 'float32')); // teacher pair (i, j) not collapsed
  const mask = tf.mul(distinct, tf.mul(tf.expandDims(apart, 2), tf.expandDims(apart, 1))); // [M, M, M]
  const count = tf.sum(mask);
  return tf.add(tf.div(tf.sum(tf.mul(huber(tf.sub(cs.cos, ct.cos)), mask)), tf.maximum(count, 1)), zeroOf(student)) as tf.Scalar;
}
