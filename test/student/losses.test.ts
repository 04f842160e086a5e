import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { bceLoss, drawFrom, proposal, sampledSoftmaxCE } from '../../src/student/training/losses.js';
import { makeRng, shuffle } from '../../src/util/rng.js';
import { buildWindows, epochBatches, makeBatch, padHistories, windowSteps } from '../../src/student/model/batches.js';
import type { PreparedDataset } from '../../src/data/types.js';
import { benchStudent } from '../../src/student/training/bench.js';

beforeAll(async () => {
  await initBackend('wasm');
});

// Embeddings with hand-picked dot products: h = [1, 0]; item j's score = E[j][0].
const E = () => tf.tensor2d([[0, 0], [2, 0], [1, 0], [0, 0], [-1, 0]]);
const h = () => tf.tensor2d([[1, 0]]);

describe('sampled softmax and BCE', () => {
  it('BCE = softplus(-pos) + softplus(neg)', () => {
    const v = bceLoss(h(), Int32Array.from([1]), Int32Array.from([2]), E()).dataSync()[0]!;
    expect(v).toBeCloseTo(Math.log1p(Math.exp(-2)) + Math.log1p(Math.exp(1)), 5);
  });

  it('uniform sampled softmax is CE over the target and the drawn negatives (logQ cancels)', () => {
    const q = proposal('uniform', new Float64Array(5));
    expect(Array.from(q)).toEqual([0, 0.25, 0.25, 0.25, 0.25]);
    const negs = drawFrom(q, 3, makeRng(11));
    const v = sampledSoftmaxCE(h(), Int32Array.from([1]), E(), q, 3, makeRng(11)).dataSync()[0]!;
    const score = [0, 2, 1, 0, -1];
    const logits = [2, ...Array.from(negs).map((j) => (j === 1 ? -Infinity : score[j]!))]; // accidental hits masked
    const lse = Math.log(logits.reduce((s, x) => s + Math.exp(x), 0));
    expect(v).toBeCloseTo(lse - 2, 4);
  });

  it('popularity proposal follows (count + 1)^0.75 and sampling follows it', () => {
    const q = proposal('popularity', Float64Array.from([0, 15, 0]));
    expect(q[1]! / q[2]!).toBeCloseTo(Math.pow(16, 0.75), 9); // 8
    const d = drawFrom(q, 9000, makeRng(3));
    const ones = d.filter((x) => x === 1).length;
    expect(ones / 9000).toBeGreaterThan(0.85);
    expect(ones / 9000).toBeLessThan(0.93); // expected 8/9 = 0.889
  });
});

describe('batches', () => {
  const ds = {
    users: [Int32Array.from([1, 2, 3, 4, 5, 6, 7]), Int32Array.from([3, 4, 5]), Int32Array.from([1, 2])].map((items, i) => ({ rawId: String(i), items })),
    items: new Array(8),
  } as unknown as PreparedDataset;

  it('windows never reach the validation or test items', () => {
    // user 0: training items 1..5 -> 4 steps; user 1: training [3] -> no step;
    // user 2 has no targets (< 3 items), so all of it is training data: 1 step
    expect(buildWindows(ds, 3, 'last')).toEqual([{ user: 0, start: 1, length: 3 }, { user: 2, start: 0, length: 1 }]);
    const all = buildWindows(ds, 3, 'all');
    expect(all).toEqual([{ user: 0, start: 1, length: 3 }, { user: 0, start: 0, length: 1 }, { user: 2, start: 0, length: 1 }]);
    const b = makeBatch(ds, all.slice(0, 2));
    expect(b.L).toBe(3);
    expect(Array.from(b.inputs)).toEqual([2, 3, 4, 0, 0, 1]);
    expect(Array.from(b.targets)).toEqual([3, 4, 5, 0, 0, 2]);
    expect(Array.from(b.positions)).toEqual([1, 2, 3, -1, -1, 0]);
  });

  it("'prefixes' makes one window per step, ending there, trained at its last slot only", () => {
    const w = buildWindows(ds, 3, 'prefixes');
    expect(w).toEqual([
      { user: 0, start: 0, length: 1, trained: 1 },
      { user: 0, start: 0, length: 2, trained: 1 },
      { user: 0, start: 0, length: 3, trained: 1 },
      { user: 0, start: 1, length: 3, trained: 1 }, // the window keeps the last maxLen steps of the prefix
      { user: 2, start: 0, length: 1, trained: 1 },
    ]);
    const b = makeBatch(ds, [w[3]!, w[1]!]);
    expect(Array.from(b.inputs)).toEqual([2, 3, 4, 0, 1, 2]);
    expect(Array.from(b.targets)).toEqual([0, 0, 5, 0, 0, 3]); // context slots carry no target
    expect(Array.from(b.positions)).toEqual([1, 2, 3, -1, 0, 1]);
    expect(windowSteps([w[3]!, w[1]!])).toBe(2);
    // Every step is trained exactly once, as with 'all': the same (user, target position) pairs.
    const trainedOf = (ws: typeof w) => ws.flatMap((x) => Array.from({ length: x.trained ?? x.length }, (_, j) => `${x.user}:${x.start + x.length - 1 - j}`)).sort();
    expect(trainedOf(w)).toEqual(trainedOf(buildWindows(ds, 3, 'all')));
  });

  it('epoch batches cover every window once, reproducibly', () => {
    const w = Array.from({ length: 50 }, (_, i) => ({ user: i, start: 0, length: 1 + (i % 7) }));
    const a = epochBatches(w, 8, makeRng(5), 'length');
    expect(a.flat().map((x) => x.user).sort((x, y) => x - y)).toEqual(w.map((x) => x.user));
    expect(epochBatches(w, 8, makeRng(5), 'length')).toEqual(a);
  });

  it('random batching is a plain shuffle cut into batches; length batching sorts lengths within a batch group', () => {
    const w = Array.from({ length: 50 }, (_, i) => ({ user: i, start: 0, length: 1 + (i % 7) }));
    const random = epochBatches(w, 8, makeRng(5), 'random');
    expect(random.map((b) => b.length)).toEqual([8, 8, 8, 8, 8, 8, 2]);
    expect(random.flat().map((x) => x.user).sort((x, y) => x - y)).toEqual(w.map((x) => x.user));
    // The same shuffle as the first step of 'length' batching: the users in shuffled order, in order.
    const order = w.slice();
    shuffle(order, makeRng(5));
    expect(random.flat()).toEqual(order);
    // 'length': 50 windows < one group of 16 batches, so the concatenation of the batches sorted by their
    // first length is sorted by length.
    const byLength = epochBatches(w, 8, makeRng(5), 'length');
    for (const b of byLength) expect(b.map((x) => x.length)).toEqual(b.map((x) => x.length).sort((x, y) => x - y));
    const spread = (bs: typeof w[]) => bs.reduce((s, b) => s + Math.max(...b.map((x) => x.length)) - Math.min(...b.map((x) => x.length)), 0);
    expect(spread(byLength)).toBeLessThan(spread(random));
  });

  it('pads histories on the left, keeping the most recent maxLen items', () => {
    expect(padHistories([Int32Array.from([1, 2, 3, 4]), Int32Array.from([9])], 3)).toEqual({ items: Int32Array.from([2, 3, 4, 0, 0, 9]), B: 2, L: 3 });
  });
});

const BENCH = { numItems: 30, maxLen: 6, dims: 8, blocks: 1, heads: 1, ffnDims: 8, dropout: 0.1, attnDropout: 0, batchSize: 4, steps: 2, requests: 3 };

describe('student bench', () => {
  it('times a step and a request on the active backend', () => {
    const r = benchStudent(BENCH);
    for (const k of ['msPerStep', 'serveMsMedian', 'serveMsP90'] as const) expect(Number.isFinite(r[k]), `${k} = ${r[k]}`).toBe(true);
  });

  // Adam's zero moments and the model's padding-row init used to leak their initial tensors (33 a run).
  it('releases everything it allocates (a second run leaves no tensors behind)', () => {
    benchStudent(BENCH); // may fill per-shape caches once
    const before = tf.memory().numTensors;
    benchStudent(BENCH);
    expect(tf.memory().numTensors).toBe(before);
  });
});
