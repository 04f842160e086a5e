import { datasetDifference } from '../data/differ.js';
import { flagsRecord, runDatasetRecord } from '../student/model/run-folder.js';
import * as tf from '@tensorflow/tfjs-core';
import { join } from 'node:path';
import type { PreparedDataset } from '../data/types.js';
import { RecdistillError } from '../errors.js';
import { encode, scores, type Sasrec } from '../student/model/model.js';
import { sha256File } from '../util/hash.js';
import { resolveLayerList } from '../util/layers.js';
import type { TeacherEncoder } from './types.js';

/**
 * The second teacher kind: a trained student-format sequence model (e.g. a larger SASRec trained with
 * student:train) as a TeacherEncoder. Hidden states are the outputs of its blocks at every position
 * ('position' pooling); item embeddings are its embedding table; it provides its own soft labels from its
 * scores (the cache's 'teacher' head), so no head is fitted.
 *
 * Histories longer than maxLen are read in overlapping windows of maxLen items whose ends advance by
 * maxLen/2: the first window gives positions 0..maxLen-1 (full context), each later window gives only its
 * last maxLen/2 positions, so every position sees at least maxLen/2 items of context.
 * SASRec counts positions from the end of its input, so a state depends on the pass it was read in: rows and
 * soft labels come from one pass over the user's history without the test item (the way the student sees
 * its training sequence); the teacher's own valid/test metrics read the prefix alone (the way it serves).
 */
export interface SeqrecModel {
  numItems: number;
  maxLen: number;
  blocks: number;
  dims: number;
  /** Per block [L, D] for one unpadded sequence (L <= maxLen); the last block is the state `scoreStates` uses. */
  encodeSequence(items: Int32Array): Float32Array[];
  /** Scores [P, N+1] for final states [P, D]. */
  scoreStates(h: Float32Array, P: number): Float32Array;
  /** [N+1, D] item embedding table (row 0 padding). */
  itemEmbeddings(): Float32Array;
}

/** Wrap a SASRec from src/student/model/model.ts (inference: no dropout). */
export function sasrecModel(m: Sasrec): SeqrecModel {
  const { numItems, maxLen, blocks, dims } = m.config;
  return {
    numItems,
    maxLen,
    blocks,
    dims,
    // Tensors leave tf.tidy and are read outside it: tidy walks a returned value key by key, so returning
    // a typed array costs one step per float (most of the time of a [P, N+1] scores call).
    encodeSequence(items) {
      return readAll(tf.tidy(() => encode(m, items, 1, items.length)));
    },
    scoreStates(h, P) {
      return readAll([tf.tidy(() => scores(m, tf.tensor2d(h, [P, dims])))])[0]!;
    },
    itemEmbeddings() {
      const e = m.itemEmb.dataSync().slice() as Float32Array;
      e.fill(0, 0, dims); // padding row: zeros, as the TeacherEncoder contract says
      return e;
    },
  };
}

/** Download (a copy: the cpu backend hands out its own storage) and dispose tensors. */
function readAll(ts: tf.Tensor[]): Float32Array[] {
  try {
    return ts.map((t) => t.dataSync().slice() as Float32Array);
  } finally {
    tf.dispose(ts);
  }
}

/** Windows [start, end) over a history of n items, each assigning states to positions [assignFrom, end). */
export function seqWindows(n: number, maxLen: number): Array<{ start: number; end: number; assignFrom: number }> {
  if (n <= maxLen) return n ? [{ start: 0, end: n, assignFrom: 0 }] : [];
  const stride = Math.max(1, Math.floor(maxLen / 2));
  const out = [{ start: 0, end: maxLen, assignFrom: 0 }];
  let end = maxLen;
  while (end < n) {
    const next = Math.min(n, end + stride);
    out.push({ start: next - maxLen, end: next, assignFrom: end });
    end = next;
  }
  return out;
}

/** Per position of `items`: the state of each requested block, [n, blocks.length, D], plus the final state [n, D]. */
function statesFor(model: SeqrecModel, items: Int32Array, blocks: number[]): { tapped: Float32Array; final: Float32Array } {
  const n = items.length;
  const D = model.dims;
  const nb = blocks.length;
  const tapped = new Float32Array(n * nb * D);
  const final = new Float32Array(n * D);
  for (const w of seqWindows(n, model.maxLen)) {
    const outs = model.encodeSequence(items.subarray(w.start, w.end)); // per block [len, D]
    const last = outs[outs.length - 1]!;
    for (let t = w.assignFrom; t < w.end; t++) {
      const j = t - w.start;
      blocks.forEach((b, l) => tapped.set(outs[b]!.subarray(j * D, (j + 1) * D), (t * nb + l) * D));
      final.set(last.subarray(j * D, (j + 1) * D), t * D);
    }
  }
  return { tapped, final };
}

/** Scores after each of `positions` of `items` (one user). */
export interface ScoreRequest {
  items: Int32Array;
  positions: Int32Array;
}

/**
 * The final states `scores` reads, for many requests, [R, D] in request order: per request the windows of
 * seqWindows(last + 1) (last = its last position, as in `scores`), only those that assign a requested position,
 * each encoded alone (B = 1, unpadded: the same kernels as pass 1, so the same bytes).
 */
function requestStates(model: SeqrecModel, requests: ScoreRequest[]): { h: Float32Array; R: number } {
  const D = model.dims;
  const R = requests.reduce((a, q) => a + q.positions.length, 0);
  const h = new Float32Array(R * D);
  let r = 0;
  for (const { items, positions } of requests) {
    let last = -1;
    for (const p of positions) {
      if (p < 0 || p >= items.length) throw new RecdistillError('E_INTERNAL', `seqrec scores: position ${p} outside the history (0..${items.length - 1}).`);
      last = Math.max(last, p);
    }
    const windows = seqWindows(last + 1, model.maxLen);
    const states = new Map<number, Float32Array>(); // window -> its last block [len, D]
    positions.forEach((p, i) => {
      let w = windows.length - 1;
      while (windows[w]!.assignFrom > p) w--; // windows assign consecutive ranges [assignFrom, end)
      const { start, end } = windows[w]!;
      let out = states.get(w);
      if (!out) states.set(w, (out = model.encodeSequence(items.subarray(start, end)).pop()!));
      h.set(out.subarray((p - start) * D, (p - start + 1) * D), (r + i) * D);
    });
    r += positions.length;
  }
  return { h, R };
}

export interface SeqrecTeacher {
  encoder: TeacherEncoder;
  /** Teacher scores [P, N+1] after each of `positions` of `items` (the cache's 'teacher' soft-label head). */
  scores(items: Int32Array, positions: Int32Array): Promise<Float32Array>;
  /**
   * The same scores (the same bytes) for many users at once, [sum P, N+1] in request order: each needed window
   * encoded once, then one [R, D] x [D, N+1] product for all rows. (Padded multi-user encode batches were
   * measured: no faster on wasm, and not bit-identical; the cost was tf.tidy walking returned typed arrays.)
   */
  scoreRows(requests: ScoreRequest[]): Promise<Float32Array>;
  /** Options that change the states, for the cache key. */
  options: Record<string, unknown>;
}

export function seqrecTeacher(model: SeqrecModel, info: { model: string; weightsHash: string; layers: string; dispose?: () => void }): SeqrecTeacher {
  const blocks = resolveLayerList(info.layers, model.blocks, { flag: '--layers', of: `this ${model.blocks}-block model` });
  const D = model.dims;
  const encoder: TeacherEncoder = {
    kind: 'seqrec',
    model: info.model,
    dtype: 'fp32',
    weightsHash: info.weightsHash,
    layers: blocks,
    hiddenSize: D,
    pooling: 'position',
    async encodeHistory(items) {
      const { tapped } = statesFor(model, items, blocks);
      return { first: 0, count: items.length, states: tapped, tokens: 0 };
    },
    async embedItems(onProgress) {
      onProgress?.(model.numItems, model.numItems);
      return model.itemEmbeddings();
    },
    async dispose() {
      info.dispose?.();
    },
  };
  return {
    encoder,
    options: { maxLen: model.maxLen, window: 'half-overlap' },
    async scores(items, positions) {
      if (!positions.length) return new Float32Array(0);
      // Encode only up to the last requested position: the same windows pass 1 used for these states.
      let last = 0;
      for (const p of positions) last = Math.max(last, p);
      const { final } = statesFor(model, items.subarray(0, last + 1), blocks);
      const h = new Float32Array(positions.length * D);
      positions.forEach((p, i) => h.set(final.subarray(p * D, (p + 1) * D), i * D));
      return model.scoreStates(h, positions.length);
    },
    async scoreRows(requests) {
      const { h, R } = requestStates(model, requests);
      return R ? model.scoreStates(h, R) : new Float32Array(0);
    },
  };
}

/**
 * Load a student:train run folder (model.safetensors + config in its metadata) as a teacher. Refuses a run
 * trained on another dataset (fingerprint). The weights hash goes into the cache key.
 */
export async function loadSeqrecTeacher(dir: string, ds: PreparedDataset, o: { layers: string }): Promise<SeqrecTeacher> {
  const { loadStudent } = await import('../student/serving/serve.js');
  const s = await loadStudent(dir);
  try {
    if (s.info.fingerprint && s.info.fingerprint !== ds.fingerprint) {
      const why = datasetDifference(runDatasetRecord(dir) ?? { name: s.info.dataset }, flagsRecord(ds), 'the teacher run');
      throw new RecdistillError('E_MISMATCH', `student run ${dir} was trained on dataset fingerprint ${s.info.fingerprint}, the dataset in use has ${ds.fingerprint}: ${why}; train the seqrec teacher on this dataset.`);
    }
    if (s.info.config.numItems !== ds.items.length - 1) {
      throw new RecdistillError('E_MISMATCH', `student run ${dir} scores ${s.info.config.numItems} items, the dataset has ${ds.items.length - 1}.`);
    }
    const weightsHash = await sha256File(join(dir, 'model.safetensors'));
    return seqrecTeacher(sasrecModel(s.model), { model: dir, weightsHash, layers: o.layers, dispose: () => s.dispose() });
  } catch (e) {
    s.dispose();
    throw e;
  }
}
