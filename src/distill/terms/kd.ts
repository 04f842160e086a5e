import * as tf from '@tensorflow/tfjs-core';
import { RecdistillError } from '../../errors.js';
import { klTopK, rankingLoss, rankingWeights, topKMembership } from '../losses.js';
import type { TermModule, TermSetup } from './types.js';

/**
 * Soft labels: the student's scores at the teacher's top-K items against the teacher's probabilities, as KL at
 * --kd-temperature (Hinton) or DLLM2Rec's importance-weighted ranking loss (--kd ranking), on the last block.
 */
export const kdTerm: TermModule = {
  name: 'kd', lambda: 'lambdaKd', ablateLambda: 1, inAll: true, readsTeacher: true, ownAdapter: true,
  what: 'soft labels: KL over the teacher\'s top-K at a temperature, or DLLM2Rec\'s ranking loss (--kd ranking)',
  check(s) {
    if (!s.reader.hasSoftLabels) throw new RecdistillError('E_INPUT', `teacher cache ${s.reader.dir} has no soft labels; --lambda-kd needs them (finish teacher:cache).`);
    if (s.K > s.reader.k) throw new RecdistillError('E_USAGE', `--kd-top-k ${s.K} exceeds the cached top-K (${s.reader.k}) of ${s.reader.dir}.`);
  },
  create(s) {
    return {
      compute(st) {
        if (!st.tb || !st.slotsT) return undefined;
        const M = st.tb.slots.length;
        const E = st.embFor('kd');
        if (M === 0) return tf.mul(tf.sum(E), 0) as tf.Scalar;
        const h = tf.gather(st.flatFor('kd', s.blocks - 1), st.slotsT) as tf.Tensor2D; // [M, D]
        return kdLoss(s, st.adapted('kd', h), E, (x) => st.scoresFor('kd', x), st.tb.topkIndex!, st.tb.topkProb!, M);
      },
      provenance() {
        const { f, K, reader } = s;
        return {
          kd: { loss: f.kd, k: K, temperature: f.kd === 'kl' ? f.kdTemperature : undefined, cacheTemperature: reader.temperature },
          ranking: f.kd === 'ranking' ? { lambda: f.rankLambda, gammaPosition: f.gammaPosition, gammaConfidence: f.gammaConfidence, gammaConsistency: f.gammaConsistency } : undefined,
        };
      },
    };
  },
};

/**
 * Student logits at the teacher's top-K, [M, K]: h . E[i_k]. The student scores are h . E^T (the output layer
 * shares the item embeddings, src/student/training/hooks.ts), so gathering K rows of E costs M*K*D instead of the
 * M*(N+1)*D of full scores, and its gradient is a K-row scatter instead of a dense [M, N+1] one.
 */
function logitsAtK(E: tf.Tensor2D, h: tf.Tensor2D, idxT: tf.Tensor2D, M: number, K: number, D: number): tf.Tensor2D {
  const eK = tf.reshape(tf.gather(E, tf.reshape(idxT, [M * K])), [M, K, D]); // [M, K, D]
  return tf.sum(tf.mul(tf.expandDims(h, 1), eK), -1) as tf.Tensor2D; // [M, K]
}

/** E: the item embeddings (stopped when kd is unshared), scoresOf: the student's full scores through that E. */
function kdLoss(s: TermSetup, h: tf.Tensor2D, E: tf.Tensor2D, scoresOf: (h: tf.Tensor2D) => tf.Tensor2D, idx: Int32Array, prob: Float32Array, M: number): tf.Scalar {
  const { f, K } = s;
  const idxT = tf.tensor2d(idx, [M, K], 'int32');
  const sK = logitsAtK(E, h, idxT, M, K, s.D); // [M, K]
  if (f.kd === 'kl') return klTopK(sK, tf.tensor2d(prob, [M, K]), f.kdTemperature, s.reader.temperature);
  // Ranking (DLLM2Rec) needs the full softmax: log p(i_k) = s_k - logsumexp(s) with padding item 0 masked out;
  // agreement with the student's own top-K is a constant weight (no gradient through topk).
  const scores = scoresOf(h); // [M, N+1]
  const masked = tf.add(scores, tf.mul(tf.oneHot(tf.tensor1d([0], 'int32'), scores.shape[1]), -1e9)) as tf.Tensor2D;
  const studentTop = tf.topk(masked, K).indices.dataSync() as Int32Array;
  const w = rankingWeights(prob, topKMembership(studentTop, K, idx, K), K, {
    lambda: f.rankLambda,
    gammaPosition: f.gammaPosition,
    gammaConfidence: f.gammaConfidence,
    gammaConsistency: f.gammaConsistency,
  });
  const logp = tf.sub(sK, tf.logSumExp(masked, -1, true)) as tf.Tensor2D; // [M, K]
  return rankingLoss(logp, tf.tensor2d(w, [M, K]));
}
