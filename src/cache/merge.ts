import { datasetDifference } from '../data/differ.js';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { RecdistillError } from '../errors.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import { dataBytes, readSized, sizeProblem } from './check.js';
import { sha256 } from '../util/hash.js';
import type { LogFn } from '../util/progress.js';
import { ITEMS_FILE, MANIFEST_FILE, readManifest, shardFile, type CacheManifest, type ShardEntry } from './format.js';
import { formatMissing, missingShards } from './validate.js';
import { lostShards } from './verify.js';

/**
 * Join `--shard i/N` slices (pass 1 only) into one cache directory. Refuses slices that do not belong
 * together (different key, fingerprint or N), overlap, or leave shards missing; every copied file's sha256
 * is checked against its slice's manifest, and copies are atomic. The result is a pass-1 cache (stage
 * "hidden"); runPass2 on it writes the head, soft labels and metrics.
 */
export function mergeSlices(out: string, from: string[], log: LogFn): CacheManifest {
  if (from.length === 0) throw new RecdistillError('E_USAGE', 'teacher:merge needs --from DIR1,DIR2,... (the slice directories).');
  const ms = from.map((d) => ({ dir: d, m: readManifest(d) }));
  const first = ms[0]!;
  for (const { dir, m } of ms) {
    if (m.key !== first.m.key) throw new RecdistillError('E_MISMATCH', `${dir} has cache key ${m.key}, ${first.dir} has ${first.m.key}: they are slices of different caches (dataset, teacher or options differ).`);
    if (m.dataset.fingerprint !== first.m.dataset.fingerprint) throw new RecdistillError('E_MISMATCH', `${dir} was built for dataset fingerprint ${m.dataset.fingerprint}, ${first.dir} for ${first.m.dataset.fingerprint}: ${datasetDifference(first.m.dataset, m.dataset, first.dir, `${dir} uses`)}.`);
    if (!m.slice) throw new RecdistillError('E_INPUT', `${dir} is not a --shard slice (its manifest has no "slice"); merge joins slices only.`);
    if (m.slice.count !== first.m.slice!.count) throw new RecdistillError('E_MISMATCH', `${dir} is slice ${m.slice.index}/${m.slice.count}, ${first.dir} is ${first.m.slice!.index}/${first.m.slice!.count}: N differs.`);
    for (const f of ['users', 'items', 'interactions'] as const) {
      if (m.dataset[f] !== first.m.dataset[f]) throw new RecdistillError('E_MISMATCH', `${join(dir, MANIFEST_FILE)}: field "dataset.${f}" is ${m.dataset[f]}, ${join(first.dir, MANIFEST_FILE)} has ${first.m.dataset[f]}.`);
    }
    const lost = lostShards(m);
    if (lost.count) throw new RecdistillError('E_INPUT', `${dir} (slice ${m.slice.index}/${m.slice.count}) is unfinished: shard(s) ${formatMissing(lost)} missing; rerun that slice.`);
  }
  const owner = new Map<number, string>();
  for (const { dir, m } of ms) {
    for (const s of m.shards) {
      const prev = owner.get(s.index);
      if (prev) throw new RecdistillError('E_MISMATCH', `shard ${s.index} is in both ${prev} and ${dir}: slices overlap.`);
      owner.set(s.index, dir);
    }
  }
  const N = first.m.layout.numShards;
  const lost = missingShards([...owner.keys()].sort((a, b) => a - b), 0, N);
  if (lost.count) {
    const slices = ms.map(({ m }) => m.slice!.index).sort((a, b) => a - b);
    throw new RecdistillError('E_INPUT', `slices ${slices.join(', ')} of ${first.m.slice!.count} leave shard(s) ${formatMissing(lost)} uncovered; add the missing slice directories to --from.`);
  }
  const withItems = ms.find(({ m }) => m.items);
  if (!withItems) throw new RecdistillError('E_INPUT', 'no slice holds the item embeddings (slice 0 writes items.safetensors); include slice 0.');

  mkdirSync(out, { recursive: true });
  if (existsSync(join(out, MANIFEST_FILE))) {
    const prev = readManifest(out);
    if (prev.key !== first.m.key) throw new RecdistillError('E_MISMATCH', `${out} already holds cache key ${prev.key}; merging key ${first.m.key} there would mix caches.`);
    if (prev.complete) {
      log(`teacher:merge: ${out} is already complete.`);
      return prev;
    }
  }
  /**
   * Copy one file of a slice to its canonical name in `out` (so two slices cannot name the same target):
   * size checked against the manifest's shapes before reading, sha256 of the very bytes written.
   */
  const copy = (srcDir: string, file: string, dstName: string, sha: string, need: number) => {
    const dst = join(out, dstName);
    if (existsSync(dst) && !sizeProblem(statSync(dst).size, need) && sha256(readFileSync(dst)) === sha) return; // copied by an earlier run
    if (resolve(srcDir) === resolve(out) && file === dstName) throw new RecdistillError('E_NOT_FOUND', `${dst} is missing or damaged.`);
    const bytes = readSized(join(srcDir, file), need, need, join(srcDir, file));
    if (sha256(bytes) !== sha) throw new RecdistillError('E_CHECKSUM', `${join(srcDir, file)}: sha256 does not match ${join(srcDir, MANIFEST_FILE)}; rerun that slice (or teacher:verify --cache ${srcDir}).`);
    writeFileAtomic(dst, bytes);
  };
  const itemsNeed = dataBytes(first.m).items;
  copy(withItems.dir, withItems.m.items!.file, ITEMS_FILE, withItems.m.items!.sha256, itemsNeed);
  const shards: ShardEntry[] = [];
  for (const { dir, m } of ms) {
    const sizes = dataBytes(m);
    for (const s of m.shards) {
      copy(dir, s.file, shardFile(s.index), s.sha256, sizes.hidden(s.rows));
      shards.push({ index: s.index, userStart: s.userStart, userEnd: s.userEnd, rows: s.rows, file: shardFile(s.index), sha256: s.sha256 });
    }
  }
  shards.sort((a, b) => a.index - b.index);
  // Throughput of the slices: per-process rates summed over wall time of each (they may run in parallel).
  const sum = (k: string) => ms.reduce((a, { m }) => a + (m.timings[k] ?? 0), 0);
  const seconds = sum('hiddenSeconds');
  const { slice: _slice, ...rest } = first.m;
  const merged: CacheManifest = {
    ...rest,
    complete: false,
    stage: 'hidden',
    items: { ...withItems.m.items!, file: ITEMS_FILE },
    shards,
    timings: {
      hiddenSeconds: seconds,
      hiddenWallSeconds: Math.max(...ms.map(({ m }) => m.timings.hiddenSeconds ?? 0)),
      encodedUsers: sum('encodedUsers'),
      tokens: sum('tokens'),
      promptsPerSec: seconds > 0 ? sum('encodedUsers') / seconds : 0,
      tokensPerSec: seconds > 0 ? sum('tokens') / seconds : 0,
      itemSeconds: sum('itemSeconds'),
      slices: ms.length,
    },
  };
  delete merged.stats;
  delete merged.metrics;
  writeJsonAtomic(join(out, MANIFEST_FILE), merged);
  log(`teacher:merge: joined ${ms.length} slice(s), ${shards.length} shard(s), ${shards.reduce((a, s) => a + s.rows, 0)} rows into ${out}`);
  return merged;
}
