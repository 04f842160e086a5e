import { progress, type LogFn } from '../../util/progress.js';
import * as tf from '@tensorflow/tfjs-core';
import type { Batch } from '../model/batches.js';
import { createSasrec, disposeModel, encodeLast, modelVariables, type ModelConfig } from '../model/model.js';
import { createAdam } from './optim.js';
import { makeRng } from '../../util/rng.js';
import { batchTerms, combine, gradientsOf, lossSetup } from './step.js';
import { topK } from '../serving/serve.js';
import type { ItemInfo } from '../../data/types.js';
import { breakdownParts, PART_NAMES, summarizeBreakdown, type PartName, type StepBreakdown } from './bench-breakdown.js';

/**
 * Micro-benchmark of the student on the ACTIVE backend with random full-length sequences:
 * ms per training step (forward + backward + Adam, full-softmax CE at every position) and single-request
 * serving latency (scores over all items + top-10). Sizes default to ML-100K (1682 items).
 * With `breakdown`, each timed step is followed by one timing of each isolated part of a step (attention, FFN,
 * output layer, Adam; see bench-breakdown.ts), and the result carries the medians and their shares of the step.
 */
export interface BenchConfig extends ModelConfig {
  batchSize: number;
  steps: number;
  requests: number;
  /** Also time the parts of a step (attention, FFN, output layer, optimiser). */
  breakdown?: boolean;
  /** Progress line interval in ms (default 5000; 0 = after every step): a slow backend (cpu) is not silent. */
  progressMs?: number;
}

export interface BenchResult {
  /** Mean ms over the timed steps (after one warm-up step). */
  msPerStep: number;
  serveMsMedian: number;
  serveMsP90: number;
  breakdown?: StepBreakdown;
}

const ADAM = { lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0 };

function randomBatch(B: number, L: number, N: number, seed: number): Batch {
  const rng = makeRng(seed);
  const inputs = new Int32Array(B * L);
  const targets = new Int32Array(B * L);
  const positions = new Int32Array(B * L);
  for (let i = 0; i < B * L; i++) {
    inputs[i] = 1 + rng.int(N);
    targets[i] = 1 + rng.int(N);
    positions[i] = i % L;
  }
  return { B, L, users: Int32Array.from({ length: B }, (_, i) => i), inputs, targets, positions };
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export function benchStudent(c: BenchConfig, log?: LogFn): BenchResult {
  const model = createSasrec(c, 1);
  const vars = modelVariables(model);
  const adam = createAdam(vars, ADAM);
  // Full-softmax CE reads only the catalogue size: an item table of that length, no users.
  const loss = lossSetup({ items: new Array<ItemInfo>(c.numItems + 1), users: [] }, 'ce', 0, 'uniform');
  const batch = randomBatch(c.batchSize, c.maxLen, c.numItems, 2);
  const step = (i: number) =>
    tf.tidy(() => {
      const { value, grads } = gradientsOf(() => combine(batchTerms(model, batch, loss, makeRng(i), i), {}), vars);
      value.dataSync();
      adam.apply(vars, grads);
    });
  step(0); // warm-up (kernel setup, XNNPACK packing)
  const parts = c.breakdown ? breakdownParts(model, batch, ADAM) : undefined;
  const partTimes = Object.fromEntries(PART_NAMES.map((p) => [p, [] as number[]])) as Record<PartName, number[]>;
  if (parts) for (const p of PART_NAMES) parts.time(p); // warm-up of each part
  const stepTimes: number[] = [];
  // The last step prints nothing: the row's result follows at once.
  const prog = log ? progress(`student:bench ${c.breakdown ? 'steps + parts' : 'steps'}`, c.steps, log, c.progressMs ?? 5000, 'steps') : undefined;
  for (let i = 1; i <= c.steps; i++) {
    const t = performance.now();
    step(i);
    stepTimes.push(performance.now() - t);
    if (parts) for (const p of PART_NAMES) partTimes[p].push(parts.time(p));
    if (i < c.steps) prog?.tick();
  }
  parts?.dispose();
  const msPerStep = stepTimes.reduce((a, b) => a + b, 0) / c.steps;
  const breakdown = parts ? summarizeBreakdown(stepTimes, partTimes) : undefined;
  // Serving: one history of maxLen items, scores for every item, top-10.
  const hist = randomBatch(1, c.maxLen, c.numItems, 3).inputs;
  const itemT = tf.keep(tf.transpose(model.itemEmb));
  const serve = () => {
    const s = tf.tidy(() => {
      return tf.matMul(encodeLast(model, hist, 1, c.maxLen), itemT);
    });
    const data = s.dataSync();
    s.dispose();
    return topK(data, 10, new Set(hist));
  };
  for (let i = 0; i < 5; i++) serve();
  const times: number[] = [];
  for (let i = 0; i < c.requests; i++) {
    const t = performance.now();
    serve();
    times.push(performance.now() - t);
  }
  itemT.dispose();
  adam.dispose();
  disposeModel(model);
  times.sort((a, b) => a - b);
  return { msPerStep, serveMsMedian: median(times), serveMsP90: times[Math.floor(times.length * 0.9)]!, ...(breakdown ? { breakdown } : {}) };
}
