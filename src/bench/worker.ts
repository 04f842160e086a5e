/**
 * Bench child process: loads ONE model, answers the requests, prints one JSON line (WorkerResult) on stdout.
 * Each model runs in its own process so its peak resident memory (process.resourceUsage().maxRSS) is its own:
 * the parent spawns `node <tsx cli> src/bench/worker.ts <job.json>` (see child.ts).
 */
import { readFileSync } from 'node:fs';
import type { BackendName } from '../backend/index.js';
import type { ItemInfo } from '../data/types.js';
import { RecdistillError } from '../errors.js';
import { stderrLog } from '../util/progress.js';
import { studentOnnxServer, studentServer, teacherServer, type ModelFile, type Server } from './servers.js';
import { summarizeLatencies, type LatencySummary } from '../util/stats.js';

export interface BenchJob {
  /** 'student': a student run folder; 'teacher': a teacher cache folder (llm or seqrec teacher). */
  role: 'student' | 'teacher';
  dir: string;
  /** Requests: histories of dense item ids, oldest first. */
  histories: number[][];
  /** Catalogue (item texts) for the LLM teacher's prompts; items[0] is padding. */
  items?: ItemInfo[];
  k: number;
  /** Untimed requests first (JIT, allocator, onnxruntime arenas). */
  warmup: number;
  /** Requests per batch for the throughput figure. */
  batch: number;
  /** Requests answered in the throughput measurement (whole batches, at least one). */
  batchRequests: number;
  backend?: BackendName;
  /** onnxruntime intra-op threads for the LLM (0 = its default: all cores). */
  threads?: number;
  /** LLM teacher: most sequences padded into one ONNX run (the runtime's micro-batcher); default `batch`. */
  microBatch?: number;
  /** Teacher model path overriding the manifest's (a moved model folder). */
  teacherModel?: string;
  /** Student: tfjs (default) or onnx (the exported graph on onnxruntime-node). */
  studentRuntime?: 'tfjs' | 'onnx';
}

export interface WorkerResult {
  role: 'student' | 'teacher';
  kind: Server['kind'];
  runtime: string;
  latency: LatencySummary;
  /** Requests per second answering `batch` requests at a time. */
  throughput: number;
  batch: number;
  batchRequests: number;
  params: number;
  bytes: number;
  files: ModelFile[];
  /** Peak resident set size of this process (MB = 2^20 bytes), model loaded and requests answered. */
  rssMB: number;
  /** Resident set size before loading the model (Node + tsx + imports). */
  startRssMB: number;
  /** Peak RSS after the single requests, before the batched ones (padded batches can dominate the peak). */
  singleRssMB: number;
  /** Machine-speed reference: median ms of a fixed plain-JS 100x64x192 matmul in this process (same work every run: compare across reports). */
  cpuRefMs: number;
  loadMs: number;
  /** Top-k of the first request (a sanity check the parent can compare). */
  first: number[];
  /** Per-request milliseconds, in request order. */
  ms: number[];
}

const MB = 1024 * 1024;

async function runJob(job: BenchJob): Promise<WorkerResult> {
  const startRss = process.memoryUsage().rss;
  const t0 = performance.now();
  const log = stderrLog;
  const server =
    job.role === 'student'
      ? job.studentRuntime === 'onnx'
        ? await studentOnnxServer(job.dir)
        : await studentServer(job.dir, 'student', job.backend ?? 'auto')
      : await teacherServer(job.dir, job.items ?? [], { batch: job.microBatch ?? job.batch, threads: job.threads ?? 0, log, backend: job.backend, model: job.teacherModel });
  const loadMs = performance.now() - t0;
  try {
    const hs = job.histories.map((h) => Int32Array.from(h));
    if (!hs.length) throw new RecdistillError('E_USAGE', 'bench worker: no requests.');
    const first = await server.recommendAsync(hs[0]!, job.k);
    for (let i = 0; i < job.warmup; i++) await server.recommendAsync(hs[i % hs.length]!, job.k);
    // Single requests, one at a time. The student path is synchronous: time it without an await in the loop.
    const ms: number[] = [];
    for (const h of hs) {
      const a = process.hrtime.bigint();
      if (server.kind === 'llm' || server.runtime === 'onnxruntime-node') await server.recommendAsync(h, job.k);
      else server.recommend(h, job.k);
      ms.push(Number(process.hrtime.bigint() - a) / 1e6);
    }
    const singleRss = process.resourceUsage().maxRSS * 1024;
    const cpuRefMs = cpuReference();
    // Throughput: whole batches of `batch` requests, cycling through the histories.
    const rounds = Math.max(1, Math.ceil(job.batchRequests / job.batch));
    const batches = Array.from({ length: rounds }, (_, r) => Array.from({ length: job.batch }, (_, i) => hs[(r * job.batch + i) % hs.length]!));
    await server.recommendBatch(batches[0]!, job.k); // warm-up of the batched shapes
    const b0 = performance.now();
    for (const b of batches) await server.recommendBatch(b, job.k);
    const seconds = (performance.now() - b0) / 1000;
    const bytes = server.files.reduce((a, f) => a + f.bytes, 0);
    return {
      role: job.role,
      kind: server.kind,
      runtime: server.runtime,
      latency: summarizeLatencies(ms),
      throughput: (rounds * job.batch) / seconds,
      batch: job.batch,
      batchRequests: rounds * job.batch,
      params: server.params,
      bytes,
      files: server.files,
      rssMB: (process.resourceUsage().maxRSS * 1024) / MB,
      startRssMB: startRss / MB,
      singleRssMB: singleRss / MB,
      cpuRefMs,
      loadMs,
      first,
      ms,
    };
  } finally {
    await server.dispose();
  }
}

/** Median time of a fixed plain-JS matmul (1.2M multiply-adds): how fast this core was while we measured. */
function cpuReference(reps = 15): number {
  const a = new Float32Array(100 * 64).map((_, i) => (i % 7) / 7);
  const b = new Float32Array(64 * 192).map((_, i) => (i % 5) / 5);
  const c = new Float32Array(100 * 192);
  const times: number[] = [];
  for (let r = 0; r < reps + 3; r++) {
    const t0 = performance.now();
    c.fill(0);
    for (let i = 0; i < 100; i++) {
      for (let k = 0; k < 64; k++) {
        const av = a[i * 64 + k]!;
        for (let j = 0; j < 192; j++) c[i * 192 + j]! += av * b[k * 192 + j]!;
      }
    }
    if (r >= 3) times.push(performance.now() - t0);
  }
  return summarizeLatencies(times).p50Ms;
}

async function main(): Promise<number> {
  const path = process.argv[2];
  if (!path) {
    process.stderr.write('usage: worker.ts <job.json>\n');
    return 2;
  }
  try {
    const job = JSON.parse(readFileSync(path, 'utf8')) as BenchJob;
    const r = await runJob(job);
    process.stdout.write('\n' + JSON.stringify(r) + '\n');
    return 0;
  } catch (e) {
    const err = e as Error & { code?: string };
    // One JSON error line, so the parent can rethrow it with its code.
    process.stdout.write('\n' + JSON.stringify({ error: err?.message ?? String(e), code: err?.code ?? 'E_INTERNAL' }) + '\n');
    return 1;
  }
}

if (/bench[\\/]worker\.[jt]s$/.test(process.argv[1] ?? '')) {
  main().then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`bench worker: ${String(e)}\n`);
      process.exit(1);
    },
  );
}
