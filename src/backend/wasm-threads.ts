import { field } from '../util/fields.js';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { Worker as NodeWorker, type WorkerOptions } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs-core';
import { RecdistillError } from '../errors.js';

/**
 * The threaded SIMD build of @tensorflow/tfjs-backend-wasm, running in Node under worker_threads.
 *
 * Why tfjs cannot do it alone (4.22): the backend reports WASM_HAS_MULTITHREAD_SUPPORT = false under Node, and
 * when forced, its init() hands the Emscripten runtime two Blobs: the pthread worker script (locateFile returns
 * `URL.createObjectURL(blob)`) and the main script (`mainScriptUrlOrBlob`, the factory's toString()). Node's
 * Worker only takes file paths / file: / data: URLs (ERR_WORKER_PATH on `blob:`), and the stringified factory of
 * the Node bundle refers to bundler helpers (`require$$0`, `__read`, ...) that do not exist in a worker. On top,
 * the C++ side sizes its pool as min(requested, emscripten_num_logical_cores() / 2): Node's os.cpus().length / 2,
 * i.e. ONE thread on a 2-core machine whatever setThreadsCount says.
 *
 * What this module does, at load time and without touching node_modules:
 * - `globalThis.Worker` (the glue assigns `global.Worker = worker_threads.Worker` and later calls
 *   `new Worker(url)`) becomes an accessor that yields {@link PthreadWorker}: a worker_threads.Worker that
 *   runs the package's own pthread worker script (wasm-out/…worker.js, `wasmWorkerContents`) with `eval: true`
 *   instead of the blob: URL, rewrites the `load` message's Blob main script into the path of the package's
 *   pristine Emscripten output (wasm-out/tfjs-backend-wasm-threaded-simd.js, compiled with the same .wasm),
 *   stays unref'd (the runtime ref()s a running pthread, which would keep the process alive forever: the pool's
 *   threads only work while the main thread is inside a kernel), and, while the backend is starting, turns a
 *   worker error into a failed start instead of the glue's rethrow (which would kill the process).
 * - os.cpus() reports at least 2n cores while the module initialises (the C++ pool size is computed then).
 * - WASM_HAS_MULTITHREAD_SUPPORT is set to true and setThreadsCount(n) called before tf.setBackend('wasm').
 * After the start, the pre-spawned workers the pool does not use (Emscripten spawns 8) are terminated:
 * ~8 MB each. No file is written.
 */

/** Emscripten pre-spawns 8 pthread workers and tfjs caps XNNPACK's pool at 8 threads. */
export const MAX_WASM_THREADS = 8;
/** Environment variable read when no thread count is passed (e.g. before a command has a --threads flag). */
export const THREADS_ENV = 'RECDISTILL_THREADS';
/** Test hook: make the threaded start fail ('construct': the worker constructor throws; 'error': the worker script throws). */
export const THREADS_FAULT_ENV = 'RECDISTILL_WASM_THREADS_FAULT';

/** Cores this process may use: os.availableParallelism() (Node >= 18.14), else os.cpus().length. */
export function availableCores(): number {
  const ap = (os as { availableParallelism?: () => number }).availableParallelism;
  return Math.max(1, ap ? ap() : os.cpus().length);
}

function parseThreads(v: unknown, where: string): number {
  const n = typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) {
    throw new RecdistillError('E_USAGE', `${where} must be a positive integer (threads for the wasm backend), got ${JSON.stringify(v)}.`);
  }
  return n;
}

/**
 * Thread count to use: the explicit value (a --threads flag) if given, else $RECDISTILL_THREADS, else the cores
 * available. Capped at {@link MAX_WASM_THREADS}. Throws E_USAGE on a non-positive or non-integer value.
 */
export function resolveThreads(requested?: number | string): number {
  let n: number;
  if (requested !== undefined && requested !== '') n = parseThreads(requested, 'threads');
  else if (process.env[THREADS_ENV] !== undefined && process.env[THREADS_ENV] !== '') n = parseThreads(process.env[THREADS_ENV], THREADS_ENV);
  else n = availableCores();
  return Math.min(n, MAX_WASM_THREADS);
}

/** The parts of the tfjs-backend-wasm module this file uses. */
export interface WasmBackendModule {
  setThreadsCount(n: number): void;
  getThreadsCount(): number;
}

interface Paths {
  /** Emscripten main script for the pthread workers (the same glue the threaded .wasm was built with). */
  mainScript: string;
  /** Source of the pthread worker (wasm-out/…worker.js exports it as a string). */
  workerSource: string;
}

function locate(): Paths {
  const require = createRequire(import.meta.url);
  const pkg = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
  const mainScript = join(pkg, 'wasm-out', 'tfjs-backend-wasm-threaded-simd.js');
  const workerModule = join(pkg, 'wasm-out', 'tfjs-backend-wasm-threaded-simd.worker.js');
  if (!existsSync(mainScript) || !existsSync(workerModule)) throw new Error(`${pkg}/wasm-out has no threaded-simd glue`);
  const src = (require(workerModule) as { wasmWorkerContents?: unknown }).wasmWorkerContents;
  if (typeof src !== 'string' || !src.includes('WasmBackendModuleThreadedSimd')) throw new Error('unexpected wasmWorkerContents in tfjs-backend-wasm');
  // The string comes from a template literal in which "\n" became a real newline: escape it again, as tfjs does
  // before it makes its Blob.
  return { mainScript, workerSource: src.replace(/\n/g, '\\n') };
}

interface StartState {
  phase: 'starting' | 'running' | 'failed';
  fail(e: unknown): void;
  workers: Set<NodeWorker>;
}

function makeWorkerClass(paths: Paths, state: StartState, fault: string | undefined) {
  return class PthreadWorker extends NodeWorker {
    #onerror: ((e: unknown) => void) | undefined;
    constructor(url: string | URL, options?: WorkerOptions) {
      if (fault === 'construct') throw new Error(`${THREADS_FAULT_ENV}=construct`);
      const blob = typeof url === 'string' && url.startsWith('blob:');
      const source = fault === 'error' ? `throw new Error('${THREADS_FAULT_ENV}=error')` : paths.workerSource;
      // execArgv: [] — a pthread worker needs none of the parent's flags (under tsx, inheriting `--import tsx` would
      // load the TypeScript loader into each of the 8 workers).
      super(blob ? source : url, blob ? { ...options, eval: true, execArgv: [] } : options);
      this.unref();
      state.workers.add(this);
      this.once('exit', () => state.workers.delete(this));
      // An 'error' event with no listener is an uncaught exception. The glue only listens once it loads the
      // module into the worker, so a worker that fails sooner (during the start) would crash the process instead
      // of failing the start: this listener is there from construction. Once running, with no glue listener, the
      // error is rethrown as before.
      this.on('error', (e) => {
        if (state.phase !== 'running') state.fail(e);
        else if (this.listenerCount('error') === 1) throw e;
      });
    }
    /** Kept unref'd: see the file comment. */
    override ref(): void {}
    override postMessage(msg: unknown, transfer?: readonly unknown[]): void {
      const m = msg as { cmd?: string; urlOrBlob?: unknown } | null;
      if (m && m.cmd === 'load' && typeof m.urlOrBlob !== 'string') msg = { ...m, urlOrBlob: paths.mainScript };
      super.postMessage(msg, transfer as never);
    }
    // The glue sets `worker.onerror = …` (which rethrows) and calls it from worker.on('error'). While the
    // backend is starting, an error fails the start instead.
    get onerror(): (e: unknown) => void {
      return (e) => {
        if (state.phase !== 'running') state.fail(e);
        else if (this.#onerror) this.#onerror(e);
        else throw e;
      };
    }
    set onerror(f: ((e: unknown) => void) | undefined) {
      this.#onerror = f;
    }
  };
}

export type ThreadedStart = { ok: true; threads: number } | { ok: false; reason: string };

/**
 * Start tfjs's wasm backend on its threaded SIMD build with `threads` threads (>= 2). `activate` is the caller's
 * `tf.setBackend('wasm')` (with its listener clean-up); it runs once, with the patches above in place. Resolves
 * { ok: false, reason } instead of throwing when the threaded build cannot start (files missing, a worker fails,
 * setBackend fails, or no start within `timeoutMs`); the caller then falls back to the single-threaded build.
 * Must run before the wasm backend has been initialised in this process.
 */
export async function startThreadedWasm(
  wasm: WasmBackendModule,
  threads: number,
  activate: () => Promise<boolean>,
  opts: { timeoutMs?: number } = {},
): Promise<ThreadedStart> {
  let paths: Paths;
  try {
    paths = locate();
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  let rejectStart!: (e: unknown) => void;
  const failed = new Promise<never>((_, reject) => (rejectStart = reject));
  failed.catch(() => {});
  const state: StartState = {
    phase: 'starting',
    fail: (e) => {
      if (state.phase !== 'starting') return;
      state.phase = 'failed';
      rejectStart(e);
    },
    workers: new Set(),
  };
  const fault = process.env[THREADS_FAULT_ENV] || undefined;
  const WorkerClass = makeWorkerClass(paths, state, fault);
  // What the glue's `new Worker(url)` calls: a constructor failure (e.g. ERR_WORKER_PATH) fails the start with its
  // own message (tfjs-core would only report that setBackend returned false).
  const PthreadWorker = function (url: string | URL, options?: WorkerOptions) {
    try {
      return new WorkerClass(url, options);
    } catch (e) {
      state.fail(e);
      throw e;
    }
  } as unknown as typeof WorkerClass;
  const prevWorker = Object.getOwnPropertyDescriptor(globalThis, 'Worker');
  Object.defineProperty(globalThis, 'Worker', { configurable: true, enumerable: false, get: () => PthreadWorker, set: () => {} });
  const realCpus = os.cpus;
  os.cpus = () => {
    const c = realCpus.call(os);
    while (c.length > 0 && c.length < 2 * threads) c.push(c[0]!);
    return c;
  };
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  wasm.setThreadsCount(threads);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no start within ${opts.timeoutMs ?? 60_000} ms`)), opts.timeoutMs ?? 60_000);
  });
  try {
    const ok = await Promise.race([activate(), failed, timeout]);
    if (!ok) throw new Error('tf.setBackend("wasm") failed on the threaded build');
    if (state.phase !== 'starting') throw new Error('a pthread worker failed');
    state.phase = 'running';
  } catch (e) {
    state.phase = 'failed';
    for (const w of state.workers) w.terminate().catch(() => {});
    if (prevWorker) Object.defineProperty(globalThis, 'Worker', prevWorker);
    else delete (globalThis as { Worker?: unknown }).Worker;
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
    const msg = e instanceof Error ? e.message : (e as { message?: string })?.message ?? String(e);
    return { ok: false, reason: msg.split('\n')[0]! };
  } finally {
    clearTimeout(timer);
    os.cpus = realCpus;
  }
  // Running: later `new Worker` calls by the glue (none are expected: the pool is made once) still get the
  // patched class; a worker error now goes to the glue's handler.
  Object.defineProperty(globalThis, 'Worker', { configurable: true, enumerable: false, writable: true, value: PthreadWorker });
  terminateSpareWorkers();
  return { ok: true, threads: wasm.getThreadsCount() };
}

/** Terminate the pre-spawned pthread workers the pool does not use (Emscripten keeps 8 ready). */
function terminateSpareWorkers(): void {
  const spare = field(field(field(tf.backend(), 'wasm'), 'PThread'), 'unusedWorkers');
  if (!Array.isArray(spare)) return;
  for (const w of spare.splice(0) as NodeWorker[]) w.terminate().catch(() => {});
}

