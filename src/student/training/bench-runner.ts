import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { activeBackend, availableCores, initBackend, MAX_WASM_THREADS, THREADS_ENV, type BackendName } from '../../backend/index.js';
import { lastJsonLine } from '../../util/process.js';
import { numberField } from '../../util/fields.js';
import { RecdistillError, type ErrorCode } from '../../errors.js';
import type { LogFn } from '../../util/progress.js';
import { benchStudent, type BenchConfig, type BenchResult } from './bench.js';
import type { StepBreakdown } from './bench-breakdown.js';

/**
 * student:bench's driver: one results row per (backend, threads). The wasm backend's thread count is fixed once
 * per process, so every wasm row runs in its own child (bench-child.ts, RECDISTILL_THREADS set) and this process
 * aggregates; the cpu backend (pure JS, one thread) and tfjs-node (its own thread pool, not set here) run in this
 * process, one row each.
 */

export interface BenchJob {
  backend: BackendName;
  threads?: number;
  config: BenchConfig;
}

export interface BenchRow {
  backend: string;
  /** wasm: the threads the backend started with (1 if the threaded build fell back); cpu: 1; node: null (tfjs-node's own pool). */
  threads: number | null;
  /** The count asked for, when the backend started with another one. */
  threadsRequested?: number;
  msPerStep: number;
  serveMsMedian: number;
  serveMsP90: number;
  breakdown?: StepBreakdown;
}

/**
 * "1,2" -> [1, 2]; deduplicated in order; each an integer 1..8. '' -> $RECDISTILL_THREADS when set (so a
 * `student:bench` started with it, as tools/threads-bench.ts starts its children, times that count only),
 * else [1, cores available].
 */
export function parseThreadList(spec: string, cores = availableCores(), env: string | undefined = process.env[THREADS_ENV]): number[] {
  const given = spec.trim() !== '' ? spec : (env ?? '').trim();
  const parts = given === '' ? [1, Math.min(cores, MAX_WASM_THREADS)] : given.split(',').map((s) => s.trim());
  const out: number[] = [];
  for (const p of parts) {
    const n = typeof p === 'number' ? p : /^\d+$/.test(p) ? Number(p) : NaN;
    if (!Number.isInteger(n) || n < 1 || n > MAX_WASM_THREADS) {
      throw new RecdistillError('E_USAGE', `--threads takes comma-separated thread counts from 1 to ${MAX_WASM_THREADS} (e.g. 1,2), got "${given}"${spec.trim() === '' ? ` (from ${THREADS_ENV})` : ''}.`);
    }
    if (!out.includes(n)) out.push(n);
  }
  return out;
}

const require = createRequire(import.meta.url);
/** bench-child.ts through tsx from a source checkout; bench-child.js with plain node from the compiled package. */
const COMPILED = import.meta.url.endsWith('.js');
const CHILD_PATH = join(dirname(fileURLToPath(import.meta.url)), COMPILED ? 'bench-child.js' : 'bench-child.ts');

/** Run one job in a child process with RECDISTILL_THREADS = job.threads; its stderr lines go to `log`. */
async function runBenchChild(job: BenchJob, log: LogFn): Promise<BenchResult & { backend: string; threads: number | null }> {
  const args = COMPILED ? [CHILD_PATH, JSON.stringify(job)] : [require.resolve('tsx/cli'), CHILD_PATH, JSON.stringify(job)];
  const env = { ...process.env, ...(job.threads !== undefined ? { [THREADS_ENV]: String(job.threads) } : {}) };
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  let errTail = '';
  let pending = '';
  const tag = `[${job.backend}${job.threads !== undefined ? ` x${job.threads}` : ''}]`;
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    pending += d;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const l of lines) if (l.trim()) log(`  ${tag} ${l}`);
    errTail = (errTail + d).slice(-2000);
  });
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c ?? 1));
  });
  if (pending.trim()) log(`  ${tag} ${pending}`);
  const res = lastJsonLine(out);
  if (res && typeof res.error === 'string') throw new RecdistillError((res.code as ErrorCode) ?? 'E_INTERNAL', `student:bench ${tag}: ${res.error}`);
  if (code !== 0 || !res) throw new RecdistillError('E_INTERNAL', `student:bench ${tag} child exited with code ${code} and no result. stderr tail:\n${errTail}`);
  checkChildResult(res, `student:bench ${tag}`);
  return res;
}

/** The child's JSON line, checked before it is reported: the figures as numbers, the backend it ran. */
function checkChildResult(res: Record<string, unknown>, where: string): asserts res is Record<string, unknown> & BenchResult & { backend: string; threads: number | null } {
  for (const k of ['msPerStep', 'serveMsMedian', 'serveMsP90']) numberField(res, k, where);
  if (typeof res.backend !== 'string') throw new RecdistillError('E_INTERNAL', `${where}: the child reported no backend.`);
  if (res.threads !== null && typeof res.threads !== 'number') throw new RecdistillError('E_INTERNAL', `${where}: "threads" is ${JSON.stringify(res.threads)}, expected a number or null.`);
}

const r1 = (x: number) => Number(x.toFixed(1));
const r2 = (x: number) => Number(x.toFixed(2));
const r3 = (x: number) => Number(x.toFixed(3));
const r4 = (x: number) => Number(x.toFixed(4));

function roundBreakdown(b: StepBreakdown): StepBreakdown {
  const s = b.shares;
  return {
    stepMs: r2(b.stepMs), attentionMs: r2(b.attentionMs), ffnMs: r2(b.ffnMs), outputMs: r2(b.outputMs), optimizerMs: r2(b.optimizerMs), otherMs: r2(b.otherMs), partsOverStepMs: r2(b.partsOverStepMs),
    shares: { attention: r4(s.attention), ffn: r4(s.ffn), output: r4(s.output), optimizer: r4(s.optimizer), other: r4(s.other) },
  };
}

/** A results row as the JSON summary carries it (today's fields and rounding, plus threads and breakdown). */
function toRow(r: BenchResult, backend: string, threads: number | null, requested?: number): BenchRow {
  return {
    backend,
    threads,
    ...(requested !== undefined && threads !== null && requested !== threads ? { threadsRequested: requested } : {}),
    msPerStep: r1(r.msPerStep),
    serveMsMedian: r3(r.serveMsMedian),
    serveMsP90: r3(r.serveMsP90),
    ...(r.breakdown ? { breakdown: roundBreakdown(r.breakdown) } : {}),
  };
}

export interface BenchPlan {
  backends: string[];
  threads: number[];
  /** Config per backend (the cpu backend gets fewer steps and requests). */
  configFor(backend: string): BenchConfig;
  log: LogFn;
}

/** Every row of the plan: wasm once per thread count (children), cpu and node once each (this process). */
export async function runBenchPlan(plan: BenchPlan): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const name of plan.backends) {
    const cfg = plan.configFor(name);
    const what = `${cfg.steps} steps of ${cfg.batchSize} x ${cfg.maxLen}${cfg.breakdown ? ' (+ breakdown)' : ''}, ${cfg.requests} requests`;
    if (name === 'wasm') {
      for (const t of plan.threads) {
        plan.log(`student:bench: wasm, ${t} thread${t > 1 ? 's' : ''} (child process): ${what} ...`);
        const r = await runBenchChild({ backend: 'wasm', threads: t, config: cfg }, plan.log);
        rows.push(toRow(r, r.backend, r.threads, t));
        plan.log(`student:bench: ${rowLine(rows[rows.length - 1]!)}`);
      }
    } else {
      const active = await initBackend(name as BackendName);
      plan.log(`student:bench: ${active}: ${what} ...`);
      const r = benchStudent(cfg);
      rows.push(toRow(r, activeBackend(), active === 'cpu' ? 1 : null));
      plan.log(`student:bench: ${rowLine(rows[rows.length - 1]!)}`);
    }
  }
  return rows;
}

function rowLine(r: BenchRow): string {
  return `${r.backend}${r.threads !== null ? ` x${r.threads}` : ''}: ${r.msPerStep.toFixed(0)} ms/step, serve median ${r.serveMsMedian.toFixed(2)} ms (p90 ${r.serveMsP90.toFixed(2)} ms)`;
}

/** The human table: one line per row, ms and share of each part of a step. */
export function benchTable(rows: BenchRow[]): string {
  const pct = (x: number) => `${(x * 100).toFixed(0)}%`;
  const part = (ms: number, share: number) => `${ms.toFixed(0)} (${pct(share)})`;
  const header = ['backend', 'threads', 'ms/step', 'serve ms', 'attention', 'ffn', 'output', 'optimizer', 'other'];
  const body = rows.map((r) => {
    const b = r.breakdown;
    return [
      r.backend, r.threads === null ? '-' : String(r.threads) + (r.threadsRequested ? ` (of ${r.threadsRequested})` : ''), r.msPerStep.toFixed(0), r.serveMsMedian.toFixed(2),
      ...(b ? [part(b.attentionMs, b.shares.attention), part(b.ffnMs, b.shares.ffn), part(b.outputMs, b.shares.output), part(b.optimizerMs, b.shares.optimizer), part(b.otherMs, b.shares.other)] : ['', '', '', '', '']),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  const note = rows.some((r) => r.breakdown) ? '\n(parts: ms of each part timed alone, forward + backward, median; share of the median step; other = step - parts)' : '';
  return [line(header), ...body.map(line)].join('\n') + note;
}
