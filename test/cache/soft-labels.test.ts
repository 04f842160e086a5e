import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { softLabelsChunk, topK } from '../../src/cache/soft-labels.js';
import { softLabelsFromLogits } from '../../src/teacher/head.js';
import { makeRng } from '../../src/util/rng.js';

beforeAll(async () => {
  await initBackend('cpu');
});

describe('softLabelsChunk', () => {
  it('top-K by hand: value descending, ties by the lower index', () => {
    // row 0: ties at 0.5 (cols 1, 3, 4) and 0.2 (cols 0, 5); row 1: all equal
    const x = Float32Array.from([0.2, 0.5, 0.1, 0.5, 0.5, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]);
    expect(topK(x, 2, 6, 4)).toEqual({ index: Int32Array.from([1, 3, 4, 0, 0, 1, 2, 3]), prob: Float32Array.from([0.5, 0.5, 0.5, 0.2, 0.3, 0.3, 0.3, 0.3]) });
    expect(topK(x, 2, 6, 6).index.subarray(0, 6)).toEqual(Int32Array.from([1, 3, 4, 0, 5, 2]));
  });

  it('the bytes of softLabelsFromLogits (ties, temperatures, K up to the whole catalogue)', () => {
    const rng = makeRng(3);
    const B = 7;
    const N = 40;
    for (const [kind, gen] of [['random', () => rng.next() * 6 - 3], ['ties', () => rng.int(4)], ['equal', () => 1]] as const) {
      for (const T of [1, 0.5, 0.7]) {
        for (const K of [1, 5, N + 1, N + 5]) {
          const logits = Float32Array.from({ length: B * (N + 1) }, gen);
          const history = (i: number) => Int32Array.from({ length: i }, (_, t) => 1 + ((t * 7 + i) % N));
          const want = softLabelsFromLogits(logits, B, N, T, K, history);
          const got = softLabelsChunk(logits.slice(), B, N, T, K, history);
          expect(Array.from(got.index), `${kind} T ${T} K ${K}`).toEqual(Array.from(want.index));
          expect(Array.from(got.prob), `${kind} T ${T} K ${K}`).toEqual(Array.from(want.prob));
        }
      }
    }
  });
});
