/**
 * A training run releases every tensor it allocates, plain and distilled with each balancing mode. (Two leaks
 * crashed long ablations with a wasm abort: every evaluation batch kept its [B, N + 1] scores, and each balance
 * measurement of a non-CE term ran the full-softmax CE forward, whose kept softmax is only freed by its gradient.)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { buildDistillHooks } from '../../src/distill/index.js';
import { trainStudent } from '../../src/student/training/train.js';
import { writeReplicaModel } from '../../src/teacher/replica/index.js';
import { runCmd } from '../bench/fixtures.js';
import { SMALL_DATA, smallDataset, smallOptions } from '../student/fixtures/small.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-leaks-'));
let cache = '';
beforeAll(async () => {
  const lm = writeReplicaModel({ out: join(tmp, 'lm'), layout: 'optimum', dtype: 'fp32', seed: 1, layers: 2, hidden: 32, heads: 2, kvHeads: 1, merges: 200, maxPositions: 512, externalDataChunks: 0 });
  cache = String((await runCmd(() => import('../../src/cli/commands/teacher-cache.js'), { ...SMALL_DATA, model: lm.out, dtype: 'fp32', layers: '-1', maxPromptTokens: 512, topK: 10, head: 'zeroshot', overheadSample: 0, offline: true, out: join(tmp, 'cache') })).cache);
}, 900_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('training releases its tensors', () => {
  it.each(['ce only', 'none', 'gradcos', 'unshare'])('%s: no tensor and no byte left after a run', async (mode) => {
    const backend = await initBackend('wasm');
    const ds = await smallDataset();
    const opts = smallOptions({ epochs: 2, blocks: 2 });
    const before = tf.memory();
    const hooks = mode === 'ce only' ? undefined : await buildDistillHooks({ cache, lambdaCos: 1, lambdaKd: 0.5, lambdaMs: 0.5, lambdaEmb: 0.5, balance: mode, balanceEvery: 3, seed: 42 }, ds, { dims: opts.dims, blocks: opts.blocks });
    await trainStudent({ ds, opts, outDir: join(tmp, `run-${mode.replace(' ', '-')}`), backend, hooks, log: () => {} });
    hooks?.dispose?.();
    const after = tf.memory();
    expect(after.numTensors - before.numTensors).toBe(0);
    expect(after.numBytes - before.numBytes).toBe(0);
  }, 900_000);
});
