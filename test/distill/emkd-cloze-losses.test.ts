/**
 * The reference code's loss forms for the cloze networks (src/distill/emkd/reference-losses.ts): values worked out
 * by hand, values against plain-JS float64 loops on random inputs, gradients against central finite differences of
 * those loops; the cloze views' selection rule on scripted draws. (The cloze CE and the KL are ./losses.ts
 * maskedItemCE's item CE and mutualKL, checked the same way in emkd-losses.test.ts.)
 */
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { attributeBCE, clozeView, contrastive } from '../../src/distill/emkd/reference-losses.js';
import type { Rng } from '../../src/util/rng.js';
import { makeRng } from '../../src/util/rng.js';
import { compareGrads, genFor, numericGrads, toF64 } from '../backend/fd.js';
import { asRows, dot, lse, mean, norm, type M } from './emkd-reference.js';

beforeAll(async () => {
  await initBackend('wasm');
});

const scalar = (t: tf.Scalar) => t.dataSync()[0]!;

/** An Rng that hands out the given uniforms in order (int(n) = floor(u n) of the next one). */
function scripted(us: number[]): Rng {
  let i = 0;
  const next = () => {
    if (i >= us.length) throw new Error('scripted rng: out of draws');
    return us[i++]!;
  };
  return { next, int: (n) => Math.floor(next() * n), state: () => i };
}

describe('cloze views (BERT4Rec masking)', () => {
  it('one draw per real slot: < p selects; r / p < 0.8 MASK, < 0.9 a random item (one more draw), else unchanged', () => {
    // row [0, 3, 4, 5, 6, 7], p = 0.5, MASK = 99, N = 10: draws per real slot (padding draws nothing)
    //   3: 0.1 -> selected, 0.2 < 0.8 -> MASK; 4: 0.6 -> kept; 5: 0.42 -> 0.84 -> random: next draw 0.35 -> 1 + 3 = 4;
    //   6: 0.47 -> 0.94 -> unchanged but a label; 7: 0.5 -> kept (not < p)
    const v = clozeView(Int32Array.from([0, 3, 4, 5, 6, 7]), 0.5, scripted([0.1, 0.6, 0.42, 0.35, 0.47, 0.5]), 10, 99);
    expect(Array.from(v.items)).toEqual([0, 99, 4, 4, 6, 7]);
    expect(Array.from(v.slots)).toEqual([1, 3, 4]);
    expect(Array.from(v.originals)).toEqual([3, 5, 6]);
  });

  it('over many draws: ~p of the real slots selected, 80 / 10 / 10 among them; padding never', () => {
    const n = 20000;
    const row = Int32Array.from({ length: n }, (_, i) => (i % 10 === 0 ? 0 : 1 + (i % 7)));
    const v = clozeView(row, 0.15, makeRng(5), 7, 8);
    const real = row.filter((x) => x !== 0).length;
    expect(v.slots.length / real).toBeGreaterThan(0.14);
    expect(v.slots.length / real).toBeLessThan(0.16);
    expect(Array.from(v.slots).every((s) => row[s] !== 0)).toBe(true);
    const masked = Array.from(v.slots).filter((s) => v.items[s] === 8).length / v.slots.length;
    expect(masked).toBeGreaterThan(0.77);
    expect(masked).toBeLessThan(0.83);
    expect(Array.from(row).every((x, s) => v.slots.includes(s) || v.items[s] === x)).toBe(true);
  });
});

describe('reference loss values by hand', () => {
  it('ICL: orthogonal anchors give negatives 0 (own entry 0 too), so L = log 2 - mean lse of the positives', () => {
    const a = tf.tensor2d([[1, 0], [0, 1]]);
    // one view, both positives parallel to their anchors: cos 1 -> L = log 2 - 1 / T
    expect(scalar(contrastive(a, a, [tf.tensor2d([[2, 0], [0, 3]])], 1))).toBeCloseTo(Math.log(2) - 1, 5);
    expect(scalar(contrastive(a, a, [tf.tensor2d([[2, 0], [0, 3]])], 0.5))).toBeCloseTo(Math.log(2) - 2, 5);
    // two views: row 1 positives cos (1, 0), row 2 (1, 1)
    const two = contrastive(a, a, [tf.tensor2d([[1, 0], [0, 1]]), tf.tensor2d([[0, 1], [0, 1]])], 1);
    expect(scalar(two)).toBeCloseTo(((Math.log(2) - Math.log(Math.E + 1)) + (Math.log(2) - 1 - Math.log(2))) / 2, 5);
  });

  it('CCL: negatives are cos(anchor_b, other network\'s anchor_j), own entry 0', () => {
    const a = tf.tensor2d([[1, 0], [0, 1]]);
    const other = tf.tensor2d([[1, 1], [1, -1]]); // cos(a1, o2) = cos(a2, o1) = 1 / sqrt 2
    const want = Math.log(1 + Math.exp(Math.SQRT1_2)) - 1;
    expect(scalar(contrastive(a, other, [tf.tensor2d([[1, 0], [0, 1]])], 1))).toBeCloseTo(want, 5);
    expect(scalar(contrastive(tf.tensor2d([[1, 0]]), tf.tensor2d([[0, 1]]), [tf.tensor2d([[1, 0]])], 1))).toBe(0); // one row
  });

  it('attribute BCE: logits (0, 2) against (1, 0) give (log 2 + log(1 + e^2)) / 2', () => {
    expect(scalar(attributeBCE(tf.tensor2d([[0, 2]]), tf.tensor2d([[1, 0]])))).toBeCloseTo((Math.log(2) + Math.log(1 + Math.exp(2))) / 2, 5);
    // large logits stay finite: x = 100 against t = 0 costs 100, against t = 1 costs ~0
    expect(scalar(attributeBCE(tf.tensor2d([[100, 100]]), tf.tensor2d([[0, 1]])))).toBeCloseTo(50, 3);
  });
});

/** Plain-JS ICL / CCL (reference trainers/bert.py): loops, float64. */
function jsContrastive(a: M, neg: M, pos: M[], T: number): number {
  const cos = (x: number[], y: number[]) => dot(x, y) / Math.max(norm(x), 1e-8) / Math.max(norm(y), 1e-8);
  return mean(a.map((ab, b) => lse(neg.map((nj, j) => (j === b ? 0 : cos(ab, nj) / T))) - lse(pos.map((p) => cos(ab, p[b]!) / T))));
}
const jsBCE = (x: M, t: M) => mean(x.flatMap((r, i) => r.map((v, j) => Math.log(1 + Math.exp(-Math.abs(v))) + Math.max(v, 0) - v * t[i]![j]!)));

interface Case {
  name: string;
  xs: (g: ReturnType<typeof genFor>) => tf.Tensor[];
  tf: (xs: tf.Tensor[]) => tf.Scalar;
  js: (xs: M[]) => number;
}
const targets = [[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]];
const CASES: Case[] = [
  {
    name: 'ICL T = 0.3, 3 views, d/danchor, d/dviews',
    xs: (g) => [g.away([4, 6]), g.away([4, 6]), g.away([4, 6]), g.away([4, 6])],
    tf: ([a, p1, p2, p3]) => contrastive(a as tf.Tensor2D, a as tf.Tensor2D, [p1, p2, p3] as tf.Tensor2D[], 0.3),
    js: ([a, p1, p2, p3]) => jsContrastive(a!, a!, [p1!, p2!, p3!], 0.3),
  },
  {
    name: 'CCL T = 1, 2 views, d/danchor, d/dother, d/dviews',
    xs: (g) => [g.away([3, 5]), g.away([3, 5]), g.away([3, 5]), g.away([3, 5])],
    tf: ([a, o, p1, p2]) => contrastive(a as tf.Tensor2D, o as tf.Tensor2D, [p1, p2] as tf.Tensor2D[], 1),
    js: ([a, o, p1, p2]) => jsContrastive(a!, o!, [p1!, p2!], 1),
  },
  {
    name: 'attribute BCE through a linear head, d/dh, d/dW, d/db',
    xs: (g) => [g.uniform([4, 5]), g.uniform([5, 3]), g.uniform([3], -0.3, 0.3)],
    tf: ([h, W, b]) => attributeBCE(tf.add(tf.matMul(h!, W!), b!) as tf.Tensor2D, tf.tensor2d(targets)),
    js: ([h, W, b]) => jsBCE(h!.map((r) => b![0]!.map((bb, j) => bb + r.reduce((s, v, k) => s + v * W![k]![j]!, 0))), targets),
  },
];

describe('reference losses: values against JS loops, gradients against finite differences of them', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s', (_, c) => {
    const xs = c.xs(genFor(c.name));
    expect(scalar(c.tf(xs))).toBeCloseTo(c.js(xs.map(asRows)), 5);
    const grads = tf.tidy(() => tf.valueAndGrads((...a: tf.Tensor[]) => c.tf(a))(xs).grads.map((g) => tf.keep(g)));
    const analytic = grads.map(toF64);
    const numeric = numericGrads((ys) => c.js(ys.map(asRows)), xs, 1e-3);
    const { worst, where } = compareGrads(analytic, numeric);
    expect(worst, where).toBeLessThan(1e-2);
    expect(analytic.every((g) => g.some((v) => Math.abs(v) > 1e-4))).toBe(true); // every input gets a gradient
  });
});
