/**
 * A student behind raw ids: histories of the dataset's own item ids (strings or numbers) in, the top-k
 * items with raw ids, titles and scores out. Unknown ids are reported, never dropped silently. The model
 * runs on onnxruntime-node (the exported graph, default: the fastest here) or on TensorFlow.js.
 */
import { RecdistillError } from '../errors.js';
import type { LogFn } from '../util/progress.js';
import { loadItemMap, type ItemMap } from '../student/serving/items.js';
import { sasrecParams } from '../student/model/model.js';

export const RUNTIMES = ['onnx', 'tfjs'] as const;
export type Runtime = (typeof RUNTIMES)[number];

export interface Recommendation {
  items: { id: string; title: string; score: number }[];
}

export interface Recommender {
  info: { dir: string; runtime: Runtime; dataset: string; fingerprint: string; items: number; maxLen: number; dims: number; blocks: number; parameters: number };
  itemMap: ItemMap;
  /** Dense ids of a raw history; throws E_UNKNOWN_ITEMS (listing them) when some are not in the catalogue. */
  toDense(history: ReadonlyArray<string | number>): Int32Array;
  recommend(history: ReadonlyArray<string | number>, k: number): Promise<Recommendation>;
  /** Dense in, dense out (benchmarks, tests). */
  recommendDense(history: Int32Array, k: number): Promise<{ items: number[]; scores: number[] }>;
  dispose(): Promise<void>;
}

export class UnknownItemsError extends RecdistillError {
  constructor(readonly unknown: string[]) {
    super('E_INPUT', `unknown item id${unknown.length > 1 ? 's' : ''}: ${unknown.slice(0, 20).join(', ')}${unknown.length > 20 ? `, … (${unknown.length})` : ''}.`);
  }
}

export async function loadRecommender(dir: string, o: { runtime?: Runtime; threads?: number; log?: LogFn } = {}): Promise<Recommender> {
  const runtime = o.runtime ?? 'onnx';
  if (!RUNTIMES.includes(runtime)) throw new RecdistillError('E_USAGE', `--runtime must be one of ${RUNTIMES.join(', ')}; got "${runtime}".`);
  // One runtime is loaded: the onnx path never initialises TensorFlow.js.
  let info: { dataset: string; fingerprint: string; config: import('../student/model/model.js').ModelConfig };
  let dense: Recommender['recommendDense'];
  let close: () => Promise<void>;
  // Networks whose scores are averaged: a run whose serve.json names an ensemble (EMKD --serve ensemble) serves its members' mean.
  let networks = 1;
  if (runtime === 'onnx') {
    const { loadServedOnnx } = await import('../student/serving/onnx.js');
    const onnx = await loadServedOnnx(dir, { threads: o.threads });
    info = onnx;
    networks = onnx.members.length;
    dense = (h, k) => onnx.recommend(h, k);
    close = () => onnx.dispose();
  } else {
    const { loadStudent } = await import('../student/serving/serve.js');
    const tf = await loadStudent(dir);
    info = { ...tf.info };
    networks = tf.info.members?.length ?? 1;
    dense = async (h, k) => tf.recommend(h, k);
    close = async () => tf.dispose();
  }
  const { config } = info;
  let itemMap: ItemMap;
  try {
    itemMap = await loadItemMap(dir, { fingerprint: info.fingerprint, numItems: config.numItems }, o.log);
  } catch (e) {
    await close();
    throw e;
  }
  const toDense = (history: ReadonlyArray<string | number>): Int32Array => {
    const out = new Int32Array(history.length);
    const unknown: string[] = [];
    history.forEach((raw, i) => {
      const id = itemMap.byRaw.get(String(raw));
      if (id === undefined) unknown.push(String(raw));
      else out[i] = id;
    });
    if (unknown.length) throw new UnknownItemsError(unknown);
    return out;
  };
  return {
    info: { dir, runtime, dataset: info.dataset, fingerprint: info.fingerprint, items: config.numItems, maxLen: config.maxLen, dims: config.dims, blocks: config.blocks, parameters: networks * sasrecParams(config) },
    itemMap,
    toDense,
    recommendDense: dense,
    async recommend(history, k) {
      const r = await dense(toDense(history), k);
      return { items: r.items.map((id, i) => ({ id: itemMap.items[id]!.rawId, title: itemMap.items[id]!.title, score: r.scores[i]! })) };
    },
    dispose: close,
  };
}
