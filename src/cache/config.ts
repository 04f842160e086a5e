import { createRequire } from 'node:module';
import { resolveOptions } from '../config/options.js';
import type { PreparedDataset } from '../data/types.js';
import { requireEvaluableUsers } from '../eval/evaluate.js';
import { RecdistillError } from '../errors.js';
import { readStudentFile } from '../student/serving/serve.js';
import { llmTeacherOptions } from '../teacher/llm/options.js';
import { loadSeqrecTeacher } from '../teacher/seqrec.js';
import { parseLayerList, resolveLayerList } from '../util/layers.js';
import type { LogFn } from '../util/progress.js';
import type { HeadConfig, HiddenDtype } from './format.js';
import { runTeacherCache, type CacheSummary } from './run.js';
import { cacheOptions, type CacheFlags } from './options.js';

export type TeacherKind = 'llm' | 'seqrec';

/** Everything that decides a cache (with the dataset and the teacher's own files); the input of runCacheStage. */
export interface CacheConfig {
  teacher: TeacherKind;
  /** seqrec: the student:train run folder that is the teacher. */
  run?: string;
  /** seqrec: absolute block numbers ("0,1"); llm: the --layers spec ("-1" for auto), resolved against the model when loaded. */
  layers: string;
  root: string;
  usersPerShard: number;
  hiddenDtype: HiddenDtype;
  /** Users encoded concurrently (not in the key: the shards are the same). */
  usersInFlight: number;
  k: number;
  temperature: number;
  /** Only the fields that apply to the head kind carry values (seqrec: the teacher's scores, nothing trained). */
  head: HeadConfig;
  /** llm: the loader's flags (model, dtype, prompt, budget, runtime); absent for seqrec. */
  llm?: Omit<Pick<CacheFlags, keyof typeof llmTeacherOptions>, 'layers'>;
  /** llm: users of the pipeline-overhead check (0 = skip); 0 for seqrec. */
  overheadSample: number;
}

/** The cache-stage flags of a command's resolved options (other keys ignored), defaults filled in. */
function cacheFlagsOf(flags: Record<string, unknown>): CacheFlags {
  const picked: Record<string, unknown> = {};
  for (const k of Object.keys(cacheOptions)) if (flags[k] !== undefined) picked[k] = flags[k];
  return resolveOptions(cacheOptions, { flags: picked });
}

/**
 * The checks that need only the flags (a command calls it before hours of work: ablate before training its teacher);
 * returns the cache flags with defaults filled in.
 */
export function checkCacheFlags(flags: Partial<CacheFlags> & { teacher: TeacherKind } & Record<string, unknown>): CacheFlags {
  const f = cacheFlagsOf(flags);
  if (flags.teacher === 'seqrec' && (f.head !== 'linear' || f.headLayer !== -1)) {
    throw new RecdistillError('E_USAGE', `--head ${f.head} --head-layer ${f.headLayer}: a seqrec teacher's soft labels are its own scores (no head); --head and --head-layer are for an llm teacher.`);
  }
  return f;
}

/**
 * teacher:cache's flags -> the cache stage's config, for both teacher kinds. The one place that turns flags into
 * cache options: teacher:cache and ablate both call it. A seqrec teacher's run folder is read here (its block count
 * makes the layers absolute).
 */
export function resolveCacheConfig(flags: Partial<CacheFlags> & { teacher: TeacherKind; run?: string } & Record<string, unknown>): CacheConfig {
  const f = checkCacheFlags(flags);
  const common = {
    root: f.cacheRoot,
    usersPerShard: f.usersPerShard,
    hiddenDtype: f.hiddenDtype === 'f16' ? ('F16' as const) : ('F32' as const),
    usersInFlight: f.usersInFlight,
    k: f.topK,
    temperature: f.temperature,
  };
  if (flags.teacher === 'seqrec') {
    if (!flags.run) throw new RecdistillError('E_USAGE', '--teacher seqrec needs a student:train run folder as teacher (teacher:cache --student-run DIR, ablate --teacher-run DIR).');
    const blocks = readStudentFile(flags.run).config.blocks;
    const layers = f.layers === 'auto' ? Array.from({ length: blocks }, (_, i) => i) : resolveLayerList(f.layers, blocks, { flag: '--layers', of: `this ${blocks}-block model` });
    return {
      teacher: 'seqrec',
      run: flags.run,
      layers: layers.join(','),
      ...common,
      // Nothing is trained: the training fields are 0 (the seed stays, as in every seqrec cache key so far).
      head: { kind: 'teacher', layer: -1, epochs: 0, lr: 0, batchSize: 0, patience: 0, seed: f.seed },
      overheadSample: 0,
    };
  }
  if (f.layers !== 'auto') parseLayerList(f.layers, '--layers'); // a malformed list fails before the model loads
  const { layers: _l, ...llmFlags } = pick(f, Object.keys(llmTeacherOptions) as Array<keyof typeof llmTeacherOptions>);
  const trained = { layer: f.headLayer, epochs: f.headEpochs, lr: f.headLr, batchSize: f.headBatch, patience: f.headPatience, seed: f.seed, rowsPerEpoch: f.headRowsPerEpoch };
  return {
    teacher: 'llm',
    layers: f.layers === 'auto' ? '-1' : f.layers,
    ...common,
    // zeroshot: no epochs; the other head fields stay as given (the keys of existing zeroshot caches).
    head: f.head === 'zeroshot' ? { ...trained, kind: 'zeroshot', epochs: 0 } : { ...trained, kind: 'linear' },
    llm: llmFlags,
    overheadSample: f.overheadSample,
  };
}

function pick<T extends object, K extends keyof T>(o: T, keys: K[]): Pick<T, K> {
  const out = {} as Pick<T, K>;
  for (const k of keys) out[k] = o[k];
  return out;
}

/** Where the run goes and what it reports; not part of the cache's content. */
export interface CacheStageEnv {
  /** tfjs backend in use (call initBackend first). */
  backend: string;
  log: LogFn;
  /** Explicit cache directory instead of <root>/<dataset>/<teacher>/<key>. */
  out?: string;
  /** `--shard i/N`: pass 1 for this slice only. */
  slice?: { index: number; count: number };
  /** Extra `runtime` provenance for the manifest (llm teacher), e.g. how the slice was assigned. */
  runtime?: Record<string, unknown>;
}

/** Load the teacher the config names and build (or resume, or reuse) its cache. */
export async function runCacheStage(c: CacheConfig, ds: PreparedDataset, env: CacheStageEnv): Promise<CacheSummary & { device?: string }> {
  const common = {
    root: c.root,
    out: env.out,
    usersPerShard: c.usersPerShard,
    hiddenDtype: c.hiddenDtype,
    concurrency: c.usersInFlight,
    slice: env.slice,
    k: c.k,
    temperature: c.temperature,
    head: c.head,
    backend: env.backend,
    log: env.log,
  };
  if (c.teacher === 'seqrec') {
    const t = await loadSeqrecTeacher(c.run!, ds, { layers: c.layers });
    try {
      return await runTeacherCache(t.encoder, ds, { ...common, teacherOptions: t.options, teacherScores: t.scoreRows });
    } finally {
      await t.encoder.dispose();
    }
  }
  requireEvaluableUsers(ds, 'fit the soft-label head on or evaluate the teacher with'); // the more basic problem first
  requireItemText(ds);
  const llm = await import('../teacher/llm/index.js');
  const lo = llm.llmOptionsFromFlags({ ...c.llm!, layers: c.layers });
  const encoder = await llm.loadLlmTeacher({ ...lo, revision: c.llm!.revision, log: env.log }, ds);
  try {
    // Options that change the states but are not in TeacherInfo go into the cache key.
    const teacherOptions = { maxPromptTokens: lo.maxPromptTokens, truncate: lo.truncate, tapPattern: lo.tapPattern ?? null, batch: lo.batch };
    const summary = await runTeacherCache(encoder, ds, {
      ...common,
      teacherOptions,
      plainLoop: (h) => encoder.measurePlainLoop(h),
      overheadSample: c.overheadSample,
      runtime: { device: encoder.device, executionProviders: encoder.executionProviders, ...env.runtime, onnxruntime: onnxruntimeVersion() },
    });
    return { ...summary, device: encoder.device };
  } finally {
    await encoder.dispose();
  }
}

/**
 * An LLM teacher reads item texts; a dataset whose titles all fell back to the raw ids (S3Rec's Amazon files,
 * sequences/pairs files) has none, and its prompts would be lists of numbers.
 */
export function requireItemText(ds: PreparedDataset): void {
  const items = ds.items.slice(1);
  if (items.length > 0 && items.every((it) => it.title === it.rawId)) {
    throw new RecdistillError(
      'E_USAGE',
      `dataset ${ds.name} has no item text (every item's title is its id, e.g. "${items[0]!.rawId}"): the LLM teacher reads item titles. ` +
        'Give the items a text file (--items-file, for datasets that take one) or use --teacher seqrec --student-run RUN.',
    );
  }
}

/** The installed onnxruntime-node version, for the manifest's `runtime` provenance. */
function onnxruntimeVersion(): string {
  try {
    return (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
