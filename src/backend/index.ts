import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { RecdistillError } from '../errors.js';
import { registerGradients } from './gradients.js';
import { registerWasmTrainingKernels } from './kernels.js';

/**
 * TensorFlow.js backend selection. Preference for `auto`: tfjs-node (native, optional dependency that needs
 * libtensorflow at install time, so often absent) > wasm (single-threaded in Node, project-registered
 * training kernels) > cpu (pure JS, ~50x slower than wasm). `initBackend` returns the backend that is
 * active and is idempotent: asking again for the active backend is free.
 */
export type BackendName = 'auto' | 'node' | 'wasm' | 'cpu';
export const BACKEND_CHOICES = ['auto', 'node', 'wasm', 'cpu'] as const;

const require = createRequire(import.meta.url);
let wasmReady: Promise<boolean> | undefined;
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

async function activate(name: 'tensorflow' | 'wasm' | 'cpu'): Promise<boolean> {
  if (tf.getBackend() === name && tf.findBackend(name)) return true;
  // The wasm module's emscripten glue adds process-wide uncaughtException/unhandledRejection handlers when
  // it instantiates; they rethrow, and Node then prints the whole minified module as the "source line" of any
  // later error. Remove the handlers it added.
  const ue = process.listeners('uncaughtException');
  const ur = process.listeners('unhandledRejection');
  try {
    return await tf.setBackend(name);
  } catch {
    return false;
  } finally {
    for (const l of process.listeners('uncaughtException')) if (!ue.includes(l)) process.removeListener('uncaughtException', l);
    for (const l of process.listeners('unhandledRejection')) if (!ur.includes(l)) process.removeListener('unhandledRejection', l);
  }
}

/** Public name of the active tfjs backend ('node' for tfjs-node's 'tensorflow'). */
export function activeBackend(): string {
  const b = tf.getBackend();
  return b === 'tensorflow' ? 'node' : b;
}

export async function initBackend(name: BackendName = 'auto'): Promise<string> {
  if (!(BACKEND_CHOICES as readonly string[]).includes(name)) {
    throw new RecdistillError('E_USAGE', `unknown backend "${name}"; valid: ${BACKEND_CHOICES.join(', ')}.`);
  }
  // Quiet tfjs's "hi there, install tfjs-node" banner and kernel-override warnings.
  tf.env().set('PROD', true);
  registerGradients();
  if (name === 'node' || name === 'auto') {
    if ((await loadNode()) && (await activate('tensorflow'))) return activeBackend();
    if (name === 'node') throw new RecdistillError('E_NOT_FOUND', 'backend "node" needs @tensorflow/tfjs-node, which is not installed (it downloads libtensorflow at install time). Use --backend wasm or cpu.');
  }
  if (name === 'wasm' || name === 'auto') {
    if ((await loadWasm()) && (await activate('wasm'))) return activeBackend();
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
