import { datasetDifference } from '../data/differ.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { splitUser } from '../data/split.js';
import type { PreparedDataset } from '../data/types.js';
import { RecdistillError } from '../errors.js';
import { evaluateRanking, type ScoreBatch } from '../eval/evaluate.js';
import { fitHead, headLogits, initHead, softLabelsFromLogits, standardise, type HeadParams } from '../teacher/head.js';
import { writeJsonAtomic } from '../util/atomic.js';
import { resolveIndex } from '../util/layers.js';
import { progress, type LogFn } from '../util/progress.js';
import { encodeSafetensors } from '../util/safetensors.js';
import { HEAD_FILE, MANIFEST_FILE, STATS_FILE, readManifest, softFile, type CacheManifest, type ShardEntry } from './format.js';
import { openCache, type CacheReader } from './reader.js';
import { checkHead, checkSoftShard, checkStats, dataBytes, inspectFinished } from './check.js';
import { encodeSoftShard, writeShard } from './shards.js';
import { formatMissing, missingShards } from './validate.js';

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

    // The teacher's own accuracy, full ranking with history excluded (same protocol as the student).
    const score: ScoreBatch = async (users, split) => {
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

/** Per-dimension mean / std of the head's input layer (from stats.safetensors), [H] each. */
function headInputStats(reader: CacheReader, li: number, H: number): { mean: Float32Array; std: Float32Array } {
  const st = reader.stats();
  if (!st) throw new RecdistillError('E_INTERNAL', `teacher cache ${reader.dir}: stats.safetensors missing before the head pass.`);
  return { mean: st.mean.subarray(li * H, (li + 1) * H), std: st.std.subarray(li * H, (li + 1) * H) };
}

/** Training rows of the head: state after item p (layer li) -> target item p+1, for training targets only. */
function headTrainingData(ds: PreparedDataset, reader: CacheReader, L: number, H: number, li: number): { x: Float32Array; y: Int32Array } {
  let R = 0;
  const keep: Array<[number, number, number]> = []; // [user, row index, target]
  for (let u = 0; u < ds.users.length; u++) {
    const train = splitUser(ds.users[u]!).train;
    const rows = reader.rowsForUser(u);
    for (let i = 0; i < rows.positions.length; i++) {
      const p = rows.positions[i]!;
      if (p + 1 < train.length) keep.push([u, i, train[p + 1]!]);
    }
  }
  R = keep.length;
  const x = new Float32Array(R * H);
  const y = new Int32Array(R);
  keep.forEach(([u, i, t], r) => {
    const rows = reader.rowsForUser(u);
    x.set(rows.hidden.subarray((i * L + li) * H, (i * L + li + 1) * H), r * H);
    y[r] = t;
  });
  return { x, y };
}

async function loadOrFitHead(dir: string, ds: PreparedDataset, reader: CacheReader, m: CacheManifest, li: number, o: Pass2Options): Promise<HeadParams> {
  const N = ds.items.length - 1;
  const L = m.teacher.layers.length;
  const H = m.teacher.hiddenSize;
  if (m.head.file && m.head.sha256 && existsSync(join(dir, m.head.file))) {
    const sizes = dataBytes(m);
    let head: { weight: Float32Array; bias: Float32Array } | undefined;
    const f = inspectFinished(join(dir, m.head.file), sizes.head, sizes.headMax, m.head.sha256, (ts) => {
      const r = checkHead(ts, m);
      if (typeof r !== 'string') head = r;
      return r;
    });
    if (head) return head;
    o.log(`teacher:cache: ${join(dir, m.head.file)}: ${'problem' in f ? f.problem : 'unreadable'}; fitting the head again`);
  }
  delete m.head.file;
  delete m.head.sha256;
  delete m.head.bestEpoch;
  delete m.head.history;
  const t0 = performance.now();
  const { x, y } = headTrainingData(ds, reader, L, H, li);
  const { mean, std } = headInputStats(reader, li, H);
  let hNorm = 0;
  for (let r = 0; r < y.length; r++) {
    let s = 0;
    for (let d = 0; d < H; d++) s += (x[r * H + d]! - mean[d]!) ** 2;
    hNorm += Math.sqrt(s) / Math.max(1, y.length);
  }
  standardise(x, H, mean, std);
  const init = initHead(reader.itemEmbeddings(), N, H, std, hNorm);
  let params = init;
  if (m.head.kind === 'linear') {
    const query = (users: number[], split: 'valid' | 'test') => {
      const q = new Float32Array(users.length * H);
      users.forEach((u, b) => {
        const n = ds.users[u]!.items.length;
        const rows = reader.rowsForUser(u);
        const i = reader.rowIndex(rows, split === 'valid' ? n - 3 : n - 2);
        q.set(i < 0 ? mean : rows.hidden.subarray((i * L + li) * H, (i * L + li + 1) * H), b * H);
      });
      return standardise(q, H, mean, std);
    };
    const fit = await fitHead({ H, numItems: N, x, y }, init, m.head, async (p) => {
      const score: ScoreBatch = async (users, split) => headLogits(p, query(users, split), users.length, H);
      return (await evaluateRanking(ds, score, { split: 'valid', ks: [10] }))['ndcg@10'] ?? 0;
    }, o.log);
    params = fit.params;
    m.head.bestEpoch = fit.bestEpoch;
    m.head.history = fit.history; // epoch 0 = zero-shot init, its loss is NaN (null in JSON)
  }
  // logits = ((h - input_mean) / input_std) weight^T + bias: the file is usable on its own.
  const bytes = encodeSafetensors({
    weight: { dtype: 'F32', shape: [N + 1, H], data: params.weight },
    bias: { dtype: 'F32', shape: [N + 1], data: params.bias },
    input_mean: { dtype: 'F32', shape: [H], data: Float32Array.from(mean) },
    input_std: { dtype: 'F32', shape: [H], data: Float32Array.from(std) },
  });
  m.head.file = HEAD_FILE;
  m.head.sha256 = writeShard(dir, HEAD_FILE, bytes);
  m.timings.headSeconds = (performance.now() - t0) / 1000;
  return params;
}

/**
 * A soft-label shard an earlier pass 2 left: listed in the manifest (sha256 must match) or on disk unlisted
 * (killed before the manifest write). Kept only if its rows align with the hidden shard's, item ids are in
 * range and probabilities finite; otherwise logged and undefined (recompute).
 */
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
