import * as tf from '@tensorflow/tfjs-core';
import type { PreparedDataset } from '../../data/types.js';
import { DEFAULT_KS, evaluateRanking, requireEvaluableUsers } from '../../eval/evaluate.js';
import { RecdistillError } from '../../errors.js';
import { makeRng, mixSeed } from '../../util/rng.js';
import type { LogFn } from '../../util/progress.js';
import { buildWindows, epochBatches, makeBatch, windowSteps, type WindowMode, type Window } from '../model/batches.js';
import type { StudentOptions } from './config.js';
import { createSasrec, disposeModel, modelVariables } from '../model/model.js';
import { createAdam } from './optim.js';
import { studentScorer, usersByLength } from '../serving/scorer.js';
import { lossSetup, type LossSetup } from './step.js';
import { modelConfigFrom } from './train.js';
import { trainStep } from './update.js';

/**
 * The cost of a student:train epoch on a real dataset, without training to the end: for each variant (a resolved
 * student configuration), the real windows and batches of one epoch; `steps` timed optimiser steps on a random
 * sample of that epoch's batches (after `warmup` untimed ones); ms/step times the epoch's batch count gives the
 * training seconds of an epoch, and one validation pass over `validUsers` users, scaled to every user, its
 * validation seconds. Variants run in turns, `rounds` times, so a busy machine slows each the same way; the
 * figure reported is the median over rounds.
 */
export interface SpeedVariant {
  name: string;
  options: StudentOptions;
}

export interface SpeedRow {
  name: string;
  /** What differs from the first variant (or the variant's own spec). */
  loss: string;
  maxLen: number;
  batchSize: number;
  batching: string;
  /** Median over rounds of the mean ms of the timed steps. */
  msPerStep: number;
  msPerStepRounds: number[];
  stepsPerEpoch: number;
  positionsPerEpoch: number;
  /** msPerStep x stepsPerEpoch. */
  trainSecondsPerEpoch: number;
  /** One validation pass, measured on a sample of users and scaled to all. */
  validSecondsPerEpoch: number;
  secondsPerEpoch: number;
}

export interface SpeedConfig {
  steps: number;
  warmup: number;
  rounds: number;
  /** Users of the timed validation sample (0 = no validation timing). */
  validUsers: number;
  log?: LogFn;
}

/** A random sample of `n` of the epoch's batches (whole epoch when smaller), in epoch order. */
function sampleBatches(batches: Window[][], n: number, seed: number): Window[][] {
  if (batches.length <= n) return batches;
  const rng = makeRng(seed);
  const idx = new Set<number>();
  while (idx.size < n) idx.add(rng.int(batches.length));
  return [...idx].sort((a, b) => a - b).map((i) => batches[i]!);
}

async function timeVariant(ds: PreparedDataset, o: StudentOptions, c: SpeedConfig, round: number): Promise<{ msPerStep: number; stepsPerEpoch: number; positions: number; validSeconds: number }> {
  const windows = buildWindows(ds, o.maxLen, o.windows as WindowMode);
  if (windows.length === 0) throw new RecdistillError('E_EMPTY', `${ds.name}: no training step to time.`);
  const batches = epochBatches(windows, o.batchSize, makeRng(mixSeed(o.seed, 1)), o.batching as 'length' | 'random');
  const positions = windowSteps(windows);
  const meanSteps = positions / batches.length;
  const model = createSasrec(modelConfigFrom(ds, o), mixSeed(o.seed, 1));
  const vars = modelVariables(model);
  const adam = createAdam(vars, { lr: o.lr, beta1: o.beta1 ?? 0.9, beta2: o.beta2, eps: 1e-8, weightDecay: o.weightDecay });
  const loss = lossSetup(ds, o.loss as LossSetup['kind'], o.negatives, o.sampler as 'uniform' | 'popularity', o.labelSmoothing ?? 0);
  const state = { epoch: 1, step: 0, bestEpoch: 0, sinceBest: 0, stepsTimed: 0 };
  const sample = sampleBatches(batches, c.warmup + c.steps, mixSeed(o.seed, round, 0x5bd1));
  let timed = 0;
  let n = 0;
  try {
    sample.forEach((b, i) => {
      const batch = makeBatch(ds, b);
      const scale = o.stepWeight === 'token' ? windowSteps(b) / meanSteps : 1;
      const t = performance.now();
      trainStep(model, vars, adam, batch, loss, o.seed, 1, i, undefined, state as never, o.lr, scale);
      if (i >= c.warmup) {
        timed += performance.now() - t;
        n++;
      }
    });
    let validSeconds = 0;
    if (c.validUsers > 0) {
      const all = usersByLength(ds, requireEvaluableUsers(ds, 'time validation on'));
      const rng = makeRng(mixSeed(round, 0x7a11d));
      const users = all.length <= c.validUsers ? all : all.filter(() => rng.next() < c.validUsers / all.length);
      const t = performance.now();
      await evaluateRanking(ds, studentScorer(model, ds), { split: 'valid', ks: DEFAULT_KS, excludeHistory: o.excludeHistory, batchSize: o.evalBatch, users });
      validSeconds = ((performance.now() - t) / 1000) * (all.length / Math.max(1, users.length));
    }
    return { msPerStep: timed / Math.max(1, n), stepsPerEpoch: batches.length, positions, validSeconds };
  } finally {
    adam.dispose();
    disposeModel(model);
  }
}

const median = (xs: number[]) => {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export async function measureEpochSpeed(ds: PreparedDataset, variants: SpeedVariant[], c: SpeedConfig): Promise<SpeedRow[]> {
  const per = variants.map(() => ({ ms: [] as number[], valid: [] as number[], steps: 0, positions: 0 }));
  for (let r = 0; r < c.rounds; r++) {
    for (let v = 0; v < variants.length; v++) {
      const m = await timeVariant(ds, variants[v]!.options, c, r);
      per[v]!.ms.push(m.msPerStep);
      per[v]!.valid.push(m.validSeconds);
      per[v]!.steps = m.stepsPerEpoch;
      per[v]!.positions = m.positions;
      c.log?.(`student:speed: round ${r + 1}/${c.rounds}, ${variants[v]!.name}: ${m.msPerStep.toFixed(0)} ms/step x ${m.stepsPerEpoch} steps, validation ${m.validSeconds.toFixed(1)} s (tensors ${tf.memory().numTensors})`);
    }
  }
  return variants.map((v, i) => {
    const p = per[i]!;
    const o = v.options;
    const msPerStep = median(p.ms);
    const train = (msPerStep * p.steps) / 1000;
    const valid = median(p.valid);
    return {
      name: v.name,
      loss: o.loss === 'sampled' ? `sampled ${o.negatives} (${o.sampler})` : o.loss,
      maxLen: o.maxLen,
      batchSize: o.batchSize,
      batching: `${o.batching}/${o.stepWeight}`,
      msPerStep,
      msPerStepRounds: p.ms,
      stepsPerEpoch: p.steps,
      positionsPerEpoch: p.positions,
      trainSecondsPerEpoch: train,
      validSecondsPerEpoch: valid,
      secondsPerEpoch: train + valid,
    };
  });
}
