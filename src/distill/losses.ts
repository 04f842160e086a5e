import * as tf from '@tensorflow/tfjs-core';

/**
 * Distillation loss terms, pure functions on tensors. Every function takes only the rows that count
 * (callers gather the positions that have a teacher row and drop padding), so masking is "which rows
 * you pass"; an empty batch ([0, ...]) gives a zero loss rather than NaN.
 *
 * - hidden alignment (SLMRec, Xu et al., ICLR 2025): 1 - cosine and squared L2 between the projected
 *   student state and the teacher state at the same (user, position);
 * - soft labels: KL at temperature T over the teacher's top-K (Hinton et al.), or the importance-weighted
 *   ranking distillation of DLLM2Rec (Cui et al., RecSys 2024);
 * - item-embedding distillation (DLLM2Rec): student item embeddings toward projected teacher text embeddings.
 */

const EPS = 1e-8;

function meanOrZero(perRow: tf.Tensor1D): tf.Scalar {
  return perRow.shape[0] === 0 ? tf.scalar(0) : tf.mean(perRow);
}

/** Per-row cosine similarity of a and b: [M, H] x [M, H] -> [M]. */
export function rowCosine(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor1D {
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
