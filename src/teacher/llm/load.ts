/**
 * Find a model's files: a local folder in the transformers.js layout, or a hub id resolved to a commit
 * and downloaded into the standard Hugging Face hub cache through `@huggingface/hub` (hub.ts), then
 * tokenizer + config through transformers.js (AutoTokenizer), from that folder.
 */
import { existsSync, linkSync, copyFileSync, lstatSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { AutoTokenizer, env as hfEnv, type PreTrainedTokenizer } from '@huggingface/transformers';
import { env } from '../../env.js';
import { RecdistillError } from '../../errors.js';
import { sha256, sha256File } from '../../util/hash.js';
import { stderrLog, type LogFn } from '../../util/progress.js';
import { cachedCommit, downloadToCache, hfHubCacheDir, hubEndpoint, isUnreachable, repoCacheDir, resolveRevision, revisionOf, snapshotDir, type HubOptions } from './hub.js';
import { scanOnnx } from './onnx-scan.js';

export { hfHubCacheDir, type HubOptions } from './hub.js';

/**
 * transformers.js dtype -> ONNX file suffix (the names onnx-community repos use): its v4
 * DEFAULT_DTYPE_SUFFIX_MAPPING (src/utils/dtypes.js), in this order.
 */
export const DTYPE_SUFFIX = {
  fp32: '',
  fp16: '_fp16',
  q8: '_quantized',
  int8: '_int8',
  uint8: '_uint8',
  q4: '_q4',
  q4f16: '_q4f16',
  bnb4: '_bnb4',
  q2: '_q2',
  q2f16: '_q2f16',
  q1: '_q1',
  q1f16: '_q1f16',
} as const;
export type Dtype = keyof typeof DTYPE_SUFFIX;
export const DTYPES = Object.keys(DTYPE_SUFFIX) as Dtype[];

/**
 * Default teacher: Qwen2.5-0.5B-Instruct in q4. Why: the smallest instruct model of a current family
 * with an onnx-community export and a chat template; q4 is block-wise 4-bit (MatMulNBits, block 32),
 * which onnxruntime's CPU kernels run fast and which keeps hidden states closer to fp32 than per-tensor
 * dynamic int8 (q8) does, at a few hundred MB on disk. (Chosen by judgement; not measured here: no hub.)
 */
export const DEFAULT_MODEL = 'onnx-community/Qwen2.5-0.5B-Instruct';
export const DEFAULT_DTYPE: Dtype = 'q4';

/**
 * `--dtype auto`: a hub id gets DEFAULT_DTYPE; a local folder gets the first of these it has on disk:
 * 4-bit block-wise first (fast on CPU, close to fp32), then 8-bit, then full precision, and the 2- and
 * 1-bit variants only when nothing else is there (they change the hidden states the most).
 */
export const AUTO_DTYPE_ORDER: Dtype[] = ['q4', 'q4f16', 'bnb4', 'q8', 'int8', 'uint8', 'fp16', 'fp32', 'q2', 'q2f16', 'q1', 'q1f16'];

/**
 * Resolve `auto` to a concrete dtype. Explicit dtypes pass through (a missing file is reported later with
 * what is on disk). A local folder with none of the known files keeps DEFAULT_DTYPE so that error names it.
 */
export function resolveDtype(model: string, dtype: string): string {
  if (dtype !== 'auto') return dtype;
  if (!isLocalModel(model)) return DEFAULT_DTYPE;
  const dir = resolve(model);
  return AUTO_DTYPE_ORDER.find((d) => existsSync(join(dir, onnxFileFor(d))) || existsSync(join(dir, mergedFileFor(d)))) ?? DEFAULT_DTYPE;
}

/** The legacy merged decoder of a dtype (transformers.js v2 exports), used when model<suffix>.onnx is absent. */
function mergedFileFor(dtype: string): string {
  return onnxFileFor(dtype).replace('onnx/model', 'onnx/decoder_model_merged');
}

export function onnxFileFor(dtype: string): string {
  if (!(dtype in DTYPE_SUFFIX)) throw new RecdistillError('E_USAGE', `dtype "${dtype}" is not one of ${DTYPES.join(', ')}.`);
  return `onnx/model${DTYPE_SUFFIX[dtype as Dtype]}.onnx`;
}

/** onnx/*.onnx file names with the dtype each stands for, for messages. */
function describeOnnxFiles(files: string[]): string[] {
  return files
    .filter((f) => f.endsWith('.onnx') && !f.startsWith('.'))
    .map((f) => {
      const d = DTYPES.find((t) => `model${DTYPE_SUFFIX[t]}.onnx` === f);
      return d ? `${f} (--dtype ${d})` : f;
    });
}

/** The dtypes whose files are in a local folder, for messages. */
function dtypesOnDisk(dir: string): string[] {
  const onnxDir = join(dir, 'onnx');
  return existsSync(onnxDir) ? describeOnnxFiles(readdirSync(onnxDir)) : [];
}

const VALID_DTYPES = (): string => DTYPES.map((d) => `${d} -> ${onnxFileFor(d)}`).join(', ');

export interface ModelFiles {
  /** Folder with config.json, tokenizer.json, tokenizer_config.json, onnx/. */
  dir: string;
  onnxPath: string;
  /** External data files beside the graph (absolute paths). */
  externalData: string[];
  source: 'local' | 'hub';
  /** Hub: the revision asked for (branch, tag or sha; default main). Undefined for local folders. */
  revision?: string;
  /** Hub: the commit sha the revision resolved to (the snapshots/<commit> folder). Undefined for local folders. */
  commit?: string;
}

/** Files every model needs beside the graph. */
const BASE_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json'];

function isLocalModel(model: string): boolean {
  return model.startsWith('.') || model.startsWith('/') || existsSync(model);
}

/** Check a local folder has what a model needs; errors list what is there. */
export function resolveLocalModel(model: string, dtype: string): ModelFiles {
  const dir = resolve(model);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new RecdistillError('E_NOT_FOUND', `model folder ${dir} does not exist.`);
  for (const f of BASE_FILES) {
    if (!existsSync(join(dir, f))) throw new RecdistillError('E_NOT_FOUND', `model folder ${dir} has no ${f} (expected the transformers.js layout: config.json, tokenizer.json, tokenizer_config.json, onnx/model<suffix>.onnx).`);
  }
  const preferred = join(dir, onnxFileFor(dtype));
  const merged = join(dir, mergedFileFor(dtype));
  const onnxPath = !existsSync(preferred) && existsSync(merged) ? merged : preferred;
  if (!existsSync(onnxPath)) {
    const have = dtypesOnDisk(dir);
    throw new RecdistillError(
      'E_NOT_FOUND',
      `model folder ${dir} has no ${onnxFileFor(dtype)} for --dtype ${dtype}. On disk: ${have.length ? have.join(', ') : 'no onnx/*.onnx files'}.`,
    );
  }
  const ext = scanOnnx(onnxPath).externalData.map((rel) => join(dirname(onnxPath), rel));
  const missing = ext.filter((p) => !existsSync(p));
  if (missing.length) throw new RecdistillError('E_NOT_FOUND', `${onnxPath} references external data that is missing: ${missing.join(', ')}.`);
  return { dir, onnxPath, externalData: ext, source: 'local' };
}

/**
 * transformers.js's own file cache (index.ts points its env.cacheDir here). It never downloads for us:
 * hub models go to the Hugging Face hub cache (hfHubCacheDir) and transformers.js reads the snapshot folder.
 */
export function hubCacheDir(): string {
  return join(env.cacheDir, 'models');
}

/** The graph's external data files, relative to the snapshot (`onnx/model.onnx_data`). */
function externalFiles(dir: string, graphFile: string): string[] {
  return scanOnnx(join(dir, graphFile)).externalData.map((rel) => join(dirname(graphFile), rel));
}

function offlineError(id: string, revision: string, graphFile: string, cacheDir: string, commit?: string): RecdistillError {
  const snaps = join(repoCacheDir(id, cacheDir), 'snapshots');
  const cached = existsSync(snaps) ? readdirSync(snaps).map((c) => `${c.slice(0, 12)}: ${dtypesOnDisk(join(snaps, c)).join(', ') || 'no onnx files'}`) : [];
  return new RecdistillError(
    'E_NETWORK',
    `model ${id}@${revision}${commit ? ` (commit ${commit.slice(0, 12)})` : ''} (${graphFile}) is not in the hub cache ${repoCacheDir(id, cacheDir)} and offline mode is on. ` +
      `Run once with network (without --offline / RECDISTILL_OFFLINE=1 / HF_HUB_OFFLINE=1), or pass a local folder with --model.` +
      (cached.length ? ` Cached there: ${cached.join('; ')}.` : ''),
  );
}

/** The snapshot of `commit` when it holds every file the graph needs, else undefined. */
function cachedSnapshot(id: string, commit: string | undefined, graphFile: string, cacheDir: string): string | undefined {
  if (!commit) return undefined;
  const dir = snapshotDir(id, commit, cacheDir);
  if (![...BASE_FILES, graphFile].every((f) => existsSync(join(dir, f)))) return undefined;
  return externalFiles(dir, graphFile).every((f) => existsSync(join(dir, f))) ? dir : undefined;
}

/**
 * The hub cache links snapshot files to ../../blobs/<etag>; onnxruntime refuses external data whose real
 * path leaves the model's folder, so the data files become hard links (same bytes, no copy) in place.
 */
function materialize(path: string, log: LogFn): void {
  if (!lstatSync(path).isSymbolicLink()) return;
  const real = realpathSync(path);
  const tmp = `${path}.recdistill-link`;
  rmSync(tmp, { force: true });
  try {
    linkSync(real, tmp);
  } catch {
    log(`model: cannot hard-link ${real}; copying it beside the graph`);
    copyFileSync(real, tmp);
  }
  renameSync(tmp, path);
}

function snapshotFiles(dir: string, graphFile: string, revision: string, commit: string, log: LogFn): ModelFiles {
  const externalData = externalFiles(dir, graphFile).map((f) => join(dir, f));
  for (const p of externalData) materialize(p, log);
  return { dir, onnxPath: join(dir, graphFile), externalData, source: 'hub', revision, commit };
}

/**
 * A hub id: revision -> commit (GET model info; offline: refs/<revision> in the cache), then the config,
 * tokenizer, graph and its external data into snapshots/<commit>/ (files already there are not fetched).
 * A sha whose snapshot is complete needs no network; an unreachable hub falls back to a complete snapshot.
 */
async function resolveHubModel(id: string, dtype: string, offline: boolean, log: LogFn = stderrLog, hub: HubOptions = {}): Promise<ModelFiles> {
  const revision = revisionOf(hub);
  const cacheDir = hub.cacheDir ?? hfHubCacheDir();
  const o = { ...hub, cacheDir };
  const graphFile = onnxFileFor(dtype);
  const known = cachedCommit(id, revision, cacheDir);
  const cached = cachedSnapshot(id, known, graphFile, cacheDir);
  if (cached && (offline || known === revision)) return snapshotFiles(cached, graphFile, revision, known!, log);
  if (offline) throw offlineError(id, revision, graphFile, cacheDir, known);

  let resolved: { commit: string; files?: string[] };
  try {
    resolved = await resolveRevision(id, o);
  } catch (e) {
    if (cached && e instanceof RecdistillError && isUnreachable(e.cause)) {
      log(`model: ${hubEndpoint(o)} is unreachable; using the cached ${id}@${revision} (commit ${known!.slice(0, 12)})`);
      return snapshotFiles(cached, graphFile, revision, known!, log);
    }
    throw e;
  }
  const { commit, files } = resolved;
  if (files) {
    const lacking = [...BASE_FILES, graphFile].filter((f) => !files.includes(f));
    if (lacking.length) {
      const have = describeOnnxFiles(files.filter((f) => f.startsWith('onnx/')).map((f) => f.slice('onnx/'.length)));
      throw new RecdistillError(
        'E_NOT_FOUND',
        `${id}@${revision} (commit ${commit.slice(0, 12)}) has no ${lacking.join(', ')}${lacking.includes(graphFile) ? ` for --dtype ${dtype}` : ''}. ` +
          `The repo has: ${have.length ? have.join(', ') : 'no onnx/*.onnx files'}. Valid dtypes name these files: ${VALID_DTYPES()}.`,
      );
    }
  }
  await downloadToCache(id, commit, [...BASE_FILES, graphFile], o, log);
  const dir = snapshotDir(id, commit, cacheDir);
  await downloadToCache(id, commit, externalFiles(dir, graphFile), o, log);
  return snapshotFiles(dir, graphFile, revision, commit, log);
}

export async function resolveModelFiles(model: string, dtype: string, offline: boolean, log: LogFn = stderrLog, hub: HubOptions = {}): Promise<ModelFiles> {
  onnxFileFor(dtype); // validate early
  if (!isLocalModel(model)) return resolveHubModel(model, dtype, offline, log, hub);
  if (hub.revision) log(`model: --revision ${hub.revision} is ignored for the local folder ${model}`);
  return resolveLocalModel(model, dtype);
}

/** sha256 over the weights: the graph file, then each external data file (hash of hashes). */
export async function weightsHash(files: ModelFiles): Promise<string> {
  const parts = [await sha256File(files.onnxPath)];
  for (const p of files.externalData) parts.push(await sha256File(p));
  return parts.length === 1 ? parts[0]! : sha256(parts.join('\n'));
}

export interface ModelConfig {
  numLayers: number;
  hiddenSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  modelType: string;
  raw: Record<string, unknown>;
}

export function readModelConfig(dir: string): ModelConfig {
  const path = join(dir, 'config.json');
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new RecdistillError('E_INPUT', `${path} is not valid JSON: ${(e as Error).message}`);
  }
  const num = (...keys: string[]): number | undefined => {
    for (const k of keys) if (typeof raw[k] === 'number') return raw[k] as number;
    return undefined;
  };
  const numLayers = num('num_hidden_layers', 'n_layer', 'num_layers');
  const hiddenSize = num('hidden_size', 'n_embd', 'd_model');
  const numHeads = num('num_attention_heads', 'n_head') ?? 1;
  if (numLayers === undefined || hiddenSize === undefined) {
    throw new RecdistillError('E_INPUT', `${path}: expected num_hidden_layers (or n_layer) and hidden_size (or n_embd).`);
  }
  const numKvHeads = num('num_key_value_heads') ?? numHeads;
  return { numLayers, hiddenSize, numHeads, numKvHeads, headDim: num('head_dim') ?? hiddenSize / numHeads, modelType: String(raw.model_type ?? 'unknown'), raw };
}

/** Tokenizer through transformers.js from the resolved folder (never the network: files are local now). */
export async function loadTokenizer(dir: string): Promise<PreTrainedTokenizer> {
  hfEnv.allowLocalModels = true;
  try {
    return await AutoTokenizer.from_pretrained(dir, { local_files_only: true });
  } catch (e) {
    throw new RecdistillError('E_INPUT', `transformers.js could not load the tokenizer in ${dir}: ${(e as Error).message}`, { cause: e });
  }
}
