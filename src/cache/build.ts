import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { RecdistillError } from '../errors.js';
import { datasetDifference } from '../data/differ.js';
import type { PreparedDataset } from '../data/types.js';
import type { TeacherEncoder, TeacherInfo } from '../teacher/types.js';
import { writeJsonAtomic } from '../util/atomic.js';
import { progress, type LogFn } from '../util/progress.js';
import { encodeSafetensors } from '../util/safetensors.js';
import {
  CACHE_FORMAT,
  CACHE_VERSION,
  ITEMS_FILE,
  MANIFEST_FILE,
  cacheDirFor,
  cacheKey,
  numShardsFor,
  readManifest,
  shardFile,
  shardRange,
  sliceShards,
  type CacheManifest,
  type HeadConfig,
  type HiddenDtype,
  type ShardEntry,
} from './format.js';
import { checkHiddenShard, checkItems, dataBytes, firstNonFinite, inspectFinished } from './check.js';
import { encodeHiddenShard, writeShard, type UserStates } from './shards.js';
import { reuseSiblingFiles } from './reuse.js';

export interface Pass1Options {
  /** Cache root: the cache goes to <root>/<dataset>/<teacher>/<key>/ unless `out` is given. */
  root: string;
  /** Explicit cache directory (overrides root/dataset/teacher/key). */
  out?: string;
  usersPerShard: number;
  hiddenDtype: HiddenDtype;
  /** Users encoded concurrently (p-limit). */
  concurrency: number;
  /** `--shard i/N`: only this slice of the shards. */
  slice?: { index: number; count: number };
  softLabels: { k: number; temperature: number };
  head: HeadConfig;
  /** Teacher options that change its output but are not in TeacherInfo (e.g. maxPromptTokens). */
  teacherOptions: Record<string, unknown>;
  log: LogFn;
}

export interface Pass1Result {
  dir: string;
  manifest: CacheManifest;
  /** Users encoded by this run (0 when everything was on disk). */
  encodedUsers: number;
  tokens: number;
  seconds: number;
}

/** Only the TeacherInfo fields (an encoder object may carry sessions and other state). */
export function teacherInfoOf(e: TeacherInfo): TeacherInfo {
  const info: TeacherInfo = { kind: e.kind, model: e.model, dtype: e.dtype, weightsHash: e.weightsHash, layers: [...e.layers], hiddenSize: e.hiddenSize, pooling: e.pooling };
  if (e.revision !== undefined) info.revision = e.revision;
  if (e.commit !== undefined) info.commit = e.commit;
  if (e.prompt) info.prompt = { path: e.prompt.path, sha256: e.prompt.sha256 };
  return info;
}

/** The manifest a run starts from: the one on disk (same key) or a fresh one. */
export function initialManifest(encoder: TeacherEncoder, ds: PreparedDataset, o: Pass1Options): { dir: string; manifest: CacheManifest } {
  const info = teacherInfoOf(encoder);
  const teacher = { ...info, options: o.teacherOptions };
  const headKind = o.head.kind;
  const key = cacheKey({
    fingerprint: ds.fingerprint,
    teacher,
    hiddenDtype: o.hiddenDtype,
    usersPerShard: o.usersPerShard,
    softLabels: { k: o.softLabels.k, temperature: o.softLabels.temperature, head: headKind },
    head: o.head,
  });
  // Slices default to their own directory next to the full cache, so several can share one filesystem.
  const base = cacheDirFor(o.root, ds.name, info, key);
  const dir = o.out ?? (o.slice ? `${base}.slice-${o.slice.index}-of-${o.slice.count}` : base);
  if (existsSync(join(dir, MANIFEST_FILE))) {
    const m = readManifest(dir);
    if (m.key !== key) {
      const why = m.dataset.fingerprint !== ds.fingerprint ? datasetDifference(m.dataset, ds, 'that cache') : 'the teacher or cache options differ';
      throw new RecdistillError('E_MISMATCH', `${dir} holds a teacher cache with key ${m.key}; this run's options give key ${key}: ${why}. Use another --out.`);
    }
    for (const [f, want] of [['users', ds.users.length], ['items', ds.items.length - 1]] as const) {
      if (m.dataset[f] !== want) throw new RecdistillError('E_MISMATCH', `${join(dir, MANIFEST_FILE)}: field "dataset.${f}" is ${m.dataset[f]}, but the dataset (same fingerprint) has ${want}; use another --out.`);
    }
    const sameSlice = (m.slice?.index ?? -1) === (o.slice?.index ?? -1) && (m.slice?.count ?? -1) === (o.slice?.count ?? -1);
    if (!sameSlice && !m.complete) {
      throw new RecdistillError('E_MISMATCH', `${dir} holds slice ${m.slice ? `${m.slice.index}/${m.slice.count}` : 'all'} of this cache; this run asks for ${o.slice ? `${o.slice.index}/${o.slice.count}` : 'all'}.`);
    }
    return { dir, manifest: m };
  }
  const numShards = numShardsFor(ds.users.length, o.usersPerShard);
  if (o.slice && o.slice.count > numShards) {
    // Slices beyond the shard count would have nothing to do (and report 0 tokens/s): refuse the whole split.
    const per = Math.max(1, Math.floor(ds.users.length / o.slice.count));
    throw new RecdistillError(
      'E_USAGE',
      `--shard ${o.slice.index}/${o.slice.count}: ${ds.name} makes only ${numShards} shard(s) (${ds.users.length} users, --users-per-shard ${o.usersPerShard}), so ${o.slice.count - numShards} of the ${o.slice.count} slices would have no users. ` +
        `Use at most ${numShards} slices, or --users-per-shard ${per} (or less) on every slice for ${o.slice.count} of them.`,
    );
  }
  const manifest: CacheManifest = {
    format: CACHE_FORMAT,
    version: CACHE_VERSION,
    key,
    complete: false,
    stage: 'hidden',
    dataset: { name: ds.name, fingerprint: ds.fingerprint, users: ds.users.length, items: ds.items.length - 1, interactions: ds.stats.interactions, options: ds.options, ...(ds.flags ? { flags: ds.flags } : {}) },
    teacher,
    layout: {
      usersPerShard: o.usersPerShard,
      numShards,
      hiddenDtype: o.hiddenDtype,
      positions: 'row (user u, position p) = teacher state after item p of u; positions 0..n-2 (p = n-3 predicts the validation item, n-2 the test item)',
    },
    softLabels: { k: o.softLabels.k, temperature: o.softLabels.temperature, head: headKind, probabilities: 'full-softmax', mask: 'padding+history' },
    head: o.head,
    shards: [],
    timings: {},
  };
  if (o.slice) {
    const [shardStart, shardEnd] = sliceShards(o.slice.index, o.slice.count, numShards);
    manifest.slice = { ...o.slice, shardStart, shardEnd };
  }
  return { dir, manifest };
}

/** States for one user: the history without the test item, so rows are positions 0..n-2. */
async function encodeUser(encoder: TeacherEncoder, ds: PreparedDataset, user: number): Promise<UserStates & { tokens: number }> {
  const items = ds.users[user]!.items;
  const input = items.subarray(0, Math.max(0, items.length - 1));
  if (input.length === 0) return { user, first: 0, count: 0, states: new Float32Array(0), tokens: 0 };
  const s = await encoder.encodeHistory(input);
  const LH = encoder.layers.length * encoder.hiddenSize;
  if (s.first < 0 || s.count < 0 || s.first + s.count > input.length || s.states.length !== s.count * LH) {
    throw new RecdistillError(
      'E_INTERNAL',
      `teacher returned first=${s.first} count=${s.count} states=${s.states.length} for user ${user} (history of ${input.length} items, ${encoder.layers.length} layers x ${encoder.hiddenSize}).`,
    );
  }
  return { user, first: s.first, count: s.count, states: s.states, tokens: s.tokens };
}

/**
 * Pass 1: hidden states for every user of this slice, one shard per contiguous user range, plus the
 * item embeddings (full runs and slice 0). Finished shards on disk are kept (a killed run resumes).
 */
export async function runPass1(encoder: TeacherEncoder, ds: PreparedDataset, o: Pass1Options): Promise<Pass1Result> {
  const { dir, manifest } = initialManifest(encoder, ds, o);
  if (manifest.complete) {
    o.log(`teacher:cache: ${dir} is already complete (key ${manifest.key}); nothing to do.`);
    return { dir, manifest, encodedUsers: 0, tokens: 0, seconds: 0 };
  }
  mkdirSync(dir, { recursive: true });
  const start = performance.now();
  const numShards = manifest.layout.numShards;
  const [s0, s1] = manifest.slice ? [manifest.slice.shardStart, manifest.slice.shardEnd] : [0, numShards];
  const L = encoder.layers.length;
  const H = encoder.hiddenSize;
  const shards = new Map<number, ShardEntry>(manifest.shards.map((s) => [s.index, s]));
  const save = () => {
    manifest.shards = [...shards.values()].sort((a, b) => a.index - b.index);
    writeJsonAtomic(join(dir, MANIFEST_FILE), manifest);
  };

  // Pass-1 files of a sibling cache with the same pass-1 inputs (only soft-label options differ): reuse them.
  const reused = reuseSiblingFiles(dir, manifest, s0, s1, o.log);

  // Item text embeddings once (slices other than 0 leave them to slice 0). A file already there (listed in
  // the manifest, or left by a run killed before its manifest write) is checked first, never trusted.
  const sizes = dataBytes(manifest);
  if (manifest.items) {
    const f = inspectFinished(join(dir, manifest.items.file), sizes.items, sizes.items, manifest.items.sha256, (ts) => checkItems(ts, manifest));
    if ('problem' in f) {
      o.log(`teacher:cache: ${join(dir, manifest.items.file)}: ${f.problem}; recomputing the item embeddings`);
      delete manifest.items;
    }
  }
  if (!manifest.items && (!manifest.slice || manifest.slice.index === 0)) {
    const t0 = performance.now();
    const f = existsSync(join(dir, ITEMS_FILE)) ? inspectFinished(join(dir, ITEMS_FILE), sizes.items, sizes.items, undefined, (ts) => checkItems(ts, manifest)) : undefined;
    if (f && 'problem' in f) o.log(`teacher:cache: ${join(dir, ITEMS_FILE)}: ${f.problem}; recomputing the item embeddings`);
    if (f && !('problem' in f)) {
      manifest.items = { file: ITEMS_FILE, sha256: f.sha256, shape: [ds.items.length, H] };
    } else {
      const p = progress('teacher:cache items', ds.items.length - 1, o.log, 2000, 'items');
      let last = 0;
      const emb = await encoder.embedItems((done) => {
        p.tick(done - last);
        last = done;
      });
      if (emb.length !== ds.items.length * H) throw new RecdistillError('E_INTERNAL', `embedItems returned ${emb.length} values, expected ${ds.items.length} x ${H}.`);
      const bad = firstNonFinite(emb);
      if (bad >= 0) throw new RecdistillError('E_NUMERIC', `the teacher's embedding of item ${Math.floor(bad / H)} is not finite (${emb[bad]} at dimension ${bad % H}); not caching it.`);
      p.done();
      const sha = writeShard(dir, ITEMS_FILE, encodeSafetensors({ embedding: { dtype: 'F32', shape: [ds.items.length, H], data: emb } }));
      manifest.items = { file: ITEMS_FILE, sha256: sha, shape: [ds.items.length, H] };
    }
    manifest.timings.itemSeconds = (performance.now() - t0) / 1000;
    save();
  }

  // Shards finished by an earlier run (files exist only once whole, by atomic rename): each one is checked
  // (size, sha256 against the manifest, tensors, finite values) before it is kept; a bad one is recomputed.
  const todo: number[] = [];
  let resumed = 0;
  for (let s = s0; s < s1; s++) {
    const [u0, u1] = shardRange(s, o.usersPerShard, ds.users.length);
    const listed = shards.get(s);
    if (listed) {
      const f = inspectFinished(join(dir, listed.file), sizes.hidden(listed.rows), sizes.hidden(listed.rows), listed.sha256, (ts) => checkHiddenShard(ts, listed, manifest));
      if (!('problem' in f)) {
        resumed++;
        continue;
      }
      o.log(`teacher:cache: ${join(dir, listed.file)}: ${f.problem}; recomputing shard ${s}`);
      shards.delete(s);
      todo.push(s);
    } else if (existsSync(join(dir, shardFile(s)))) {
      // Written, but the run died before its manifest write: the rows come from the file.
      const probe: ShardEntry = { index: s, userStart: u0, userEnd: u1, rows: 0, file: shardFile(s), sha256: '' };
      const f = inspectFinished(join(dir, shardFile(s)), 0, sizes.hidden(Math.min(ds.stats.interactions, 2 ** 31 - 1)), undefined, (ts) => {
        probe.rows = ts.user?.shape?.[0] ?? 0;
        return checkHiddenShard(ts, probe, manifest);
      });
      if ('problem' in f) {
        o.log(`teacher:cache: ${join(dir, shardFile(s))}: ${f.problem}; recomputing shard ${s}`);
        todo.push(s);
      } else {
        shards.set(s, { ...probe, sha256: f.sha256 });
        resumed++;
      }
    } else todo.push(s);
  }
  if (resumed) o.log(`teacher:cache: resuming, ${resumed} finished shard(s) found on disk and checked (sha256, shapes, finite values)`);
  save();

  const totalUsers = todo.reduce((a, s) => a + (shardRange(s, o.usersPerShard, ds.users.length)[1] - shardRange(s, o.usersPerShard, ds.users.length)[0]), 0);
  const limit = pLimit(Math.max(1, o.concurrency));
  const p = progress('teacher:cache', totalUsers, o.log, 2000, 'users');
  const t1 = performance.now();
  let tokens = 0;
  for (const s of todo) {
    const [u0, u1] = shardRange(s, o.usersPerShard, ds.users.length);
    const users = Array.from({ length: u1 - u0 }, (_, i) => u0 + i);
    const states = await Promise.all(
      users.map((u) =>
        limit(async () => {
          const r = await encodeUser(encoder, ds, u);
          tokens += r.tokens;
          const secs = (performance.now() - t1) / 1000;
          p.tick(1, tokens > 0 ? `${(tokens / Math.max(secs, 1e-9)).toFixed(0)} tokens/s` : '');
          return r;
        }),
      ),
    );
    const { bytes, rows } = encodeHiddenShard(states, L, H, manifest.layout.hiddenDtype);
    const sha = writeShard(dir, shardFile(s), bytes);
    shards.set(s, { index: s, userStart: u0, userEnd: u1, rows, file: shardFile(s), sha256: sha });
    save();
  }
  // A seqrec teacher reads item ids, not tokens: no tokens/s for it.
  const { seconds } = totalUsers ? p.done(tokens > 0 ? `${(tokens / Math.max((performance.now() - t1) / 1000, 1e-9)).toFixed(0)} tokens/s` : '') : { seconds: 0 };
  // Rates describe the run that encoded users: a run with nothing left to encode keeps the earlier ones.
  if (totalUsers > 0) {
    Object.assign(manifest.timings, {
      hiddenSeconds: seconds,
      encodedUsers: totalUsers,
      promptsPerSec: seconds > 0 ? totalUsers / seconds : 0,
      tokens,
      tokensPerSec: seconds > 0 ? tokens / seconds : 0,
    });
  }
  Object.assign(manifest.timings, { resumedShards: resumed, reusedShards: reused });
  save();
  return { dir, manifest, encodedUsers: totalUsers, tokens, seconds: (performance.now() - start) / 1000 };
}
