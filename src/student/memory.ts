import { totalmem } from 'node:os';
import { RecdistillError } from '../errors.js';

/**
 * Up-front memory estimate of a training run, so a configuration that cannot fit is refused with figures
 * instead of dying in the middle of an epoch (wasm: "memory access out of bounds"; JS: heap limit).
 * Float32 everywhere; the figures are deliberately rough upper bounds of the largest live buffers:
 * - parameters: weights, gradients, Adam m and v on the device, plus the host copies (best weights, the
 *   checkpoint's tensor copy and its encoded buffer): 7 copies;
 * - the loss: full softmax materialises [P, N + 1] logits, their softmax and the logits' gradient (3 copies),
 *   P = positions of the largest batch; sampled softmax [P, negatives + 1]; BCE [P, 2];
 * - activations: [B, L, D] and [B, L, F] per block (a few copies) and attention [B, H, L, L];
 * - evaluation: [evalBatch, N + 1] scores (device + host copy).
 */
export interface TrainMemoryInput {
  numItems: number;
  dims: number;
  maxLen: number;
  blocks: number;
  heads: number;
  ffnDims: number;
  loss: string;
  negatives: number;
  evalBatch: number;
  /** Sequences in the largest batch (min(batchSize, windows)). */
  batchRows: number;
  /** Longest window (positions per sequence, <= maxLen). */
  batchLen: number;
  backend: string;
}

export interface MemoryEstimate {
  bytes: number;
  parts: Record<string, number>;
  limit: number;
  limitWhy: string;
}

const GiB = 1024 ** 3;
/** wasm32 linear memory cannot exceed 4 GiB. */
export const WASM_LIMIT = 4 * GiB;

export function memoryLimit(backend: string, ram = totalmem()): { limit: number; why: string } {
  const ramLimit = 0.8 * ram;
  if (backend === 'wasm' && WASM_LIMIT < ramLimit) return { limit: WASM_LIMIT, why: 'the wasm backend\'s 4 GiB memory limit' };
  return { limit: ramLimit, why: `80% of this machine's ${(ram / GiB).toFixed(1)} GiB RAM` };
}

export function estimateTrainMemory(a: TrainMemoryInput, ram = totalmem()): MemoryEstimate {
  const F = 4;
  const N1 = a.numItems + 1;
  const D = a.dims;
  const params = N1 * D + a.maxLen * D + a.blocks * (3 * D * D + 3 * D + D * D + D + 2 * D * a.ffnDims + a.ffnDims + D + 4 * D) + 2 * D;
  const P = a.batchRows * a.batchLen;
  const lossCols = a.loss === 'ce' ? N1 : a.loss === 'sampled' ? a.negatives + 1 : 2;
  const parts: Record<string, number> = {
    parameters: params * F * 7,
    loss: P * lossCols * F * 3,
    activations: a.blocks * (P * (8 * D + 3 * a.ffnDims) + a.batchRows * a.heads * a.batchLen * a.batchLen * 3) * F,
    evaluation: Math.min(a.evalBatch, Number.MAX_SAFE_INTEGER) * N1 * F * 2,
  };
  const bytes = parts.parameters! + Math.max(parts.loss! + parts.activations!, parts.evaluation!);
  const { limit, why } = memoryLimit(a.backend, ram);
  return { bytes, parts, limit, limitWhy: why };
}

export function formatBytes(n: number): string {
  if (n >= GiB) return `${(n / GiB).toFixed(1)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(0)} MiB`;
  return `${Math.ceil(n / 1024)} KiB`;
}

/** Throws E_USAGE with the estimate and what to change when the run cannot fit. */
export function checkTrainMemory(a: TrainMemoryInput, ram = totalmem()): MemoryEstimate {
  const e = estimateTrainMemory(a, ram);
  if (e.bytes <= e.limit) return e;
  const N1 = a.numItems + 1;
  const P = a.batchRows * a.batchLen;
  const hints: string[] = [];
  if (a.loss === 'ce' && e.parts.loss! > e.limit / 4) hints.push(`--loss sampled (sampled softmax over --negatives ${a.negatives} items instead of all ${a.numItems})`);
  if (e.parts.loss! + e.parts.activations! > e.limit / 4) hints.push(`a smaller --batch-size (now ${a.batchRows} rows per batch) or --max-len (longest window ${a.batchLen})`);
  if (e.parts.evaluation! > e.limit / 4) hints.push(`a smaller --eval-batch (now ${a.evalBatch})`);
  if (e.parts.parameters! > e.limit / 2) hints.push(`a smaller --dims (now ${a.dims}): the item table alone is ${N1} x ${a.dims} floats`);
  const parts = Object.entries(e.parts).map(([k, v]) => `${k} ${formatBytes(v)}`).join(', ');
  const lossWhat = a.loss === 'ce' ? `full-softmax logits ${P} positions x ${N1} items` : a.loss === 'sampled' ? `sampled logits ${P} x ${a.negatives + 1}` : `BCE logits ${P} x 2`;
  throw new RecdistillError(
    'E_USAGE',
    `student:train would need about ${formatBytes(e.bytes)} (${parts}; ${lossWhat}, x3 for softmax and gradient), more than ${formatBytes(e.limit)} (${e.limitWhy}). Use ${hints.join(', or ') || '--loss sampled'}.`,
  );
}
