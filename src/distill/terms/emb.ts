import * as tf from '@tensorflow/tfjs-core';
import type { PreparedDataset } from '../../data/types.js';
import { embeddingDistance } from '../losses.js';
import type { TermModule } from './types.js';
import { gatherRowsJs } from './util.js';

/**
 * Item-embedding distillation (DLLM2Rec): the student's embeddings of the batch's items against the teacher's item
 * text embeddings (mean-centred), mapped into the student's item space by a learned [H, D] matrix.
 */
export const embTerm: TermModule = {
  name: 'emb', lambda: 'lambdaEmb', ablateLambda: 0.5, inAll: true, readsTeacher: false, ownAdapter: false,
  what: 'item embeddings against the teacher\'s item text embeddings (DLLM2Rec)',
  create(s) {
    const { D, H } = s;
    const teacherItems = centredRows(s.reader.itemEmbeddings(), H); // [N+1, H]
    const embW = s.variable('emb/w', tf.randomNormal([H, D], 0, 1 / Math.sqrt(H), 'float32', s.seed + 7)); // [H, D]
    return {
      compute(st) {
        const ids = batchItems(s.dataset, st.ctx.users, st.ctx.positions, st.targets);
        const es = tf.gather(st.embFor('emb'), tf.tensor1d(ids, 'int32')) as tf.Tensor2D; // [n, D]
        const et = tf.tensor2d(gatherRowsJs(teacherItems, H, ids), [ids.length, H]); // [n, H]
        return embeddingDistance(es, tf.matMul(et, embW));
      },
    };
  },
};

/** Unique item ids in the batch (inputs and targets), ascending, padding excluded. */
function batchItems(dataset: PreparedDataset, users: Int32Array, positions: Int32Array, targets: Int32Array): Int32Array {
  const B = users.length;
  const L = positions.length / B;
  const set = new Set<number>();
  for (let b = 0; b < B; b++) {
    const seq = dataset.users[users[b]!]!.items;
    for (let l = 0; l < L; l++) {
      const p = positions[b * L + l]!;
      if (p >= 0) set.add(seq[p]!);
      const t = targets[b * L + l]!;
      if (t > 0) set.add(t);
    }
  }
  set.delete(0);
  return Int32Array.from([...set].sort((a, b) => a - b));
}

/** Subtract the mean over rows 1..N (LLM embeddings share a large common direction that cosine would reward). */
function centredRows(m: Float32Array, width: number): Float32Array {
  const n = m.length / width - 1;
  const mean = new Float64Array(width);
  for (let i = 1; i <= n; i++) for (let d = 0; d < width; d++) mean[d]! += m[i * width + d]! / n;
  const out = new Float32Array(m.length);
  for (let i = 1; i <= n; i++) for (let d = 0; d < width; d++) out[i * width + d] = m[i * width + d]! - mean[d]!;
  return out;
}
