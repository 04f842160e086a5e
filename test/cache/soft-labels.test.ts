import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { softLabelsFromLogits, topK } from '../../src/teacher/head.js';
import { makeRng } from '../../src/util/rng.js';

/** The oracle: the same masking, then tf.softmax and tf.topk (the implementation before the JS top-K). */
function tfSoftLabels(logits: Float32Array, B: number, N: number, T: number, K: number, history: (i: number) => ArrayLike<number>): { index: Int32Array; prob: Float32Array } {
  const masked = new Float32Array(logits.length);
  for (let i = 0; i < B; i++) {
    const off = i * (N + 1);
    for (let j = 0; j <= N; j++) masked[off + j] = logits[off + j]! / T;
    masked[off] = -1e9;
    const h = history(i);
    for (let t = 0; t < h.length; t++) masked[off + h[t]!] = -1e9;
  }
  return tf.tidy(() => {
    const { values, indices } = tf.topk(tf.softmax(tf.tensor2d(masked, [B, N + 1])), Math.min(K, N + 1), true);
    return { index: indices.dataSync().slice() as Int32Array, prob: values.dataSync().slice() as Float32Array };
  });
}

beforeAll(async () => {
  await initBackend('cpu');
});

describe('softLabelsFromLogits', () => {
  it('top-K by hand: value descending, ties by the lower index', () => {
    // row 0: ties at 0.5 (cols 1, 3, 4) and 0.2 (cols 0, 5); row 1: all equal
    const x = Float32Array.from([0.2, 0.5, 0.1, 0.5, 0.5, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]);
    expect(topK(x, 2, 6, 4)).toEqual({ index: Int32Array.from([1, 3, 4, 0, 0, 1, 2, 3]), prob: Float32Array.from([0.5, 0.5, 0.5, 0.2, 0.3, 0.3, 0.3, 0.3]) });
    expect(topK(x, 2, 6, 6).index.subarray(0, 6)).toEqual(Int32Array.from([1, 3, 4, 0, 5, 2]));
  });

  it('the bytes of tf.softmax + tf.topk (ties, temperatures, K up to the whole catalogue)', () => {
    const rng = makeRng(3);
    const B = 7;
    const N = 40;
    for (const [kind, gen] of [['random', () => rng.next() * 6 - 3], ['ties', () => rng.int(4)], ['equal', () => 1]] as const) {
      for (const T of [1, 0.5, 0.7]) {
        for (const K of [1, 5, N + 1, N + 5]) {
          const logits = Float32Array.from({ length: B * (N + 1) }, gen);
          const history = (i: number) => Int32Array.from({ length: i }, (_, t) => 1 + ((t * 7 + i) % N));
          const want = tfSoftLabels(logits, B, N, T, K, history);
          const got = softLabelsFromLogits(logits.slice(), B, N, T, K, history);
          expect(Array.from(got.index), `${kind} T ${T} K ${K}`).toEqual(Array.from(want.index));
          expect(Array.from(got.prob), `${kind} T ${T} K ${K}`).toEqual(Array.from(want.prob));
        }
      }
    }
  });
});
