import * as tf from '@tensorflow/tfjs-core';
import { itemCrossEntropy, teacherAtTemperature } from '../losses.js';

/**
 * EMKD's loss terms as pure functions on tensors (rows that count only; an empty input gives 0, not NaN).
 * Du et al., "Ensemble Modeling with Contrastive Knowledge Distillation for Sequential Recommendation",
 * SIGIR 2023; reference code hw-du/EMKD (trainers/bert.py).
 *
 * - L1 maskedItemCE: cross-entropy of the original item at each masked slot, over items 1..N;
 * - L2 attributeCE: cross-entropy of the next item's attribute classes (soft target: uniform over its classes);
 * - L3 / L4 infoNCE: anchor row b vs positive row b among the positive rows of the whole batch, cosine / T;
 * - L5 mutualKL: symmetric KL between two networks' distributions at temperature T, each direction pulling
 *   only the network being taught (the other side is a constant, as the reference's .detach()); teacherKL: KL
 *   from the teacher's cached top-K distribution (a member that does not move) to a network's, over that top-K.
 */

const EPS = 1e-8;

/**
 * Identity forward, zero gradient backward (tfjs-core has no stopGradient). A local copy of the one in
 * src/distill/hooks.ts (which imports this module; importing it back would make a cycle).
 */
export const stopGradient = tf.customGrad((x) => ({ value: tf.clone(x as tf.Tensor), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) })) as <T extends tf.Tensor>(x: T) => T;

/** A zero that depends on x (a term with no rows keeps a gradient path to its inputs). */
export const zeroOf = (x: tf.Tensor): tf.Scalar => tf.mul(tf.sum(x), 0) as tf.Scalar;

/** L1: h [M, D] at the masked slots, E [N + 1, D] the network's item table, originals [M] item ids 1..N. */
export function maskedItemCE(h: tf.Tensor2D, E: tf.Tensor2D, originals: Int32Array): tf.Scalar {
  if (h.shape[0] === 0) return tf.add(zeroOf(h), zeroOf(E));
  return itemCrossEntropy(tf.matMul(h, tf.transpose(E)) as tf.Tensor2D, tf.tensor1d(originals, 'int32'));
}

/** L2: mean over rows of -sum_a t_a log softmax(logits)_a. logits [M, A], targets [M, A] rows summing to 1. */
export function attributeCE(logits: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar {
  if (logits.shape[0] === 0) return zeroOf(logits);
  return tf.neg(tf.mean(tf.sum(tf.mul(targets, tf.logSoftmax(logits)), -1))) as tf.Scalar;
}

/** Row-normalised x (cosine geometry): x / max(|x|, eps). [M, D] -> [M, D]. */
function unit(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.maximum(tf.sqrt(tf.sum(tf.square(x), -1, true)), EPS)) as tf.Tensor2D;
}

/**
 * L3 / L4: InfoNCE with cosine similarity at temperature T. anchor [B, D] and positive [B, D] are the same B
 * sequences (row b of each); the logits of anchor b are cos(a_b, p_j) / T over every j in the batch, its
 * positive is j = b and the other sequences' rows are the negatives:
 *   L = mean_b -log( exp(cos(a_b, p_b) / T) / sum_j exp(cos(a_b, p_j) / T) ).
 * (The reference code compares with the other sequences' ANCHORS and keeps the positive out of the denominator;
 * this is the standard form, which is bounded below by 0.) Fewer than 2 rows: 0 (nothing to contrast).
 */
export function infoNCE(anchor: tf.Tensor2D, positive: tf.Tensor2D, temperature: number): tf.Scalar {
  const B = anchor.shape[0];
  if (B < 2) return tf.add(zeroOf(anchor), zeroOf(positive));
  const logits = tf.div(tf.matMul(unit(anchor), unit(positive), false, true), temperature) as tf.Tensor2D; // [B, B]
  const logp = tf.logSoftmax(logits);
  return tf.neg(tf.mean(tf.sum(tf.mul(logp, tf.eye(B)), -1))) as tf.Scalar;
}

/** sum_c q (log q - logp) per row, averaged over rows; q is a constant distribution [M, C], logp [M, C]. */
function klRows(q: tf.Tensor2D, logp: tf.Tensor2D): tf.Scalar {
  return tf.mean(tf.sum(tf.mul(q, tf.sub(tf.log(tf.maximum(q, 1e-12)), logp)), -1)) as tf.Scalar;
}

/**
 * L5 between two networks: logits a, b [M, C] over the same classes (the items 1..N), temperature T:
 *   0.5 * ( KL(sg(softmax(b / T)) || softmax(a / T)) + KL(sg(softmax(a / T)) || softmax(b / T)) ),
 * mean over rows; sg = stop gradient, so each direction teaches one network toward the other's current
 * distribution (mutual learning as in the reference code's compute_kl_div; no T^2 factor, as there).
 */
export function mutualKL(a: tf.Tensor2D, b: tf.Tensor2D, temperature: number): tf.Scalar {
  if (a.shape[0] === 0) return tf.add(zeroOf(a), zeroOf(b));
  const la = tf.logSoftmax(tf.div(a, temperature)) as tf.Tensor2D;
  const lb = tf.logSoftmax(tf.div(b, temperature)) as tf.Tensor2D;
  const pa = stopGradient(tf.exp(la)) as tf.Tensor2D;
  const pb = stopGradient(tf.exp(lb)) as tf.Tensor2D;
  return tf.mul(tf.add(klRows(pb, la), klRows(pa, lb)), 0.5) as tf.Scalar;
}

/**
 * L5's fixed member: KL(q_teacher || softmax(s_K / T)) over the teacher's cached top-K, mean over rows, where
 * s_K [M, K] are the network's logits at the teacher's top-K items and q_teacher the cached probabilities
 * [M, K] (computed at cacheTemperature) brought to temperature T and renormalised over the top-K, as the kd
 * term reads them (src/distill/losses.ts teacherAtTemperature). The teacher gets no gradient (it is data).
 */
export function teacherKL(studentLogitsK: tf.Tensor2D, teacherProbs: tf.Tensor2D, temperature: number, cacheTemperature: number): tf.Scalar {
  if (studentLogitsK.shape[0] === 0) return zeroOf(studentLogitsK);
  const q = teacherAtTemperature(teacherProbs, cacheTemperature, temperature);
  return klRows(q, tf.logSoftmax(tf.div(studentLogitsK, temperature)) as tf.Tensor2D);
}
