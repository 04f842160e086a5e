import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/backend/index.js';
import {
  cosineDistance,
  crossEntropy,
  embeddingDistance,
  klTopK,
  l2Distance,
  rankingLoss,
  rankingWeights,
  teacherAtTemperature,
  topKMembership,
} from '../../src/distill/losses.js';

const t2 = (rows: number[][]) => tf.tensor2d(rows);
const val = (s: tf.Tensor) => s.dataSync()[0]!;

beforeAll(async () => {
  await initBackend('cpu');
});

describe('hidden alignment (SLMRec)', () => {
  it('1 - cosine, averaged over rows', () => {
    // cos([1,0],[0,1]) = 0 -> 1; cos([1,1],[1,1]) = 1 -> 0; mean 0.5
    expect(val(cosineDistance(t2([[1, 0], [1, 1]]), t2([[0, 1], [1, 1]])))).toBeCloseTo(0.5, 6);
    // cos([3,4],[4,3]) = 24/25 -> 0.04; scale does not matter
    expect(val(cosineDistance(t2([[3, 4]]), t2([[40, 30]])))).toBeCloseTo(0.04, 6);
  });

  it('squared L2 per dimension, averaged over rows', () => {
    // row 1: ((1-3)^2 + (2-5)^2) / 2 = 6.5; row 2: (1 + 1) / 2 = 1; mean 3.75
    expect(val(l2Distance(t2([[1, 2], [0, 0]]), t2([[3, 5], [1, 1]])))).toBeCloseTo(3.75, 6);
  });

  it('empty batches (every position masked) give 0, not NaN', () => {
    const e = tf.zeros([0, 3]) as tf.Tensor2D;
    expect(val(cosineDistance(e, e))).toBe(0);
    expect(val(l2Distance(e, e))).toBe(0);
    expect(val(klTopK(tf.zeros([0, 2]) as tf.Tensor2D, tf.zeros([0, 2]) as tf.Tensor2D, 2))).toBe(0);
    expect(val(crossEntropy(tf.zeros([0, 4]) as tf.Tensor2D, tf.zeros([0], 'int32') as tf.Tensor1D))).toBe(0);
  });

  it('gradient of Dcos is zero when student and teacher are parallel, non-zero otherwise', () => {
    const g = tf.grad((a: tf.Tensor) => cosineDistance(a as tf.Tensor2D, t2([[2, 0]])));
    for (const v of g(t2([[5, 0]])).dataSync()) expect(Math.abs(v)).toBeLessThan(1e-6);
    // d/da (1 - a.b/|a||b|) at a=[1,1], b=[1,0]: -(b/|a||b| - (a.b) a/(|a|^3 |b|)) = [-(1/√2 - 1/(2√2)), 1/(2√2)]
    const d = g(t2([[1, 1]])).dataSync();
    expect(d[0]).toBeCloseTo(-1 / (2 * Math.SQRT2), 5);
    expect(d[1]).toBeCloseTo(1 / (2 * Math.SQRT2), 5);
  });
});

describe('soft labels: KL at temperature over the teacher top-K', () => {
  it('teacher probabilities re-tempered: softmax(log p * T0 / T)', () => {
    // p = [0.8, 0.2] at T0 = 1, T = 2 -> sqrt(p) normalised = [2/3, 1/3]; un-normalised top-K gives the same
    expect(Array.from(teacherAtTemperature(t2([[0.8, 0.2]]), 1, 2).dataSync())).toEqual([expect.closeTo(2 / 3, 6), expect.closeTo(1 / 3, 6)]);
    expect(Array.from(teacherAtTemperature(t2([[0.4, 0.1]]), 1, 2).dataSync())).toEqual([expect.closeTo(2 / 3, 6), expect.closeTo(1 / 3, 6)]);
  });

  it('T^2 * KL(q || softmax(s/T)) with a hand-computed value', () => {
    // q = [2/3, 1/3]; s = [0, 0] -> [1/2, 1/2]; KL = 2/3 ln(4/3) + 1/3 ln(2/3) = 0.0566330; x4 = 0.2265320
    expect(val(klTopK(t2([[0, 0]]), t2([[0.8, 0.2]]), 2))).toBeCloseTo(0.226532, 5);
    // s/T = [ln 2, 0] -> softmax [2/3, 1/3] = q: KL 0
    expect(val(klTopK(t2([[2 * Math.LN2, 0]]), t2([[0.8, 0.2]]), 2))).toBeCloseTo(0, 6);
    // mean over rows
    expect(val(klTopK(t2([[0, 0], [2 * Math.LN2, 0]]), t2([[0.8, 0.2], [0.8, 0.2]]), 2))).toBeCloseTo(0.113266, 5);
  });

  it('cache temperature is undone: probs cached at T0 = 2 equal probs^2 at T0 = 1', () => {
    const a = val(klTopK(t2([[0.3, -0.2, 1]]), t2([[0.5, 0.3, 0.2]]), 3, 2));
    const sq = [0.25, 0.09, 0.04];
    const b = val(klTopK(t2([[0.3, -0.2, 1]]), t2([sq]), 3, 1));
    expect(a).toBeCloseTo(b, 5);
  });
});

describe('DLLM2Rec importance-weighted ranking distillation', () => {
  it('weights = normalise(γp exp(-r/λ) + γc conf + γo agreement), hand-computed', () => {
    // pos = [e^-1, e^-2] / sum = [0.731059, 0.268941]; conf = [0.6, 0.2] / 0.8 = [0.75, 0.25]; agreement [0, 1]
    // row = [0.3*0.731059 + 0.375, 0.3*0.268941 + 0.125 + 0.1] = [0.594318, 0.305682] / 0.9
    const w = rankingWeights(new Float32Array([0.6, 0.2]), new Uint8Array([0, 1]), 2, {
      lambda: 1,
      gammaPosition: 0.3,
      gammaConfidence: 0.5,
      gammaConsistency: 0.1,
    });
    expect(w[0]).toBeCloseTo(0.660353, 5);
    expect(w[1]).toBeCloseTo(0.339647, 5);
  });

  it('position weight alone decays as exp(-r / λ)', () => {
    const w = rankingWeights(new Float32Array([0.2, 0.3, 0.5]), new Uint8Array(3), 3, { lambda: 2, gammaPosition: 1, gammaConfidence: 0, gammaConsistency: 0 });
    expect(w[1]! / w[0]!).toBeCloseTo(Math.exp(-0.5), 5);
    expect(w[2]! / w[1]!).toBeCloseTo(Math.exp(-0.5), 5);
    expect(w[0]! + w[1]! + w[2]!).toBeCloseTo(1, 6);
  });

  it('agreement: which teacher items are in the student top-K', () => {
    // student top-2 of row 0 = {4, 1}; teacher [1, 3] -> [1, 0]; row 1 top = {0, 2}, teacher [2, 0] -> [1, 1]
    expect(Array.from(topKMembership(new Int32Array([4, 1, 0, 2]), 2, new Int32Array([1, 3, 2, 0]), 2))).toEqual([1, 0, 1, 1]);
  });

  it('loss = -sum_k w_k log p(i_k)', () => {
    // -(0.6 ln 0.5 + 0.4 ln 0.25) = 0.970406
    expect(val(rankingLoss(t2([[Math.log(0.5), Math.log(0.25)]]), t2([[0.6, 0.4]])))).toBeCloseTo(0.970406, 5);
  });
});

describe('gather, cross-entropy, embedding distillation', () => {
  it('cross-entropy of uniform logits is ln C', () => {
    expect(val(crossEntropy(t2([[0, 0, 0, 0]]), tf.tensor1d([1], 'int32')))).toBeCloseTo(Math.log(4), 6);
    // logits [ln 3, 0] target 0 -> -ln(3/4)
    expect(val(crossEntropy(t2([[Math.log(3), 0]]), tf.tensor1d([0], 'int32')))).toBeCloseTo(-Math.log(0.75), 6);
  });

  it('embedding distance is 1 - cos per item, mean', () => {
    expect(val(embeddingDistance(t2([[1, 0], [0, 2]]), t2([[-1, 0], [0, 1]])))).toBeCloseTo(1, 6); // (2 + 0) / 2
  });
});

describe('itemCrossEntropy (multi-supervision)', () => {
  it('ignores the padding column: hand-computed CE over items 1..N', async () => {
    const tf = await import('@tensorflow/tfjs-core');
    const { itemCrossEntropy } = await import('../../src/distill/losses.js');
    // Row 0: scores [pad 50, 1, 2, 3], target item 3; row 1: [pad 50, 0, 0, 0], target item 1.
    const s = tf.tensor2d([50, 1, 2, 3, 50, 0, 0, 0], [2, 4]);
    const got = itemCrossEntropy(s, tf.tensor1d([3, 1], 'int32')).dataSync()[0]!;
    const row0 = -(3 - Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)));
    const row1 = Math.log(3);
    expect(got).toBeCloseTo((row0 + row1) / 2, 5);
  });
});
