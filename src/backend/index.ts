import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { RecdistillError } from '../errors.js';
import { registerGradients } from './gradients.js';
import { registerWasmTrainingKernels } from './kernels.js';
import { resolveThreads, startThreadedWasm, type WasmBackendModule } from './wasm-threads.js';

export { availableCores, MAX_WASM_THREADS, resolveThreads, THREADS_ENV } from './wasm-threads.js';

/**
 * TensorFlow.js backend selection. Preference for `auto`: tfjs-node (native, optional dependency that needs
 * libtensorflow at install time, so often absent) > wasm (project-registered training kernels; the threaded
 * SIMD build on `threads` >= 2 worker threads, see wasm-threads.ts) > cpu (pure JS, ~50x slower than wasm).
 * `initBackend` returns the backend that is active and is idempotent: asking again for the active backend is
 * free. The wasm thread count is fixed by the first wasm start in a process.
 */
export type BackendName = 'auto' | 'node' | 'wasm' | 'cpu';
export const BACKEND_CHOICES = ['auto', 'node', 'wasm', 'cpu'] as const;

const require = createRequire(import.meta.url);
let wasmReady: Promise<boolean> | undefined;
let wasmModule: WasmBackendModule | undefined;
/** Threads of the started wasm backend (1 = the single-threaded SIMD build); undefined before it starts. */
let wasmThreadCount: number | undefined;
let nodeTried: Promise<boolean> | undefined;
let cpuLoaded = false;

async function loadNode(): Promise<boolean> {
  nodeTried ??= (async () => {
    try {
      // Optional dependency: a computed specifier keeps TypeScript from requiring its types.
      const spec = '@tensorflow/tfjs-node';
      await import(spec);
      return tf.findBackend('tensorflow') !== null;
    } catch {
      return false;
    }
  })();
  return nodeTried;
}

async function loadWasm(): Promise<boolean> {
  wasmReady ??= (async () => {
    try {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      // In Node the binaries are read from disk: point the loader at the package's dist folder (a file path).
      const dist = dirname(require.resolve('@tensorflow/tfjs-backend-wasm'));
      wasm.setWasmPaths(join(dist, '/'));
      wasmModule = wasm;
      registerWasmTrainingKernels();
      return true;
    } catch {
      return false;
    }
  })();
  return wasmReady;
}

async function loadCpu(): Promise<void> {
  if (!cpuLoaded) {
    await import('@tensorflow/tfjs-backend-cpu');
    cpuLoaded = true;
  }
}

/**
 * The wasm module's emscripten glue adds process-wide uncaughtException/unhandledRejection handlers when
 * it instantiates; they rethrow, and Node then prints the whole minified module as the "source line" of any
 * later error. Run `f` and remove the handlers it added.
 */
async function withoutGlueListeners<T>(f: () => Promise<T>): Promise<T> {
  const ue = process.listeners('uncaughtException');
  const ur = process.listeners('unhandledRejection');
  try {
    return await f();
  } finally {
    for (const l of process.listeners('uncaughtException')) if (!ue.includes(l)) process.removeListener('uncaughtException', l);
    for (const l of process.listeners('unhandledRejection')) if (!ur.includes(l)) process.removeListener('unhandledRejection', l);
  }
}

async function activate(name: 'tensorflow' | 'wasm' | 'cpu'): Promise<boolean> {
  if (tf.getBackend() === name && tf.findBackend(name)) return true;
  return withoutGlueListeners(async () => {
    try {
      return await tf.setBackend(name);
    } catch {
      return false;
    }
  });
}

const stderrNotice = (line: string) => void process.stderr.write(`${line}\n`);

/**
 * Start (or switch back to) the wasm backend. threads >= 2: the threaded SIMD build; if it cannot start, one
 * notice line and the single-threaded SIMD build (today's path, no workers).
 */
async function activateWasm(threads: number, notice: (line: string) => void): Promise<boolean> {
  // Started before (another backend may be active now): switching back is free and keeps its thread count.
  // (No tf.findBackend here: for a registered but not started backend it starts it, with tfjs's default flags.)
  if (wasmThreadCount !== undefined) return activate('wasm');
  if (threads > 1 && wasmModule) {
    const r = await withoutGlueListeners(() => startThreadedWasm(wasmModule!, threads, () => activate('wasm')));
    if (r.ok) {
      wasmThreadCount = r.threads;
      if (r.threads < threads) notice(`recdistill: the threaded wasm backend started with ${r.threads} of ${threads} threads.`);
      return true;
    }
    notice(`recdistill: threaded wasm could not start (${r.reason}); running the wasm backend single-threaded.`);
  }
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  const ok = await activate('wasm');
  if (ok) wasmThreadCount = 1;
  return ok;
}

/** Public name of the active tfjs backend ('node' for tfjs-node's 'tensorflow'). */
export function activeBackend(): string {
  const b = tf.getBackend();
  return b === 'tensorflow' ? 'node' : b;
}

/** Threads the wasm backend runs on (1 = single-threaded build); undefined until it has started. */
export function wasmThreads(): number | undefined {
  return wasmThreadCount;
}

export interface BackendOptions {
  /**
   * wasm backend threads (>= 1). Default: $RECDISTILL_THREADS, else the cores available
   * (os.availableParallelism()); capped at 8. 1 = the single-threaded SIMD build. Fixed by the first wasm start
   * in a process: later calls with another count keep the running one. Ignored by the node and cpu backends.
   */
  threads?: number;
  /** Where the one-line fallback notice goes (default: stderr). */
  notice?: (line: string) => void;
}

export async function initBackend(name: BackendName = 'auto', opts: BackendOptions = {}): Promise<string> {
  if (!(BACKEND_CHOICES as readonly string[]).includes(name)) {
    throw new RecdistillError('E_USAGE', `unknown backend "${name}"; valid: ${BACKEND_CHOICES.join(', ')}.`);
  }
  // Quiet tfjs's "hi there, install tfjs-node" banner and kernel-override warnings.
  tf.env().set('PROD', true);
  await registerGradients();
  if (name === 'node' || name === 'auto') {
    if ((await loadNode()) && (await activate('tensorflow'))) return activeBackend();
    if (name === 'node') throw new RecdistillError('E_NOT_FOUND', 'backend "node" needs @tensorflow/tfjs-node, which is not installed (it downloads libtensorflow at install time). Use --backend wasm or cpu.');
  }
  if (name === 'wasm' || name === 'auto') {
    const threads = resolveThreads(opts.threads);
    if ((await loadWasm()) && (await activateWasm(threads, opts.notice ?? stderrNotice))) return activeBackend();
    if (name === 'wasm') throw new RecdistillError('E_INTERNAL', 'the wasm backend failed to initialise (@tensorflow/tfjs-backend-wasm).');
  }
  await loadCpu();
  if (!(await activate('cpu'))) throw new RecdistillError('E_INTERNAL', 'the cpu backend failed to initialise.');
  return activeBackend();
}

/** Backends that can run here (for student:bench). */
export async function availableBackends(): Promise<string[]> {
  const out: string[] = [];
  if (await loadNode()) out.push('node');
  if (await loadWasm()) out.push('wasm');
  out.push('cpu');
  return out;
}
