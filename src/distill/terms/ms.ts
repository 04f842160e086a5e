import * as tf from '@tensorflow/tfjs-core';
import { RecdistillError } from '../../errors.js';
import { itemCrossEntropy } from '../losses.js';
import type { TermModule } from './types.js';
import { connect, fmtPairs, indicesOf } from './util.js';

/**
 * Multi-supervision (SLMRec): each aligned intermediate block's states, through an adapter D -> D (identity at
 * start), scored against the item embeddings like the last block's and trained on the next item (CE), averaged over
 * the intermediate pairs.
 */
export const msTerm: TermModule = {
  name: 'ms', lambda: 'lambdaMs', ablateLambda: 0.5, inAll: true, readsTeacher: false, ownAdapter: false,
  what: 'multi-supervision: adapters on the aligned intermediate blocks, trained on the next item (SLMRec)',
  check(s) {
    if (s.msPairs.length === 0) {
      throw new RecdistillError('E_USAGE', `--lambda-ms needs an aligned intermediate student block (the student has ${s.blocks} block(s); aligned: ${fmtPairs(s.pairs, s.reader.layers)}); use --align or more --blocks.`);
    }
  },
  create(s) {
    const { D } = s;
    const adapters = s.msPairs.map((p) => ({ w: s.variable(`ms${p.block}/w`, tf.eye(D)), b: s.variable(`ms${p.block}/b`, tf.zeros([D])) }));
    return {
      compute(st) {
        const vs = indicesOf(st.valid);
        const vsT = tf.tensor1d(vs, 'int32');
        const tgt = tf.tensor1d(Int32Array.from(vs, (i) => st.targets[i]!), 'int32');
        let ms: tf.Scalar = tf.scalar(0);
        s.msPairs.forEach((p, i) => {
          const a = tf.add(tf.matMul(tf.gather(st.flatFor('ms', p.block), vsT), adapters[i]!.w), adapters[i]!.b) as tf.Tensor2D; // [Mv, D]
          ms = tf.add(ms, itemCrossEntropy(st.scoresFor('ms', a), tgt)); // scores: [Mv, N+1], padding column excluded
        });
        return connect(tf.div(ms, s.msPairs.length), adapters.map((a) => a.w));
      },
    };
  },
};
