import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { RecdistillError } from '../../src/errors.js';
import { readTensors } from '../../src/student/model/checkpoint.js';
import type { TrainHooks } from '../../src/student/training/hooks.js';
import { loadStudent } from '../../src/student/serving/serve.js';
import { trainStudent } from '../../src/student/training/train.js';
import evalCommand from '../../src/cli/commands/eval.js';
import { resolveOptions } from '../../src/config/options.js';
import { killAfterEpoch, runToEnd as runChildToEnd } from '../helpers/children.js';
import { smallDataset, smallOptions } from './fixtures/small.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-student-'));
const quiet = () => {};

beforeAll(async () => {
  await initBackend('wasm');
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('student:train on a small sequential dataset', () => {
  it('beats popularity by at least 2x NDCG@10 and reloads for serving', async () => {
    const ds = await smallDataset();
    const out = join(tmp, 'quality');
    const r = await trainStudent({ ds, opts: smallOptions({ epochs: 8 }), outDir: out, backend: 'wasm', log: quiet });
    expect(r.test['ndcg@10']).toBeGreaterThan(2 * r.popularityTest['ndcg@10']!);
    for (const f of ['model.safetensors', 'config.json', 'metrics.json', 'history.jsonl', 'curves.svg', 'checkpoint.safetensors']) expect(existsSync(join(out, f))).toBe(true);
    const history = readFileSync(join(out, 'history.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { epoch: number; valid: Record<string, number> });
    expect(history).toHaveLength(8);
    // the best epoch is the first with the highest validation NDCG@10
    const bestNdcg = Math.max(...history.map((h) => h.valid['ndcg@10']!));
    expect(r.bestEpoch).toBe(history.find((h) => h.valid['ndcg@10'] === bestNdcg)!.epoch);
    expect(readFileSync(join(out, 'curves.svg'), 'utf8')).toContain('<polyline');
    // the serving API reproduces the training-time test metric's inputs: same scores as a fresh load
    const s = await loadStudent(out);
    const hist = Array.from(ds.users[0]!.items.subarray(0, -1));
    const rec = s.recommend(hist, 5);
    expect(rec.items).toHaveLength(5);
    expect(rec.items.some((i) => hist.includes(i))).toBe(false);
    const all = s.scores(hist);
    expect(rec.scores[0]).toBeCloseTo(Math.max(...Array.from(all).filter((_, j) => j > 0 && !hist.includes(j))), 5);
    const enc = s.encode(hist);
    expect(enc.layers).toHaveLength(1);
    expect(enc.layers[0]!.length).toBe(enc.length * 16);
    s.dispose();
    // the eval command reloads the run folder and reproduces the training-time metrics
    const ev = (await evalCommand.run(resolveOptions(evalCommand.options, { flags: { student: out, backend: 'wasm' } }), { log: quiet, json: true, verbose: false })) as { test: Record<string, number>; valid: Record<string, number> };
    expect(ev.test['ndcg@10']).toBeCloseTo(r.test['ndcg@10']!, 6);
    expect(ev.valid['hr@10']).toBeCloseTo(r.valid['hr@10']!, 6);
    expect(existsSync(join(out, 'eval.md'))).toBe(true);
  }, 900_000);

  it('refuses to resume a run with a different config', async () => {
    const ds = await smallDataset();
    const out = join(tmp, 'mismatch');
    await trainStudent({ ds, opts: smallOptions({ epochs: 1 }), outDir: out, backend: 'wasm', log: quiet });
    await expect(trainStudent({ ds, opts: smallOptions({ epochs: 2, lr: 0.01 }), outDir: out, backend: 'wasm', log: quiet })).rejects.toThrow(/lr: checkpoint 0.005 vs now 0.01/);
  }, 900_000);

  it('stops on a non-finite loss with a clear error and leaves the last checkpoint intact', async () => {
    const ds = await smallDataset();
    const out = join(tmp, 'nan');
    let stepsPerEpoch = 0;
    const hooks: TrainHooks = {
      variables: () => [],
      // NaN from the second epoch on (step counter is global)
      extraTerms: (ctx) => ({ bad: tf.scalar(stepsPerEpoch && ctx.step >= stepsPerEpoch ? NaN : 0) }),
      weights: () => ({ bad: 1 }),
    };
    const run = trainStudent({ ds, opts: smallOptions({ epochs: 3 }), outDir: out, backend: 'wasm', log: quiet, hooks, onEpoch: () => { stepsPerEpoch = 1; } });
    const err = await run.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(RecdistillError);
    expect((err as RecdistillError).code).toBe('E_NUMERIC');
    expect((err as Error).message).toMatch(/non-finite training loss at epoch 2, step \d+ \(ce=[\d.]+, bad=NaN\)/);
    const { metadata, tensors } = readTensors(join(out, 'checkpoint.safetensors'));
    expect(JSON.parse(metadata.state!).epoch).toBe(1);
    expect(Array.from(tensors['model/item_emb']!.data as Float32Array).every(Number.isFinite)).toBe(true);
  }, 900_000);
});

describe('resume after SIGKILL', () => {
  const script = join(__dirname, 'fixtures', 'train-child.ts');
  const runToEnd = (out: string, epochs: number) => runChildToEnd(script, [out, String(epochs), '0']);

  it('a killed run resumes from its checkpoint and ends with the same weights as an uninterrupted one', async () => {
    const killed = join(tmp, 'killed');
    // Kill during epoch 3 (the child sleeps after each checkpoint so the kill lands between epochs 2 and 3).
    await killAfterEpoch(script, [killed, '4', '1500'], 2);
    const mid = readTensors(join(killed, 'checkpoint.safetensors'));
    expect(JSON.parse(mid.metadata.state!).epoch).toBe(2);
    expect(existsSync(join(killed, 'metrics.json'))).toBe(false);
    await runToEnd(killed, 4);
    const straight = join(tmp, 'straight');
    await runToEnd(straight, 4);
    const a = readFileSync(join(killed, 'model.safetensors'));
    const b = readFileSync(join(straight, 'model.safetensors'));
    expect(a.equals(b)).toBe(true);
    const ma = JSON.parse(readFileSync(join(killed, 'metrics.json'), 'utf8'));
    const mb = JSON.parse(readFileSync(join(straight, 'metrics.json'), 'utf8'));
    expect(ma.resumedFrom).toBe(2);
    expect(ma.test).toEqual(mb.test);
    expect(readFileSync(join(killed, 'history.jsonl'), 'utf8').trim().split('\n')).toHaveLength(4);
  }, 900_000);
});
