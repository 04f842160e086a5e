import { field } from '../../util/fields.js';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { isObject } from '../model/run-folder.js';
import type { PreparedDataset } from '../../data/types.js';
import { DEFAULT_KS, evaluateRanking, popularityScorer, type RankingMetrics, type ScoreBatch } from '../../eval/evaluate.js';
import { writeJsonAtomic } from '../../util/atomic.js';
import { writeTensors } from '../model/checkpoint.js';
import type { StudentOptions } from './config.js';
import type { TrainHooks } from './hooks.js';
import type { Sasrec } from '../model/model.js';
import type { RunState } from '../model/run-folder.js';

/** The `--json` summary of student:train. */
export interface TrainResult {
  run: string;
  backend: string;
  bestEpoch: number;
  epochs: number;
  trainSeconds: number;
  msPerStep: number;
  secondsPerEpoch: number;
  valid: RankingMetrics;
  test: RankingMetrics;
  testSampled100: RankingMetrics;
  popularityTest: RankingMetrics;
  resumedFrom?: number;
  /**
   * Set when training diverged: the run ended early with the best weights validated before. Non-finite loss
   * values are written as strings ("NaN", "Infinity"): JSON has no number for them.
   */
  diverged?: Omit<Divergence, 'loss'> & { loss: Record<string, number | string> };
  memory: RunMemory;
}

/** Memory of the run, MiB: the process's high-water marks when the run finished, and the up-front estimate. */
export interface RunMemory {
  /** Peak resident set size of the process (getrusage maxRSS) since it started: the run's when one process trains one run. */
  peakRssMiB: number;
  /** The wasm backend's linear memory, which only grows: the process's wasm heap high-water mark (wasm backend only). */
  wasmHeapMiB?: number;
  /** The up-front estimate the run was checked against (src/student/training/memory.ts). */
  estimateMiB?: number;
}

/** The process's memory high-water marks now (RunMemory without the estimate). */
function memoryHighWater(): RunMemory {
  const heapU8 = tf.engine().backendName === 'wasm' ? field(field(tf.backend(), 'wasm'), 'HEAPU8') : undefined;
  const heap = heapU8 instanceof Uint8Array ? heapU8.buffer.byteLength : undefined;
  return { peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024), ...(heap ? { wasmHeapMiB: Math.round(heap / 2 ** 20) } : {}) };
}

/** Why and where training diverged (non-finite or exploding loss, non-finite weights). */
export interface Divergence {
  epoch: number;
  step: number;
  loss: Record<string, number>;
  reason: string;
}

const pick = (m: RankingMetrics) => Object.fromEntries(['hr@5', 'ndcg@5', 'hr@10', 'ndcg@10', 'hr@20', 'ndcg@20', 'mrr', 'users'].map((k) => [k, m[k]!]));

/** Validation NDCG@10 levels reported by timeToQuality. */
const QUALITY_LEVELS = [0.08, 0.09, 0.1, 0.105, 0.11, 0.115, 0.12] as const;

/**
 * Time to quality from a run's history: for each level, the training wall time (epochs including their
 * validation, summed in order) at the end of the first epoch whose validation NDCG@10 reached it, and that epoch;
 * null when never reached. Read from history.jsonl, so it is the same for a resumed run.
 */
export function timeToQuality(history: ReadonlyArray<Record<string, unknown>>, levels: readonly number[] = QUALITY_LEVELS): Record<string, { seconds: number; epoch: number } | null> {
  const out: Record<string, { seconds: number; epoch: number } | null> = {};
  for (const l of levels) out[String(l)] = null;
  let elapsed = 0;
  for (const h of history) {
    elapsed += Number(h.epochSeconds ?? 0);
    const v = (h.valid as Record<string, number> | undefined)?.['ndcg@10'];
    if (v === undefined) continue;
    for (const l of levels) if (out[String(l)] === null && v >= l) out[String(l)] = { seconds: Number(elapsed.toFixed(2)), epoch: Number(h.epoch) };
  }
  return out;
}

/** Restore the best weights, write model.safetensors, evaluate valid/test and the popularity baseline, write metrics.json. */
export async function finishRun(a: {
  ds: PreparedDataset; opts: StudentOptions; outDir: string; backend: string; model: Sasrec; best: Map<string, Float32Array>;
  state: RunState; log: (l: string) => void; scorer: ScoreBatch; validUsers: number[]; resumedFrom?: number; hooks?: TrainHooks;
  diverged?: Divergence; estimateBytes?: number;
}): Promise<TrainResult> {
  const { ds, opts: o, outDir, model, best, state, scorer, validUsers } = a;
  for (const [n, data] of best) {
    const v = model.params.get(n)!;
    const t = tf.tensor(data, v.shape, 'float32');
    v.assign(t);
    t.dispose();
  }
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [n, v] of model.params) tensors[n] = { dtype: 'F32', shape: v.shape.slice(), data: new Float32Array(v.dataSync() as Float32Array) };
  writeTensors(join(outDir, 'model.safetensors'), tensors, { format: 'recdistill-sasrec-1', config: JSON.stringify(model.config), dataset: ds.name, fingerprint: ds.fingerprint, bestEpoch: String(state.bestEpoch) });
  const common = { ks: DEFAULT_KS, excludeHistory: o.excludeHistory, batchSize: o.evalBatch, users: validUsers };
  const valid = await evaluateRanking(ds, scorer, { ...common, split: 'valid' });
  const test = await evaluateRanking(ds, scorer, { ...common, split: 'test' });
  const testSampled100 = await evaluateRanking(ds, scorer, { ...common, split: 'test', protocol: 'sampled100', seed: o.seed });
  const pop = popularityScorer(ds);
  const popularityTest = await evaluateRanking(ds, pop, { ...common, split: 'test' });
  const popularityValid = await evaluateRanking(ds, pop, { ...common, split: 'valid' });
  // The hooks' own evaluation of what they trained (EMKD: the K-network ensemble), merged into `distill` below.
  const report = (await a.hooks?.report?.({ outDir, ds, excludeHistory: o.excludeHistory, evalBatch: o.evalBatch, student: { valid: pick(valid), test: pick(test) }, log: a.log })) ?? {};
  const msPerStep = (state.stepSeconds * 1000) / Math.max(1, state.stepsTimed);
  const secondsPerEpoch = state.trainSeconds / Math.max(1, state.epoch);
  const result: TrainResult = {
    run: outDir,
    backend: a.backend,
    bestEpoch: state.bestEpoch,
    epochs: state.epoch,
    trainSeconds: Number(state.trainSeconds.toFixed(2)),
    msPerStep: Number(msPerStep.toFixed(2)),
    secondsPerEpoch: Number(secondsPerEpoch.toFixed(2)),
    valid: pick(valid),
    test: pick(test),
    testSampled100: pick(testSampled100),
    popularityTest: pick(popularityTest),
    ...(a.resumedFrom !== undefined ? { resumedFrom: a.resumedFrom } : {}),
    ...(a.diverged ? { diverged: { ...a.diverged, loss: Object.fromEntries(Object.entries(a.diverged.loss).map(([k, v]) => [k, Number.isFinite(v) ? v : String(v)])) } } : {}),
    memory: { ...memoryHighWater(), ...(a.estimateBytes !== undefined ? { estimateMiB: Math.round(a.estimateBytes / 2 ** 20) } : {}) },
  };
  writeJsonAtomic(join(outDir, 'metrics.json'), {
    ...result,
    popularityValid: pick(popularityValid),
    protocol: { ranking: 'full', excludeHistory: o.excludeHistory, ties: 'pessimistic (equal scores rank above the target)', selection: 'best validation ndcg@10' },
    dataset: { name: ds.name, fingerprint: ds.fingerprint, users: ds.users.length, items: ds.items.length - 1 },
    distill: withReport(a.hooks?.provenance?.() ?? null, report),
    timeToQuality: timeToQuality(state.history),
    note: 'trainSeconds is the wall-clock time of the training epochs including per-epoch validation; shared machines slow it down.',
  });
  a.log(`student:train: best epoch ${state.bestEpoch}; valid ndcg@10 ${valid['ndcg@10']!.toFixed(4)}; test ndcg@10 ${test['ndcg@10']!.toFixed(4)} hr@10 ${test['hr@10']!.toFixed(4)} (popularity ${popularityTest['ndcg@10']!.toFixed(4)}); ${result.trainSeconds}s, ${result.secondsPerEpoch} s/epoch, ${result.msPerStep} ms/step; peak RSS ${result.memory.peakRssMiB} MiB${result.memory.wasmHeapMiB ? `, wasm heap ${result.memory.wasmHeapMiB} MiB` : ''}`);
  return result;
}

/** The provenance with the hooks' report merged in key by key (report.emkd joins provenance.emkd). */
function withReport(provenance: Record<string, unknown> | null, report: Record<string, unknown>): Record<string, unknown> | null {
  if (Object.keys(report).length === 0) return provenance;
  const out: Record<string, unknown> = { ...provenance };
  for (const [k, v] of Object.entries(report)) out[k] = isObject(out[k]) && isObject(v) ? { ...out[k], ...v } : v;
  return out;
}
