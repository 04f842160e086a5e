import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { splitUser } from '../data/split.js';
import type { PreparedDataset } from '../data/types.js';
import { RecdistillError } from '../errors.js';
import { evaluateRanking, type ScoreBatch } from '../eval/evaluate.js';
import { fitHead, headLogits, initHead, standardise, type HeadParams } from '../teacher/head.js';
import { type LogFn } from '../util/progress.js';
import { encodeSafetensors } from '../util/safetensors.js';
import { HEAD_FILE, type CacheManifest } from './format.js';
import { type CacheReader } from './reader.js';
import { checkHead, dataBytes, inspectFinished } from './check.js';
import { writeShard } from './shards.js';

/**
 * The soft-label head of an llm teacher's cache: fitted on the cached hidden states of the training positions
 * (standardised per dimension), or reloaded when a finished head of the same config is on disk.
 */
/** Per-dimension mean / std of the head's input layer (from stats.safetensors), [H] each. */
export function headInputStats(reader: CacheReader, li: number, H: number): { mean: Float32Array; std: Float32Array } {
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

export async function loadOrFitHead(dir: string, ds: PreparedDataset, reader: CacheReader, m: CacheManifest, li: number, o: { log: LogFn }): Promise<HeadParams> {
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
