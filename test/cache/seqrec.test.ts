import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { readManifest } from '../../src/cache/format.js';
import { openCache } from '../../src/cache/reader.js';
import { evaluateRanking, historyFor } from '../../src/eval/evaluate.js';
import { runTeacherCache } from '../../src/cache/run.js';
import { createSasrec, disposeModel, encode, scores, type Sasrec } from '../../src/student/model/model.js';
import { softLabelsFromLogits } from '../../src/teacher/head.js';
import { sasrecModel, seqrecTeacher, seqWindows, type ScoreRequest } from '../../src/teacher/seqrec.js';
import { tinyDataset } from './fixtures.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-seqrec-'));
let m: Sasrec;
let backend = '';
beforeAll(async () => {
  backend = await initBackend('cpu');
  m = createSasrec({ numItems: 30, maxLen: 6, dims: 8, blocks: 2, heads: 2, dropout: 0, attnDropout: 0, ffnDims: 16 }, 4);
});
afterAll(() => {
  disposeModel(m);
  rmSync(tmp, { recursive: true, force: true });
});

describe('seqrec teacher', () => {
  it('windows: full context up to maxLen, then half-overlapping windows', () => {
    expect(seqWindows(5, 6)).toEqual([{ start: 0, end: 5, assignFrom: 0 }]);
    expect(seqWindows(11, 6)).toEqual([
      { start: 0, end: 6, assignFrom: 0 },
      { start: 3, end: 9, assignFrom: 6 },
      { start: 5, end: 11, assignFrom: 9 },
    ]);
  });

  it('states equal the model encode (short history) and the windowed encode (long history)', async () => {
    const t = seqrecTeacher(sasrecModel(m), { model: 'run', weightsHash: 'x', layers: '0,-1' });
    const items = Int32Array.from([3, 9, 4, 1, 7]);
    const s = await t.encoder.encodeHistory(items);
    expect([s.first, s.count]).toEqual([0, 5]);
    const ref = tf.tidy(() => encode(m, items, 1, 5).map((x) => Array.from(x.dataSync())));
    // position 2, block 1 (the final state): [count, 2, 8] layout
    expect(Array.from(s.states.subarray((2 * 2 + 1) * 8, (2 * 2 + 2) * 8))).toEqual(ref[1]!.slice(16, 24));
    expect(Array.from(s.states.subarray((4 * 2 + 0) * 8, (4 * 2 + 1) * 8))).toEqual(ref[0]!.slice(32, 40));
    // Long history: position 7 comes from the window [3, 9).
    const long = Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    const sl = await t.encoder.encodeHistory(long);
    const w = tf.tidy(() => Array.from(encode(m, long.subarray(3, 9), 1, 6)[1]!.dataSync()));
    expect(Array.from(sl.states.subarray((7 * 2 + 1) * 8, (7 * 2 + 2) * 8))).toEqual(w.slice(4 * 8, 5 * 8));
    // Scores after position 7 read the history up to 7 only (items 0..7: windows [0, 6), [2, 8)).
    const sc = await t.scores(long, Int32Array.of(7));
    const w8 = tf.tidy(() => Array.from(encode(m, long.subarray(2, 8), 1, 6)[1]!.dataSync()));
    const want = tf.tidy(() => Array.from(scores(m, tf.tensor2d(w8.slice(5 * 8, 6 * 8), [1, 8])).dataSync()));
    expect(Array.from(sc)).toEqual(want);
  });

  it('scoreRows gives the bytes of per-user scores, in request order, with histories longer than maxLen', async () => {
    // Two architectures: 2 heads, and 1 head with the filter branch (maxLen 6; histories up to 12 items: up to 3 windows).
    const m1 = createSasrec({ numItems: 30, maxLen: 6, dims: 8, blocks: 2, heads: 1, dropout: 0, attnDropout: 0, ffnDims: 16, filterAlpha: 0.7, filterBins: 3 }, 5);
    try {
      const ds = tinyDataset(24, 30, 5);
      expect(Math.max(...ds.users.map((u) => u.items.length))).toBeGreaterThan(9); // three windows or more
      for (const model of [m, m1]) {
        const t = seqrecTeacher(sasrecModel(model), { model: 'run', weightsHash: 'x', layers: '-1' });
        const requests: ScoreRequest[] = [];
        ds.users.forEach(({ items }, u) => {
          const n = items.length;
          // the soft-label rows (every position without the test item), the metrics' prefixes, an unordered subset
          requests.push({ items, positions: Int32Array.from({ length: Math.max(0, n - 1) }, (_, i) => i) });
          if (n >= 3) requests.push({ items: items.subarray(0, n - 2), positions: Int32Array.of(n - 3) });
          if (n >= 2) requests.push({ items: items.subarray(0, n - 1), positions: Int32Array.of(n - 2) });
          if (u % 3 === 0 && n >= 8) requests.push({ items, positions: Int32Array.of(n - 1, 0, 6, 3) });
        });
        const want: number[] = [];
        for (const q of requests) want.push(...(await t.scores(q.items, q.positions)));
        const got = await t.scoreRows(requests);
        expect(got.length).toBe(want.length);
        expect(Array.from(got)).toEqual(want);
      }
      const t = seqrecTeacher(sasrecModel(m), { model: 'run', weightsHash: 'x', layers: '-1' });
      await expect(t.scoreRows([{ items: Int32Array.of(1, 2), positions: Int32Array.of(2) }])).rejects.toThrow(/outside the history/);
    } finally {
      disposeModel(m1);
    }
  });

  it('builds a complete cache whose soft labels are the teacher softmax over unseen items', async () => {
    const ds = tinyDataset(20, 30, 3);
    const t = seqrecTeacher(sasrecModel(m), { model: 'run', weightsHash: 'x', layers: '-1' });
    const dir = join(tmp, 'c');
    const s = await runTeacherCache(t.encoder, ds, {
      root: tmp, out: dir, usersPerShard: 8, hiddenDtype: 'F32', concurrency: 2, k: 3, temperature: 0.5,
      head: { kind: 'teacher', layer: -1, epochs: 0, lr: 0, batchSize: 1, patience: 1, seed: 0 },
      teacherOptions: t.options, teacherScores: t.scoreRows, backend, log: () => {},
    });
    expect(s.complete).toBe(true);
    // The recorded teacher metrics = the shared ranking protocol over scores computed here straight from the
    // model: the final state after the split's visible history (its last maxLen = 6 items), times the item table.
    for (const split of ['valid', 'test'] as const) {
      const direct = await evaluateRanking(ds, async (users) => {
        const out = new Float32Array(users.length * 31);
        users.forEach((user, b) => {
          const hist = historyFor(ds, user, split);
          const w = hist.subarray(Math.max(0, hist.length - 6));
          const sc = tf.tidy(() => scores(m, tf.slice(tf.reshape(encode(m, w, 1, w.length)[1]!, [w.length, 8]), [w.length - 1, 0], [1, 8])).dataSync());
          out.set(sc, b * 31);
        });
        return out;
      }, { split });
      const got = split === 'valid' ? s.valid! : s.test!;
      expect(got, split).toEqual(Object.fromEntries(Object.entries(direct).map(([k, v]) => [k, expect.closeTo(v, 6)])));
    }
    const r = openCache(dir, { fingerprint: ds.fingerprint });
    const u = 5;
    const items = ds.users[u]!.items;
    const rows = r.rowsForUser(u);
    const p = 1;
    // Rows come from one pass over the history without the test item (SASRec counts positions from the end,
    // so a state depends on the pass it was read from): score every row position in one call, take row p.
    const P = items.length - 1;
    const all = await t.scores(items, Int32Array.from({ length: P }, (_, i) => i));
    const logits = Array.from(all.subarray(p * 31, (p + 1) * 31));
    const seen = new Set([0, ...items.subarray(0, p + 1)]);
    const cand = logits.map((v, j) => ({ j, v: v / 0.5 })).filter((c) => !seen.has(c.j));
    const z = cand.reduce((a, c) => a + Math.exp(c.v), 0);
    cand.sort((a, b) => b.v - a.v);
    const i = r.rowIndex(rows, p);
    expect(Array.from(rows.topkIndex!.subarray(i * 3, i * 3 + 3))).toEqual(cand.slice(0, 3).map((c) => c.j));
    expect(rows.topkProb![i * 3]).toBeCloseTo(Math.exp(cand[0]!.v) / z, 5);
    expect(r.itemEmbeddings().length).toBe(31 * 8);
    // Chunks of 5 rows (users split across chunks, users longer than a chunk alone): the same soft-label bytes.
    const small = await runTeacherCache(t.encoder, ds, {
      root: tmp, out: join(tmp, 'c5'), usersPerShard: 8, hiddenDtype: 'F32', concurrency: 2, k: 3, temperature: 0.5,
      head: { kind: 'teacher', layer: -1, epochs: 0, lr: 0, batchSize: 1, patience: 1, seed: 0 },
      teacherOptions: t.options, teacherScores: t.scoreRows, backend, log: () => {}, softChunk: 5,
    });
    expect(small.valid).toEqual(s.valid);
    const soft = (d: string) => readManifest(d).shards.map((e) => e.soft!.sha256);
    expect(soft(join(tmp, 'c5'))).toEqual(soft(dir));
    // Every cached soft row (scored in chunks of many users) equals the soft labels of that user's scores alone.
    for (let v = 0; v < ds.users.length; v++) {
      const its = ds.users[v]!.items;
      const rv = r.rowsForUser(v);
      if (!rv.positions.length) continue;
      const want = softLabelsFromLogits(await t.scores(its, rv.positions), rv.positions.length, 30, 0.5, 3, (j) => its.subarray(0, rv.positions[j]! + 1));
      expect(Array.from(rv.topkIndex!), `user ${v}`).toEqual(Array.from(want.index));
      expect(Array.from(rv.topkProb!), `user ${v}`).toEqual(Array.from(want.prob));
    }
  });
});
