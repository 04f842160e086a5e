import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, activeBackend, type BackendName } from '../backend/index.js';
import { RecdistillError } from '../errors.js';
import { padHistories } from './batches.js';
import { assignFrom, readTensors } from './checkpoint.js';
import { createSasrec, encode as encodeModel, encodeLast, type ModelConfig, type Sasrec } from './model.js';

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

export async function loadStudent(dir: string, opts: { backend?: BackendName } = {}): Promise<LoadedStudent> {
  const path = join(dir, 'model.safetensors');
  if (!existsSync(path)) throw new RecdistillError('E_NOT_FOUND', `${path} not found: is ${dir} a finished student run folder?`);
  const backend = opts.backend ? await initBackend(opts.backend) : tf.engine().backendName ? activeBackend() : await initBackend('auto');
  const { tensors, metadata } = readTensors(path);
  if (metadata.format !== 'recdistill-sasrec-1' || !metadata.config) throw new RecdistillError('E_INPUT', `${path}: not a recdistill student model (metadata.format = ${metadata.format}).`);
  const config = JSON.parse(metadata.config) as ModelConfig;
  const model = createSasrec(config, 0);
  assignFrom(model.params, tensors, path);
  const itemT = tf.keep(tf.transpose(model.itemEmb)); // [D, N + 1], prepared once
  const N = config.numItems;
  const parameters = [...model.params.values()].reduce((s, v) => s + v.size, 0);
  const info: StudentInfo = { dir, config, dataset: metadata.dataset ?? '', fingerprint: metadata.fingerprint ?? '', bestEpoch: Number(metadata.bestEpoch ?? 0), backend, parameters };

  const scoreBatch = (histories: Int32Array[]): Float32Array => {
    const { items, B, L } = padHistories(histories, config.maxLen);
    const out = tf.tidy(() => {
      return tf.matMul(encodeLast(model, items, B, L), itemT); // [B, D] x [D, N + 1]
    });
    const data = out.dataSync() as Float32Array;
    out.dispose();
    return data;
  };
  const scores = (history: ArrayLike<number>) => scoreBatch([toInt32(history, N)]);
  return {
    info,
    model,
    scores,
    scoreBatch,
    recommend(history, k, o = {}) {
      const h = toInt32(history, N);
      const s = scoreBatch([h]);
      return topK(s, k, o.excludeHistory === false ? undefined : new Set(h));
    },
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

/** Read a run folder's metrics.json (for eval/bench reports), or undefined. */
export function readRunMetrics(dir: string): Record<string, unknown> | undefined {
  const p = join(dir, 'metrics.json');
  return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>) : undefined;
}
