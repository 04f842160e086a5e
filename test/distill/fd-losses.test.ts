import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { cosineDistance, crossEntropy, embeddingDistance, itemCrossEntropy, klTopK, l2Distance, rankingLoss, rankingWeights, rkdAngle, rkdDistance, topKMembership } from '../../src/distill/losses.js';
import { distillOptions } from '../../src/distill/options.js';
import { TERM_NAMES } from '../../src/distill/terms/index.js';
import { trainOptions } from '../../src/student/training/config.js';
import { bceLoss, drawFrom, fullSoftmaxCE, fullSoftmaxCEValue, logSumExp, proposal, sampledSoftmaxCE } from '../../src/student/training/losses.js';
import { makeRng } from '../../src/util/rng.js';
import { compareGrads, genFor, numericGrads, toF64, type Gen } from '../backend/fd.js';

/**
 * Finite-difference checks of every loss term, w.r.t. the student-side float inputs, on wasm and cpu:
 * the student losses (full-softmax CE custom op, its logSumExp, logQ-corrected sampled softmax, SASRec BCE)
 * and the distillation terms, each both as the bare function and composed the way src/distill/hooks.ts
 * composes it (projection / adapter / item-embedding gathers), so the gradient that reaches the student's
 * parameters is checked end to end. Teacher-side tensors and integer ids are constants.
 */

const TOL = 1e-2;
const P = 4; // positions
const D = 3; // student width
const N = 6; // items 1..N (row 0 of E = padding)
const H = 5; // teacher width

interface Built {
  xs: tf.Tensor[];
  loss: (xs: tf.Tensor[]) => tf.Scalar;
  /** Forward for the finite differences when calling `loss` outside a tape is not allowed (fullSoftmaxCE). */
  value?: (xs: tf.Tensor[]) => number;
}
interface Row {
  /** The loss term: a --loss kind, a distillation term, or kd:<kind>. */
  term: string;
  name: string;
  build: (g: Gen) => Built;
}

const i32 = (v: ArrayLike<number>, shape?: number[]) => tf.tensor(Array.from(v), shape ?? [v.length], 'int32');
const targets = Int32Array.from([3, 1, 3, 6]); // a repeated target: its embedding row gets two contributions
const student = (g: Gen) => [g.uniform([P, D]), g.uniform([N + 1, D])]; // h, E
const scoresOf = (h: tf.Tensor, E: tf.Tensor) => tf.matMul(h, tf.transpose(E)); // as src/student/model/model.ts scores()
/** Teacher probabilities over a top-K, rows sorted descending, summing to < 1 (a truncated distribution). */
const teacherProbs = (g: Gen, M: number, K: number) => {
  const v: number[] = [];
  for (let i = 0; i < M; i++) {
    const row = Array.from({ length: K }, () => 0.05 + g.rng.next()).sort((a, b) => b - a);
    const s = row.reduce((a, b) => a + b, 0) / 0.9;
    v.push(...row.map((x) => x / s));
  }
  return new Float32Array(v);
};

const ROWS: Row[] = [
  // ---- student losses (src/student/training/losses.ts)
  {
    term: 'ce',
    name: 'ce: fullSoftmaxCE custom op, d/dh and d/dE (padding row excluded, repeated target)',
    build: (g) => {
      const t = i32(targets);
      const op = (xs: tf.Tensor[]) => fullSoftmaxCE(xs[0] as tf.Tensor2D, t as tf.Tensor1D, xs[1]!);
      // The op keeps tensors for its gradient and frees them there: evaluate it under a tape.
      return { xs: student(g), loss: op, value: (xs) => tf.valueAndGrads(((...a: tf.Tensor[]) => op(a)) as (...a: tf.Tensor[]) => tf.Scalar)(xs).value.dataSync()[0]! };
    },
  },
  { term: 'ce', name: 'ce: logSumExp custom op [3,5]', build: (g) => ({ xs: [g.uniform([3, 5], -2, 2)], loss: ([x]) => tf.sum(tf.mul(logSumExp(x!), tf.tensor1d([0.5, -1, 2]))) }) },
  {
    term: 'sampled',
    name: 'sampled: popularity proposal, logQ correction, an accidental hit',
    build: (g) => {
      const q = proposal('popularity', Float64Array.from([0, 9, 1, 4, 0, 2, 7]));
      const K = 5;
      const negs = drawFrom(q, K, makeRng(42));
      const t = Int32Array.from([negs[0]!, 2, 5, negs[0] === 4 ? 3 : 4]); // target 0 is also a drawn negative
      // The same negatives at every evaluation: a fresh generator with the same seed.
      return { xs: student(g), loss: ([h, E]) => sampledSoftmaxCE(h as tf.Tensor2D, t, E!, q, K, makeRng(42)) };
    },
  },
  { term: 'bce', name: 'bce: softplus(-pos) + softplus(neg)', build: (g) => ({ xs: student(g), loss: ([h, E]) => bceLoss(h as tf.Tensor2D, targets, Int32Array.from([2, 5, 4, 1]), E!) }) },

  // ---- hidden alignment
  { term: 'cos', name: 'cos: cosineDistance d/da, d/db', build: (g) => ({ xs: [g.uniform([3, H]), g.uniform([3, H])], loss: ([a, b]) => cosineDistance(a as tf.Tensor2D, b as tf.Tensor2D) }) },
  {
    term: 'cos',
    name: 'cos: through the projection (hooks: hs @ W + b vs teacher), d/dhs, d/dW, d/db',
    build: (g) => {
      const ht = g.uniform([3, H]);
      return { xs: [g.uniform([3, D]), g.uniform([D, H]), g.uniform([H], -0.3, 0.3)], loss: ([hs, W, b]) => cosineDistance(tf.add(tf.matMul(hs!, W!), b!) as tf.Tensor2D, ht as tf.Tensor2D) };
    },
  },
  { term: 'l2', name: 'l2: l2Distance d/da, d/db', build: (g) => ({ xs: [g.uniform([3, H]), g.uniform([3, H])], loss: ([a, b]) => l2Distance(a as tf.Tensor2D, b as tf.Tensor2D) }) },
  {
    term: 'l2',
    name: 'l2: through the projection, d/dhs, d/dW, d/db',
    build: (g) => {
      const ht = g.uniform([3, H]);
      return { xs: [g.uniform([3, D]), g.uniform([D, H]), g.uniform([H], -0.3, 0.3)], loss: ([hs, W, b]) => l2Distance(tf.add(tf.matMul(hs!, W!), b!) as tf.Tensor2D, ht as tf.Tensor2D) };
    },
  },

  // ---- multi-supervision (item CE of an intermediate block)
  { term: 'ms', name: 'ms: crossEntropy d/dlogits', build: (g) => ({ xs: [g.uniform([3, 5], -2, 2)], loss: ([s]) => crossEntropy(s as tf.Tensor2D, i32([4, 0, 2]) as tf.Tensor1D) }) },
  { term: 'ms', name: 'ms: itemCrossEntropy d/dscores (padding column gets none)', build: (g) => ({ xs: [g.uniform([3, N + 1], -2, 2)], loss: ([s]) => itemCrossEntropy(s as tf.Tensor2D, i32([2, 6, 1]) as tf.Tensor1D) }) },
  {
    term: 'ms',
    name: 'ms: through the adapter and the shared item embeddings (hooks), d/dh, d/dW, d/dE',
    build: (g) => {
      const [h, E] = student(g);
      return {
        xs: [h!, g.uniform([D, D]), E!],
        loss: ([h2, W, E2]) => itemCrossEntropy(scoresOf(tf.matMul(h2!, W!), E2!) as tf.Tensor2D, i32(targets) as tf.Tensor1D),
      };
    },
  },

  // ---- soft labels
  {
    term: 'kd:kl',
    name: 'kd:kl: klTopK d/ds at T = 2 (cache T0 = 1)',
    build: (g) => {
      const p = tf.tensor2d(teacherProbs(g, 3, 4), [3, 4]);
      return { xs: [g.uniform([3, 4], -2, 2)], loss: ([s]) => klTopK(s as tf.Tensor2D, p, 2, 1) };
    },
  },
  {
    term: 'kd:kl',
    name: 'kd:kl: klTopK d/ds at T = 0.5 (cache T0 = 2)',
    build: (g) => {
      const p = tf.tensor2d(teacherProbs(g, 3, 4), [3, 4]);
      return { xs: [g.uniform([3, 4], -1, 1)], loss: ([s]) => klTopK(s as tf.Tensor2D, p, 0.5, 2) };
    },
  },
  {
    term: 'kd:kl',
    name: 'kd:kl: logits at the teacher top-K from h and E (hooks logitsAtK), d/dh, d/dE',
    build: (g) => {
      const K = 3;
      const idx = i32([1, 4, 2, 6, 5, 1, 3, 2, 6, 2, 2, 5], [P, K]);
      const p = tf.tensor2d(teacherProbs(g, P, K), [P, K]);
      return {
        xs: student(g),
        loss: ([h, E]) => {
          const eK = tf.reshape(tf.gather(E!, tf.reshape(idx, [P * K])), [P, K, D]);
          return klTopK(tf.sum(tf.mul(tf.expandDims(h!, 1), eK), -1) as tf.Tensor2D, p, 2, 1);
        },
      };
    },
  },
  {
    term: 'kd:ranking',
    name: 'kd:ranking: rankingLoss d/dlogp',
    build: (g) => {
      const w = tf.tensor2d(rankingWeights(teacherProbs(g, 3, 4), Uint8Array.from([1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0]), 4, { lambda: 1, gammaPosition: 0.3, gammaConfidence: 0.5, gammaConsistency: 0.2 }), [3, 4]);
      return { xs: [g.uniform([3, 4], -3, -0.5)], loss: ([lp]) => rankingLoss(lp as tf.Tensor2D, w) };
    },
  },
  {
    term: 'kd:ranking',
    name: 'kd:ranking: full-softmax log-probs at the teacher top-K, padding masked (hooks kdTerm), d/dh, d/dE',
    build: (g) => {
      const K = 3;
      const idxArr = Int32Array.from([1, 4, 2, 6, 5, 1, 3, 2, 6, 2, 5, 4]);
      const idx = i32(idxArr, [P, K]);
      const prob = teacherProbs(g, P, K);
      const [h0, E0] = student(g);
      // Agreement with the student's own top-K is a constant (computed once, at the unperturbed point).
      const top = tf.topk(tf.slice(scoresOf(h0!, E0!), [0, 1], [-1, -1]), K).indices.dataSync();
      const w = tf.tensor2d(
        rankingWeights(prob, topKMembership(Int32Array.from(top, (j) => j + 1), K, idxArr, K), K, { lambda: 1, gammaPosition: 0.4, gammaConfidence: 0.4, gammaConsistency: 0.2 }),
        [P, K],
      );
      return {
        xs: [h0!, E0!],
        loss: ([h, E]) => {
          const eK = tf.reshape(tf.gather(E!, tf.reshape(idx, [P * K])), [P, K, D]);
          const sK = tf.sum(tf.mul(tf.expandDims(h!, 1), eK), -1);
          const scores = scoresOf(h!, E!);
          const masked = tf.add(scores, tf.mul(tf.oneHot(i32([0]), N + 1), -1e9));
          return rankingLoss(tf.sub(sK, tf.logSumExp(masked, -1, true)) as tf.Tensor2D, w);
        },
      };
    },
  },

  // ---- item-embedding distillation
  {
    term: 'emb',
    name: 'emb: embeddingDistance d/dstudent, d/dteacherProjected',
    build: (g) => ({ xs: [g.uniform([4, D]), g.uniform([4, D])], loss: ([a, b]) => embeddingDistance(a as tf.Tensor2D, b as tf.Tensor2D) }),
  },
  {
    term: 'emb',
    name: 'emb: gathered item rows vs teacher text embeddings @ W (hooks), d/dE, d/dW',
    build: (g) => {
      const ids = i32([2, 5, 2, 1]);
      const et = g.uniform([4, H]);
      return { xs: [g.uniform([N + 1, D]), g.uniform([H, D])], loss: ([E, W]) => embeddingDistance(tf.gather(E!, ids) as tf.Tensor2D, tf.matMul(et, W!) as tf.Tensor2D) };
    },
  },

  // ---- relational distillation (RKD): the teacher rows are constants, of another width (H = 5 vs D = 3)
  { term: 'rel', name: 'rel: rkdDistance d/dstudent', build: (g) => {
    const t = g.uniform([5, H], -2, 2);
    return { xs: [g.uniform([5, D])], loss: ([s]) => rkdDistance(s as tf.Tensor2D, t as tf.Tensor2D) };
  } },
  { term: 'rel', name: 'rel: rkdDistance d/dstudent, Huber linear branch (a cluster and one far row)', build: (g) => {
    const t = g.uniform([5, H], -2, 2);
    const far = tf.tensor2d([[6, -5, 4]]);
    return { xs: [g.uniform([4, D], -0.3, 0.3)], loss: ([s]) => rkdDistance(tf.concat([far, s!]) as tf.Tensor2D, t as tf.Tensor2D) };
  } },
  { term: 'rel', name: 'rel: rkdAngle d/dstudent', build: (g) => {
    const t = g.uniform([5, H], -2, 2);
    return { xs: [g.uniform([5, D])], loss: ([s]) => rkdAngle(s as tf.Tensor2D, t as tf.Tensor2D) };
  } },
  {
    term: 'rel',
    name: 'rel: 5 * distance + 10 * angle of the rows gathered at the teacher slots (hooks relTerm), subsampled 5 of 6, d/dh',
    build: (g) => {
      const slots = i32([0, 2, 3, 5, 6, 7]);
      const t = g.uniform([6, H], -2, 2);
      const o = () => ({ maxRows: 5, rng: makeRng(9) }); // the same 5 rows for both terms
      return {
        xs: [g.uniform([8, D])],
        loss: ([h]) => {
          const hs = tf.gather(h!, slots) as tf.Tensor2D;
          return tf.add(tf.mul(rkdDistance(hs, t as tf.Tensor2D, o()), 5), tf.mul(rkdAngle(hs, t as tf.Tensor2D, o()), 10)) as tf.Scalar;
        },
      };
    },
  },
];

function checkRow(row: Row) {
  const { xs, loss, value } = row.build(genFor(row.name));
  const analytic = tf.grads(((...a: tf.Tensor[]) => loss(a)) as (...a: tf.Tensor[]) => tf.Tensor)(xs);
  analytic.forEach((a, i) => expect(a.shape, `gradient shape of input ${i}`).toEqual(xs[i]!.shape));
  const numeric = numericGrads(value ?? ((a) => loss(a).dataSync()[0]!), xs);
  const all = analytic.map(toF64);
  return { ...compareGrads(all, numeric), nonzero: all.some((a) => a.some((v) => Math.abs(v) > 1e-4)) };
}

describe('finite-difference coverage of the loss terms', () => {
  it('every --loss kind, every distillation term and every --kd kind has a row', () => {
    const terms = new Set(ROWS.map((r) => r.term));
    const expected = [
      ...(trainOptions.loss as { choices: readonly string[] }).choices,
      ...TERM_NAMES.filter((t) => t !== 'kd'),
      ...(distillOptions.kd as { choices: readonly string[] }).choices.map((k) => `kd:${k}`),
    ];
    expect(expected.filter((t) => !terms.has(t))).toEqual([]);
    expect([...terms].filter((t) => !expected.includes(t))).toEqual([]);
  });
});

for (const backend of ['wasm', 'cpu'] as const) {
  describe(`finite-difference check of the loss terms on ${backend}`, () => {
    beforeAll(async () => {
      expect(await initBackend(backend)).toBe(backend);
    });

    it.each(ROWS.map((r) => [r.name, r] as const))('%s', (_n, row) => {
      const r = tf.tidy(() => checkRow(row));
      expect(r.nonzero, 'the gradient is identically zero: the row checks nothing').toBe(true);
      expect(r.worst, r.where).toBeLessThan(TOL);
    });

    it('fullSoftmaxCE (custom op) has the value of the reference implementation and of a float64 hand computation', () => {
      const g = genFor('ce value');
      const [h, E] = student(g);
      const t = i32(targets) as tf.Tensor1D;
      const { value } = tf.valueAndGrads(((a: tf.Tensor, b: tf.Tensor) => fullSoftmaxCE(a as tf.Tensor2D, t, b)) as (...a: tf.Tensor[]) => tf.Tensor)([h!, E!]);
      const hv = h!.dataSync();
      const ev = E!.dataSync();
      let ref = 0;
      for (let p = 0; p < P; p++) {
        const s = (j: number) => hv[p * D]! * ev[j * D]! + hv[p * D + 1]! * ev[j * D + 1]! + hv[p * D + 2]! * ev[j * D + 2]!;
        let z = 0;
        for (let j = 1; j <= N; j++) z += Math.exp(s(j));
        ref += Math.log(z) - s(targets[p]!);
      }
      expect(value.dataSync()[0]).toBeCloseTo(ref / P, 5);
      expect(fullSoftmaxCEValue(h as tf.Tensor2D, t, E!).dataSync()[0]).toBeCloseTo(ref / P, 5);
    });
  });
}
