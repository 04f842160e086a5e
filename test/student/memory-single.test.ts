/**
 * The up-front memory estimate of one network's training run (src/student/training/memory.ts estimateTrainMemory) against an
 * independent measurement: tf.profile's peak of one real training step (train.ts trainStep: forward, backward and
 * the Adam update, as student:train runs it) on the wasm backend, for three tiny shapes that move every size the
 * formula depends on (blocks, heads, dims, ffn dims, length, rows, catalogue, each loss). The estimate must bound
 * the peak and stay within 1.25x of it. The estimate's 3 host copies of the parameters are not on the device; the
 * shapes keep them a small share of the total.
 */
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { resolveOptions } from '../../src/config/options.js';
import { datasetFromFlags } from '../../src/data/options.js';
import { buildWindows, makeBatch } from '../../src/student/model/batches.js';
import { studentOptions, type StudentOptions } from '../../src/student/training/config.js';
import { estimateTrainMemory } from '../../src/student/training/memory.js';
import { createSasrec, disposeModel, modelVariables } from '../../src/student/model/model.js';
import { createAdam } from '../../src/student/training/optim.js';
import type { RunState } from '../../src/student/model/run-folder.js';
import { lossSetup, type LossSetup } from '../../src/student/training/step.js';
import { modelConfigFrom } from '../../src/student/training/train.js';
import { trainStep } from '../../src/student/training/update.js';

const RAM = 64 * 1024 ** 3;

beforeAll(async () => {
  await initBackend('wasm');
});

interface Shape {
  name: string;
  items: number;
  flags: Partial<StudentOptions>;
}

// Every user's history is longer than maxLen + 3, so each batch is full: P = rows x maxLen positions, no padding.
const SHAPES: Shape[] = [
  { name: '1 block, 1 head, full softmax', items: 300, flags: { dims: 8, ffnDims: 16, heads: 1, blocks: 1, maxLen: 20, batchSize: 8, loss: 'ce' } },
  { name: '2 blocks, 2 heads, sampled softmax', items: 300, flags: { dims: 16, ffnDims: 8, heads: 2, blocks: 2, maxLen: 16, batchSize: 6, loss: 'sampled', negatives: 32 } },
  { name: '3 blocks, BCE, larger catalogue', items: 3000, flags: { dims: 8, ffnDims: 8, heads: 1, blocks: 3, maxLen: 12, batchSize: 10, loss: 'bce' } },
];

async function measure(shape: Shape) {
  const maxLen = shape.flags.maxLen!;
  const data = { dataset: 'synthetic', syntheticUsers: 60, syntheticItems: shape.items, syntheticMinLen: maxLen + 4, syntheticMaxLen: maxLen + 8, syntheticSeed: 3 };
  const ds = await datasetFromFlags(data);
  const o = resolveOptions(studentOptions, { flags: { ...data, ...shape.flags, backend: 'wasm' } }) as StudentOptions;
  const base = tf.memory().numBytes;
  const model = createSasrec(modelConfigFrom(ds, o), 1);
  const vars = modelVariables(model);
  const adam = createAdam(vars, { lr: o.lr, beta1: o.beta1 ?? 0.9, beta2: o.beta2, eps: 1e-8, weightDecay: o.weightDecay });
  const resident = tf.memory().numBytes - base; // weights + Adam m and v
  const batch = makeBatch(ds, buildWindows(ds, maxLen, 'last').slice(0, o.batchSize));
  const loss = lossSetup(ds, o.loss as LossSetup['kind'], o.negatives, 'uniform');
  const state: RunState = { epoch: 0, step: 0, best: -Infinity, bestEpoch: 0, sinceBest: 0, trainSeconds: 0, stepsTimed: 0, stepSeconds: 0, history: [], done: false };
  try {
    const profile = await tf.profile(() => {
      trainStep(model, vars, adam, batch, loss, o.seed, 1, 0, undefined, state, o.lr);
    });
    const estimate = estimateTrainMemory({
      numItems: ds.items.length - 1, dims: o.dims, maxLen: o.maxLen, blocks: o.blocks, heads: o.heads, ffnDims: o.ffnDims, loss: o.loss, negatives: o.negatives,
      evalBatch: 1, // evaluation is not part of a training step: 1 row keeps its phase below the step's
      batchRows: batch.B, batchLen: batch.L, backend: 'wasm',
    }, RAM);
    return { peak: profile.peakBytes - base, resident, estimate, batch, left: tf.memory().numBytes - base - resident };
  } finally {
    adam.dispose();
    disposeModel(model);
  }
}

describe('estimateTrainMemory against tf.profile of one real training step (wasm)', () => {
  for (const shape of SHAPES) {
    it(`${shape.name}: measured peak <= estimate <= 1.25 x measured peak`, async () => {
      const { peak, resident, estimate, batch, left } = await measure(shape);
      expect([batch.B, batch.L]).toEqual([shape.flags.batchSize, shape.flags.maxLen]); // full batches, as the estimate assumes
      expect(left).toBe(0); // the step leaves nothing behind but the updated weights and moments
      // The parameters part is 7 copies of the parameters, 3 of them the weights and Adam moments tfjs counts here.
      expect(resident).toBe((estimate.parts.parameters! / 7) * 3);
      const ratio = estimate.bytes / peak;
      expect(ratio, `estimate ${estimate.bytes} B vs measured ${peak} B`).toBeGreaterThanOrEqual(1);
      expect(ratio, `estimate ${estimate.bytes} B vs measured ${peak} B`).toBeLessThanOrEqual(1.25);
    });
  }
});
