import type { PreparedDataset } from '../data/types.js';
import { checkRanges } from '../config/options.js';
import { RecdistillError } from '../errors.js';
import { cacheOptions } from './options.js';
import { requireEvaluableUsers } from '../eval/evaluate.js';
import type { TeacherEncoder } from '../teacher/types.js';
import { resolveIndex } from '../util/layers.js';
import type { LogFn } from '../util/progress.js';
import pLimit from 'p-limit';
import { encodeHiddenShard } from './shards.js';
import { initialManifest, runPass1, type Pass1Options } from './build.js';
import { lockCacheDir } from '../util/lock.js';
import { join } from 'node:path';
import { writeJsonAtomic } from '../util/atomic.js';
import { MANIFEST_FILE, readManifest, type CacheManifest } from './format.js';
import { runPass2, type TeacherScores } from './soft.js';

/**
 * The teacher:cache library call (the CLI and the ablation both use it):
 *   pass 1  hidden states per (user, position) + item embeddings   (sliceable with --shard i/N)
 *   pass 2  stats, soft-label head, soft labels, teacher metrics    (full runs; after teacher:merge for slices)
 * A `--shard` run stops after pass 1 (its manifest says stage "hidden"); teacher:merge joins the slices
 * and runs pass 2, which needs only the cached features and the dataset, not the teacher model.
 */
export interface CacheRunOptions extends Omit<Pass1Options, 'softLabels'> {
  k: number;
  temperature: number;
  /** tfjs backend name for the manifest (call initBackend first). */
  backend: string;
  /** Plain sequential session.run loop over the same inputs (LLM teacher), for the overhead check. */
  plainLoop?: (histories: Int32Array[]) => Promise<{ seconds: number; tokens: number }>;
  /** Users sampled for the plain-loop comparison (0 = skip). */
  overheadSample?: number;
  /**
   * Where the teacher ran (device, execution providers, onnxruntime version, slice): provenance outside the key,
   * recorded as the manifest's `runtime` field; teacher:merge keeps the first slice's.
   */
  runtime?: Record<string, unknown>;
  /** Teacher-provided scores for the 'teacher' head (seqrec). */
  teacherScores?: TeacherScores;
  /** Rows per soft-label logits chunk (memory, not content: the bytes do not depend on it). */
  softChunk?: number;
}

export interface CacheSummary extends Record<string, unknown> {
  cache: string;
  key: string;
  complete: boolean;
  rows: number;
  shards: number;
  seconds: number;
  promptsPerSec: number;
  tokensPerSec?: number;
  /** Prompt tokens the teacher pass sent (the manifest's timings.tokens; what `--count-only` counts). */
  tokens?: number;
  /** Prompt tokens per second of the teacher pass (the encoding stage; same figure as tokensPerSec). */
  tokensPerSecond?: number;
  /** Peak resident memory of this process so far (MB). */
  peakRssMB: number;
  valid?: Record<string, number>;
  test?: Record<string, number>;
  plainTokensPerSec?: number;
  overhead?: number;
}

export function summarize(dir: string, m: CacheManifest, seconds: number): CacheSummary {
  return {
    cache: dir,
    key: m.key,
    complete: m.complete,
    rows: m.shards.reduce((a, s) => a + s.rows, 0),
    shards: m.shards.length,
    seconds,
    promptsPerSec: m.timings.promptsPerSec ?? 0,
    // A seqrec teacher reads item ids, not tokens: it has no tokens/s (rather than a misleading 0).
    ...(m.teacher.kind === 'seqrec' ? {} : { tokens: m.timings.tokens ?? 0, tokensPerSec: m.timings.tokensPerSec ?? 0, tokensPerSecond: m.timings.tokensPerSec ?? 0 }),
    peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
    ...(m.metrics ? { valid: m.metrics.valid, test: m.metrics.test } : {}),
    ...(m.timings.plainTokensPerSec !== undefined ? { plainTokensPerSec: m.timings.plainTokensPerSec, overhead: m.timings.overhead } : {}),
  };
}

export async function runTeacherCache(encoder: TeacherEncoder, ds: PreparedDataset, given: CacheRunOptions): Promise<CacheSummary> {
  const t0 = performance.now();
  const N = ds.items.length - 1;
  // The spec's ranges, for callers that build the options by hand (teacher:cache's flags were checked as they resolved).
  checkRanges(cacheOptions, { topK: given.k, temperature: given.temperature, usersPerShard: given.usersPerShard });
  // A catalogue smaller than --top-k (the default 50 on a small dataset): every item is kept, and the key says so.
  if (given.k > N) given.log(`teacher:cache: --top-k ${given.k} is more than the ${N} items of ${ds.name}: keeping all ${N} (soft labels over the whole catalogue).`);
  const o = given.k > N ? { ...given, k: N } : given;
  requireEvaluableUsers(ds, 'fit the soft-label head on or evaluate the teacher with');
  // Checked before anything is written (pass 2 checks it again against the manifest).
  const L = encoder.layers.length;
  resolveIndex(o.head.layer, L, { flag: '--head-layer', of: `the ${L} tapped layer${L > 1 ? 's' : ''}` });
  if (o.slice && o.head.kind === 'teacher') {
    throw new RecdistillError('E_USAGE', `--shard is for LLM teachers; a seqrec teacher's soft labels need the model in pass 2, and it is fast enough to run whole.`);
  }
  const p1: Pass1Options = {
    root: o.root,
    out: o.out,
    usersPerShard: o.usersPerShard,
    hiddenDtype: o.hiddenDtype,
    concurrency: o.concurrency,
    slice: o.slice,
    softLabels: { k: o.k, temperature: o.temperature },
    head: o.head,
    teacherOptions: o.teacherOptions,
    log: o.log,
  };
  const { dir } = initialManifest(encoder, ds, p1);
  const unlock = lockCacheDir(dir);
  try {
    return await runLocked(encoder, ds, o, p1, t0);
  } finally {
    unlock();
  }
}

async function runLocked(encoder: TeacherEncoder, ds: PreparedDataset, o: CacheRunOptions, p1: Pass1Options, t0: number): Promise<CacheSummary> {
  const r1 = await runPass1(encoder, ds, p1);
  let manifest = r1.manifest;
  if (o.plainLoop && (o.overheadSample ?? 0) > 0 && r1.encodedUsers > 0 && r1.tokens > 0) {
    await measureOverhead(r1.dir, manifest, ds, encoder, o, o.log);
  }
  if (!o.slice && !manifest.complete) {
    manifest = await runPass2(r1.dir, ds, { log: o.log, backend: o.backend, teacherScores: o.teacherScores, chunk: o.softChunk });
  } else if (o.slice) {
    o.log(`teacher:cache: slice ${o.slice.index}/${o.slice.count} done (pass 1 only); join the slices with teacher:merge, which also runs the soft-label pass.`);
  }
  if (o.runtime) {
    manifest = { ...readManifest(r1.dir), runtime: o.runtime } as CacheManifest;
    writeJsonAtomic(join(r1.dir, MANIFEST_FILE), manifest);
  }
  return summarize(r1.dir, manifest, (performance.now() - t0) / 1000);
}

/**
 * Throughput check, like for like: the same sample of users through (a) a plain sequential session.run loop
 * over prebuilt feeds and (b) the pipeline's path (p-limit over users, encodeHistory's planning and copying,
 * shard encoding), back to back and alternating twice, keeping each side's best time so load from other
 * processes hits both alike. overhead = pipeline seconds / plain seconds - 1 (goal <= 10%).
 */
async function measureOverhead(dir: string, m: CacheManifest, ds: PreparedDataset, encoder: TeacherEncoder, o: CacheRunOptions, log: LogFn): Promise<void> {
  const sample = o.overheadSample ?? 0;
  const users = ds.users.map((_, u) => u).filter((u) => ds.users[u]!.items.length >= 2);
  const step = Math.max(1, Math.floor(users.length / sample));
  const picked = users.filter((_, i) => i % step === 0).slice(0, sample);
  const histories = picked.map((u) => ds.users[u]!.items.subarray(0, ds.users[u]!.items.length - 1));
  log(`teacher:cache: --overhead-sample ${sample}: measuring the pipeline's overhead on ${histories.length} users (2 rounds, each a plain session.run loop then the pipeline)`);
  const limit = pLimit(Math.max(1, o.concurrency));
  let plainSec = Infinity;
  let pipeSec = Infinity;
  let tokens = 0;
  for (let round = 0; round < 2; round++) {
    const r = await o.plainLoop!(histories);
    plainSec = Math.min(plainSec, r.seconds);
    tokens = r.tokens;
    const t0 = performance.now();
    const states = await Promise.all(histories.map((h, i) => limit(async () => ({ user: picked[i]!, ...(await encoder.encodeHistory(h)) }))));
    encodeHiddenShard(states, encoder.layers.length, encoder.hiddenSize, m.layout.hiddenDtype);
    pipeSec = Math.min(pipeSec, (performance.now() - t0) / 1000);
    log(`teacher:cache: overhead round ${round + 1}/2: plain ${r.seconds.toFixed(2)}s, pipeline ${((performance.now() - t0) / 1000).toFixed(2)}s`);
  }
  const overhead = plainSec > 0 ? pipeSec / plainSec - 1 : 0;
  m.timings.plainTokensPerSec = plainSec > 0 ? tokens / plainSec : 0;
  m.timings.samplePipelineTokensPerSec = pipeSec > 0 ? tokens / pipeSec : 0;
  m.timings.overhead = overhead;
  log(
    `teacher:cache: overhead on ${histories.length} users (best of 2, alternating): pipeline ${pipeSec.toFixed(2)}s vs plain session.run loop ${plainSec.toFixed(2)}s ` +
      `(${(overhead * 100).toFixed(1)}% overhead); whole run ${(m.timings.tokensPerSec ?? 0).toFixed(0)} tokens/s`,
  );
  writeJsonAtomic(join(dir, MANIFEST_FILE), m);
}
