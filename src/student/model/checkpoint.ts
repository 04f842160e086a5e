import { existsSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { RecdistillError } from '../../errors.js';
import { writeFileAtomic } from '../../util/atomic.js';
import { encodeSafetensors, readSafetensorsFile, type STTensor } from '../../util/safetensors.js';

/**
 * Weights and training checkpoints as safetensors (one file each, written atomically: temp + rename).
 * A checkpoint holds named tensors (model parameters, Adam moments, hook variables) and, in the
 * safetensors metadata, a JSON `state` (epoch, step, RNG, best score, history, config) so one rename
 * commits everything together: a killed run never sees weights from one epoch and state from another.
 */
export function tensorsOf(named: Map<string, tf.Variable> | Array<[string, tf.Tensor]>): Record<string, STTensor> {
  const out: Record<string, STTensor> = {};
  for (const [name, t] of named) out[name] = { dtype: 'F32', shape: t.shape.slice(), data: new Float32Array(t.dataSync() as Float32Array) };
  return out;
}

export function writeTensors(path: string, tensors: Record<string, STTensor>, metadata: Record<string, string> = {}): void {
  writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}

export function readTensors(path: string): { tensors: Record<string, STTensor>; metadata: Record<string, string> } {
  if (!existsSync(path)) throw new RecdistillError('E_NOT_FOUND', `${path} not found.`);
  // The header is checked against the file's real size before the tensor data is read.
  return readSafetensorsFile(path);
}

/** Assign stored tensors to variables by name; every variable must be present with the same shape. */
export function assignFrom(named: Map<string, tf.Variable>, tensors: Record<string, STTensor>, where: string, prefix = ''): void {
  for (const [name, v] of named) {
    const t = tensors[prefix + name];
    if (!t) throw new RecdistillError('E_MISMATCH', `${where}: tensor "${prefix + name}" is missing.`);
    if (t.shape.join(',') !== v.shape.join(',')) {
      throw new RecdistillError('E_MISMATCH', `${where}: tensor "${prefix + name}" has shape [${t.shape}], the model expects [${v.shape}].`);
    }
    const value = tf.tensor(t.data as Float32Array, t.shape, 'float32');
    v.assign(value);
    value.dispose();
  }
}
