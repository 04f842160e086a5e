/**
 * Single-request serving latency of a trained run, for the ablation table: the run's exported graph on
 * onnxruntime-node (the serving default), one history per request, one intra-op thread. Every configuration
 * of an ablation shares the student's architecture, so one run per configuration is measured.
 */
import { loadStudentOnnx } from '../student/serving/onnx.js';
import { percentile } from '../util/stats.js';

export interface LatencyOptions {
  /** Timed requests (after warmup). */
  requests?: number;
  warmup?: number;
  /** History length of every request (clipped to the model's maxLen). */
  historyLength?: number;
  k?: number;
}

export interface RunLatency {
  p50Ms: number;
  p95Ms: number;
  requests: number;
  historyLength: number;
}

/** A deterministic history of `length` distinct-ish item ids in [1, numItems]. */
function probeHistory(length: number, numItems: number): Int32Array {
  const h = new Int32Array(length);
  for (let i = 0; i < length; i++) h[i] = 1 + ((i * 7919) % numItems);
  return h;
}

/**
 * p50/p95 of single requests for each run folder, measured interleaved (round r times every model in turn), so
 * load from other processes falls on every model alike; the sessions are all loaded first.
 */
export async function measureRunLatencies(runDirs: string[], o: LatencyOptions & { rounds?: number } = {}): Promise<Map<string, RunLatency>> {
  const requests = o.requests ?? 400;
  const warmup = o.warmup ?? 100;
  const rounds = o.rounds ?? 5;
  const k = o.k ?? 10;
  const dirs = [...new Set(runDirs)];
  const models = [];
  try {
    for (const d of dirs) models.push(await loadStudentOnnx(d, { threads: 1 }));
    const probes = models.map((m) => probeHistory(Math.min(o.historyLength ?? 50, m.config.maxLen), m.config.numItems));
    const ms: number[][] = models.map(() => []);
    for (let i = 0; i < models.length; i++) for (let w = 0; w < warmup; w++) await models[i]!.recommend(probes[i]!, k);
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < models.length; i++) {
        for (let q = 0; q < requests; q++) {
          const t = performance.now();
          await models[i]!.recommend(probes[i]!, k);
          ms[i]!.push(performance.now() - t);
        }
      }
    }
    const out = new Map<string, RunLatency>();
    dirs.forEach((d, i) => {
      const sorted = ms[i]!.sort((a, b) => a - b);
      out.set(d, { p50Ms: percentile(sorted, 50), p95Ms: percentile(sorted, 95), requests: sorted.length, historyLength: probes[i]!.length });
    });
    return out;
  } finally {
    for (const m of models) await m.dispose();
  }
}
