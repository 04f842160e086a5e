import * as tf from '@tensorflow/tfjs-core';
import type { Rng } from '../../util/rng.js';

/**
 * Next-item losses over the hidden states of the NON-padding positions only.
 * h: [P, D] hidden states, targets: [P] item ids (1..N), itemEmb: [N + 1, D] (row 0 = padding, never a class).
 * - 'ce':      full softmax cross-entropy over the whole catalogue (default; converges fastest).
 * - 'sampled': sampled softmax with K shared negatives (uniform or popularity^alpha), logQ-corrected
 *              (Bengio & Senecal 2008; Yi et al. 2019): logits o_j - log(K q_j), accidental hits masked.
 * - 'bce':     SASRec's original loss: one random negative per position, -log s(o+) - log(1 - s(o-)).
 * All return the mean over the P positions.
 */

/** A forward pass that returns its value and its hand-written gradient (tf.customGrad's contract). */
type GradBody = (...args: never[]) => { value: tf.Tensor; gradFunc: (...a: never[]) => tf.Tensor | tf.Tensor[] };

/**
 * tf.customGrad for a body whose arguments (n tensors, then tfjs's save function) its typings cannot express: the
 * one cast of a custom gradient in the project; `Op` is the signature the caller sees.
 */
function customGradient<Op extends (...args: tf.Tensor[]) => tf.Tensor>(body: GradBody): Op {
  return tf.customGrad(body as unknown as Parameters<typeof tf.customGrad>[0]) as Op;
}

/**
 * log(sum(exp(x), -1)) for x [P, C] with a hand-written gradient dy * softmax(x). The value comes from the
 * softmax kernel as max(x) - log(max(softmax(x))) (exact: the max column has probability exp(0)/sum), so the
 * [P, C] tensor is swept by one softmax and one max instead of sub/exp/sum/log passes; the gradient reuses the
 * saved softmax (one multiply). Elementwise passes over [P, C] dominate on wasm (~5 ns per element).
 */
export const logSumExp = customGradient<(x: tf.Tensor) => tf.Tensor>((x: tf.Tensor, save: tf.GradSaveFunc) => {
  const sm = tf.softmax(x);
  const value = tf.sub(tf.max(x, -1), tf.log(tf.max(sm, -1)));
  save([sm]);
  return {
    value,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(tf.expandDims(dy, -1), saved[0]!),
  };
});

/** Row-wise dot product of h [P, D] with the embeddings of `ids` [P] -> [P]. */
function dotWith(h: tf.Tensor2D, itemEmb: tf.Tensor, ids: tf.Tensor1D): tf.Tensor1D {
  return tf.sum(tf.mul(h, tf.gather(itemEmb, ids)), -1) as tf.Tensor1D;
}

/**
 * Full softmax CE over items 1..N (row 0 of the embeddings, padding, is not a class), as one custom-gradient op
 * over (h [P, D], itemEmb [N + 1, D]) so that the [P, N] tensors are touched as few times as possible:
 * forward = one matmul, one softmax, two row maxes; backward = two matmuls that read the saved softmax as is.
 * (Generic autodiff here costs ~3x: clones of saved tensors, max-gradient masks, broadcasting sums.)
 * The softmax and two small tensors are kept across the tape without `save` (which clones them) and freed by
 * the gradient; call this
 * only under a gradient tape (variableGrads), otherwise use `fullSoftmaxCEValue`.
 *
 * `smoothing` e (label smoothing, Szegedy et al. 2016, as torch's CrossEntropyLoss(label_smoothing=e) over the
 * N real classes): the target distribution is (1 - e) on the target plus e / N on each of items 1..N (padding
 * gets nothing), so the loss is lse - (1 - e) o_t - e mean_j o_j, with mean_j o_j = h . mean_j E_j.
 */
export function fullSoftmaxCE(h: tf.Tensor2D, targets: tf.Tensor1D, itemEmb: tf.Tensor, smoothing = 0): tf.Scalar {
  if (smoothing > 0) return smoothedSoftmaxCE(h, targets, itemEmb, smoothing);
  const op = customGradient<(a: tf.Tensor, b: tf.Tensor) => tf.Scalar>((hIn: tf.Tensor, E: tf.Tensor) => {
    const [N1, D] = E.shape as [number, number];
    const P = hIn.shape[0]!;
    const out = tf.keep(tf.slice(E, [1, 0], [N1 - 1, D])); // [N, D]
    const logits = tf.matMul(hIn as tf.Tensor2D, tf.transpose(out)); // [P, N]; explicit transpose = fast wasm path
    const sm = tf.keep(tf.softmax(logits));
    const lse = tf.sub(tf.max(logits, -1), tf.log(tf.max(sm, -1))); // [P], exact log-sum-exp
    const tgtEmb = tf.keep(tf.gather(E, targets)); // [P, D]
    // The tape's tidy frees the op's inputs after the forward pass unless kept: keep small copies.
    const hK = tf.keep(tf.clone(hIn)) as tf.Tensor2D;
    const tK = tf.keep(tf.clone(targets)) as tf.Tensor1D;
    const value = tf.mean(tf.sub(lse, tf.sum(tf.mul(hIn, tgtEmb), -1)));
    const gradFunc = (dy: tf.Tensor) => {
      const scale = tf.div(dy, P); // d mean
      // The [P, N] softmax is used as is: the scale goes on the small [P, D] / [D, N] sides, and dOut is computed
      // as (hK^T sm)^T, so no [P, N] tensor is scaled or transposed (each such pass costs about as much as a matmul).
      const hs = tf.mul(hK, scale); // [P, D]
      const dh = tf.mul(tf.sub(tf.matMul(sm, out), tgtEmb), scale); // [P, D]
      const dOut = tf.transpose(tf.matMul(tf.transpose(hs), sm)); // [D, N] -> [N, D]
      sm.dispose();
      const dTgt = tf.unsortedSegmentSum(hs, tK, N1); // [N + 1, D]
      const dE = tf.sub(tf.concat([tf.zeros([1, D]), dOut], 0), dTgt);
      for (const t of [out, tgtEmb, hK, tK]) t.dispose();
      return [dh, dE];
    };
    return { value, gradFunc };
  });
  return op(h, itemEmb);
}

/**
 * fullSoftmaxCE with label smoothing e > 0 (a separate op, so e = 0 runs exactly the op above).
 * d/dh_p = (sum_j s_pj E_j - (1 - e) E_t - e mean_j E_j) / P;
 * d/dE_j = (sum_p (s_pj - (1 - e) [t_p = j] - e / N) h_p) / P for j >= 1, 0 for the padding row.
 */
function smoothedSoftmaxCE(h: tf.Tensor2D, targets: tf.Tensor1D, itemEmb: tf.Tensor, e: number): tf.Scalar {
  const op = customGradient<(a: tf.Tensor, b: tf.Tensor) => tf.Scalar>((hIn: tf.Tensor, E: tf.Tensor) => {
    const [N1, D] = E.shape as [number, number];
    const N = N1 - 1;
    const P = hIn.shape[0]!;
    const out = tf.keep(tf.slice(E, [1, 0], [N, D])); // [N, D]
    const logits = tf.matMul(hIn as tf.Tensor2D, tf.transpose(out)); // [P, N]
    const sm = tf.keep(tf.softmax(logits));
    const lse = tf.sub(tf.max(logits, -1), tf.log(tf.max(sm, -1))); // [P]
    const tgtEmb = tf.keep(tf.gather(E, targets)); // [P, D]
    const meanOut = tf.keep(tf.mean(out, 0, true)); // [1, D]
    const hK = tf.keep(tf.clone(hIn)) as tf.Tensor2D;
    const tK = tf.keep(tf.clone(targets)) as tf.Tensor1D;
    const tgtLogit = tf.sum(tf.mul(hIn, tgtEmb), -1); // [P]
    const meanLogit = tf.sum(tf.mul(hIn, meanOut), -1); // [P] = mean_j o_pj
    const value = tf.mean(tf.sub(tf.sub(lse, tf.mul(tgtLogit, 1 - e)), tf.mul(meanLogit, e)));
    const gradFunc = (dy: tf.Tensor) => {
      const scale = tf.div(dy, P);
      // As in fullSoftmaxCE: no [P, N] tensor is scaled or transposed.
      const dh = tf.mul(tf.sub(tf.matMul(sm, out), tf.add(tf.mul(tgtEmb, 1 - e), tf.mul(meanOut, e))), scale); // [P, D]
      const hs = tf.mul(hK, scale); // [P, D]
      const uniform = tf.mul(tf.sum(hs, 0, true), e / N); // [1, D]: the e / N share of every real item
      const dOut = tf.sub(tf.transpose(tf.matMul(tf.transpose(hs), sm)), uniform); // [N, D]
      sm.dispose();
      const dTgt = tf.mul(tf.unsortedSegmentSum(hs, tK, N1), 1 - e); // [N + 1, D]
      const dE = tf.sub(tf.concat([tf.zeros([1, D]), dOut], 0), dTgt);
      for (const t of [out, tgtEmb, meanOut, hK, tK]) t.dispose();
      return [dh, dE];
    };
    return { value, gradFunc };
  });
  return op(h, itemEmb);
}

/** The same loss without gradient bookkeeping (monitoring, tests); plain autodiff works through it. */
export function fullSoftmaxCEValue(h: tf.Tensor2D, targets: tf.Tensor1D, itemEmb: tf.Tensor, smoothing = 0): tf.Scalar {
  return tf.tidy(() => {
    const [N1, D] = itemEmb.shape as [number, number];
    const logits = tf.matMul(h, tf.transpose(tf.slice(itemEmb, [1, 0], [N1 - 1, D])));
    const nll = tf.sub(tf.logSumExp(logits, -1), tf.sum(tf.mul(h, tf.gather(itemEmb, targets)), -1));
    if (!(smoothing > 0)) return tf.mean(nll) as tf.Scalar;
    const uniformNll = tf.sub(tf.logSumExp(logits, -1), tf.mean(logits, -1)); // -mean_j log p_j
    return tf.mean(tf.add(tf.mul(nll, 1 - smoothing), tf.mul(uniformNll, smoothing))) as tf.Scalar;
  });
}

/** Proposal distribution for sampled softmax: q_j over items 1..N (q_0 = 0). */
export function proposal(kind: 'uniform' | 'popularity', counts: Float64Array | Float32Array, alpha = 0.75): Float64Array {
  const q = new Float64Array(counts.length);
  let total = 0;
  for (let j = 1; j < counts.length; j++) {
    q[j] = kind === 'uniform' ? 1 : Math.pow(counts[j]! + 1, alpha);
    total += q[j]!;
  }
  for (let j = 1; j < counts.length; j++) q[j] = q[j]! / total;
  return q;
}

/** Draw K ids from q (with replacement) by inverse CDF on a cumulative table. */
export function drawFrom(q: Float64Array, K: number, rng: Rng): Int32Array {
  const cdf = new Float64Array(q.length);
  let acc = 0;
  for (let j = 0; j < q.length; j++) cdf[j] = acc += q[j]!;
  const out = new Int32Array(K);
  for (let k = 0; k < K; k++) {
    const u = rng.next() * acc;
    let lo = 1;
    let hi = q.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    out[k] = lo;
  }
  return out;
}

export function sampledSoftmaxCE(h: tf.Tensor2D, targets: Int32Array, itemEmb: tf.Tensor, q: Float64Array, K: number, rng: Rng): tf.Scalar {
  const negs = drawFrom(q, K, rng);
  const P = targets.length;
  const negIds = tf.tensor1d(negs, 'int32');
  const tgt = tf.tensor1d(targets, 'int32');
  const pos = dotWith(h, itemEmb, tgt); // [P]
  const neg = tf.matMul(h, tf.transpose(tf.gather(itemEmb, negIds))); // [P, K]
  // logQ correction (expected count K q_j) and accidental-hit masking.
  const logQneg = new Float32Array(K);
  for (let k = 0; k < K; k++) logQneg[k] = Math.log(K * q[negs[k]!]!);
  const hit = new Float32Array(P * K);
  for (let p = 0; p < P; p++) for (let k = 0; k < K; k++) if (negs[k] === targets[p]) hit[p * K + k] = -1e9;
  const logQpos = new Float32Array(P);
  for (let p = 0; p < P; p++) logQpos[p] = Math.log(K * q[targets[p]!]!);
  const posC = tf.sub(pos, tf.tensor1d(logQpos));
  const negC = tf.add(tf.sub(neg, tf.tensor2d(logQneg, [1, K])), tf.tensor2d(hit, [P, K]));
  const all = tf.concat([tf.expandDims(posC, 1), negC], 1); // [P, 1 + K]
  return tf.mean(tf.sub(logSumExp(all), posC)) as tf.Scalar;
}

/** SASRec BCE: one negative per position drawn uniformly from items the user has not interacted with. */
export function bceLoss(h: tf.Tensor2D, targets: Int32Array, negatives: Int32Array, itemEmb: tf.Tensor): tf.Scalar {
  const pos = dotWith(h, itemEmb, tf.tensor1d(targets, 'int32'));
  const neg = dotWith(h, itemEmb, tf.tensor1d(negatives, 'int32'));
  // -log s(x) = softplus(-x); -log(1 - s(x)) = softplus(x)
  return tf.mean(tf.add(tf.softplus(tf.neg(pos)), tf.softplus(neg))) as tf.Scalar;
}
