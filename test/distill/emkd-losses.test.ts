/**
 * EMKD's loss terms (src/distill/emkd/losses.ts): values against closed forms worked out by hand and against
 * independent plain-JS float64 loops on random tiny batches, and gradients against central finite differences
 * of those JS loops (so the numeric side shares no code with the tfjs side). L5's mutual KL stops the gradient
 * at the side being imitated: its numeric side holds that side's distribution fixed at the unperturbed point.
 */
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { attributeCE, infoNCE, maskedItemCE, mutualKL, teacherKL } from '../../src/distill/emkd/losses.js';
import { compareGrads, genFor, numericGrads, toF64 } from '../backend/fd.js';
import { asRows, jsAttrCE, jsInfoNCE, jsMaskedCE, jsMutualKL, jsTeacherKL, softmaxT, type M } from './emkd-reference.js';

beforeAll(async () => {
  await initBackend('wasm');
});

const scalar = (t: tf.Scalar) => t.dataSync()[0]!;

describe('EMKD loss values by hand', () => {
  it('L1 masked-item CE: h = [1, 0], items 1 = [1, 0], 2 = [0, 1] (padding row excluded)', () => {
    const E = tf.tensor2d([[5, 5], [1, 0], [0, 1]]); // row 0 (padding) would dominate if it were a class
    const h = tf.tensor2d([[1, 0], [1, 0]]);
    // row 1 target item 1: log(e + 1) - 1; row 2 target item 2: log(e + 1)
    expect(scalar(maskedItemCE(h, E, Int32Array.from([1, 2])))).toBeCloseTo((Math.log(Math.E + 1) - 1 + Math.log(Math.E + 1)) / 2, 5);
    expect(scalar(maskedItemCE(tf.zeros([0, 2]) as tf.Tensor2D, E, new Int32Array(0)))).toBe(0);
  });

  it('L2 attribute CE: equal logits and a two-genre item give log 2; a one-genre item log(1 + e^-1)', () => {
    const l = tf.tensor2d([[0, 0], [1, 0]]);
    const t = tf.tensor2d([[0.5, 0.5], [1, 0]]);
    expect(scalar(attributeCE(l, t))).toBeCloseTo((Math.log(2) + Math.log(1 + Math.exp(-1))) / 2, 5);
  });

  it('L3 / L4 InfoNCE: orthogonal unit pairs give log(1 + e^(-1/T)) each; scale does not matter (cosine)', () => {
    const a = tf.tensor2d([[1, 0], [0, 2]]);
    const p = tf.tensor2d([[3, 0], [0, 0.5]]);
    expect(scalar(infoNCE(a, p, 1))).toBeCloseTo(Math.log(1 + Math.exp(-1)), 5);
    expect(scalar(infoNCE(a, p, 0.5))).toBeCloseTo(Math.log(1 + Math.exp(-2)), 5);
    expect(scalar(infoNCE(tf.tensor2d([[1, 0]]), tf.tensor2d([[0, 1]]), 1))).toBe(0); // one row: nothing to contrast
  });

  it('L5 mutual KL: uniform vs (3/4, 1/4) is 0.5 (KL(pb||pa) + KL(pa||pb)); equal rows give 0', () => {
    const a = tf.tensor2d([[0, 0]]);
    const b = tf.tensor2d([[Math.log(3), 0]]);
    const want = 0.5 * (0.75 * Math.log(1.5) + 0.25 * Math.log(0.5) + (0.5 * Math.log(0.5 / 0.75) + 0.5 * Math.log(2)));
    expect(scalar(mutualKL(a, b, 1))).toBeCloseTo(want, 5);
    expect(want).toBeCloseTo(0.137327, 5);
    expect(scalar(mutualKL(b, b, 1))).toBeCloseTo(0, 6);
  });

  it('L5 teacher member: cached (0.6, 0.3) at T0 = 1 renormalises to (2/3, 1/3); network uniform over the top-2', () => {
    const want = (2 / 3) * Math.log(4 / 3) + (1 / 3) * Math.log(2 / 3);
    expect(scalar(teacherKL(tf.tensor2d([[0.7, 0.7]]), tf.tensor2d([[0.6, 0.3]]), 1, 1))).toBeCloseTo(want, 5);
    // T = 2 from a cache at T0 = 1: q = softmax(log p / 2) = (sqrt .6, sqrt .3) normalised
    const q = [Math.sqrt(0.6), Math.sqrt(0.3)].map((v, _, x) => v / (x[0]! + x[1]!));
    expect(scalar(teacherKL(tf.tensor2d([[0, 0]]), tf.tensor2d([[0.6, 0.3]]), 2, 1))).toBeCloseTo(q[0]! * Math.log(2 * q[0]!) + q[1]! * Math.log(2 * q[1]!), 5);
  });
});

interface Case {
  name: string;
  xs: (g: ReturnType<typeof genFor>) => tf.Tensor[];
  tf: (xs: tf.Tensor[]) => tf.Scalar;
  /** The plain-JS value; `base` holds the unperturbed inputs (for the fixed side of the mutual KL). */
  js: (xs: M[], base: M[]) => number;
}

const orig = [2, 5, 1, 2];
const CASES: Case[] = [
  { name: 'L1 maskedItemCE d/dh, d/dE', xs: (g) => [g.uniform([4, 3]), g.uniform([6, 3])], tf: ([h, E]) => maskedItemCE(h as tf.Tensor2D, E as tf.Tensor2D, Int32Array.from(orig)), js: ([h, E]) => jsMaskedCE(h!, E!, orig) },
  {
    name: 'L2 attributeCE through a linear head (hooks: h W + b), d/dh, d/dW, d/db',
    xs: (g) => [g.uniform([3, 4]), g.uniform([4, 5]), g.uniform([5], -0.3, 0.3)],
    tf: ([h, W, b]) => attributeCE(tf.add(tf.matMul(h!, W!), b!) as tf.Tensor2D, tf.tensor2d([[0.5, 0, 0.5, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]])),
    js: ([h, W, b]) => jsAttrCE(h!.map((r) => b![0]!.map((bb, j) => bb + r.reduce((s, v, k) => s + v * W![k]![j]!, 0))), [[0.5, 0, 0.5, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]]),
  },
  { name: 'L3/L4 infoNCE T = 0.5, d/danchor, d/dpositive', xs: (g) => [g.away([4, 3]), g.away([4, 3])], tf: ([a, p]) => infoNCE(a as tf.Tensor2D, p as tf.Tensor2D, 0.5), js: ([a, p]) => jsInfoNCE(a!, p!, 0.5) },
  {
    name: 'L5 mutualKL T = 2 (the imitated side held fixed), d/da, d/db',
    xs: (g) => [g.uniform([3, 5], -2, 2), g.uniform([3, 5], -2, 2)],
    tf: ([a, b]) => mutualKL(a as tf.Tensor2D, b as tf.Tensor2D, 2),
    js: ([a, b], [a0, b0]) => jsMutualKL(a!, b!, 2, a0!.map((r) => softmaxT(r, 2)), b0!.map((r) => softmaxT(r, 2))),
  },
  {
    name: 'L5 teacherKL T = 2, cache T0 = 1, d/dlogits (teacher constant)',
    xs: (g) => [g.uniform([3, 4], -2, 2)],
    tf: ([s]) => teacherKL(s as tf.Tensor2D, tf.tensor2d([[0.5, 0.2, 0.1, 0.05], [0.4, 0.3, 0.2, 0.1], [0.7, 0.1, 0.05, 0.01]]), 2, 1),
    js: ([s]) => jsTeacherKL(s!, [[0.5, 0.2, 0.1, 0.05], [0.4, 0.3, 0.2, 0.1], [0.7, 0.1, 0.05, 0.01]], 2, 1),
  },
];


describe('EMKD losses: values against JS loops, gradients against finite differences of them', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s', (_, c) => {
    const xs = c.xs(genFor(c.name));
    const base = xs.map(asRows);
    expect(scalar(c.tf(xs))).toBeCloseTo(c.js(base, base), 5);
    const { grads } = tf.tidy(() => {
      const r = tf.valueAndGrads((...a: tf.Tensor[]) => c.tf(a))(xs);
      return { grads: r.grads.map((g) => tf.keep(g)) };
    });
    const analytic = grads.map(toF64);
    const numeric = numericGrads((ys) => c.js(ys.map(asRows), base), xs, 1e-3);
    const { worst, where } = compareGrads(analytic, numeric);
    expect(worst, where).toBeLessThan(1e-2);
    // Not a vacuous check: the gradient is not zero.
    expect(analytic.some((g) => g.some((v) => Math.abs(v) > 1e-4))).toBe(true);
  });
});
