/**
 * Find a model's files: a local folder in the transformers.js layout or a hub id downloaded into the
 * same cache layout transformers.js uses (`<cacheDir>/<id>/<file>`), then tokenizer + config through
 * transformers.js (AutoTokenizer / AutoConfig), so a model cached by either tool serves both.
 */
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, createWriteStream, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AutoTokenizer, env as hfEnv, type PreTrainedTokenizer } from '@huggingface/transformers';
import { env } from '../../env.js';
import { RecdistillError } from '../../errors.js';
import { tempPathFor } from '../../util/atomic.js';
import { sha256, sha256File } from '../../util/hash.js';
import { stderrLog, type LogFn } from '../../util/progress.js';
import { scanOnnx } from './onnx-scan.js';

/** transformers.js dtype -> ONNX file suffix (the names onnx-community repos use). */
export const DTYPE_SUFFIX = {
  fp32: '',
  fp16: '_fp16',
  q8: '_quantized',
  int8: '_int8',
  uint8: '_uint8',
  q4: '_q4',
  q4f16: '_q4f16',
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

/** `--dtype auto`: a hub id gets DEFAULT_DTYPE; a local folder gets the first of these it has on disk. */
export const AUTO_DTYPE_ORDER: Dtype[] = ['q4', 'q4f16', 'q8', 'int8', 'uint8', 'fp16', 'fp32'];

/**
 * Resolve `auto` to a concrete dtype. Explicit dtypes pass through (a missing file is reported later with
 * what is on disk). A local folder with none of the known files keeps DEFAULT_DTYPE so that error names it.
 */
export function resolveDtype(model: string, dtype: string): string {
  if (dtype !== 'auto') return dtype;
  if (!isLocalModel(model)) return DEFAULT_DTYPE;
  const dir = resolve(model);
  return AUTO_DTYPE_ORDER.find((d) => existsSync(join(dir, onnxFileFor(d)))) ?? DEFAULT_DTYPE;
}

export function onnxFileFor(dtype: string): string {
  if (!(dtype in DTYPE_SUFFIX)) throw new RecdistillError('E_USAGE', `dtype "${dtype}" is not one of ${DTYPES.join(', ')}.`);
  return `onnx/model${DTYPE_SUFFIX[dtype as Dtype]}.onnx`;
}

/** The dtypes whose files are in a local folder, for messages. */
export function dtypesOnDisk(dir: string): string[] {
  const onnxDir = join(dir, 'onnx');
  const files = existsSync(onnxDir) ? readdirSync(onnxDir).filter((f) => f.endsWith('.onnx') && !f.startsWith('.')) : [];
  return files.map((f) => {
    const d = DTYPES.find((t) => `model${DTYPE_SUFFIX[t]}.onnx` === f);
    return d ? `${f} (--dtype ${d})` : f;
  });
}

export interface ModelFiles {
  /** Folder with config.json, tokenizer.json, tokenizer_config.json, onnx/. */
  dir: string;
  onnxPath: string;
  /** External data files beside the graph (absolute paths). */
  externalData: string[];
  source: 'local' | 'hub';
}

export function isLocalModel(model: string): boolean {
  return model.startsWith('.') || model.startsWith('/') || existsSync(model);
}

/** Check a local folder has what a model needs; errors list what is there. */
export function resolveLocalModel(model: string, dtype: string): ModelFiles {
  const dir = resolve(model);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new RecdistillError('E_NOT_FOUND', `model folder ${dir} does not exist.`);
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) {
    if (!existsSync(join(dir, f))) throw new RecdistillError('E_NOT_FOUND', `model folder ${dir} has no ${f} (expected the transformers.js layout: config.json, tokenizer.json, tokenizer_config.json, onnx/model<suffix>.onnx).`);
  }
  const onnxPath = join(dir, onnxFileFor(dtype));
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

/** Where hub models are cached: shared with transformers.js's file cache layout. */
export function hubCacheDir(): string {
  return join(env.cacheDir, 'models');
}

function hubUrl(id: string, file: string): string {
  const path = hfEnv.remotePathTemplate.replaceAll('{model}', id).replaceAll('{revision}', 'main');
  return hfEnv.remoteHost.replace(/\/?$/, '/') + path.replace(/^\//, '').replace(/\/?$/, '/') + file;
}

/** Download one file into the cache (temp + rename). Returns false on 404 when `optional`. */
async function download(id: string, file: string, dest: string, log: LogFn, optional = false): Promise<boolean> {
  const url = hubUrl(id, file);
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new RecdistillError('E_NETWORK', `cannot reach ${url} (${(e as Error).message}). Run with network once, or pass a local model folder with --model.`);
  }
  if (res.status === 404 || res.status === 401) {
    if (optional) return false;
    throw new RecdistillError('E_NOT_FOUND', `${id} has no ${file} on ${hfEnv.remoteHost} (HTTP ${res.status}). Valid dtypes name these files: ${DTYPES.map((d) => `${d} -> ${onnxFileFor(d)}`).join(', ')}.`);
  }
  if (!res.ok || !res.body) throw new RecdistillError('E_NETWORK', `download of ${url} failed: HTTP ${res.status}.`);
  mkdirSync(dirname(dest), { recursive: true });
  const tmp = tempPathFor(dest);
  const total = Number(res.headers.get('content-length') ?? 0);
  log(`model: downloading ${file} from ${id}${total ? ` (${(total / 1e6).toFixed(1)} MB)` : ''}`);
  try {
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>), createWriteStream(tmp));
    renameSync(tmp, dest);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new RecdistillError('E_NETWORK', `download of ${url} failed: ${(e as Error).message}`);
  }
  return true;
}

/**
 * A hub id: use the cached copy when complete, else download (unless offline). External data files
 * are found by scanning the downloaded graph.
 */
export async function resolveHubModel(id: string, dtype: string, offline: boolean, log: LogFn = stderrLog): Promise<ModelFiles> {
  const dir = join(hubCacheDir(), id);
  const graphFile = onnxFileFor(dtype);
  const need = ['config.json', 'tokenizer.json', 'tokenizer_config.json', graphFile];
  for (const f of need) {
    const dest = join(dir, f);
    if (existsSync(dest)) continue;
    if (offline) {
      throw new RecdistillError(
        'E_NETWORK',
        `model ${id} (${graphFile}) is not in the cache ${dir} and offline mode is on. ` +
          `Run once with network (without --offline / RECDISTILL_OFFLINE=1), or pass a local folder with --model.` +
          (existsSync(dir) ? ` Cached there: ${dtypesOnDisk(dir).join(', ') || 'no onnx files'}.` : ''),
      );
    }
    await download(id, f, dest, log);
  }
  const onnxPath = join(dir, graphFile);
  const ext: string[] = [];
  for (const rel of scanOnnx(onnxPath).externalData) {
    const dest = join(dirname(onnxPath), rel);
    if (!existsSync(dest)) {
      if (offline) throw new RecdistillError('E_NETWORK', `external data ${rel} of ${id} is not cached and offline mode is on.`);
      await download(id, `onnx/${rel}`, dest, log);
    }
    ext.push(dest);
  }
  return { dir, onnxPath, externalData: ext, source: 'hub' };
}

export async function resolveModelFiles(model: string, dtype: string, offline: boolean, log?: LogFn): Promise<ModelFiles> {
  onnxFileFor(dtype); // validate early
  return isLocalModel(model) ? resolveLocalModel(model, dtype) : resolveHubModel(model, dtype, offline, log);
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
