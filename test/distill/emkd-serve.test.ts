/**
 * `student:train --emkd K --serve member|ensemble`: a K = 3 run of the small synthetic model reports both ways of
 * serving in metrics.json; with `ensemble`, loadStudent(run) (hence eval, bench and the HTTP server) scores with
 * the mean of the K member folders' own scores, computed here member by member, and validation selects the epoch
 * on the ensemble (so --serve ensemble is part of the run's identity); --serve ensemble without --emkd is a usage
 * error.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { buildDistillHooks } from '../../src/distill/index.js';
import { memberDir } from '../../src/distill/emkd/ensemble.js';
import { evaluableUsers, historyFor } from '../../src/eval/evaluate.js';
import { loadStudentOnnx } from '../../src/student/serving/onnx.js';
import { loadStudent, topK } from '../../src/student/serving/serve.js';
import { readServePlan } from '../../src/student/serving/serve-plan.js';
import { trainStudent } from '../../src/student/training/train.js';
import { loadRecommender } from '../../src/serve/recommender.js';
import { studentOnnxServer, studentServer } from '../../src/bench/servers.js';
import { smallDataset, smallOptions } from '../student/fixtures/small.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-emkd-serve-'));
const run = join(tmp, 'run');
const K = 3;

async function train(serve?: string) {
  const ds = await smallDataset();
  const opts = smallOptions({ epochs: 2 });
  const hooks = await buildDistillHooks({ ...opts, emkd: K, ...(serve ? { serve } : {}), seed: 42 }, ds, { dims: opts.dims, blocks: opts.blocks });
  try {
    return await trainStudent({ ds, opts, outDir: run, backend: 'wasm', hooks, log: () => {} });
  } finally {
    hooks?.dispose?.();
  }
}

const metrics = () => JSON.parse(readFileSync(join(run, 'metrics.json'), 'utf8'));

beforeAll(async () => {
  await initBackend('wasm');
  await train('ensemble');
}, 900_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('--serve ensemble', () => {
  it('loadStudent(run) scores with the mean of the K members\' own scores; model and encode are network 1\'s', async () => {
    const ds = await smallDataset();
    expect(readServePlan(run)).toEqual({ serve: 'ensemble', members: ['ensemble-1', 'ensemble-2', 'ensemble-3'] });
    const histories = evaluableUsers(ds).slice(0, 9).map((u) => historyFor(ds, u, 'test'));
    // Each member loaded on its own (a member folder has no serve.json: one network).
    const h = histories[4]!;
    const each: Float32Array[] = [];
    const eachOne: Float32Array[] = []; // one history alone (padded to its own length, not the batch's)
    for (let n = 1; n <= K; n++) {
      const m = await loadStudent(memberDir(run, n));
      expect(m.info.members).toBeUndefined();
      each.push(m.scoreBatch(histories));
      eachOne.push(m.scores(h));
      m.dispose();
    }
    expect(each[1]).not.toEqual(each[0]); // three different networks
    const meanOf = (xs: Float32Array[]) => Float32Array.from(xs[0]!, (_, i) => (xs[0]![i]! + xs[1]![i]! + xs[2]![i]!) / 3);
    const mean = meanOf(each);
    const meanOne = meanOf(eachOne);
    const ens = await loadStudent(run);
    try {
      expect(ens.info.members).toEqual([1, 2, 3].map((n) => memberDir(run, n)));
      expect(ens.info.dir).toBe(run);
      expect(Array.from(ens.scoreBatch(histories))).toEqual(Array.from(mean));
      expect(Array.from(ens.scores(h))).toEqual(Array.from(meanOne));
      expect(ens.recommend(h, 10)).toEqual(topK(meanOne, 10, new Set(h)));
      expect(ens.recommend(h, 10, { excludeHistory: false })).toEqual(topK(meanOne, 10));
      // encode: network 1's states, the run's own model.safetensors.
      const one = await loadStudent(memberDir(run, 1));
      expect(ens.encode(histories[0]!)).toEqual(one.encode(histories[0]!));
      expect(ens.info.parameters).toBe(3 * one.info.parameters);
      one.dispose();
    } finally {
      ens.dispose();
    }
  });

  it('the HTTP serving path on onnxruntime averages the members\' ONNX scores too', async () => {
    const ds = await smallDataset();
    const h = historyFor(ds, evaluableUsers(ds)[3]!, 'test');
    const sum = new Float64Array(ds.items.length);
    for (let n = 1; n <= K; n++) {
      const m = await loadStudentOnnx(memberDir(run, n));
      (await m.scoreBatch([h])).forEach((v, i) => (sum[i]! += v));
      await m.dispose();
    }
    const want = topK(Float32Array.from(sum, (x) => x / K), 5, new Set(h));
    const rec = await loadRecommender(run, { runtime: 'onnx' });
    const bench = await studentOnnxServer(run);
    try {
      expect(await rec.recommendDense(h, 5)).toEqual(want);
      // bench's onnxruntime server too, one request and a batch; its files are the members'.
      expect(await bench.recommendAsync(h, 5)).toEqual(want.items);
      expect((await bench.recommendBatch([h, h], 5))[1]).toEqual(want.items);
      expect(bench.files.map((f) => f.path)).toEqual([1, 2, 3].map((n) => join(memberDir(run, n), 'model.safetensors')));
      const tfBench = await studentServer(run, 'student', 'wasm');
      expect(tfBench.files).toHaveLength(3);
      await tfBench.dispose();
      const one = await loadStudent(memberDir(run, 1));
      expect(rec.info.parameters).toBe(3 * one.info.parameters);
      one.dispose();
    } finally {
      await rec.dispose();
      await bench.dispose();
    }
  });

  it('metrics.json reports both: member = network 1 (the top-level metrics), ensemble = ensemble.json\'s', () => {
    const m = metrics();
    const serving = m.distill.emkd.serving;
    expect(serving.serve).toBe('ensemble');
    expect(serving.member).toEqual({ network: 1, valid: m.valid, test: m.test });
    const ensembleJson = JSON.parse(readFileSync(join(run, 'ensemble.json'), 'utf8'));
    expect(serving.ensemble).toEqual({ K, valid: ensembleJson.valid, test: ensembleJson.test });
    expect(serving.networksTestNdcg10).toEqual(ensembleJson.members.map((x: Record<string, number>) => x['ndcg@10']));
    expect(serving.networksTestNdcg10[0]).toBeCloseTo(m.test['ndcg@10'], 12); // network 1 alone is the member
    expect(m.memory.peakRssMiB).toBeGreaterThan(0);
    expect(m.memory.estimateMiB).toBeGreaterThan(0);
  });
});

describe('--serve selects what validation chooses the epoch on', () => {
  it('--serve ensemble: the validation in history.jsonl at the best epoch is the ensemble\'s (ensemble.json)', () => {
    const history = readFileSync(join(run, 'history.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const ensembleJson = JSON.parse(readFileSync(join(run, 'ensemble.json'), 'utf8'));
    expect(history[metrics().bestEpoch - 1].valid['ndcg@10']).toBeCloseTo(ensembleJson.valid['ndcg@10'], 6);
    expect(metrics().distill.emkd.selection).toBe('ensemble');
  });

  it('so rerunning the run with --serve member is another run: the checkpoint is refused, naming the difference', async () => {
    const before = readFileSync(join(run, 'checkpoint.safetensors'));
    await expect(train()).rejects.toThrow(/was written by a different run .*selection/);
    expect(readFileSync(join(run, 'checkpoint.safetensors')).equals(before)).toBe(true);
  }, 900_000);
});

describe('--serve without EMKD', () => {
  it('--serve ensemble with --emkd 0 (or absent) is a usage error naming both flags', async () => {
    const ds = await smallDataset();
    const opts = smallOptions();
    for (const flags of [{ serve: 'ensemble' }, { serve: 'ensemble', emkd: 0 }]) {
      const p = buildDistillHooks({ ...opts, ...flags }, ds, { dims: opts.dims, blocks: opts.blocks });
      await expect(p).rejects.toMatchObject({ code: 'E_USAGE' });
      await expect(p).rejects.toThrow(/--serve ensemble .*needs --emkd K .*got --emkd 0/);
    }
    await expect(buildDistillHooks({ ...opts, serve: 'both' }, ds, { dims: opts.dims, blocks: opts.blocks })).rejects.toThrow(/"serve" must be one of member, ensemble/);
    expect(await buildDistillHooks({ ...opts, serve: 'member' }, ds, { dims: opts.dims, blocks: opts.blocks })).toBeUndefined();
  });
});
