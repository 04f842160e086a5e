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
  /** Rows per logits chunk ([chunk, N+1] floats in memory). */
  chunk?: number;
  /** Teacher-provided scores (seqrec): logits [P, N+1] for the states after the given positions of `items`. */
  teacherScores?: (items: Int32Array, positions: Int32Array) => Promise<Float32Array>;
  /** tfjs backend name, recorded in the manifest (soft-label bytes depend on it). */
  backend: string;
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

  // Logits for the rows of one user, from the head (on layer li) or the teacher's own scores.
  let rowLogits: (user: number, positions: Int32Array, hidden: Float32Array) => Promise<Float32Array>;
  let dispose = () => {};
  if (cfg.kind === 'teacher') {
    const ts = o.teacherScores;
    if (!ts) throw new RecdistillError('E_USAGE', `teacher cache ${dir} takes soft labels from the teacher's scores (--teacher seqrec); run it with teacher:cache, not teacher:merge.`);
    rowLogits = (user, positions) => ts(ds.users[user]!.items, positions);
  } else {
    const params = await loadOrFitHead(dir, ds, reader, manifest, li, o);
    const weight = tf.tensor2d(params.weight, [N + 1, H]);
    const bias = tf.tensor1d(params.bias);
    dispose = () => {
      weight.dispose();
      bias.dispose();
    };
    const { mean, std } = headInputStats(reader, li, H);
    rowLogits = async (_u, positions, hidden) => headLogits({ weight, bias }, standardise(layerRows(hidden, positions.length, L, H, li), H, mean, std), positions.length, H);
  }
  save();

  try {
    const t1 = performance.now();
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
        for (let u = entry.userStart; u < entry.userEnd; u++) {
          const rows = reader.rowsForUser(u);
          const P = rows.positions.length;
          if (!P) continue;
          const items = ds.users[u]!.items;
          const logits = await rowLogits(u, rows.positions, rows.hidden);
          // Mask padding and the prefix 0..p (items already seen) of each row.
          const soft = softLabelsFromLogits(logits, P, N, T, K, (i) => items.subarray(0, rows.positions[i]! + 1));
          user.fill(u, r, r + P);
          position.set(rows.positions, r);
          index.set(soft.index, r * K);
          prob.set(soft.prob, r * K);
          r += P;
        }
        if (r !== entry.rows) throw new RecdistillError('E_INTERNAL', `soft labels: ${r} rows for shard ${entry.index}, manifest says ${entry.rows}.`);
        entry.soft = { file, sha256: writeShard(dir, file, encodeSoftShard(user, position, index, prob, K)) };
      }
      save();
      p.tick();
    }
    manifest.timings.softSeconds = p.done().seconds;

    // The teacher's own accuracy, full ranking with history excluded (same protocol as the student); one user at
    // a time (a seqrec teacher re-encodes each history), so minutes on a large dataset: a progress line.
    const evaluable = evaluableUsers(ds).length;
    const pm = progress('teacher:cache metrics', 2 * evaluable, o.log, 10_000, 'users');
    const score: ScoreBatch = async (users, split) => {
      pm.tick(users.length, split);
      const out = new Float32Array(users.length * (N + 1));
      for (let b = 0; b < users.length; b++) {
        const u = users[b]!;
        const n = ds.users[u]!.items.length;
        const pos = split === 'valid' ? n - 3 : n - 2;
        const rows = reader.rowsForUser(u);
        const i = reader.rowIndex(rows, pos);
        if (i < 0) continue; // no state: all-equal scores rank the target last (pessimistic ties)
        out.set(await rowLogits(u, Int32Array.of(pos), rows.hidden.subarray(i * L * H, (i + 1) * L * H)), b * (N + 1));
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
