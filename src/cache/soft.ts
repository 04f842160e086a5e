import { datasetDifference } from '../data/differ.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { PreparedDataset } from '../data/types.js';
import { RecdistillError } from '../errors.js';
import { evaluableUsers, evaluateRanking, type ScoreBatch } from '../eval/evaluate.js';
import { headLogits, softLabelsFromLogits, standardise } from '../teacher/head.js';
import { writeJsonAtomic } from '../util/atomic.js';
import { resolveIndex } from '../util/layers.js';
import { progress, type LogFn } from '../util/progress.js';
import { encodeSafetensors } from '../util/safetensors.js';
import { MANIFEST_FILE, STATS_FILE, readManifest, softFile, type CacheManifest, type ShardEntry } from './format.js';
import { openCache, type CacheReader } from './reader.js';
import { checkSoftShard, checkStats, dataBytes, inspectFinished } from './check.js';
import { encodeSoftShard, writeShard } from './shards.js';
import { formatMissing, missingShards } from './validate.js';
import { headInputStats, loadOrFitHead } from './soft-head.js';

/**
 * Pass 2 (after every pass-1 shard exists, i.e. after a full run or teacher:merge): per-dimension stats,
 * the soft-label head (fitted on cached features, or the teacher's own scores for seqrec), soft-label
 * shards aligned with the hidden shards, and the teacher's valid/test metrics. Resumable: head.safetensors
 * and soft shards already on disk are reused.
 */
export interface Pass2Options {
  log: LogFn;
  /** Rows per logits chunk ([chunk, N+1] floats in memory; the teacher scores a chunk in one batch). */
  chunk?: number;
  /**
   * Teacher-provided scores (seqrec): logits [sum P, N+1] for the states after the given positions of each
   * request's `items`, in request order (many users per call: the teacher batches them).
   */
  teacherScores?: TeacherScores;
  /** tfjs backend name, recorded in the manifest (soft-label bytes depend on it). */
  backend: string;
}

export type TeacherScores = (requests: Array<{ items: Int32Array; positions: Int32Array }>) => Promise<Float32Array>;

/** Rows per logits chunk unless Pass2Options.chunk says otherwise. */
const CHUNK_ROWS = 1024;

/** The cached rows of one user that a logits call covers; `hidden` [P, L, H]. */
interface UserRows {
  user: number;
  positions: Int32Array;
  hidden: Float32Array;
}

export async function runPass2(dir: string, ds: PreparedDataset, o: Pass2Options): Promise<CacheManifest> {
  const manifest = readManifest(dir);
  if (manifest.complete) return manifest;
  const mpath = join(dir, MANIFEST_FILE);
  if (manifest.dataset.fingerprint !== ds.fingerprint) {
    throw new RecdistillError('E_MISMATCH', `${mpath}: field "dataset.fingerprint" is ${manifest.dataset.fingerprint}, the dataset in use has ${ds.fingerprint}: ${datasetDifference(manifest.dataset, ds, 'the cache')}.`);
  }
  for (const [f, want] of [['users', ds.users.length], ['items', ds.items.length - 1]] as const) {
    if (manifest.dataset[f] !== want) throw new RecdistillError('E_MISMATCH', `${mpath}: field "dataset.${f}" is ${manifest.dataset[f]}, the dataset in use (same fingerprint) has ${want}.`);
  }
  const missing = missingShards(manifest.shards.map((e) => e.index), 0, manifest.layout.numShards);
  if (missing.count) throw new RecdistillError('E_INPUT', `teacher cache ${dir}: shard(s) ${formatMissing(missing)} missing; run the remaining --shard slices and teacher:merge first.`);
  const save = () => writeJsonAtomic(join(dir, MANIFEST_FILE), manifest);
  const open = () => openCache(dir, { fingerprint: ds.fingerprint, dataset: { users: ds.users.length, items: ds.items.length - 1 }, requireComplete: false, maxShards: 2, verify: true });
  const sizes = dataBytes(manifest);
  // Files of an earlier (killed) pass 2 are checked before they are kept; a bad one is recomputed.
  if (manifest.stats) {
    const f = inspectFinished(join(dir, manifest.stats.file), sizes.stats, sizes.stats, manifest.stats.sha256, (ts) => checkStats(ts, manifest));
    if ('problem' in f) {
      o.log(`teacher:cache: ${join(dir, manifest.stats.file)}: ${f.problem}; recomputing the stats`);
      delete manifest.stats;
    }
  }
  for (const entry of manifest.shards) {
    if (!entry.soft) continue;
    // The reader would load (and refuse) a bad listed soft shard with its hidden shard: unlist it first.
    const f = inspectFinished(join(dir, entry.soft.file), sizes.soft(entry.rows), sizes.soft(entry.rows), entry.soft.sha256, (ts) => checkSoftShard(ts, entry, manifest));
    if ('problem' in f) {
      o.log(`teacher:cache: ${join(dir, entry.soft.file)}: ${f.problem}; recomputing soft labels of shard ${entry.index}`);
      delete entry.soft;
    }
  }
  save(); // the readers below read the manifest from disk: it must no longer list what was found bad
  const t0 = performance.now();
  const L = manifest.teacher.layers.length;
  const H = manifest.teacher.hiddenSize;
  const N = ds.items.length - 1;
  const { k: K, temperature: T } = manifest.softLabels;
  const cfg = manifest.head;
  const li = resolveIndex(cfg.layer, L, { flag: '--head-layer', of: `the ${L} tapped layer${L > 1 ? 's' : ''}` });

  if (!manifest.stats) manifest.stats = writeStats(dir, open(), manifest);
  save();
  const reader = open(); // sees the stats just written

  // Logits [sum P, N+1] for the rows of several users, from the teacher's own scores (one batch) or the
  // head (on layer li; user by user).
  let rowLogits: (rows: UserRows[]) => Promise<Float32Array>;
  let dispose = () => {};
  if (cfg.kind === 'teacher') {
    const ts = o.teacherScores;
    if (!ts) throw new RecdistillError('E_USAGE', `teacher cache ${dir} takes soft labels from the teacher's scores (--teacher seqrec); run it with teacher:cache, not teacher:merge.`);
    rowLogits = (rows) => ts(rows.map((r) => ({ items: ds.users[r.user]!.items, positions: r.positions })));
  } else {
    const params = await loadOrFitHead(dir, ds, reader, manifest, li, o);
    const weight = tf.tensor2d(params.weight, [N + 1, H]);
    const bias = tf.tensor1d(params.bias);
    dispose = () => {
      weight.dispose();
      bias.dispose();
    };
    const { mean, std } = headInputStats(reader, li, H);
    const userLogits = (r: UserRows) => headLogits({ weight, bias }, standardise(layerRows(r.hidden, r.positions.length, L, H, li), H, mean, std), r.positions.length, H);
    rowLogits = async (rows) => {
      if (rows.length === 1) return userLogits(rows[0]!);
      const out = new Float32Array(rows.reduce((a, r) => a + r.positions.length, 0) * (N + 1));
      let at = 0;
      for (const r of rows) {
        out.set(userLogits(r), at);
        at += r.positions.length * (N + 1);
      }
      return out;
    };
  }
  save();

  try {
    const t1 = performance.now();
    const chunkRows = Math.max(1, o.chunk ?? CHUNK_ROWS);
    const p = progress('teacher:cache soft labels', manifest.shards.length, o.log, 2000, 'shards');
    for (const entry of manifest.shards) {
      const file = softFile(entry.index);
      const kept = keptSoftShard(dir, entry, manifest, reader, sizes.soft(entry.rows), o.log);
      if (kept) {
        entry.soft = kept;
      } else {
        const user = new Int32Array(entry.rows);
        const position = new Int32Array(entry.rows);
        const index = new Int32Array(entry.rows * K);
        const prob = new Float32Array(entry.rows * K);
        let r = 0;
        // Users go in chunks of about chunkRows rows: one logits call and one softmax/top-K per chunk (each row's
        // bytes are the same as alone: rows are independent in the product, the softmax and the top-K).
        let chunk: UserRows[] = [];
        let chunkP = 0;
        const flush = async () => {
          if (!chunk.length) return;
          const logits = await rowLogits(chunk);
          const rowItems: Int32Array[] = [];
          const rowEnd = new Int32Array(chunkP);
          for (const c of chunk) {
            const items = ds.users[c.user]!.items;
            for (const p of c.positions) {
              rowEnd[rowItems.length] = p + 1;
              rowItems.push(items);
            }
            user.fill(c.user, r + rowItems.length - c.positions.length, r + rowItems.length);
            position.set(c.positions, r + rowItems.length - c.positions.length);
          }
          // Mask padding and the prefix 0..p (items already seen) of each row (in place: logits is ours).
          const soft = softLabelsFromLogits(logits, chunkP, N, T, K, (i) => rowItems[i]!.subarray(0, rowEnd[i]!));
          index.set(soft.index, r * K);
          prob.set(soft.prob, r * K);
          r += chunkP;
          chunk = [];
          chunkP = 0;
        };
        for (let u = entry.userStart; u < entry.userEnd; u++) {
          const rows = reader.rowsForUser(u);
          const P = rows.positions.length;
          if (!P) continue;
          if (chunkP && chunkP + P > chunkRows) await flush();
          chunk.push({ user: u, positions: rows.positions, hidden: rows.hidden });
          chunkP += P;
        }
        await flush();
        if (r !== entry.rows) throw new RecdistillError('E_INTERNAL', `soft labels: ${r} rows for shard ${entry.index}, manifest says ${entry.rows}.`);
        entry.soft = { file, sha256: writeShard(dir, file, encodeSoftShard(user, position, index, prob, K)) };
      }
      save();
      p.tick();
    }
    manifest.timings.softSeconds = p.done().seconds;

    // The teacher's own accuracy, full ranking with history excluded (same protocol as the student); a batch of
    // users per logits call (a seqrec teacher re-encodes each history), a progress line.
    const evaluable = evaluableUsers(ds).length;
    const pm = progress('teacher:cache metrics', 2 * evaluable, o.log, 10_000, 'users');
    const score: ScoreBatch = async (users, split) => {
      pm.tick(users.length, split);
      const out = new Float32Array(users.length * (N + 1));
      const at: number[] = [];
      const batch: UserRows[] = [];
      for (let b = 0; b < users.length; b++) {
        const u = users[b]!;
        const n = ds.users[u]!.items.length;
        const pos = split === 'valid' ? n - 3 : n - 2;
        const rows = reader.rowsForUser(u);
        const i = reader.rowIndex(rows, pos);
        if (i < 0) continue; // no state: all-equal scores rank the target last (pessimistic ties)
        at.push(b);
        batch.push({ user: u, positions: Int32Array.of(pos), hidden: rows.hidden.subarray(i * L * H, (i + 1) * L * H) });
      }
      for (let s = 0; s < batch.length; s += chunkRows) {
        const logits = await rowLogits(batch.slice(s, s + chunkRows));
        for (let k = s; k < Math.min(batch.length, s + chunkRows); k++) out.set(logits.subarray((k - s) * (N + 1), (k - s + 1) * (N + 1)), at[k]! * (N + 1));
      }
      return out;
    };
    manifest.metrics = { valid: await evaluateRanking(ds, score, { split: 'valid' }), test: await evaluateRanking(ds, score, { split: 'test' }) };
    pm.done();
    manifest.timings.headAndSoftSeconds = (performance.now() - t0) / 1000;
    manifest.timings.metricsSeconds = (performance.now() - t1) / 1000 - manifest.timings.softSeconds;
  } finally {
    dispose();
    reader.close();
  }
  manifest.backend = o.backend;
  manifest.complete = true;
  manifest.stage = 'complete';
  save();
  return manifest;
}

/** Rows of one tapped layer: hidden [P, L, H] -> [P, H]. */
function layerRows(hidden: Float32Array, P: number, L: number, H: number, li: number): Float32Array {
  const out = new Float32Array(P * H);
  for (let r = 0; r < P; r++) out.set(hidden.subarray((r * L + li) * H, (r * L + li + 1) * H), r * H);
  return out;
}

/** Per-dimension mean and std of every cached row, [layers, H] (float64 sums, so the bytes are deterministic). */
function writeStats(dir: string, reader: CacheReader, m: CacheManifest): { file: string; sha256: string } {
  const LH = m.teacher.layers.length * m.teacher.hiddenSize;
  const sum = new Float64Array(LH);
  const sq = new Float64Array(LH);
  let n = 0;
  for (let u = 0; u < m.dataset.users; u++) {
    const { hidden, positions } = reader.rowsForUser(u);
    for (let r = 0; r < positions.length; r++, n++) {
      for (let j = 0; j < LH; j++) {
        const v = hidden[r * LH + j]!;
        sum[j]! += v;
        sq[j]! += v * v;
      }
    }
  }
  const mean = new Float32Array(LH);
  const std = new Float32Array(LH);
  for (let j = 0; j < LH; j++) {
    const mu = sum[j]! / Math.max(1, n);
    mean[j] = mu;
    std[j] = Math.sqrt(Math.max(0, sq[j]! / Math.max(1, n) - mu * mu));
  }
  const shape = [m.teacher.layers.length, m.teacher.hiddenSize];
  const sha = writeShard(dir, STATS_FILE, encodeSafetensors({ mean: { dtype: 'F32', shape, data: mean }, std: { dtype: 'F32', shape, data: std } }));
  return { file: STATS_FILE, sha256: sha };
}

function keptSoftShard(dir: string, entry: ShardEntry, m: CacheManifest, reader: CacheReader, need: number, log: LogFn): { file: string; sha256: string } | undefined {
  const file = entry.soft?.file ?? softFile(entry.index);
  if (!existsSync(join(dir, file))) return undefined;
  const users = new Int32Array(entry.rows);
  const positions = new Int32Array(entry.rows);
  let r = 0;
  for (let u = entry.userStart; u < entry.userEnd; u++) {
    const rows = reader.rowsForUser(u);
    users.fill(u, r, r + rows.positions.length);
    positions.set(rows.positions, r);
    r += rows.positions.length;
  }
  const f = inspectFinished(join(dir, file), need, need, entry.soft?.sha256, (ts) => checkSoftShard(ts, entry, m, { users, positions }));
  if ('problem' in f) {
    log(`teacher:cache: ${join(dir, file)}: ${f.problem}; recomputing soft labels of shard ${entry.index}`);
    delete entry.soft;
    return undefined;
  }
  return { file, sha256: f.sha256 };
}
