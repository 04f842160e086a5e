import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { RecdistillError } from '../../errors.js';
import { stableStringify } from '../../util/hash.js';
import { coerceOptions } from '../../config/options.js';
import { absPath } from '../../util/paths.js';
import { datasetFromFlags, datasetOptions, type DatasetFlags } from '../../data/options.js';
import type { PreparedDataset } from '../../data/types.js';
import type { LogFn } from '../../util/progress.js';
import type { DatasetRecord } from '../../data/differ.js';

/**
 * A student run folder: config.json (written first), history.jsonl, curves.svg, checkpoint.safetensors,
 * model.safetensors, metrics.json, eval.json/eval.md, bench/. These helpers decide whether a folder is one
 * (so --out never overwrites someone else's files) and read its JSON files with errors that name the file.
 */
const RUN_FORMAT = 1;
const RUN_FILES = ['config.json', 'checkpoint.safetensors', 'model.safetensors', 'history.jsonl', 'metrics.json'];
/** JSON files above this size are not run metadata (a history of 1e6 epochs is ~500 MB: far beyond). */
const MAX_JSON_BYTES = 512 * 1024 * 1024;

/** Parse a JSON file; a missing, unreadable, oversized or malformed file is a RecdistillError naming it. */
export function readJsonFile(path: string, what: string): unknown {
  if (!existsSync(path)) throw new RecdistillError('E_NOT_FOUND', `${path} not found (${what}).`);
  let text: string;
  try {
    const size = statSync(path).size;
    if (size > MAX_JSON_BYTES) throw new RecdistillError('E_INPUT', `${path} is ${size} bytes: too large for ${what} (at most ${MAX_JSON_BYTES}).`);
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (e instanceof RecdistillError) throw e;
    throw new RecdistillError('E_INPUT', `${path} is not readable (${what}): ${(e as Error).message}`);
  }
  return parseJson(text, path, what);
}

/** JSON.parse with an error naming where the text came from. */
export function parseJson(text: string, where: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new RecdistillError('E_INPUT', `${where} is not valid JSON (${what}): ${(e as Error).message}`);
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** A run's progress, stored in checkpoint.safetensors' metadata (train.ts writes it, finish.ts reports it). */
export interface RunState {
  epoch: number;
  step: number;
  best: number;
  bestEpoch: number;
  sinceBest: number;
  trainSeconds: number;
  stepsTimed: number;
  stepSeconds: number;
  history: Array<Record<string, unknown>>;
  /** Early-stopped (patience exhausted); reaching --epochs is not final: a resume with more epochs continues. */
  done: boolean;
  /** Each loss term's value at the run's first step: the reference of the loss-explosion check. */
  refLoss?: Record<string, number>;
}

/**
 * A run folder's config.json, as student:train writes it: the identity (format, dataset, fingerprint, options: the
 * run keys, distill: the distillation provenance or null), the model config, the resolved options it was trained
 * with ("train", absolute paths) and the backend. The one reader of that file: checkRunConfig / readRunConfig.
 */
export interface RunConfig {
  format: number;
  dataset: string;
  fingerprint: string;
  options: Record<string, unknown>;
  distill?: Record<string, unknown> | null;
  model?: Record<string, unknown>;
  train?: Record<string, unknown>;
  backend?: string;
}

/** Validate a parsed config.json (as written by student:train); `path` names it in errors. */
export function checkRunConfig(v: unknown, path: string): RunConfig {
  const bad = (what: string): never => {
    throw new RecdistillError('E_INPUT', `${path}: ${what}; is this a student:train run folder's config.json?`);
  };
  if (!isObject(v)) return bad('expected a JSON object');
  if (v.format !== RUN_FORMAT) bad(`"format" is ${JSON.stringify(v.format)}, expected ${RUN_FORMAT}`);
  const { options, fingerprint, dataset, distill, model, train, backend } = v;
  if (!isObject(options)) return bad('"options" must be an object of the run\'s options');
  if (typeof fingerprint !== 'string') return bad('"fingerprint" must be a string');
  if (typeof dataset !== 'string') return bad('"dataset" must be a string');
  if (typeof options.dataset !== 'string') bad('"options.dataset" must be a string');
  if (distill !== undefined && distill !== null && !isObject(distill)) bad('"distill" must be an object or null');
  if (model !== undefined && !isObject(model)) bad('"model" must be an object (the model config)');
  if (train !== undefined && !isObject(train)) bad('"train" must be an object of the resolved options');
  if (backend !== undefined && typeof backend !== 'string') bad('"backend" must be a string');
  return {
    format: RUN_FORMAT, dataset, fingerprint, options,
    ...(distill !== undefined ? { distill: distill as Record<string, unknown> | null } : {}),
    ...(model !== undefined ? { model: model as Record<string, unknown> } : {}),
    ...(train !== undefined ? { train: train as Record<string, unknown> } : {}),
    ...(backend !== undefined ? { backend: backend as string } : {}),
  };
}

/** The options a run was trained with: "train" (resolved, absolute paths) over "options" (the identity's run keys). */
export function trainedOptions(cfg: Pick<RunConfig, 'options' | 'train'>): Record<string, unknown> {
  return { ...cfg.options, ...cfg.train };
}

/** Read and validate `<dir>/config.json`. */
export function readRunConfig(dir: string): RunConfig {
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new RecdistillError('E_NOT_FOUND', `${path} not found: ${dir} is not a student run folder.`);
  return checkRunConfig(readJsonFile(path, 'student run config'), path);
}

/**
 * May student:train write into `dir`? Yes when it does not exist, is empty (dot files such as a lock or an
 * interrupted temp file do not count) or is a run folder (config.json of a run). Anything else is refused, as
 * data:prepare refuses to replace a folder that is not a prepared dataset.
 */
export function checkRunOut(dir: string): void {
  if (!existsSync(dir)) return;
  if (!statSync(dir).isDirectory()) throw new RecdistillError('E_USAGE', `--out ${dir} exists and is not a folder; refusing to replace it.`);
  const entries = readdirSync(dir).filter((f) => !f.startsWith('.'));
  if (entries.length === 0) return;
  const cfg = join(dir, 'config.json');
  if (!existsSync(cfg)) {
    const known = entries.filter((f) => RUN_FILES.includes(f));
    const other = entries.filter((f) => !RUN_FILES.includes(f)).slice(0, 3);
    throw new RecdistillError(
      'E_USAGE',
      `--out ${dir} exists and is not a student run folder (no config.json${known.length ? `, though it holds ${known.join(', ')}` : ''}; it holds ${other.map((f) => JSON.stringify(f)).join(', ') || 'other files'}${entries.length > 3 ? ', ...' : ''}); refusing to write into it. Choose another --out.`,
    );
  }
  try {
    checkRunConfig(readJsonFile(cfg, 'student run config'), cfg);
  } catch (e) {
    throw new RecdistillError('E_USAGE', `--out ${dir} is not a student run folder: ${(e as Error).message} Refusing to write into it; choose another --out.`);
  }
}

/** The option keys that name files or folders: stored absolute in a run's identity and config.json. */
const PATH_KEYS = ['source', 'itemsFile', 'cache'] as const;

/** `o` with every path option made absolute. */
export function withAbsolutePaths<T extends Record<string, unknown>>(o: T): T {
  const out: Record<string, unknown> = { ...o };
  for (const k of PATH_KEYS) if (k in out) out[k] = absPath(out[k]);
  return out as T;
}

/**
 * A run identity written before paths were stored absolute holds them as typed (relative to the folder the run
 * was started from): resolved against the current folder, such a checkpoint still resumes from that folder.
 */
export function absoluteIdentity(identity: Record<string, unknown>): Record<string, unknown> {
  const out = { ...identity };
  if (isObject(out.options)) out.options = withAbsolutePaths(out.options);
  if (isObject(out.distill)) out.distill = withAbsolutePaths(out.distill);
  return out;
}

/**
 * The folder `student:train --config FILE` continues: FILE's folder when FILE is a run's config.json whose
 * identity equals `identity` (same data, options and teacher cache), else undefined (a new run) with the reason.
 */
export function runToContinue(configFile: string, identity: Record<string, unknown>, upgradeProvenance: (stored: unknown) => unknown = (p) => p): { dir?: string; differs?: string } {
  let cfg: RunConfig;
  try {
    cfg = checkRunConfig(readJsonFile(configFile, 'student run config'), configFile);
  } catch {
    return {}; // not a run's config.json: a plain options file
  }
  if (!cfg.train) return {};
  const distill = cfg.distill ? upgradeProvenance(cfg.distill) : null; // as this version writes it (blocks from 0)
  const have = absoluteIdentity({ format: cfg.format, dataset: cfg.dataset, fingerprint: cfg.fingerprint, options: cfg.options, distill });
  const want = absoluteIdentity(identity);
  const differs = Object.keys({ ...have, ...want, ...(isObject(have.options) ? have.options : {}), ...(isObject(want.options) ? want.options : {}) })
    .filter((k) => k !== 'options')
    .filter((k) => stableStringify(pick(have, k)) !== stableStringify(pick(want, k)));
  return differs.length ? { differs: differs.join(', ') } : { dir: dirname(resolve(configFile)) };
}

/** A top-level identity key, or else an option's value. */
function pick(identity: Record<string, unknown>, k: string): unknown {
  if (k in identity) return identity[k];
  return isObject(identity.options) ? identity.options[k] : undefined;
}

/** The dataset a run was trained on, as its config.json records it (name and dataset flags), for mismatch messages. */
export function runDatasetRecord(dir: string): DatasetRecord | undefined {
  let cfg: RunConfig;
  try {
    cfg = readRunConfig(dir);
  } catch {
    return undefined;
  }
  const all = trainedOptions(cfg);
  const options: Record<string, unknown> = {};
  for (const k of Object.keys(datasetOptions)) if (k !== 'dataset' && all[k] !== undefined) options[k] = all[k];
  return { name: cfg.dataset, options };
}

/** A dataset's flags as a record to compare with a run's (name and flags; undefined flags compare as unknown). */
export function flagsRecord(ds: { name: string; flags?: Record<string, unknown> }): DatasetRecord {
  if (!ds.flags) return { name: ds.name };
  const { dataset: _d, ...options } = ds.flags;
  return { name: ds.name, options };
}

/** The dataset flags a student run was trained with (config.json "train" holds the resolved options). */
export function runDatasetFlags(dir: string): Partial<DatasetFlags> & Pick<DatasetFlags, 'dataset'> {
  const path = join(dir, 'config.json');
  if (!existsSync(path)) throw new RecdistillError('E_NOT_FOUND', `${path} not found: pass --dataset (and --source) explicitly, or point --student at a student:train run folder.`);
  const cfg = readJsonFile(path, 'student run config');
  if (!isObject(cfg)) throw new RecdistillError('E_INPUT', `${path}: expected a JSON object (a student:train run's config.json).`);
  // Only the dataset flags are read, so a hand-written config.json with "options" (or "train") is enough here.
  const train = trainedOptions({ options: isObject(cfg.options) ? cfg.options : {}, train: isObject(cfg.train) ? cfg.train : undefined });
  if (typeof train.dataset !== 'string') throw new RecdistillError('E_INPUT', `${path}: field "options.dataset" missing; pass --dataset explicitly.`);
  const out: Partial<DatasetFlags> & Pick<DatasetFlags, 'dataset'> = { dataset: train.dataset };
  const flags = coerceOptions(datasetOptions, pickDefined(train, Object.keys(datasetOptions)), path);
  return Object.assign(out, flags);
}

/** The keys of `o` among `keys` whose values are defined. */
function pickDefined(o: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

/**
 * The dataset a student run was trained on, read where its config.json says (`source` overrides that location).
 * Data that moved is an E_NOT_FOUND that says so and names --source.
 */
export async function loadRunDataset(dir: string, source?: string, log?: LogFn): Promise<PreparedDataset> {
  const flags = { ...runDatasetFlags(dir), ...(source ? { source } : {}) };
  try {
    return await datasetFromFlags(flags, log);
  } catch (e) {
    if (!(e instanceof RecdistillError) || e.code !== 'E_NOT_FOUND' || source) throw e;
    throw new RecdistillError('E_NOT_FOUND', `${e.message} That is the ${flags.dataset} data student run ${dir} was trained on (its config.json); if the data moved, pass --source <its new location>.`, { cause: e });
  }
}
