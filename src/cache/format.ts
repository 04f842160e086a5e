import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { RecdistillError } from '../errors.js';
import { sha256, stableStringify } from '../util/hash.js';
import type { TeacherInfo } from '../teacher/types.js';
import { CACHE_FORMAT, CACHE_VERSION, type CacheManifest, type HeadConfig, type HiddenDtype, type SoftLabelSpec } from './manifest.js';
import { MAX_MANIFEST_BYTES, validateManifest } from './validate.js';

/**
 * The teacher cache on disk (contract: /work/shared/docs/ARCHITECTURE.md, "Teacher cache").
 *
 *   <root>/<dataset>/<teacher>/<key>/
 *     manifest.json              this file's CacheManifest (the only file with timings / run-dependent values)
 *     items.safetensors          `embedding` F32 [N+1, H] item text embeddings, row 0 = padding (zeros)
 *     hidden-00000.safetensors   pass 1, one per contiguous user range [userStart, userEnd):
 *                                  `user` I32 [R], `position` I32 [R], `hidden` F32|F16 [R, layers, H]
 *     soft-00000.safetensors     pass 2 (never rewrites pass-1 files), rows aligned with hidden-00000:
 *                                  `user` I32 [R], `position` I32 [R], `topk_index` I32 [R, K], `topk_prob` F32 [R, K]
 *     head.safetensors           the fitted soft-label head (`weight` F32 [N+1, H], `bias` F32 [N+1]) when kind=linear
 *     stats.safetensors          `mean`, `std` F32 [layers, H] over every cached row (for standardising)
 *
 * Row (user u, position p) is the teacher state after reading item p of u's time-ordered sequence: the
 * teacher vector for predicting item p+1. Positions 0..n-2 are stored (n = u's sequence length), so the
 * row at n-3 predicts the validation item and the row at n-2 (after the validation item) predicts the test
 * item. Rows are sorted by (user, position); with a prompt-token budget a user's first positions may be
 * missing (the positions tensor says which exist).
 */
// The manifest's types live in manifest.ts, so validate.ts can check a manifest without importing this file.
export { CACHE_FORMAT, CACHE_VERSION, type CacheManifest, type HeadConfig, type HiddenDtype, type RankingSummary, type ShardEntry, type SoftLabelSpec } from './manifest.js';

/** Everything that changes a cache's content; its hash is the cache key. */
export interface KeyInputs {
  fingerprint: string;
  teacher: TeacherInfo & { options: Record<string, unknown> };
  hiddenDtype: HiddenDtype;
  usersPerShard: number;
  softLabels: Pick<SoftLabelSpec, 'k' | 'temperature' | 'head'>;
  head: HeadConfig;
}

export function cacheKey(inputs: KeyInputs): string {
  return sha256(stableStringify({ format: CACHE_FORMAT, version: CACHE_VERSION, ...inputs, teacher: keyedTeacher(inputs.teacher) })).slice(0, 12);
}

/**
 * The teacher as it enters the keys: a hub model's `commit` identifies its files; `revision` (what was
 * asked for: main, a tag, the same sha) is provenance only. Local models have neither: keys unchanged.
 */
function keyedTeacher<T extends { revision?: string }>(teacher: T): Omit<T, 'revision'> {
  const { revision: _revision, ...rest } = teacher;
  return rest;
}

/**
 * Hash of what pass 1 (hidden states, item embeddings) depends on: caches that differ only in soft-label /
 * head options share their pass-1 shards, so a new --top-k or --head reuses them instead of re-running the LLM.
 */
export function pass1Key(m: Pick<CacheManifest, 'dataset' | 'teacher' | 'layout'>): string {
  const inputs = { fingerprint: m.dataset.fingerprint, teacher: keyedTeacher(m.teacher), hiddenDtype: m.layout.hiddenDtype, usersPerShard: m.layout.usersPerShard };
  return sha256(stableStringify({ format: CACHE_FORMAT, version: CACHE_VERSION, pass1: inputs })).slice(0, 12);
}

/** Folder name for a teacher: kind + the model's last path component, filesystem-safe. */
function teacherDirName(info: Pick<TeacherInfo, 'kind' | 'model'>): string {
  const base = info.model.replace(/[\\/]+$/, '').split(/[\\/]/).pop() ?? 'model';
  return `${info.kind}-${base.replace(/[^A-Za-z0-9._-]+/g, '_') || 'model'}`;
}

export function cacheDirFor(root: string, dataset: string, info: Pick<TeacherInfo, 'kind' | 'model'>, key: string): string {
  return join(root, dataset, teacherDirName(info), key);
}

export const shardFile = (i: number): string => `hidden-${String(i).padStart(5, '0')}.safetensors`;
export const softFile = (i: number): string => `soft-${String(i).padStart(5, '0')}.safetensors`;
export const ITEMS_FILE = 'items.safetensors';
export const HEAD_FILE = 'head.safetensors';
export const STATS_FILE = 'stats.safetensors';
export const MANIFEST_FILE = 'manifest.json';

/** Shard s holds users [s * per, min((s + 1) * per, users)). */
export function shardRange(s: number, per: number, users: number): [number, number] {
  return [s * per, Math.min((s + 1) * per, users)];
}

export function numShardsFor(users: number, per: number): number {
  return Math.max(1, Math.ceil(users / per));
}

/** Slice i of N takes a contiguous block of shards (so each slice's users are contiguous too). */
export function sliceShards(index: number, count: number, numShards: number): [number, number] {
  return [Math.floor((index * numShards) / count), Math.floor(((index + 1) * numShards) / count)];
}

/** Users [start, end) of slice i/N (contiguous shards of usersPerShard users; empty when N exceeds the shards). */
export function sliceUsers(users: number, usersPerShard: number, slice?: { index: number; count: number }): [number, number] {
  if (!slice) return [0, users];
  const [s0, s1] = sliceShards(slice.index, slice.count, numShardsFor(users, usersPerShard));
  return s0 >= s1 ? [0, 0] : [shardRange(s0, usersPerShard, users)[0], shardRange(s1 - 1, usersPerShard, users)[1]];
}

/** Parse `--shard i/N` (0-based i). `--shard auto` (index and count from the environment) is src/cache/shard-env.ts. */
export function parseSlice(s: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(s.trim());
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!m || !Number.isSafeInteger(index) || !Number.isSafeInteger(count) || count < 1 || index >= count) {
    throw new RecdistillError('E_USAGE', `--shard expects i/N with 0 <= i < N (e.g. 0/4), or auto (from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID); got "${s}".`);
  }
  return { index, count };
}

export function readManifest(dir: string): CacheManifest {
  const path = join(dir, MANIFEST_FILE);
  if (!existsSync(path)) throw new RecdistillError('E_NOT_FOUND', `no teacher cache at ${dir} (missing ${MANIFEST_FILE}).`);
  const size = statSync(path).size;
  if (size > MAX_MANIFEST_BYTES) {
    throw new RecdistillError('E_INPUT', `${path}: ${size} bytes, more than a teacher-cache manifest can be (at most ${MAX_MANIFEST_BYTES}); not reading it.`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new RecdistillError('E_INPUT', `${path}: not valid JSON (${(e as Error).message}).`);
  }
  const raw = (parsed !== null && typeof parsed === 'object' ? parsed : {}) as Record<string, unknown>;
  if (raw.format !== CACHE_FORMAT) throw new RecdistillError('E_INPUT', `${path}: field "format" is ${JSON.stringify(raw.format) ?? 'missing'}, expected "${CACHE_FORMAT}".`);
  if (raw.version !== CACHE_VERSION) {
    throw new RecdistillError('E_MISMATCH', `${path}: cache format version ${JSON.stringify(raw.version)}, this build reads version ${CACHE_VERSION}; rebuild the cache.`);
  }
  for (const f of ['key', 'dataset', 'teacher', 'layout', 'softLabels', 'head', 'shards'] as const) {
    if (raw[f] === undefined) throw new RecdistillError('E_INPUT', `${path}: missing field "${f}".`);
  }
  const m = validateManifest(parsed, path);
  const want = manifestKey(m);
  if (m.key !== want) {
    throw new RecdistillError(
      'E_MISMATCH',
      `${path}: field "key" is ${m.key}, but the manifest's own inputs (dataset.fingerprint, teacher, layout, softLabels, head) give key ${want}: ` +
        `the manifest was edited or belongs to other files; rebuild the cache with teacher:cache.`,
    );
  }
  return m;
}

/** The head options that enter the key: what the run was asked for, not what pass 2 added (file, fit history). */
function keyedHead(h: CacheManifest['head']): HeadConfig {
  const { file: _f, sha256: _s, bestEpoch: _b, history: _h, ...cfg } = h;
  return cfg;
}

/** The key a manifest's own inputs give (equal to its `key` unless it was edited). */
export function manifestKey(m: CacheManifest): string {
  return cacheKey({
    fingerprint: m.dataset.fingerprint,
    teacher: m.teacher,
    hiddenDtype: m.layout.hiddenDtype,
    usersPerShard: m.layout.usersPerShard,
    softLabels: { k: m.softLabels.k, temperature: m.softLabels.temperature, head: m.softLabels.head },
    head: keyedHead(m.head),
  });
}
