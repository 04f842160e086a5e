import { datasetDifference } from '../data/differ.js';
import { cpus, loadavg, tmpdir } from 'node:os';
import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { initBackend, type BackendName } from '../backend/index.js';
import { readManifest, type CacheManifest } from '../cache/format.js';
import { datasetFromFlags, type DatasetFlags } from '../data/options.js';
import type { PreparedDataset } from '../data/types.js';
import { RecdistillError } from '../errors.js';
import { evaluableUsers, evaluateRanking, historyFor } from '../eval/evaluate.js';
import { checkStudentFile, loadStudent, readRunMetrics } from '../student/serving/serve.js';
import { usersByLength } from '../student/serving/scorer.js';
import { loadRunDataset } from '../student/model/run-folder.js';
import type { LogFn } from '../util/progress.js';
import { runWorker } from './child.js';
import { writeBenchReport, type BenchReport, type ModelFigures } from './report.js';
import { summarizeLatencies } from '../util/stats.js';
import type { WorkerResult } from './worker.js';

/**
 * bench: teacher vs student on the same test requests. Each model is loaded and timed in its own child
 * process (latency p50/p95/p99 of single requests after a warm-up, throughput at `batch`, parameters, bytes
 * on disk, peak RSS); accuracy on the test split comes from src/eval/evaluate.ts for both (the student here,
 * the teacher when teacher:cache computed its manifest metrics with the same function).
 */
export interface BenchOptions {
  student: string;
  cache: string;
  out?: string;
  requests: number;
  teacherRequests: number;
  warmup: number;
  batch: number;
  batchRounds: number;
  k: number;
  backend: BackendName;
  threads: number;
  /** LLM teacher: sequences padded into one ONNX run when `batch` requests arrive together. */
  teacherMicroBatch: number;
  /** Teacher model folder (or run folder for seqrec) instead of the path recorded in the cache manifest. */
  teacherModel?: string;
  /** LLM teacher: onnxruntime execution provider (cpu, cuda, ...); unset = RECDISTILL_DEVICE, else cpu. */
  device?: string;
  /** Student runtime(s): tfjs, onnx (the exported graph on onnxruntime-node), or both (the faster is the headline). */
  runtime?: 'tfjs' | 'onnx' | 'both';
  /** Dataset flags; undefined = the ones the student run was trained with (its config.json). */
  dataset?: Partial<DatasetFlags> & Pick<DatasetFlags, 'dataset'>;
  log: LogFn;
}

/** `count` test requests from users spread evenly over the evaluable users: history = train + validation item. */
export function pickRequests(ds: PreparedDataset, count: number): { users: number[]; histories: number[][] } {
  const all = evaluableUsers(ds);
  const n = Math.min(count, all.length);
  const users = Array.from({ length: n }, (_, i) => all[Math.floor((i * all.length) / n)]!);
  return { users, histories: users.map((u) => Array.from(historyFor(ds, u, 'test'))) };
}

function figures(w: WorkerResult, acc: Record<string, number>): ModelFigures {
  return {
    p50Ms: w.latency.p50Ms,
    p95Ms: w.latency.p95Ms,
    p99Ms: w.latency.p99Ms,
    throughput: w.throughput,
    params: w.params,
    bytes: w.bytes,
    rssMB: w.rssMB,
    'ndcg@10': acc['ndcg@10']!,
    'hr@10': acc['hr@10']!,
  };
}

/** Median latency by history length (requests in order): where the time goes as histories grow. */
export function latencyByLength(histories: number[][], ms: number[], edges = [25, 50, 100, 200]): Array<{ lengths: string; n: number; p50Ms: number }> {
  const out: Array<{ lengths: string; n: number; p50Ms: number }> = [];
  let lo = 1;
  for (const hi of [...edges, Infinity]) {
    const sel = ms.filter((_, i) => histories[i]!.length >= lo && histories[i]!.length <= hi);
    if (sel.length) out.push({ lengths: hi === Infinity ? `>${lo - 1}` : `${lo}-${hi}`, n: sel.length, p50Ms: summarizeLatencies(sel).p50Ms });
    lo = hi + 1;
  }
  return out;
}

function teacherAccuracy(m: CacheManifest, cacheDir: string): Record<string, number> {
  const t = m.metrics?.test;
  if (!m.complete || !t || typeof t['ndcg@10'] !== 'number' || typeof t['hr@10'] !== 'number') {
    throw new RecdistillError('E_INPUT', `${cacheDir}/manifest.json: no teacher test metrics (complete = ${m.complete}); finish the cache with teacher:cache (or teacher:merge) first.`);
  }
  return t;
}

export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const log = o.log;
  for (const [k, v] of Object.entries({ requests: o.requests, teacherRequests: o.teacherRequests, batch: o.batch, batchRounds: o.batchRounds, k: o.k, teacherMicroBatch: o.teacherMicroBatch })) {
    if (!Number.isInteger(v) || v < 1) throw new RecdistillError('E_USAGE', `--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} must be a positive integer, got ${v}.`);
  }
  if (!existsSync(join(o.student, 'model.safetensors'))) throw new RecdistillError('E_NOT_FOUND', `${o.student}/model.safetensors not found: --student must be a finished student:train run folder.`);
  const manifest = readManifest(o.cache);
  checkStudentFile(o.student); // config, shapes and finite weights, before the (slow) teacher half of the bench
  const tAcc = teacherAccuracy(manifest, o.cache);
  if (o.device && manifest.teacher.kind === 'llm') {
    const { executionProvidersFor } = await import('../teacher/llm/index.js');
    executionProvidersFor(o.device); // a missing provider fails here, before the dataset and the student are loaded
  }
  const ds = o.dataset ? await datasetFromFlags(o.dataset, log) : await loadRunDataset(o.student, undefined, log);
  if (manifest.dataset.fingerprint !== ds.fingerprint) {
    throw new RecdistillError('E_MISMATCH', `teacher cache ${o.cache} was built on dataset ${manifest.dataset.name} ${manifest.dataset.fingerprint.slice(0, 12)}, the student's dataset is ${ds.name} ${ds.fingerprint.slice(0, 12)} (${datasetDifference(manifest.dataset, ds, 'the cache')}): bench compares models on the same test users.`);
  }
  const load0 = loadavg()[0]!;
  const req = pickRequests(ds, o.requests);
  // The teacher's requests: an evenly spaced subset of the same requests (it is 100x slower); the first is shared.
  const tn = Math.min(o.teacherRequests, req.histories.length);
  const teacherReq = Array.from({ length: tn }, (_, i) => req.histories[Math.floor((i * req.histories.length) / tn)]!);
  log(`bench: ${ds.name}: ${req.users.length} student requests, ${teacherReq.length} teacher requests (test users' histories), top-${o.k}, batch ${o.batch}; load average ${load0.toFixed(2)} on ${cpus().length} cores`);

  // Teacher first, then student, never at the same time (2 cores).
  log(`bench: teacher (${manifest.teacher.kind} ${manifest.teacher.model}, ${manifest.teacher.dtype}) in a child process...`);
  const teacher = await withDevice(o.device, () =>
    runWorker(
      { role: 'teacher', dir: o.cache, histories: teacherReq, items: ds.items, k: o.k, warmup: Math.min(o.warmup, 5), batch: o.batch, batchRequests: o.batch, backend: o.backend, threads: o.threads, microBatch: Math.min(o.teacherMicroBatch, o.batch), teacherModel: o.teacherModel },
      log,
    ),
  );
  log(`bench: teacher p50 ${teacher.latency.p50Ms.toFixed(2)} ms, ${teacher.throughput.toFixed(1)} req/s at batch ${o.batch}, peak RSS ${teacher.rssMB.toFixed(0)} MB (${teacher.singleRssMB.toFixed(0)} MB before the batch); CPU reference ${teacher.cpuRefMs.toFixed(2)} ms`);
  const runtimes = o.runtime === 'both' || o.runtime === undefined ? (['tfjs', 'onnx'] as const) : ([o.runtime] as const);
  const byRuntime: Partial<Record<'tfjs' | 'onnx', WorkerResult>> = {};
  for (const rt of runtimes) {
    log(`bench: student (${rt}) in a child process...`);
    const r = await runWorker(
      { role: 'student', dir: o.student, histories: req.histories, k: o.k, warmup: o.warmup, batch: o.batch, batchRequests: o.batch * o.batchRounds, backend: o.backend, studentRuntime: rt },
      log,
    );
    byRuntime[rt] = r;
    log(`bench: student (${r.runtime}) p50 ${r.latency.p50Ms.toFixed(3)} ms, p99 ${r.latency.p99Ms.toFixed(3)} ms, ${r.throughput.toFixed(0)} req/s at batch ${o.batch}, peak RSS ${r.rssMB.toFixed(0)} MB; CPU reference ${r.cpuRefMs.toFixed(2)} ms (a fixed plain-JS matmul: compare across runs)`);
  }
  // The headline student figure is the faster runtime's (by p50).
  const student = Object.values(byRuntime).reduce((a, b) => (b.latency.p50Ms < a.latency.p50Ms ? b : a));
  if (byRuntime.tfjs && byRuntime.onnx) {
    const ids = (r: WorkerResult) => r.first.join();
    if (ids(byRuntime.tfjs) !== ids(byRuntime.onnx)) log(`bench: note: the first answers differ between tfjs (${ids(byRuntime.tfjs)}) and onnx (${ids(byRuntime.onnx)}) (near-tied scores)`);
  }

  // Student accuracy: the same evaluation function and protocol as student:train (full ranking, history excluded).
  log('bench: student accuracy on the test split (full ranking)...');
  await initBackend(o.backend);
  const s = await loadStudent(o.student, { backend: o.backend });
  let sAcc: Record<string, number>;
  try {
    if (s.info.fingerprint && s.info.fingerprint !== ds.fingerprint) {
      throw new RecdistillError('E_MISMATCH', `student ${o.student} was trained on ${s.info.dataset} ${s.info.fingerprint.slice(0, 12)}, not on ${ds.name} ${ds.fingerprint.slice(0, 12)}.`);
    }
    if (s.info.config.numItems !== ds.items.length - 1) {
      throw new RecdistillError('E_MISMATCH', `${join(o.student, 'model.safetensors')} scores ${s.info.config.numItems} items, the dataset ${ds.name} has ${ds.items.length - 1}.`);
    }
    sAcc = await evaluateRanking(ds, async (users, split) => s.scoreBatch(users.map((u) => historyFor(ds, u, split))), {
      split: 'test',
      excludeHistory: true,
      // The same users in the same batches as student:train's final evaluation, so metrics.json's test figures are reproduced exactly.
      users: usersByLength(ds, evaluableUsers(ds)),
      batchSize: 256,
    });
  } finally {
    s.dispose();
  }
  const runTest = readRunMetrics(o.student)?.test as Record<string, number> | undefined;
  const report: BenchReport = {
    dataset: { name: ds.name, fingerprint: ds.fingerprint, users: ds.users.length, items: ds.items.length - 1 },
    teacher: figures(teacher, tAcc),
    student: figures(student, sAcc),
    speedup: teacher.latency.p50Ms / student.latency.p50Ms,
    details: {
      teacher: { ...teacher, latencyByLength: latencyByLength(teacherReq, teacher.ms), source: o.cache, kind: manifest.teacher.kind, model: manifest.teacher.model, dtype: manifest.teacher.dtype, accuracySource: `${o.cache}/manifest.json metrics.test (computed by teacher:cache with src/eval/evaluate.ts evaluateRanking: full ranking, history excluded, pessimistic ties)` },
      student: { ...student, latencyByLength: latencyByLength(req.histories, student.ms), source: o.student, accuracySource: 'src/eval/evaluate.ts evaluateRanking in bench (full ranking, history excluded, pessimistic ties)', runMetricsTest: runTest ?? null },
      studentRuntimes: Object.fromEntries(Object.entries(byRuntime).map(([rt, r]) => [rt, { runtime: r.runtime, latency: r.latency, throughput: r.throughput, rssMB: r.rssMB, loadMs: r.loadMs, first: r.first }])),
    },
    settings: { runtime: o.runtime ?? 'both', requestUsers: req.users, requests: req.users.length, teacherRequests: teacherReq.length, warmup: o.warmup, k: o.k, batch: o.batch, batchRounds: o.batchRounds, backend: o.backend, threads: o.threads, teacherMicroBatch: Math.min(o.teacherMicroBatch, o.batch), ...(o.device ? { device: o.device } : {}) },
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '', node: process.version, loadAverageStart: load0, loadAverageEnd: loadavg()[0]! },
    date: new Date().toISOString(),
    files: { json: '', md: '', svg: '' },
  };
  if (o.out) report.files = writeBenchReport(o.out, report);
  else {
    // Default: <run>/bench; a read-only run folder falls back to a temp folder (named in the log), so nothing is lost.
    try {
      report.files = writeBenchReport(join(o.student, 'bench'), report);
    } catch (e) {
      const fallback = join(tmpdir(), 'recdistill-bench', `${basename(resolve(o.student))}-${process.pid}`);
      report.files = writeBenchReport(fallback, report);
      log(`bench: cannot write to ${join(o.student, 'bench')} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); wrote the report to ${fallback} instead (use --out <folder> to choose).`);
    }
  }
  return report;
}

/**
 * The teacher's worker process reads its device from RECDISTILL_DEVICE (it inherits this process's
 * environment): set for the one spawn, then restored.
 */
async function withDevice<T>(device: string | undefined, f: () => Promise<T>): Promise<T> {
  if (!device) return f();
  const before = process.env.RECDISTILL_DEVICE;
  process.env.RECDISTILL_DEVICE = device;
  try {
    return await f();
  } finally {
    if (before === undefined) delete process.env.RECDISTILL_DEVICE;
    else process.env.RECDISTILL_DEVICE = before;
  }
}
