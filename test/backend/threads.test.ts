import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { availableCores, MAX_WASM_THREADS, resolveThreads, THREADS_ENV } from '../../src/backend/index.js';
import { THREADS_FAULT_ENV } from '../../src/backend/wasm-threads.js';
import { maxAbsDiff } from '../helpers/compare.js';

/**
 * Threaded wasm (src/backend/wasm-threads.ts). The backend's thread count is fixed once per process, so each
 * configuration runs in its own child (fixtures/threads-child.ts) and the children's outputs are compared.
 *
 * Tolerance: NONE — 1 and N threads must give bit-identical results. Why that holds: the thread pool only
 * splits XNNPACK operators (2-D matmul, binary ops, softmax, ...) into output tiles; every output element is
 * still computed by the same micro-kernel with the same summation order, whichever thread runs its tile, and
 * every other kernel (batched matmul, reductions, gather, the project's JS kernels) runs on the calling thread.
 * The "1 thread" arm is the single-threaded SIMD build (today's path), so this also checks that the threaded
 * build computes the same numbers as the build it replaces.
 */

const ROOT = join(import.meta.dirname, '..', '..');
const CHILD = join(import.meta.dirname, 'fixtures', 'threads-child.ts');

interface ChildOut {
  backend: string;
  threads: number;
  matmul2d: string;
  bmm: string;
  add: string;
  losses: number[];
  grads: string;
  params: string;
}

function runChild(args: string[], env: Record<string, string | undefined>): Promise<{ out: ChildOut; stderr: string }> {
  return new Promise((resolve, reject) => {
    const childEnv = { ...process.env, ...env };
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete childEnv[k];
    const p = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`child exited ${code}: ${stderr.slice(-3000)}`));
      try {
        resolve({ out: JSON.parse(stdout.trim().split('\n').pop()!) as ChildOut, stderr });
      } catch (e) {
        reject(new Error(`child printed no JSON: ${stdout.slice(-500)} ${stderr.slice(-2000)}`));
      }
    });
  });
}

const f32 = (s: string) => new Float32Array(new Uint8Array(Buffer.from(s, 'base64')).buffer);
const NOTICE = /threaded wasm could not start/;

function expectSameNumbers(a: ChildOut, b: ChildOut): void {
  for (const key of ['matmul2d', 'bmm', 'add', 'grads', 'params'] as const) {
    const x = f32(a[key]);
    const y = f32(b[key]);
    expect(x.length, key).toBeGreaterThan(0);
    expect(maxAbsDiff(x, y), key).toBe(0);
  }
  expect(b.losses).toEqual(a.losses);
}

describe('threads: resolveThreads', () => {
  const saved = process.env[THREADS_ENV];
  afterEach(() => {
    if (saved === undefined) delete process.env[THREADS_ENV];
    else process.env[THREADS_ENV] = saved;
  });

  it('explicit value > $RECDISTILL_THREADS > cores available, capped at 8', () => {
    delete process.env[THREADS_ENV];
    expect(resolveThreads()).toBe(Math.min(availableCores(), MAX_WASM_THREADS));
    process.env[THREADS_ENV] = '3';
    expect(resolveThreads()).toBe(3);
    expect(resolveThreads(1)).toBe(1);
    expect(resolveThreads(64)).toBe(MAX_WASM_THREADS);
  });

  it('rejects a thread count that is not a positive integer (E_USAGE)', () => {
    delete process.env[THREADS_ENV];
    for (const bad of [0, -1, 1.5, Number.NaN, 'two']) expect(() => resolveThreads(bad as number)).toThrow(/positive integer/);
    process.env[THREADS_ENV] = 'x';
    expect(() => resolveThreads()).toThrow(/RECDISTILL_THREADS/);
  });
});

describe('threads: the threaded SIMD build in worker_threads', () => {
  // Children run in parallel: each is a separate process with its own backend.
  const base = { [THREADS_FAULT_ENV]: undefined, [THREADS_ENV]: undefined };
  const one = runChild(['1'], base);
  const two = runChild(['2'], base);
  const viaEnv = runChild([], { ...base, [THREADS_ENV]: '2' });
  // Silence unhandled rejections until a test awaits them.
  for (const p of [one, two, viaEnv]) p.catch(() => {});

  it('runs 2 threads and matches the single-threaded build bit for bit (2-D and batched matmul, add, 3 SASRec training steps)', async () => {
    const [a, b] = await Promise.all([one, two]);
    expect(a.out.backend).toBe('wasm');
    expect(a.out.threads).toBe(1);
    expect(b.out.threads).toBe(2);
    expect(a.stderr + b.stderr).not.toMatch(NOTICE);
    expect(a.out.losses.every(Number.isFinite)).toBe(true);
    expectSameNumbers(a.out, b.out);
  });

  it('honours RECDISTILL_THREADS when no count is passed', async () => {
    const [a, c] = await Promise.all([one, viaEnv]);
    expect(c.out.threads).toBe(2);
    expectSameNumbers(a.out, c.out);
  });

  it.each([
    ['construct', 'the worker constructor throws'],
    ['error', 'the worker script throws'],
  ])('falls back to single-threaded with a one-line notice when %s fails (%s)', async (fault) => {
    const [a, f] = await Promise.all([one, runChild(['2'], { ...base, [THREADS_FAULT_ENV]: fault })]);
    expect(f.out.backend).toBe('wasm');
    expect(f.out.threads).toBe(1);
    const lines = f.stderr.split('\n').filter((l) => l.trim() !== '');
    expect(lines.filter((l) => NOTICE.test(l))).toHaveLength(1);
    expect(lines.find((l) => NOTICE.test(l))).toContain(`${THREADS_FAULT_ENV}=${fault}`);
    expectSameNumbers(a.out, f.out);
  });
});
