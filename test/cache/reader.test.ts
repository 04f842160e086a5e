import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runPass1, type Pass1Options } from '../../src/cache/build.js';
import { fromHalf, toHalf } from '../../src/util/f16.js';
import { readManifest } from '../../src/cache/format.js';
import { openCache } from '../../src/cache/reader.js';
import { fakeEncoder, parseSafetensorsIndependently, tinyDataset } from './fixtures.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-cache-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const base = (out: string, extra: Partial<Pass1Options> = {}): Pass1Options => ({
  root: tmp,
  out,
  usersPerShard: 8,
  hiddenDtype: 'F32',
  concurrency: 3,
  softLabels: { k: 5, temperature: 1 },
  head: { kind: 'linear', layer: -1, epochs: 3, lr: 0.01, batchSize: 32, patience: 2, seed: 1 },
  teacherOptions: {},
  log: () => {},
  ...extra,
});

describe('teacher cache pass 1 + reader', () => {
  const ds = tinyDataset(21, 30);
  const enc = fakeEncoder({ numItems: 30, H: 6, layers: [0, 2] });

  it('round-trips: rows read back equal the encoder states for positions 0..n-2', async () => {
    const dir = join(tmp, 'rt');
    const r = await runPass1(enc, ds, base(dir));
    expect(r.manifest.shards.map((s) => [s.userStart, s.userEnd])).toEqual([[0, 8], [8, 16], [16, 21]]);
    const reader = openCache(dir, { fingerprint: ds.fingerprint, requireComplete: false, maxShards: 2 });
    expect(reader.layers).toEqual([0, 2]);
    expect(reader.hiddenSize).toBe(6);
    for (let u = 0; u < ds.users.length; u++) {
      const items = ds.users[u]!.items;
      const rows = reader.rowsForUser(u);
      const n = items.length;
      expect(Array.from(rows.positions)).toEqual(Array.from({ length: Math.max(0, n - 1) }, (_, i) => i));
      if (n < 2) {
        expect(rows.hidden.length).toBe(0);
        continue;
      }
      // Causal: the state after item p of the full history equals encoding the prefix 0..p alone.
      const want = await enc.encodeHistory(items.subarray(0, n - 1));
      expect(Array.from(rows.hidden)).toEqual(Array.from(want.states));
      const p = n - 2;
      const prefix = await enc.encodeHistory(items.subarray(0, p + 1));
      const i = reader.rowIndex(rows, p);
      expect(i).toBe(p);
      expect(Array.from(rows.hidden.subarray(i * 12, i * 12 + 12))).toEqual(Array.from(prefix.states.subarray(p * 12, p * 12 + 12)));
      expect(reader.cachedShards()).toBeLessThanOrEqual(2);
    }
    const emb = reader.itemEmbeddings();
    expect(emb.length).toBe(31 * 6);
    expect(Array.from(emb.subarray(0, 6))).toEqual([0, 0, 0, 0, 0, 0]);
    // 40 users would be 3 shards of <= 8 users; rows = sum over users of (n - 1).
    const rowsTotal = ds.users.reduce((a, s) => a + Math.max(0, s.items.length - 1), 0);
    expect(r.manifest.shards.reduce((a, s) => a + s.rows, 0)).toBe(rowsTotal);
  });

  it('an independent safetensors parser reads a shard (names, dtypes, shapes, values)', () => {
    const dir = join(tmp, 'rt');
    const m = readManifest(dir);
    const s = m.shards[1]!;
    const t = parseSafetensorsIndependently(readFileSync(join(dir, s.file)));
    expect(Object.keys(t).sort()).toEqual(['hidden', 'position', 'user']);
    expect(t.user!.dtype).toBe('I32');
    expect(t.hidden!.shape).toEqual([s.rows, 2, 6]);
    const users = new Int32Array(t.user!.bytes.buffer, t.user!.bytes.byteOffset, s.rows);
    const pos = new Int32Array(t.position!.bytes.buffer, t.position!.bytes.byteOffset, s.rows);
    // First row of shard 1 is user 8, position 0.
    expect([users[0], pos[0]]).toEqual([8, 0]);
    const hidden = new Float32Array(t.hidden!.bytes.buffer, t.hidden!.bytes.byteOffset, s.rows * 12);
    const reader = openCache(dir, { fingerprint: ds.fingerprint, requireComplete: false });
    expect(Array.from(hidden.subarray(0, 12))).toEqual(Array.from(reader.rowsForUser(8).hidden.subarray(0, 12)));
  });

  it('refuses a cache built for another dataset fingerprint, naming both', () => {
    const dir = join(tmp, 'rt');
    expect(() => openCache(dir, { fingerprint: 'other-fp', requireComplete: false })).toThrow(/fingerprint fp-tiny-7.*other-fp/);
  });

  it('refuses an incomplete cache by default', () => {
    expect(() => openCache(join(tmp, 'rt'), { fingerprint: ds.fingerprint })).toThrow(/not complete/);
  });

  it('F16 hidden states read back as the nearest half of each value', async () => {
    const dir = join(tmp, 'f16');
    await runPass1(enc, ds, base(dir, { hiddenDtype: 'F16' }));
    const reader = openCache(dir, { fingerprint: ds.fingerprint, requireComplete: false });
    const u = 5;
    const items = ds.users[u]!.items;
    const want = await enc.encodeHistory(items.subarray(0, items.length - 1));
    const got = reader.rowsForUser(u).hidden;
    expect(got.length).toBe(want.states.length);
    for (let i = 0; i < got.length; i++) {
      expect(got[i]).toBe(fromHalf(toHalf(want.states[i]!)));
      expect(Math.abs(got[i]! - want.states[i]!)).toBeLessThanOrEqual(Math.abs(want.states[i]!) * 2 ** -11 + 1e-7);
    }
  });

  it('half-precision conversion: exact values, rounding, overflow, subnormals', () => {
    expect(toHalf(1)).toBe(0x3c00);
    expect(toHalf(-2)).toBe(0xc000);
    expect(toHalf(65504)).toBe(0x7bff);
    expect(toHalf(1e6)).toBe(0x7c00);
    expect(toHalf(2 ** -24)).toBe(1);
    expect(toHalf(1 + 2 ** -11)).toBe(0x3c00); // tie -> even
    expect(toHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie -> even (up)
    expect(fromHalf(0x3555)).toBeCloseTo(0.33325, 5);
  });

  it('a prompt budget leaves early positions out; rows say which positions exist', async () => {
    const dir = join(tmp, 'budget');
    const e2 = fakeEncoder({ numItems: 30, H: 6, layers: [0, 2], budget: 4 });
    await runPass1(e2, ds, base(dir, { teacherOptions: { budget: 4 } })); // the budget changes the states: it is in the key
    const reader = openCache(dir, { fingerprint: ds.fingerprint, requireComplete: false });
    const u = ds.users.findIndex((s) => s.items.length >= 8);
    const n = ds.users[u]!.items.length;
    const rows = reader.rowsForUser(u);
    expect(Array.from(rows.positions)).toEqual([n - 5, n - 4, n - 3, n - 2]);
    expect(reader.rowIndex(rows, n - 3)).toBe(2);
    expect(reader.rowIndex(rows, 0)).toBe(-1);
  });
});
