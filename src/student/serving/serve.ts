import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, activeBackend, type BackendName } from '../../backend/index.js';
import { RecdistillError } from '../../errors.js';
import { padHistories } from '../model/batches.js';
import { assignFrom, readTensors } from '../model/checkpoint.js';
import { createSasrec, encode as encodeModel, encodeLast, paramShapes, type ModelConfig, type Sasrec } from '../model/model.js';
import { isObject, parseJson, readJsonFile } from '../model/run-folder.js';
import { averageScores, readServePlan, SERVE_FILE } from './serve-plan.js';
import type { STTensor } from '../../util/safetensors.js';

/**
 * Serving API: load a run folder (model.safetensors carries the model config in its metadata, so nothing
 * comes from the training code's defaults) and answer requests. The request path is one tf.tidy: the last
 * block computes only the last position's query (encodeLast), scores are one [1, D] x [D, N+1] matmul
 * against a transposed item table prepared at load time, and top-k is a bounded selection, not a sort.
 */
export interface StudentInfo {
  dir: string;
  config: ModelConfig;
  dataset: string;
  fingerprint: string;
  bestEpoch: number;
  backend: string;
  parameters: number;
  /** A run that serves an ensemble (serve.json): the member folders whose scores are averaged; the rest of info is the first member's. */
  members?: string[];
}

export interface EncodedHistory {
  /** Number of positions L (the last min(len, maxLen) items). */
  length: number;
  /** Per block, row-major [L, D]; the last entry is the final (layer-normed) state used for scores. */
  layers: Float32Array[];
}

export interface LoadedStudent {
  info: StudentInfo;
  model: Sasrec;
  /** Top-k items after the history (history items and padding excluded unless excludeHistory is false). */
  recommend(history: ArrayLike<number>, k: number, opts?: { excludeHistory?: boolean }): { items: number[]; scores: number[] };
  /** Scores of all items [N + 1] after the history (index = item id, 0 = padding). */
  scores(history: ArrayLike<number>): Float32Array;
  /** Scores for many histories: [B, N + 1] row-major. */
  scoreBatch(histories: Int32Array[]): Float32Array;
  /** Per-layer hidden states at every position of the (truncated) history. */
  encode(history: ArrayLike<number>): EncodedHistory;
  dispose(): void;
}

function toInt32(h: ArrayLike<number>, numItems: number): Int32Array {
  const out = Int32Array.from(h as ArrayLike<number>);
  for (let i = 0; i < out.length; i++) {
    if (!(out[i]! >= 1 && out[i]! <= numItems)) throw new RecdistillError('E_INPUT', `history[${i}] = ${out[i]} is not an item id in 1..${numItems}.`);
  }
  return out;
}

/** Indices of the k largest values of s[1..], skipping `skip`; ties keep the smaller id first. O(N log k). */
export function topK(s: ArrayLike<number>, k: number, skip?: Set<number>): { items: number[]; scores: number[] } {
  const items: number[] = [];
  const vals: number[] = [];
  for (let j = 1; j < s.length; j++) {
    if (skip?.has(j)) continue;
    const v = s[j]!;
    if (items.length === k && !(v > vals[k - 1]!)) continue;
    let pos = items.length === k ? k - 1 : items.length;
    while (pos > 0 && vals[pos - 1]! < v) pos--;
    items.splice(pos, 0, j);
    vals.splice(pos, 0, v);
    if (items.length > k) {
      items.pop();
      vals.pop();
    }
  }
  return { items, scores: vals };
}

/**
 * Load a run folder for serving. A folder whose serve.json names an ensemble (an EMKD run trained with `--serve
 * ensemble`, src/student/serving/serve-plan.ts) serves the average of its members' scores: `scores`, `scoreBatch` and
 * `recommend` average them; `model` and `encode` are the first member's (an EMKD run's network 1, the run's own
 * model.safetensors), and `info` is the first member's with the run folder as `dir`, `members`, and `parameters`
 * summed over the members.
 */
export async function loadStudent(dir: string, opts: { backend?: BackendName } = {}): Promise<LoadedStudent> {
  const plan = readServePlan(dir);
  return plan.serve === 'ensemble' ? loadEnsemble(dir, plan.members, opts) : loadOne(dir, opts);
}

/** scores and recommend over a scoreBatch of N items. */
function scoring(N: number, scoreBatch: (histories: Int32Array[]) => Float32Array): Pick<LoadedStudent, 'scores' | 'scoreBatch' | 'recommend'> {
  return {
    scoreBatch,
    scores: (history) => scoreBatch([toInt32(history, N)]),
    recommend(history, k, o = {}) {
      const h = toInt32(history, N);
      return topK(scoreBatch([h]), k, o.excludeHistory === false ? undefined : new Set(h));
    },
  };
}

async function loadEnsemble(dir: string, names: string[], opts: { backend?: BackendName }): Promise<LoadedStudent> {
  const members: LoadedStudent[] = [];
  try {
    for (const name of names) members.push(await loadOne(join(dir, name), opts));
    const a = members[0]!.info;
    for (const { info: b } of members.slice(1)) {
      if (b.fingerprint !== a.fingerprint || b.config.numItems !== a.config.numItems) {
        throw new RecdistillError('E_MISMATCH', `${join(dir, SERVE_FILE)}: member ${b.dir} (dataset fingerprint ${b.fingerprint.slice(0, 12)}, ${b.config.numItems} items) does not match ${a.dir} (${a.fingerprint.slice(0, 12)}, ${a.config.numItems} items).`);
      }
    }
  } catch (e) {
    for (const m of members) m.dispose();
    throw e;
  }
  const first = members[0]!;
  const scoreFns = members.map((m) => m.scoreBatch);
  return {
    info: { ...first.info, dir, parameters: members.reduce((s, m) => s + m.info.parameters, 0), members: members.map((m) => m.info.dir) },
    model: first.model,
    ...scoring(first.info.config.numItems, (histories) => averageScores(scoreFns, histories)),
    encode: (history) => first.encode(history),
    dispose() {
      for (const m of members) m.dispose();
    },
  };
}

async function loadOne(dir: string, opts: { backend?: BackendName }): Promise<LoadedStudent> {
  const path = join(dir, 'model.safetensors');
  if (!existsSync(path)) throw new RecdistillError('E_NOT_FOUND', `${path} not found: is ${dir} a finished student run folder?`);
  const backend = opts.backend ? await initBackend(opts.backend) : tf.engine().backendName ? activeBackend() : await initBackend('auto');
  const { tensors, metadata } = readTensors(path);
  if (metadata.format !== 'recdistill-sasrec-1' || !metadata.config) throw new RecdistillError('E_INPUT', `${path}: not a recdistill student model (metadata.format = ${metadata.format}).`);
  const config = checkModelConfig(parseJson(metadata.config, `${path} (metadata "config")`, 'model config'), `${path} (metadata "config")`);
  checkModelTensors(config, tensors, path);
  const model = createSasrec(config, 0);
  assignFrom(model.params, tensors, path);
  const itemT = tf.keep(tf.transpose(model.itemEmb)); // [D, N + 1], prepared once
  const N = config.numItems;
  const parameters = [...model.params.values()].reduce((s, v) => s + v.size, 0);
  const bestEpoch = Number(metadata.bestEpoch ?? 0);
  const info: StudentInfo = { dir, config, dataset: metadata.dataset ?? '', fingerprint: metadata.fingerprint ?? '', bestEpoch: Number.isSafeInteger(bestEpoch) && bestEpoch >= 0 ? bestEpoch : 0, backend, parameters };

  const scoreBatch = (histories: Int32Array[]): Float32Array => {
    const { items, B, L } = padHistories(histories, config.maxLen);
    const out = tf.tidy(() => {
      return tf.matMul(encodeLast(model, items, B, L), itemT); // [B, D] x [D, N + 1]
    });
    const data = out.dataSync() as Float32Array;
    out.dispose();
    return data;
  };
  return {
    info,
    model,
    ...scoring(N, scoreBatch),
    encode(history) {
      const h = toInt32(history, N);
      const { items, B, L } = padHistories([h], config.maxLen);
      const layers = tf.tidy(() => encodeModel(model, items, B, L).map((t) => tf.keep(t)));
      const data = layers.map((t) => t.dataSync() as Float32Array);
      layers.forEach((t) => t.dispose());
      return { length: L, layers: data };
    },
    dispose() {
      itemT.dispose();
      for (const v of model.params.values()) v.dispose();
    },
  };
}

/**
 * A run's model.safetensors read and validated (metadata config within bounds, every tensor the config implies
 * present with its shape, finite weights) without tfjs: the one reader for every runtime and for checks.
 */
export function readStudentFile(dir: string): { path: string; config: ModelConfig; tensors: ReturnType<typeof readTensors>['tensors']; metadata: Record<string, string> } {
  const path = join(dir, 'model.safetensors');
  if (!existsSync(path)) throw new RecdistillError('E_NOT_FOUND', `${path} not found: is ${dir} a finished student run folder?`);
  const { tensors, metadata } = readTensors(path);
  if (metadata.format !== 'recdistill-sasrec-1' || !metadata.config) throw new RecdistillError('E_INPUT', `${path}: not a recdistill student model (metadata.format = ${metadata.format}).`);
  const config = checkModelConfig(parseJson(metadata.config, `${path} (metadata "config")`, 'model config'), `${path} (metadata "config")`);
  checkModelTensors(config, tensors, path);
  return { path, config, tensors, metadata };
}

/** Validate a run's model.safetensors without loading it into tfjs; returns its model config. */
export function checkStudentFile(dir: string): ModelConfig {
  return readStudentFile(dir).config;
}

/** Read a run folder's metrics.json (for eval/bench reports), or undefined. */
export function readRunMetrics(dir: string): Record<string, unknown> | undefined {
  const p = join(dir, 'metrics.json');
  if (!existsSync(p)) return undefined;
  const v = readJsonFile(p, 'student run metrics');
  if (!isObject(v)) throw new RecdistillError('E_INPUT', `${p}: expected a JSON object of metrics, got ${Array.isArray(v) ? 'an array' : JSON.stringify(v)}.`);
  return v;
}

/** Sanity bounds of a stored model config (far above real models; shapes are checked against the file too). */
const CONFIG_BOUNDS: Record<string, [number, number]> = {
  numItems: [1, 2 ** 31 - 2], maxLen: [1, 100_000], dims: [1, 65_536], blocks: [1, 1_000], heads: [1, 65_536], ffnDims: [1, 1_048_576],
};

/**
 * Validate a parsed model config: integer sizes within bounds, heads | dims, dropouts in [0, 1), and the later
 * fields norm / init / embScale, which a file written before they existed lacks: missing = that time's
 * behaviour ('pre', 'default', true). The returned config always carries them.
 */
export function checkModelConfig(v: unknown, where: string): ModelConfig {
  const bad = (what: string): never => {
    throw new RecdistillError('E_INPUT', `${where}: ${what}.`);
  };
  if (!isObject(v)) return bad('expected a JSON object (numItems, maxLen, dims, blocks, heads, ffnDims, dropout, attnDropout)');
  for (const [k, [lo, hi]] of Object.entries(CONFIG_BOUNDS)) {
    const x = v[k];
    if (typeof x !== 'number' || !Number.isInteger(x) || x < lo || x > hi) bad(`"${k}" must be an integer in ${lo}..${hi}, got ${JSON.stringify(x)}`);
  }
  for (const k of ['dropout', 'attnDropout']) {
    const x = v[k];
    if (typeof x !== 'number' || !(x >= 0 && x < 1)) bad(`"${k}" must be a number in [0, 1), got ${JSON.stringify(x)}`);
  }
  if ((v.dims as number) % (v.heads as number) !== 0) bad(`"heads" (${String(v.heads)}) must divide "dims" (${String(v.dims)})`);
  const { norm = 'pre', init = 'default', embScale = true } = v as Partial<ModelConfig>;
  if (norm !== 'pre' && norm !== 'post') bad(`"norm" must be "pre" or "post", got ${JSON.stringify(norm)}`);
  if (init !== 'default' && init !== 'xavier') bad(`"init" must be "default" or "xavier", got ${JSON.stringify(init)}`);
  if (typeof embScale !== 'boolean') bad(`"embScale" must be a boolean, got ${JSON.stringify(embScale)}`);
  const { padKeys = 'mask', attnOutDropout = true } = v as Partial<ModelConfig>;
  if (padKeys !== 'mask' && padKeys !== 'attend') bad(`"padKeys" must be "mask" or "attend", got ${JSON.stringify(padKeys)}`);
  if (typeof attnOutDropout !== 'boolean') bad(`"attnOutDropout" must be a boolean, got ${JSON.stringify(attnOutDropout)}`);
  const { attention = 'causal' } = v as Partial<ModelConfig>;
  if (attention !== 'causal' && attention !== 'bidirectional') bad(`"attention" must be "causal" or "bidirectional", got ${JSON.stringify(attention)}`);
  if (attention === 'bidirectional' && padKeys === 'attend') bad('"attention" "bidirectional" needs "padKeys" "mask"');
  const { filterAlpha = 0, filterBins = 3 } = v as Partial<ModelConfig>;
  if (typeof filterAlpha !== 'number' || !(filterAlpha >= 0 && filterAlpha < 1)) bad(`"filterAlpha" must be a number in [0, 1), got ${JSON.stringify(filterAlpha)}`);
  if (typeof filterBins !== 'number' || !Number.isInteger(filterBins) || filterBins < 1) bad(`"filterBins" must be an integer >= 1, got ${JSON.stringify(filterBins)}`);
  if (filterAlpha > 0 && (attention !== 'causal' || padKeys !== 'mask')) bad('"filterAlpha" needs "attention" "causal" and "padKeys" "mask"');
  const { filterSpan } = v as Partial<ModelConfig>;
  if (filterSpan !== undefined && (filterSpan !== 'window' || !(filterAlpha > 0))) bad(`"filterSpan" must be "window" (with "filterAlpha" > 0) or absent, got ${JSON.stringify(filterSpan)}`);
  const num = (k: string) => v[k] as number; // every size and dropout was checked above
  const [numItems, maxLen, dims, blocks, heads, ffnDims, dropout, attnDropout] = ['numItems', 'maxLen', 'dims', 'blocks', 'heads', 'ffnDims', 'dropout', 'attnDropout'].map(num) as [number, number, number, number, number, number, number, number];
  // The later fields are written only when they differ from the old behaviour (files stay byte-identical).
  return { numItems, maxLen, dims, blocks, heads, ffnDims, dropout, attnDropout, norm, init, embScale, ...(padKeys === 'attend' ? { padKeys } : {}), ...(attnOutDropout ? {} : { attnOutDropout }), ...(attention === 'bidirectional' ? { attention } : {}), ...(filterAlpha > 0 ? { filterAlpha, filterBins, ...(filterSpan ? { filterSpan } : {}) } : {}) };
}

/**
 * Before anything is allocated: every tensor the config implies is in the file as F32 with exactly that shape
 * (so the config cannot ask for more memory than the file holds), no other tensor is, and every value is finite.
 */
function checkModelTensors(config: ModelConfig, tensors: Record<string, STTensor>, path: string): void {
  const shapes = paramShapes(config);
  for (const [name, shape] of shapes) {
    const t = tensors[name];
    if (!t) throw new RecdistillError('E_MISMATCH', `${path}: tensor "${name}" is missing (the metadata config says ${config.blocks} blocks, dims ${config.dims}, ${config.numItems} items).`);
    const size = shape.reduce((a, b) => a * b, 1);
    if (t.dtype !== 'F32' || t.shape.join(',') !== shape.join(',') || t.data.length !== size) {
      throw new RecdistillError('E_MISMATCH', `${path}: tensor "${name}" is ${t.dtype} [${t.shape}], but the metadata config (numItems ${config.numItems}, maxLen ${config.maxLen}, dims ${config.dims}, ffnDims ${config.ffnDims}) implies F32 [${shape}].`);
    }
  }
  const extra = Object.keys(tensors).filter((n) => !shapes.has(n));
  if (extra.length) throw new RecdistillError('E_MISMATCH', `${path}: unexpected tensors ${extra.slice(0, 3).map((n) => `"${n}"`).join(', ')}${extra.length > 3 ? ', ...' : ''} for the metadata config (${config.blocks} blocks).`);
  for (const name of shapes.keys()) {
    const data = tensors[name]!.data as Float32Array;
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i]!)) throw new RecdistillError('E_NUMERIC', `${path}: tensor "${name}" holds ${data[i]} at index ${i}: the weights are not finite (a diverged run?); refusing to serve or evaluate them.`);
    }
  }
}
