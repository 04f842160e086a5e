/**
 * EMKD's reference variant end to end (src/distill/emkd/cloze.ts): `--emkd 2 --attention bidirectional --serve
 * ensemble` on the small synthetic dataset trains the cloze networks with the reference's terms only (no next-item
 * CE), selects the epoch on the ensemble (its validation NDCG@10 in history.jsonl is the one the exported members
 * give, evaluated apart), and serves through MASK; the cloze family refuses next-item training and a teacher member.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { buildDistillHooks } from '../../src/distill/index.js';
import { trainingSequences } from '../../src/distill/emkd/cloze.js';
import { evaluateEnsemble } from '../../src/distill/emkd/ensemble.js';
import { readTensors } from '../../src/student/model/checkpoint.js';
import { loadStudent } from '../../src/student/serving/serve.js';
import { trainStudent } from '../../src/student/training/train.js';
import { smallDataset, smallOptions } from '../student/fixtures/small.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-emkd-cloze-'));
const run = join(tmp, 'run');

beforeAll(async () => {
  await initBackend('wasm');
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('training sequences for cloze', () => {
  it('each row\'s inputs then its last target, to min(L + 1, maxLen) slots', () => {
    // rows (left-padded, L = 3): [0, 1, 2] -> targets [0, 2, 3]; [4, 5, 6] -> targets [5, 6, 7]
    const r = trainingSequences(Int32Array.from([0, 1, 2, 4, 5, 6]), Int32Array.from([0, 2, 3, 5, 6, 7]), 2, 10);
    expect(r.L).toBe(4);
    expect(Array.from(r.items)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const capped = trainingSequences(Int32Array.from([4, 5, 6]), Int32Array.from([5, 6, 7]), 1, 3);
    expect(Array.from(capped.items)).toEqual([5, 6, 7]);
  });
});

describe('--emkd 2 --attention bidirectional --serve ensemble', () => {
  it('trains on the reference\'s terms, selects the epoch on the ensemble, serves through MASK', async () => {
    const ds = await smallDataset();
    const opts = smallOptions({ epochs: 3, attention: 'bidirectional' });
    const hooks = await buildDistillHooks({ ...opts, emkd: 2, serve: 'ensemble', emkdViews: 2, seed: 42 }, ds, { dims: opts.dims, blocks: opts.blocks });
    try {
      expect(hooks!.weights(0)).toMatchObject({ ce: 0, emkd_cloze: 1, emkd_intra: 0.01, emkd_inter: 0.01, emkd_kl: 0.001 });
      await trainStudent({ ds, opts, outDir: run, backend: 'wasm', hooks, log: () => {} });
    } finally {
      hooks?.dispose?.();
    }
    const history = readFileSync(join(run, 'history.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(Object.keys(history[0].loss)).not.toContain('ce');
    expect(Object.keys(history[0].loss)).toEqual(expect.arrayContaining(['emkd_cloze', 'emkd_intra', 'emkd_inter', 'emkd_kl']));
    const metrics = JSON.parse(readFileSync(join(run, 'metrics.json'), 'utf8'));
    const best = history[metrics.bestEpoch - 1];
    // The validation that chose the epoch is the ensemble's: the exported members, evaluated apart, agree.
    const ens = await evaluateEnsemble(run, ds);
    expect(best.valid['ndcg@10']).toBeCloseTo(ens.valid['ndcg@10']!, 6);
    expect(metrics.distill.emkd.selection).toBe('ensemble');
    // The run serves the ensemble of bidirectional networks (config.json's model).
    const served = await loadStudent(run);
    try {
      expect(served.info.config.attention).toBe('bidirectional');
      expect(served.info.members).toHaveLength(2);
    } finally {
      served.dispose();
    }
  }, 300_000);

  it('--emkd 1 (one cloze network, no hook variables): its "ensemble" is network 1 at the best epoch, not the last', async () => {
    const ds = await smallDataset();
    const opts = smallOptions({ epochs: 3, attention: 'bidirectional' });
    const out = join(tmp, 'one');
    const hooks = await buildDistillHooks({ ...opts, emkd: 1, lambdaEmkdAttr: 0, lambdaEmkdIntra: 0, seed: 42 }, ds, { dims: opts.dims, blocks: opts.blocks });
    try {
      expect(hooks!.variables()).toHaveLength(0);
      await trainStudent({ ds, opts, outDir: out, backend: 'wasm', hooks, log: () => {} });
    } finally {
      hooks?.dispose?.();
    }
    const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8'));
    const meta = readTensors(join(out, 'ensemble-1', 'model.safetensors')).metadata;
    expect(meta.weights).toBe('best validated epoch');
    expect(Number(meta.bestEpoch)).toBe(metrics.bestEpoch);
    expect(metrics.distill.emkd.serving.ensemble.valid['ndcg@10']).toBeCloseTo(metrics.valid['ndcg@10'], 9);
  }, 300_000);

  it('refuses next-item training (no --emkd)', async () => {
    const ds = await smallDataset();
    const opts = smallOptions({ epochs: 1, attention: 'bidirectional' });
    await expect(trainStudent({ ds, opts, outDir: join(tmp, 'plain'), backend: 'wasm', log: () => {} })).rejects.toThrow(/--attention bidirectional trains by cloze .*--emkd K/);
  });
});
