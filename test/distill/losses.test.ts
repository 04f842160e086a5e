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

describe('relational distillation (RKD, Park et al. 2019)', () => {
  const h = (x: number) => (Math.abs(x) < 1 ? 0.5 * x * x : Math.abs(x) - 0.5);
  // Brute force in float64 from the definitions (explicit differences, no Gram matrix, no centring).
  const refDistance = (s: number[][], t: number[][]) => {
    const M = s.length;
    const dist = (x: number[][]) => x.map((a) => x.map((b) => Math.hypot(...a.map((v, k) => v - b[k]!))));
    const norm = (d: number[][]) => {
      let mu = 0;
      for (let i = 0; i < M; i++) for (let j = 0; j < M; j++) if (i !== j) mu += d[i]![j]! / (M * (M - 1));
      return d.map((r) => r.map((v) => v / mu));
    };
    const [ds, dt] = [norm(dist(s)), norm(dist(t))];
    let l = 0;
    for (let i = 0; i < M; i++) for (let j = 0; j < M; j++) if (i !== j) l += h(ds[i]![j]! - dt[i]![j]!) / (M * (M - 1));
    return l;
  };
  /** Triplets whose two teacher sides at the vertex are non-degenerate (the loss leaves collapsed ones out). */
  const refAngle = (s: number[][], t: number[][]) => {
    const M = s.length;
    const apart = (i: number, j: number) => Math.hypot(...t[i]!.map((v, d) => v - t[j]![d]!)) > 1e-9;
    const cosAt = (x: number[][], i: number, j: number, k: number) => {
      const a = x[j]!.map((v, d) => v - x[i]![d]!);
      const b = x[k]!.map((v, d) => v - x[i]![d]!);
      return a.reduce((acc, v, d) => acc + v * b[d]!, 0) / (Math.hypot(...a) * Math.hypot(...b));
    };
    let l = 0;
    let n = 0;
    for (let i = 0; i < M; i++) for (let j = 0; j < M; j++) for (let k = 0; k < M; k++) {
      if (i === j || i === k || j === k || !apart(i, j) || !apart(i, k)) continue;
      l += h(cosAt(s, i, j, k) - cosAt(t, i, j, k));
      n++;
    }
    return l / n;
  };
  // Teacher: a right isosceles triangle; student: three collinear points.
  const T = [[0, 0], [1, 0], [0, 1]];
  const S = [[0, 0], [1, 0], [2, 0]];

  it('distance: hand-computed on 3 points in 2-D', async () => {
    const { rkdDistance } = await import('../../src/distill/losses.js');
    // teacher d = (1, 1, √2), mean (2 + √2)/3; student d = (1, 2, 1), mean 4/3
    const mt = (2 + Math.SQRT2) / 3;
    const diffs = [1 / (4 / 3) - 1 / mt, 2 / (4 / 3) - 1 / mt, 1 / (4 / 3) - Math.SQRT2 / mt]; // pairs 01, 02, 12
    const want = diffs.reduce((a, x) => a + 0.5 * x * x, 0) / 3; // every |diff| < 1: quadratic branch
    expect(want).toBeCloseTo(0.107549, 5); // (0.12868^2 + 0.62132^2 + 0.49264^2) / 2 / 3
    expect(val(rkdDistance(t2(S), t2(T)))).toBeCloseTo(want, 5);
    expect(val(rkdDistance(t2(S), t2(T)))).toBeCloseTo(refDistance(S, T), 5);
  });

  it('angle: hand-computed on 3 points in 2-D, both Huber branches', async () => {
    const { rkdAngle } = await import('../../src/distill/losses.js');
    // Teacher cosines at vertices 0, 1, 2: 0 (right angle), √2/2, √2/2. Student (collinear): 1, -1, 1.
    // huber(1) = 0.5, huber(-1 - √2/2) = 1/2 + √2/2 (linear), huber(1 - √2/2) = (1 - √2/2)^2 / 2; each vertex
    // appears in 2 ordered triplets, so the mean over the 6 is the mean over the 3 vertices.
    const want = (0.5 + (0.5 + Math.SQRT1_2) + 0.5 * (1 - Math.SQRT1_2) ** 2) / 3;
    expect(want).toBeCloseTo(0.58333, 4);
    expect(val(rkdAngle(t2(S), t2(T)))).toBeCloseTo(want, 5);
  });

  it('matches a float64 brute force on random batches of other widths (student D = 3, teacher H = 5)', async () => {
    const { rkdAngle, rkdDistance } = await import('../../src/distill/losses.js');
    const { makeRng } = await import('../../src/util/rng.js');
    const rng = makeRng(7);
    const rows = (M: number, W: number, spread: number) => Array.from({ length: M }, () => Array.from({ length: W }, () => spread * (2 * rng.next() - 1)));
    for (const [M, clustered] of [[4, false], [6, true]] as const) {
      const s = rows(M, 3, 1);
      if (clustered) for (let i = 1; i < M; i++) s[i] = s[0]!.map((v) => v + 0.1 * rng.next()); // a cluster and one far point: linear branch
      if (clustered) s[0] = [5, -4, 3];
      const t = rows(M, 5, 10).map((r) => r.map((v) => v + 100)); // far from the origin: centring matters
      expect(val(rkdDistance(t2(s), t2(t)))).toBeCloseTo(refDistance(s, t), 4);
      expect(val(rkdAngle(t2(s), t2(t)))).toBeCloseTo(refAngle(s, t), 4);
    }
  });

  it('a scaled, rotated, translated copy of the teacher in another width has zero loss', async () => {
    const { rkdAngle, rkdDistance } = await import('../../src/distill/losses.js');
    const teacher = [[0.3, -1.2], [2, 0.5], [-1, 1], [0.7, 0.1], [-0.4, -2]];
    // student (3-D) = 7 * R(teacher as [x, y, 0]) + offset, R a rotation about the axis (1, 1, 1)/√3 by 40°
    const th = (40 * Math.PI) / 180;
    const u = [1, 1, 1].map((v) => v / Math.sqrt(3));
    const c = Math.cos(th);
    const sn = Math.sin(th);
    const R = [0, 1, 2].map((i) => [0, 1, 2].map((j) => (i === j ? c : 0) + (1 - c) * u[i]! * u[j]! + sn * [[0, -u[2]!, u[1]!], [u[2]!, 0, -u[0]!], [-u[1]!, u[0]!, 0]][i]![j]!));
    const student = teacher.map(([x, y]) => R.map((r, i) => 7 * (r[0]! * x! + r[1]! * y!) + [1, -2, 3][i]!));
    expect(Math.abs(val(rkdDistance(t2(student), t2(teacher))))).toBeLessThan(1e-6);
    expect(Math.abs(val(rkdAngle(t2(student), t2(teacher))))).toBeLessThan(1e-6);
    // and a mirror image too (an isometry): relations only
    const mirrored = teacher.map(([x, y]) => [-3 * x!, 3 * y!]);
    expect(Math.abs(val(rkdDistance(t2(mirrored), t2(teacher))))).toBeLessThan(1e-6);
    expect(Math.abs(val(rkdAngle(t2(mirrored), t2(teacher))))).toBeLessThan(1e-6);
  });

  it('too few rows give 0 (with a gradient path); teacher-collapsed pairs have no angle', async () => {
    const { rkdAngle, rkdDistance } = await import('../../src/distill/losses.js');
    expect(val(rkdDistance(t2([[1, 2]]), t2([[3, 4, 5]])))).toBe(0);
    expect(val(rkdAngle(t2([[1, 2], [3, 4]]), t2([[3, 4, 5], [0, 0, 1]])))).toBe(0);
    expect(val(rkdDistance(tf.zeros([0, 2]) as tf.Tensor2D, tf.zeros([0, 3]) as tf.Tensor2D))).toBe(0);
    const g = tf.grad((s: tf.Tensor) => rkdAngle(s as tf.Tensor2D, t2([[0, 0], [1, 0]])))(t2([[1, 2], [3, 4]]));
    expect(Array.from(g.dataSync())).toEqual([0, 0, 0, 0]);
    // Teacher rows 2 and 3 coincide: a triplet whose vertex is 2 or 3 has the collapsed side (2, 3) and no angle;
    // the 12 with vertex 0 or 1 count (the brute force skips the same ones).
    const T4 = [[0, 0], [1, 0], [0, 1], [0, 1]];
    const S4 = [[0, 0], [1, 0], [2, 0], [2.5, 0.5]];
    const a4 = val(rkdAngle(t2(S4), t2(T4)));
    expect(a4).toBeCloseTo(refAngle(S4, T4), 5);
  });

  it('more rows than maxRows: a seeded uniform subsample, the same rows for the same seed', async () => {
    const { relationRows, rkdDistance } = await import('../../src/distill/losses.js');
    const { makeRng } = await import('../../src/util/rng.js');
    expect(relationRows(10, 10, makeRng(1))).toBeUndefined();
    const a = relationRows(100, 8, makeRng(3))!;
    expect(a).toHaveLength(8);
    expect(new Set(a).size).toBe(8);
    expect(Array.from(a)).toEqual([...a].sort((x, y) => x - y));
    expect(Array.from(relationRows(100, 8, makeRng(3))!)).toEqual(Array.from(a));
    expect(Array.from(relationRows(100, 8, makeRng(4))!)).not.toEqual(Array.from(a));
    const s = tf.randomNormal([100, 3], 0, 1, 'float32', 1) as tf.Tensor2D;
    const t = tf.randomNormal([100, 5], 0, 1, 'float32', 2) as tf.Tensor2D;
    const idx = tf.tensor1d(a, 'int32');
    expect(val(rkdDistance(s, t, { maxRows: 8, rng: makeRng(3) }))).toBeCloseTo(val(rkdDistance(tf.gather(s, idx), tf.gather(t, idx), { maxRows: 8 })), 6);
  });
});
