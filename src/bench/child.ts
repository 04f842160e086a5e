import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RecdistillError, type ErrorCode } from '../errors.js';
import type { LogFn } from '../util/progress.js';
import { lastJsonLine } from '../util/process.js';
import { numberField } from '../util/fields.js';
import type { BenchJob, WorkerResult } from './worker.js';

/**
 * Run one bench job in a fresh Node process (tsx's cli on src/bench/worker.ts), so each model's peak memory
 * is measured alone. The job goes through a temp JSON file (histories can be large); the worker's stderr lines
 * are forwarded to `log`; its last stdout line is the result.
 */
const require = createRequire(import.meta.url);
/** worker.ts run through tsx from a source checkout; worker.js with plain node from the compiled package. */
const COMPILED = import.meta.url.endsWith('.js');
const WORKER_PATH = join(dirname(fileURLToPath(import.meta.url)), COMPILED ? 'worker.js' : 'worker.ts');

export async function runWorker(job: BenchJob, log: LogFn): Promise<WorkerResult> {
  const tmp = mkdtempSync(join(tmpdir(), 'recdistill-bench-'));
  const jobPath = join(tmp, 'job.json');
  writeFileSync(jobPath, JSON.stringify(job));
  try {
    const args = COMPILED ? [WORKER_PATH, jobPath] : [require.resolve('tsx/cli'), WORKER_PATH, jobPath];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    let out = '';
    let errTail = '';
    let pending = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      pending += d;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const l of lines) if (l.trim()) log(`  [${job.role}] ${l}`);
      errTail = (errTail + d).slice(-2000);
    });
    const code = await new Promise<number>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c) => resolve(c ?? 1));
    });
    if (pending.trim()) log(`  [${job.role}] ${pending}`);
    const res = lastJsonLine(out);
    if (res && typeof res.error === 'string') throw new RecdistillError((res.code as ErrorCode) ?? 'E_INTERNAL', `bench ${job.role} (${job.dir}): ${res.error}`);
    if (code !== 0 || !res) throw new RecdistillError('E_INTERNAL', `bench ${job.role} worker exited with code ${code} and no result. stderr tail:\n${errTail}`);
    checkWorkerResult(res, `bench ${job.role} (${job.dir})`);
    return res;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The worker's JSON line, checked before its figures reach the report. */
function checkWorkerResult(res: Record<string, unknown>, where: string): asserts res is Record<string, unknown> & WorkerResult {
  for (const k of ['throughput', 'batch', 'params', 'bytes', 'rssMB']) numberField(res, k, where);
  for (const k of ['p50Ms', 'p95Ms', 'p99Ms']) numberField(res.latency, k, `${where} latency`);
  if (res.role !== 'student' && res.role !== 'teacher') throw new RecdistillError('E_INTERNAL', `${where}: "role" is ${JSON.stringify(res.role)}.`);
  if (!Array.isArray(res.files)) throw new RecdistillError('E_INTERNAL', `${where}: "files" is not a list.`);
}
