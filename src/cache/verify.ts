import { join } from 'node:path';
import { RecdistillError } from '../errors.js';
import { sha256 } from '../util/hash.js';
import type { STTensor } from '../util/safetensors.js';
import { checkHead, checkHiddenShard, checkItems, checkSoftShard, checkStats, dataBytes, decodeOrProblem, readSized, type HiddenShard } from './check.js';
import { readManifest, type CacheManifest } from './format.js';
import { formatMissing, missingShards } from './validate.js';

export interface VerifyProblem {
  file: string;
  problem: string;
}

export interface VerifyResult {
  dir: string;
  key: string;
  complete: boolean;
  files: number;
  rows: number;
  problems: VerifyProblem[];
}

/**
 * Check every file the manifest lists (after readManifest's structural checks: types, ranges, shard ranges,
 * key): present, size what the manifest's shapes need (checked before reading), sha256 equal, tensors with
 * the dtypes and shapes the manifest implies (hidden [R, layers, H], user/position [R] within the shard's
 * user range and sorted, soft [R, K] aligned with the hidden rows, items [N+1, H]), finite values, soft-label
 * item ids in 0..N and probabilities in [0, 1]; and for a complete cache that every shard is there.
 */
export function verifyCache(dir: string): VerifyResult {
  const m = readManifest(dir);
  const problems: VerifyProblem[] = [];
  let files = 0;
  const sizes = dataBytes(m);

  /** Read (size-checked), hash, decode; a problem is recorded and undefined returned. */
  const load = (file: string, sha: string, need: number, needMax = need): Record<string, STTensor> | undefined => {
    files++;
    const path = join(dir, file);
    let buf: Uint8Array;
    try {
      buf = readSized(path, need, needMax, file);
    } catch (e) {
      if (!(e instanceof RecdistillError)) throw e;
      problems.push({ file, problem: e.message.startsWith(`${file} is `) ? e.message.slice(file.length + 4).replace(/\.$/, '') : e.message.replace(`${file}: `, '').replace(/\.$/, '') });
      return undefined;
    }
    const got = sha256(buf);
    if (got !== sha) return void problems.push({ file, problem: `sha256 ${got.slice(0, 16)}... does not match the manifest's ${sha.slice(0, 16)}...` });
    const ts = decodeOrProblem(buf, path);
    if (typeof ts === 'string') return void problems.push({ file, problem: ts });
    return ts;
  };
  const note = <T>(file: string, r: T | string): T | undefined => {
    if (typeof r === 'string') return void problems.push({ file, problem: r });
    return r;
  };

  if (m.items) {
    const ts = load(m.items.file, m.items.sha256, sizes.items);
    if (ts) note(m.items.file, checkItems(ts, m));
  } else if (m.complete || !m.slice || m.slice.index === 0) problems.push({ file: 'items.safetensors', problem: 'not listed in the manifest' });
  if (m.stats) {
    const ts = load(m.stats.file, m.stats.sha256, sizes.stats);
    if (ts) note(m.stats.file, checkStats(ts, m));
  }
  if (m.head.file && m.head.sha256) {
    const ts = load(m.head.file, m.head.sha256, sizes.head, sizes.headMax);
    if (ts) note(m.head.file, checkHead(ts, m));
  }
  for (const s of m.shards) {
    const ts = load(s.file, s.sha256, sizes.hidden(s.rows));
    const h: HiddenShard | undefined = ts ? note(s.file, checkHiddenShard(ts, s, m)) : undefined;
    if (s.soft) {
      const st = load(s.soft.file, s.soft.sha256, sizes.soft(s.rows));
      if (st) note(s.soft.file, checkSoftShard(st, s, m, h));
    } else if (m.complete) problems.push({ file: s.file, problem: 'complete cache but no soft-label shard listed' });
  }
  const lost = missingShards(m.shards.map((s) => s.index), ...expectedRange(m));
  if (m.complete && lost.count) problems.push({ file: 'manifest.json', problem: `complete, but shard(s) ${formatMissing(lost)} are not listed` });
  return { dir, key: m.key, complete: m.complete, files, rows: m.shards.reduce((a, s) => a + s.rows, 0), problems };
}

/** Shard indices [a, b) this directory should hold: all of them, or its slice's block. */
function expectedRange(m: CacheManifest): [number, number] {
  return m.slice && !m.complete ? [m.slice.shardStart, m.slice.shardEnd] : [0, m.layout.numShards];
}

/** Shard indices this directory should hold and does not list: how many, and the first few. */
export function lostShards(m: CacheManifest): { count: number; first: number[] } {
  return missingShards(m.shards.map((s) => s.index), ...expectedRange(m));
}
