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
  return mutualKLSum([a, b], temperature);
}

/**
 * sum_{a < b} mutualKL(logits[a], logits[b], T) over K networks' logits [M, C] at the same rows (pairs in the order
 * (0, 1), (0, 2), ..., (1, 2), ...). Each network's tempered log-softmax is computed once, not once per pair, and the
 * gradient is written out instead of taped: autodiff of the pairwise form kept ~39 [M, C] matrices per pair and
 * carried zero gradients back through every stop-gradient side. With p_n = softmax(z_n / T), l_n = log p_n:
 *   value   = sum_{a<b} 0.5 ( mean_r sum_c p_b (log max(p_b, 1e-12) - l_a) + mean_r sum_c p_a (log max(p_a, 1e-12) - l_b) )
 *   d/dz_a  = 0.5 / (M T) ( p_a rowsum(Q_a) - Q_a ),   Q_a = sum_{b != a} p_b   (the sg sides give nothing)
 * (what autodiff gives: the log-softmax's backward dy - p rowsum(dy) of dy = -0.5 / M Q_a, divided by T).
 * Keeps the K distributions [M, C] for the backward pass. Fewer than 2 networks or no rows: 0.
 */
export function mutualKLSum(logits: tf.Tensor2D[], temperature: number): tf.Scalar {
  const K = logits.length;
  if (K < 2 || logits[0]!.shape[0] === 0) return logits.reduce((s, z) => tf.add(s, zeroOf(z)), tf.scalar(0)) as tf.Scalar;
  const M = logits[0]!.shape[0];
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const zs = args.slice(0, K) as tf.Tensor2D[];
    const save = args[K] as tf.GradSaveFunc;
    const { value, ps } = tf.tidy(() => {
      const ls = zs.map((z) => tf.logSoftmax(tf.div(z, temperature)) as tf.Tensor2D);
      const ps = ls.map((l) => tf.exp(l) as tf.Tensor2D);
      const lq = ps.map((p) => tf.log(tf.maximum(p, 1e-12)) as tf.Tensor2D);
      const kl = (q: number, l: number) => tf.mean(tf.sum(tf.mul(ps[q]!, tf.sub(lq[q]!, ls[l]!)), -1)) as tf.Scalar; // KL(p_q || p_l)
      let value: tf.Scalar = tf.scalar(0);
      for (let a = 0; a < K; a++) for (let b = a + 1; b < K; b++) value = tf.add(value, tf.mul(tf.add(kl(b, a), kl(a, b)), 0.5));
      return { value, ps };
    });
    save(ps);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const scale = tf.mul(dy, 0.5 / (M * temperature));
        return saved.map((pa, a) => tf.tidy(() => {
          let Q = saved[a === 0 ? 1 : 0]!;
          for (let b = a === 0 ? 2 : 1; b < K; b++) if (b !== a) Q = tf.add(Q, saved[b]!);
          return tf.mul(tf.sub(tf.mul(pa, tf.sum(Q, -1, true)), Q), scale);
        }));
      },
    };
  });
  return f(...logits) as tf.Scalar;
}

/**
 * The output layer at the selected rows: h [M, D] against the item table E [N + 1, D], the items 1..N only (the
 * padding column 0 is no class): h E^T without column 0, [M, N]; the value of tf.slice(tf.matMul(h, tf.transpose(E)),
 * [0, 1], [-1, -1]). The gradient is written with plain products (dh = dy' E, dE = dy'^T h with dy' = dy padded by a
 * zero column 0): autodiff's products carry transpose flags, which the wasm backend runs ~7x slower than plain ones
 * (tfjs 4.22: 25-29 ms against 2-4 ms at M 40, D 64, N 12,101); they were most of an EMKD cloze step.
 */
export function itemLogits(h: tf.Tensor2D, E: tf.Tensor2D): tf.Tensor2D {
  const f = tf.customGrad((hh: tf.Tensor | tf.GradSaveFunc, ee: tf.Tensor | tf.GradSaveFunc, save: tf.Tensor | tf.GradSaveFunc) => {
    (save as tf.GradSaveFunc)([hh as tf.Tensor, ee as tf.Tensor]);
    const value = tf.tidy(() => tf.slice(tf.matMul(hh as tf.Tensor2D, tf.transpose(ee as tf.Tensor2D)), [0, 1], [-1, -1]));
    return {
      value,
      gradFunc: (dy: tf.Tensor, [hs, es]: tf.Tensor[]) => tf.tidy(() => {
        const full = tf.pad(dy as tf.Tensor2D, [[0, 0], [1, 0]]); // [M, N + 1]
        return [tf.matMul(full, es as tf.Tensor2D), tf.matMul(tf.transpose(full), hs as tf.Tensor2D)];
      }),
    };
  });
  return f(h, E) as tf.Tensor2D;
}

/**
 * Cross-entropy of the items 1..N: logits [M, N] (column c is item c + 1), targets [M] item ids 1..N, mean over
 * rows: the value of src/distill/losses.ts itemCrossEntropy on [M, N + 1] scores whose column 0 is dropped. The
 * gradient is written out, (softmax(z) - onehot) / M, so only the softmax [M, N] is kept for the backward pass.
 */
export function itemsCE(logits: tf.Tensor2D, targets: Int32Array): tf.Scalar {
  const [M, N] = logits.shape;
  if (M === 0) return zeroOf(logits);
  const f = tf.customGrad((z: tf.Tensor | tf.GradSaveFunc, save: tf.Tensor | tf.GradSaveFunc) => {
    const { value, p } = tf.tidy(() => {
      const logp = tf.logSoftmax(z as tf.Tensor2D);
      const at = tf.gather(tf.reshape(logp, [M * N]), tf.tensor1d(Int32Array.from(targets, (t, r) => r * N + t - 1), 'int32'));
      return { value: tf.neg(tf.mean(at)) as tf.Scalar, p: tf.exp(logp) };
    });
    (save as tf.GradSaveFunc)([p]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, [p]: tf.Tensor[]) => tf.tidy(() => {
        // (tf.oneHot with dtype 'float32' gives all zeros on the wasm backend, tfjs 4.22: a scatter instead)
        const at = tf.tensor2d(Int32Array.from({ length: 2 * M }, (_, i) => (i % 2 === 0 ? i / 2 : targets[(i - 1) / 2]! - 1)), [M, 2], 'int32');
        const onehot = tf.scatterND(at, tf.ones([M]), [M, N]);
        return tf.mul(tf.sub(p!, onehot), tf.div(dy, M));
      }),
    };
  });
  return f(logits) as tf.Scalar;
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
