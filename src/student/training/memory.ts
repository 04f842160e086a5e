import { totalmem } from 'node:os';
import { RecdistillError } from '../../errors.js';

/**
 * Up-front memory estimate of a training run, so a configuration that cannot fit is refused with figures
 * instead of dying in the middle of an epoch (wasm: "memory access out of bounds"; JS: heap limit).
 * Float32 everywhere; upper bounds of what is live at a training step's peak as tf.profile counts it (a reshape's
 * view counts as a tensor of its own: the wasm heap grew by 65-90% of that count). P = batchRows x batchLen:
 * - parameters: weights, gradients, Adam m and v on the device, plus the host copies (best weights, the
 *   checkpoint's tensor copy and its encoded buffer): 7 copies;
 * - the step's forward and backward pass (on wasm every tensor a kernel saves for the gradient is a copy, and every
 *   gradient lives until the backward pass ends, so the peak is at its end):
 *   - activations: per position 52 D + 64 + blocks (96 D + 10 F + 13 H L + 16) floats (F = ffnDims; 13 H L = 13
 *     attention [B, H, L, L] matrices per block: scores, scaled, biased, softmax, dropout mask and product, their
 *     saved copies and gradients); measured 47 D + 69 + blocks (91.4 D + 9.2 F + 12 H L), rounded up by ~5%;
 *   - the loss: full softmax 2 [P, N + 1] (the logits and their softmax in the forward pass, the softmax's
 *     gradient and its transpose in the backward one; 1.6-1.8 measured above a BCE step); sampled softmax
 *     12 [P, negatives + 1] (corrected logits, hit mask, concatenation, softmax, copies and gradients; 6.6-10.4
 *     measured, 64-1024 negatives); BCE 3 [P, 2];
 *   - embedding gradients: 7 [N + 1, D] (the loss's and the input gather's item-table gradients, their pieces and
 *     their sum: 6.1-6.6 measured beyond the gradient in parameters), what a large catalogue adds at small batches;
 * - update: Adam keeps every parameter's temporaries until its tidy ends, after the activations are freed:
 *   10 copies of the parameters (measured above the weights and moments: 10.6 distinct buffers, 13 in tf.profile's
 *   count, which counts the 3 new values twice; 7 + 10 copies bound its 16);
 * - evaluation: [evalBatch, N + 1] scores (device + host copy);
 * - EMKD (`emkd`, src/distill/emkd): what its hooks keep alive in the step's tape, counted per op from
 *   hooks.ts / losses.ts and checked against tf.profile on ML-100K shapes (live tensor bytes of one step, K = 1..4,
 *   1-2 views, batch 8-32: every part within 2% of the measured one): see estimateEmkd.
 * The single-network constants are tf.profile peaks of one real trainStep (forward, backward and Adam update;
 * counted above the weights and moments) on the wasm backend over D 16-128, F 16-128, H 1-4, L 10-200, 1-3 blocks,
 * 100-20,000 items and the three losses; the estimate came out at 1.06-1.15x the measured peak on each (the default
 * student and --preset small on 1682 items among them). test/student/memory-single.test.ts checks three tiny shapes.
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
  /** An EMKD run (--emkd K): emkdMemoryInput reads it from the hooks' provenance. */
  emkd?: EmkdMemoryInput;
}

export interface EmkdMemoryInput {
  /** Networks K (network 1 is the trainer's model). */
  K: number;
  /** Masked views per step. */
  views: number;
  maskRatio: number;
  /** The EMKD terms that are on (the provenance's lambdas keys: emkd_ce, emkd_mask, emkd_intra, emkd_inter, emkd_kl, ...). */
  terms: string[];
}

/** The EMKD part of the estimate's input, from the hooks' provenance (`{ emkd: { K, views, maskRatio, lambdas } }`). */
export function emkdMemoryInput(provenance: unknown): EmkdMemoryInput | undefined {
  const e = (provenance as { emkd?: { K?: unknown; views?: unknown; maskRatio?: unknown; lambdas?: unknown } } | null | undefined)?.emkd;
  if (!e || typeof e.K !== 'number' || typeof e.views !== 'number' || typeof e.maskRatio !== 'number') return undefined;
  return { K: e.K, views: e.views, maskRatio: e.maskRatio, terms: Object.keys((e.lambdas ?? {}) as Record<string, unknown>) };
}

export interface MemoryEstimate {
  bytes: number;
  parts: Record<string, number>;
  limit: number;
  limitWhy: string;
}

const GiB = 1024 ** 3;
/** wasm32 linear memory cannot exceed 4 GiB. */
const WASM_LIMIT = 4 * GiB;

function memoryLimit(backend: string, ram = totalmem()): { limit: number; why: string } {
  const ramLimit = 0.8 * ram;
  if (backend === 'wasm' && WASM_LIMIT < ramLimit) return { limit: WASM_LIMIT, why: 'the wasm backend\'s 4 GiB memory limit' };
  return { limit: ramLimit, why: `80% of this machine's ${(ram / GiB).toFixed(1)} GiB RAM` };
}

export function estimateTrainMemory(a: TrainMemoryInput, ram = totalmem()): MemoryEstimate {
  const f32 = 4;
  const N1 = a.numItems + 1;
  const P = a.batchRows * a.batchLen;
  const [lossCols, lossCopies] = a.loss === 'ce' ? [N1, 2] : a.loss === 'sampled' ? [a.negatives + 1, 12] : [2, 3];
  const networks = a.emkd?.K ?? 1; // every network's parameters go through the same Adam update
  // EMKD's cloze networks replace the trainer's pass and loss (TrainHooks.ownForward): their passes and cloze CE are
  // counted in estimateEmkd.
  const own = a.emkd?.terms.includes('emkd_cloze') ?? false;
  const parts: Record<string, number> = {
    parameters: sasrecFloats(a) * f32 * 7,
    loss: own ? 0 : P * lossCols * lossCopies * f32,
    activations: own ? 0 : P * activationFloats(a) * f32,
    'embedding gradients': networks * 7 * N1 * a.dims * f32,
    update: networks * 10 * sasrecFloats(a) * f32,
    evaluation: Math.min(a.evalBatch, Number.MAX_SAFE_INTEGER) * N1 * f32 * 2,
  };
  const emkd = a.emkd ? estimateEmkd(a, a.emkd) : {};
  Object.assign(parts, emkd);
  // Every EMKD part but the networks' weights lives in the step (before, the cloze networks' 'emkd cloze' was listed
  // but left out of the total).
  const emkdStep = Object.entries(emkd).filter(([k]) => k !== 'emkd networks').reduce((s, [, v]) => s + v, 0);
  const step = parts.loss! + parts.activations! + parts['embedding gradients']! + emkdStep;
  const bytes = parts.parameters! + (emkd['emkd networks'] ?? 0) + Math.max(step, parts.update!, parts.evaluation!);
  const { limit, why } = memoryLimit(a.backend, ram);
  return { bytes, parts, limit, limitWhy: why };
}

/** Live floats per position of one network's training step (forward + backward), without the loss: see the file comment. */
function activationFloats(a: Pick<TrainMemoryInput, 'dims' | 'ffnDims' | 'heads' | 'blocks' | 'batchLen'>): number {
  const { dims: D, ffnDims: F, heads: H, batchLen: L } = a;
  return 52 * D + 64 + a.blocks * (96 * D + 10 * F + 13 * H * L + 16);
}

/** Parameters of one SASRec network (floats). */
function sasrecFloats(a: TrainMemoryInput): number {
  const D = a.dims;
  return (a.numItems + 1) * D + a.maxLen * D + a.blocks * (3 * D * D + 3 * D + D * D + D + 2 * D * a.ffnDims + a.ffnDims + D + 4 * D) + 2 * D;
}

/**
 * EMKD's parts (bytes; P = batchRows x batchLen positions, N1 = items + 1). Its terms are plain tfjs ops inside the
 * step's gradient tape, so every intermediate lives until the step ends, and most are full-softmax [P, N1]:
 * - emkd networks: networks 2..K's weights, gradients, Adam moments and host copies (7 copies, as network 1);
 * - emkd passes: one encoder pass (forward + backward) per network 2..K on the batch and per network and view on the
 *   masked views: per position 34 D + blocks (11 H L + 58 D + 8 F) floats (embeddings, attention rows, LayerNorms,
 *   dropout masks and their gradients; the measured figure, in distinct buffers: network 1's activationFloats,
 *   which bounds tf.profile's count of the same pass (reshape views counted again), is about 1.5x it);
 * - emkd next-item: networks 2..K's next-item CE, 12 [P, N1] each (the logits, their item slice, the log-softmax
 *   and its shifted / exponentiated inputs, the one-hot targets, their product, and the gradients of these);
 * - emkd kl: L5, 39 [P, N1] per pair of networks (the tempered logits, two log-softmaxes, their exponentials and
 *   stop-gradient copies, each direction's clamp / log / difference / product, and gradients), plus network 1's
 *   logits once (4), K (K - 1) / 2 pairs: the part that grows fastest with K;
 * - emkd masked: L1, the next-item CE's 13 matrices on the masked slots [M, N1] per network and view, M = rows x
 *   max(1, round(maskRatio x batchLen));
 * - emkd contrast: L3 / L4 InfoNCE, 10 [B, B] per (anchor network, positive network, view): K intra, K (K - 1) inter.
 * A whole EMKD step (--preset small, 1682 items, all terms, K = 1-4, batch 8-32) measured against the total: 0.83-0.94
 * of tf.profile's peak, 0.97-1.02 of the distinct buffers and of the wasm heap's growth (K = 3, batch 32: 1728 MiB
 * estimated; tf.profile 2047, distinct 1691, heap 1759 MiB). So the EMKD parts bound the heap, not tf.profile's count.
 */
export function estimateEmkd(a: TrainMemoryInput, e: EmkdMemoryInput): Record<string, number> {
  const F = 4;
  const N1 = a.numItems + 1;
  const { K, views: V } = e;
  const L = a.batchLen;
  const P = a.batchRows * L;
  const on = (t: string) => e.terms.includes(t);
  const maskedViews = on('emkd_mask') || on('emkd_intra') || (on('emkd_inter') && K > 1);
  const pass = P * (34 * a.dims + a.blocks * (11 * a.heads * L + 58 * a.dims + 8 * a.ffnDims));
  const M = a.batchRows * Math.min(L, Math.max(1, Math.round(e.maskRatio * L)));
  const pairs = (K * (K - 1)) / 2;
  const contrasts = (on('emkd_intra') ? K : 0) + (on('emkd_inter') ? K * (K - 1) : 0);
  if (on('emkd_cloze')) {
    // The cloze networks (src/distill/emkd/cloze.ts; the trainer runs no pass or loss of its own, see
    // estimateTrainMemory): K passes on the unmasked sequence and K per view; the output layer only at each view's
    // selected slots (Mc rows: expected maskRatio x L per row). Per network and view, [Mc, N] matrices: the logits,
    // the cloze CE's kept softmax and its gradient (3); with the KL, the network's kept tempered softmax, the KL's
    // gradient and the sum of the two gradients (3; the written-out gradient keeps nothing per pair); and the output
    // layer's item-table gradient [N1, D] with its sum (2). Plus 3 [Mc, N1] once: the backward's padded gradient and
    // its transpose, the CE's one-hot. The contrastive terms compare whole sequences ([B, L D] flattened states):
    // per (anchor network, positive network) 4 + 5 M [B, L D] unit vectors and products, and their gradients.
    // Checked on Beauty (12,101 items, d 64, 2 blocks, L 20, K 3, M 2; one step of the longest batch): batch 32, 781 MiB
    // estimated against a wasm heap of 710 MiB (tf.profile's peak 811 MiB: it counts saved clones and reshape views
    // again); batch 128, 2,389 MiB against 2,256 MiB (tf.profile 2,712 MiB).
    const Mc = a.batchRows * Math.max(1, Math.round(e.maskRatio * L));
    return {
      'emkd networks': (K - 1) * sasrecFloats(a) * F * 7,
      // A bidirectional pass also appends MASK to the item table (src/student/model/model.ts): the [N1 + 1, D] table,
      // its gather's gradient and the split back to the items, 3 table copies per pass.
      'emkd passes': (K + K * V) * (pass + 3 * (N1 + 1) * a.dims) * F,
      'emkd cloze': (K * V * (3 * Mc * N1 + 2 * N1 * a.dims) + 3 * Mc * N1) * F,
      'emkd kl': on('emkd_kl') && K > 1 ? K * V * 3 * Mc * N1 * F : 0,
      'emkd contrast': contrasts * ((8 + 10 * V) * P * a.dims + V * 10 * a.batchRows * a.batchRows) * F,
    };
  }
  return {
    'emkd networks': (K - 1) * sasrecFloats(a) * F * 7,
    'emkd passes': (K - 1 + (maskedViews ? K * V : 0)) * pass * F,
    'emkd next-item': (K - 1) * 12 * P * N1 * F,
    'emkd kl': on('emkd_kl') && K > 1 ? (39 * pairs + 4) * P * N1 * F : 0,
    'emkd masked': on('emkd_mask') ? K * V * 13 * M * N1 * F : 0,
    'emkd contrast': contrasts * V * 10 * a.batchRows * a.batchRows * F,
  };
}

function formatBytes(n: number): string {
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
  const emkdStep = Object.entries(e.parts).filter(([k]) => k.startsWith('emkd ') && k !== 'emkd networks').reduce((s, [, v]) => s + v, 0);
  if (a.emkd && a.emkd.K > 1 && emkdStep > e.limit / 4) hints.push(`fewer networks (--emkd, now ${a.emkd.K}: each network adds its full-softmax passes, each of the ${(a.emkd.K * (a.emkd.K - 1)) / 2} pairs its KL)`);
  if (a.emkd && a.emkd.views > 1 && emkdStep > e.limit / 4) hints.push(`fewer masked views (--emkd-views, now ${a.emkd.views}: each view adds K encoder passes and its CE / KL matrices)`);
  if (e.parts.loss! + e.parts.activations! + emkdStep > e.limit / 4) hints.push(`a smaller --batch-size (now ${a.batchRows} rows per batch) or --max-len (longest window ${a.batchLen})`);
  if (e.parts.evaluation! > e.limit / 4) hints.push(`a smaller --eval-batch (now ${a.evalBatch})`);
  if (e.parts.parameters! + Math.max(e.parts.update!, e.parts['embedding gradients']!) > e.limit / 2) hints.push(`a smaller --dims (now ${a.dims}): the item table alone is ${N1} x ${a.dims} floats`);
  const parts = Object.entries(e.parts).filter(([k, v]) => v > 0 || !k.startsWith('emkd ')).map(([k, v]) => `${k} ${formatBytes(v)}`).join(', ');
  const cloze = a.emkd?.terms.includes('emkd_cloze') ?? false;
  const lossWhat = cloze ? `the cloze CE and KL at the selected slots (about ${a.batchRows * Math.max(1, Math.round(a.emkd!.maskRatio * a.batchLen))} of ${P} positions per view) x ${N1} items` : a.loss === 'ce' ? `full-softmax logits ${P} positions x ${N1} items, x2 for their softmax and its gradient` : a.loss === 'sampled' ? `sampled logits ${P} x ${a.negatives + 1}, x12 for their corrections, softmax and gradients` : `BCE logits ${P} x 2`;
  const emkdWhat = a.emkd && !cloze ? `; --emkd ${a.emkd.K} adds full-softmax ${P} x ${N1} matrices per network and per pair of networks` : '';
  throw new RecdistillError(
    'E_USAGE',
    `student:train would need about ${formatBytes(e.bytes)} (${parts}; ${lossWhat}${emkdWhat}), more than ${formatBytes(e.limit)} (${e.limitWhy}). Use ${hints.join(', or ') || '--loss sampled'}.`,
  );
}
