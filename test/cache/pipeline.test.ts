import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, mkdtempSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { readManifest } from '../../src/cache/format.js';
import { openCache } from '../../src/cache/reader.js';
import { runTeacherCache, type CacheRunOptions } from '../../src/cache/run.js';
import { logPopularity, softLabelsFromLogits } from '../../src/teacher/head.js';
import { fakeEncoder, tinyDataset } from './fixtures.js';
import { HEAD_FILE } from '../../src/cache/format.js';
import type { PreparedDataset } from '../../src/data/types.js';
import { computeStats } from '../../src/distill/teacher-batch.js';
import { evaluateRanking, type ScoreBatch } from '../../src/eval/evaluate.js';
import { readSafetensorsFile } from '../../src/util/safetensors.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-pipe-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let backend = '';
beforeAll(async () => {
  backend = await initBackend('cpu');
});

export const opts = (out: string, extra: Partial<CacheRunOptions> = {}): CacheRunOptions => ({
  root: tmp,
  out,
  usersPerShard: 16,
  hiddenDtype: 'F32',
  concurrency: 2,
  k: 5,
  temperature: 2,
  head: { kind: 'linear', layer: -1, epochs: 4, lr: 0.05, batchSize: 64, patience: 2, seed: 3 },
  teacherOptions: {},
  backend,
  log: () => {},
  ...extra,
});

const closeTo = (m: Record<string, number>) => Object.fromEntries(Object.entries(m).map(([k, v]) => [k, expect.closeTo(v, 6)]));

/**
 * The teacher's metrics recomputed independently of the cache's scoring code: head.safetensors applied in float64
 * (logits = ((h - input_mean) / input_std) weight^T + bias, its documented contract) to the last cached layer at
 * the position before the split's target, then the shared full-ranking protocol.
 */
async function headFileMetrics(dir: string, ds: PreparedDataset, split: 'valid' | 'test'): Promise<Record<string, number>> {
  const t = readSafetensorsFile(join(dir, HEAD_FILE)).tensors;
  const [W, b, mu, sd] = (['weight', 'bias', 'input_mean', 'input_std'] as const).map((k) => t[k]!.data as Float32Array);
  const [N1, H] = t.weight!.shape as [number, number];
  const r = openCache(dir, { fingerprint: ds.fingerprint });
  try {
    const L = r.layers.length;
    const score: ScoreBatch = async (users) => {
      const out = new Float32Array(users.length * N1);
      users.forEach((u, i) => {
        const n = ds.users[u]!.items.length;
        const rows = r.rowsForUser(u);
        const row = r.rowIndex(rows, split === 'valid' ? n - 3 : n - 2);
        if (row < 0) throw new Error(`user ${u}: no cached state`);
        const h = rows.hidden.subarray((row * L + L - 1) * H, (row * L + L) * H);
        for (let j = 0; j < N1; j++) {
          let z = b![j]!;
          for (let d = 0; d < H; d++) z += ((h[d]! - mu![d]!) / sd![d]!) * W![j * H + d]!;
          out[i * N1 + j] = z;
        }
      });
      return out;
    };
    return await evaluateRanking(ds, score, { split });
  } finally {
    r.close();
  }
}

describe('soft labels', () => {
  it('softmax at T over unmasked items, top-K best first (hand-computed)', () => {
    // N = 3, logits for items 0..3 = [9, 1, 2, 3], T = 2, history = [3]: items 1, 2 remain.
    const { index, prob } = softLabelsFromLogits(Float32Array.from([9, 1, 2, 3]), 1, 3, 2, 2, () => [3]);
    const z = Math.exp(0.5) + Math.exp(1);
    expect(Array.from(index)).toEqual([2, 1]);
    expect(prob[0]).toBeCloseTo(Math.exp(1) / z, 6);
    expect(prob[1]).toBeCloseTo(Math.exp(0.5) / z, 6);
  });
});

describe('head initialisation', () => {
  it('log-popularity bias: log((count + 1) / (R + N)), centred over items (hand-computed)', () => {
    const b = logPopularity(Int32Array.from([1, 1, 2]), 3);
    const raw = [Math.log(3 / 6), Math.log(2 / 6), Math.log(1 / 6)];
    const mean = (raw[0]! + raw[1]! + raw[2]!) / 3;
    expect(b[0]).toBe(0);
    for (let i = 0; i < 3; i++) expect(b[i + 1]).toBeCloseTo(raw[i]! - mean, 6);
  });
});

describe('teacher:cache pipeline (fake teacher, cpu backend)', () => {
  const ds = tinyDataset(40, 30);
  const enc = () => fakeEncoder({ numItems: 30, H: 8, layers: [1, 3] });

  it('writes a complete cache: soft labels mask history, metrics recorded, reader serves rows', async () => {
    const dir = join(tmp, 'full');
    const s = await runTeacherCache(enc(), ds, opts(dir));
    expect(s.complete).toBe(true);
    expect(s.shards).toBe(3);
    expect(s.rows).toBe(ds.users.reduce((a, u) => a + Math.max(0, u.items.length - 1), 0));
    const m = readManifest(dir);
    // The fake teacher's states determine the next item well: training must beat the zero-shot epoch 0.
    expect(m.head.bestEpoch).toBeGreaterThan(0);
    // The recorded metrics (the written head applied to the cached rows) reproduce the validation NDCG@10 the
    // fit measured for its best epoch (the fit's own query path), and the head file scores them on its own.
    expect(s.valid!['ndcg@10']).toBeCloseTo(m.head.history![m.head.bestEpoch!]!.validNdcg10!, 6);
    for (const split of ['valid', 'test'] as const) expect(await headFileMetrics(dir, ds, split), split).toEqual(closeTo(split === 'valid' ? s.valid! : s.test!));
    expect(m.head.history![m.head.bestEpoch!]!.validNdcg10!).toBeGreaterThan(m.head.history![0]!.validNdcg10! + 0.05);
    expect(m.head.history!.length).toBeGreaterThanOrEqual(2);
    const r = openCache(dir, { fingerprint: ds.fingerprint });
    expect(r.hasSoftLabels).toBe(true);
    for (const u of [2, 17, 39]) {
      const rows = r.rowsForUser(u);
      const items = ds.users[u]!.items;
      for (let i = 0; i < rows.positions.length; i++) {
        const idx = Array.from(rows.topkIndex!.subarray(i * 5, i * 5 + 5));
        const pr = Array.from(rows.topkProb!.subarray(i * 5, i * 5 + 5));
        const seen = new Set(items.subarray(0, rows.positions[i]! + 1));
        for (const j of idx) {
          expect(j).toBeGreaterThan(0);
          expect(seen.has(j)).toBe(false);
        }
        for (let a = 1; a < 5; a++) expect(pr[a]!).toBeLessThanOrEqual(pr[a - 1]!);
        expect(pr.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(1 + 1e-6);
      }
    }
    // stats.safetensors (written by the cache) = the distiller's own computeStats over the same rows.
    const st = r.stats()!;
    expect(st.mean.length).toBe(16);
    const again = computeStats(r, ds.users.length);
    expect(Array.from(st.mean)).toEqual(Array.from(again.mean, (v) => expect.closeTo(v, 6)));
    expect(Array.from(st.std)).toEqual(Array.from(again.std, (v) => expect.closeTo(v, 6)));
    expect(Math.min(...st.std)).toBeGreaterThan(0.01); // the fake states vary in every dimension
  });

  it('is deterministic: a second run in another directory writes identical shard bytes', async () => {
    const a = join(tmp, 'full');
    const b = join(tmp, 'again');
    await runTeacherCache(enc(), ds, opts(b));
    const files = readdirSync(a).filter((f) => f.endsWith('.safetensors')).sort();
    expect(files).toEqual(readdirSync(b).filter((f) => f.endsWith('.safetensors')).sort());
    expect(files).toContain('soft-00002.safetensors');
    for (const f of files) expect(readFileSync(join(a, f)).equals(readFileSync(join(b, f))), f).toBe(true);
  });

  it('a finished cache is not recomputed (the encoder is never called)', async () => {
    const e = enc();
    const s = await runTeacherCache(e, ds, opts(join(tmp, 'full')));
    expect(e.calls).toBe(0);
    expect(s.complete).toBe(true);
  });

  it('changing only soft-label options reuses the pass-1 shards of a sibling cache (no teacher calls)', async () => {
    const e = enc();
    const dir = join(tmp, 'k3');
    const s = await runTeacherCache(e, ds, opts(dir, { k: 3 }));
    expect(e.calls).toBe(0);
    expect(s.complete).toBe(true);
    expect(readManifest(dir).key).not.toBe(readManifest(join(tmp, 'full')).key);
    for (const f of ['hidden-00000.safetensors', 'hidden-00002.safetensors', 'items.safetensors']) {
      expect(readFileSync(join(dir, f)).equals(readFileSync(join(tmp, 'full', f)))).toBe(true);
    }
    expect(openCache(dir, { fingerprint: ds.fingerprint }).rowsForUser(7).topkIndex!.length).toBe(3 * (ds.users[7]!.items.length - 1));
  });

  it('one writer per cache directory: a live lock holder is refused, a dead one is taken over', async () => {
    const dir = join(tmp, 'locked');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, '.lock'), `${process.pid}@${hostname()}`);
    await expect(runTeacherCache(enc(), ds, opts(dir))).rejects.toThrow(/being written by another process \(pid \d+\)/);
    writeFileSync(join(dir, '.lock'), `999999999@${hostname()}`);
    expect((await runTeacherCache(enc(), ds, opts(dir))).complete).toBe(true);
    expect(existsSync(join(dir, '.lock'))).toBe(false);
  });

  it('without --out, caches go to <root>/<dataset>/<teacher>/<key>, slices next to it', async () => {
    const root = join(tmp, 'root');
    const o = { ...opts(''), root, out: undefined };
    const a = await runTeacherCache(enc(), ds, { ...o, slice: { index: 1, count: 2 } });
    const b = await runTeacherCache(enc(), ds, { ...o, slice: { index: 0, count: 2 } });
    const key = readManifest(a.cache).key;
    expect(a.cache).toBe(join(root, 'tiny', 'llm-teacher', `${key}.slice-1-of-2`));
    expect(b.cache).toBe(join(root, 'tiny', 'llm-teacher', `${key}.slice-0-of-2`));
    const full = await runTeacherCache(enc(), ds, o);
    expect(full.cache).toBe(join(root, 'tiny', 'llm-teacher', key));
    expect(full.complete).toBe(true);
  });

  it('zero-shot head: no training, metrics still recorded', async () => {
    const s = await runTeacherCache(enc(), ds, opts(join(tmp, 'zs'), { head: { kind: 'zeroshot', layer: -1, epochs: 0, lr: 0, batchSize: 1, patience: 1, seed: 0 } }));
    expect(s.complete).toBe(true);
    expect(readManifest(join(tmp, 'zs')).softLabels.head).toBe('zeroshot');
    // The zero-shot head's file, applied to the cached states in float64, gives the recorded metrics.
    for (const split of ['valid', 'test'] as const) expect(await headFileMetrics(join(tmp, 'zs'), ds, split), split).toEqual(closeTo(split === 'valid' ? s.valid! : s.test!));
  });
});
