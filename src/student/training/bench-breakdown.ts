import * as tf from '@tensorflow/tfjs-core';
import type { Batch } from '../model/batches.js';
import { fullSoftmaxCE } from './losses.js';
import { attentionBias, bmm, dropout, layerNorm, linear } from '../model/layers.js';
import type { BlockParams, ModelConfig, Sasrec } from '../model/model.js';
import { createAdam, type Adam, type AdamConfig } from './optim.js';
import { makeRng, type Rng } from '../../util/rng.js';

/**
 * Where a training step's time goes (student:bench): each part of the step is run ALONE, forward + backward
 * (tf.grads over the part as a function of its input and its weights), with the shapes of the benchmark step,
 * `dataSync` on every gradient to force execution; the benchmark takes the median over reps interleaved with
 * the timed full steps (so a change in machine load hits the parts and the step alike).
 *
 * - attention: the self-attention sub-layer of every block, x + Dropout(MHA(LN1(x))) (post: LN1 of it), incl.
 *   its backward to x and to the block's LN1/QKV/output weights;
 * - ffn: the point-wise feed-forward sub-layer of every block, x + Dropout(W2 Dropout(ReLU(W1 LN2(x)))) times
 *   the padding mask (post: LN2 first), forward + backward;
 * - output: the gather of the P non-padding positions and losses.ts's fullSoftmaxCE (full-catalogue logits,
 *   softmax, CE; its custom backward), gradients to the hidden states and the item embeddings;
 * - optimizer: optim.ts's Adam update over tensors of the model's parameter shapes (random gradients);
 * - other = the full step minus the four (embedding lookup and its scatter-add gradient, attention mask, final
 *   LayerNorm, the dropout masks of the embeddings, the tape's bookkeeping...). Not clamped: the parts are
 *   timed alone, so their sum can exceed the step (then `other` is negative).
 *
 * The sub-layers use model.ts's own LayerNorm, linear and batched-matmul helpers, dropout and attention mask;
 * test/student/bench-breakdown.test.ts checks that chaining them gives `encode`'s block outputs exactly.
 */

type AttnWeights = Pick<BlockParams, 'ln1g' | 'ln1b' | 'wqkv' | 'bqkv' | 'wo' | 'bo'>;
type FfnWeights = Pick<BlockParams, 'ln2g' | 'ln2b' | 'w1' | 'b1' | 'w2' | 'b2'>;

/** One block's self-attention sub-layer over every position (the training path of model.ts `run`). */
export function attentionSublayer(c: ModelConfig, x: tf.Tensor3D, w: AttnWeights, bias: tf.Tensor, rng: Rng | undefined): tf.Tensor3D {
  const [B, L, D] = x.shape;
  const H = c.heads;
  const dh = D / H;
  const post = c.norm === 'post';
  const h = tf.reshape(post ? x : layerNorm(x, w.ln1g, w.ln1b), [B * L, D]);
  const qkv = tf.reshape(linear(h, w.wqkv, w.bqkv), [B, L, 3, H, dh]);
  const heads = tf.transpose(qkv, [2, 0, 3, 1, 4]);
  const [q, k, v] = tf.unstack(heads, 0) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
  let att = tf.add(tf.mul(bmm(q, k, true), 1 / Math.sqrt(dh)), bias);
  att = dropout(tf.softmax(att), c.attnDropout, rng);
  const ctx = tf.reshape(tf.transpose(bmm(att as tf.Tensor4D, v, false), [0, 2, 1, 3]), [B * L, D]);
  const a = tf.reshape(linear(ctx, w.wo, w.bo), [B, L, D]);
  const out = tf.add(x, dropout(a, c.dropout, rng));
  return (post ? layerNorm(out, w.ln1g, w.ln1b) : out) as tf.Tensor3D;
}

/** One block's feed-forward sub-layer (and the padding mask that ends the block in model.ts `run`). */
export function ffnSublayer(c: ModelConfig, x: tf.Tensor3D, w: FfnWeights, keep: tf.Tensor, rng: Rng | undefined): tf.Tensor3D {
  const [B, L, D] = x.shape;
  const post = c.norm === 'post';
  const h2 = tf.reshape(post ? x : layerNorm(x, w.ln2g, w.ln2b), [B * L, D]);
  const f1 = dropout(linear(h2, w.w1, w.b1, true), c.dropout, rng);
  const f2 = tf.reshape(linear(f1, w.w2, w.b2), [B, L, D]);
  const res = tf.add(x, dropout(f2, c.dropout, rng));
  return tf.mul(post ? layerNorm(res, w.ln2g, w.ln2b) : res, keep) as tf.Tensor3D;
}

export interface StepBreakdown {
  /** Median ms of the full training steps the parts are compared with. */
  stepMs: number;
  attentionMs: number;
  ffnMs: number;
  outputMs: number;
  optimizerMs: number;
  /** stepMs minus the four parts, 0 when the parts, timed alone, add up to more than the step. */
  otherMs: number;
  /** How much the four parts, timed alone, exceed the step (0 when they do not). */
  partsOverStepMs: number;
  /** Each part over stepMs (over the parts' sum when that is larger); the five sum to 1, none negative. */
  shares: { attention: number; ffn: number; output: number; optimizer: number; other: number };
}

export type PartName = 'attention' | 'ffn' | 'output' | 'optimizer';
export const PART_NAMES: readonly PartName[] = ['attention', 'ffn', 'output', 'optimizer'];

export interface BreakdownParts {
  /** Run one part once (forward + backward, or one Adam update) and return its wall time in ms. */
  time(part: PartName): number;
  dispose(): void;
}

const elapsed = (f: () => void): number => {
  const t = performance.now();
  f();
  return performance.now() - t;
};

/**
 * The isolated parts of a training step of `model` on `batch` (same B, L, D, N, blocks, dropout as the step).
 * Inputs are random but fixed; the Adam update runs on copies of the model's variables with its own state, so
 * the model being benchmarked is not touched.
 */
export function breakdownParts(model: Sasrec, batch: Batch, adamConfig: AdamConfig, seed = 7): BreakdownParts {
  const c = model.config;
  const { B, L } = batch;
  const D = c.dims;
  const rng = makeRng(seed);
  const keepList: tf.Tensor[] = [];
  const keep = <T extends tf.Tensor>(t: T): T => (keepList.push(t), t);
  const x = keep(tf.randomNormal([B, L, D], 0, 1, 'float32', seed)) as tf.Tensor3D;
  const dy = keep(tf.randomNormal([B, L, D], 0, 1, 'float32', seed + 1)) as tf.Tensor3D;
  const bias = keep(tf.tidy(() => attentionBias(batch.inputs, B, L)));
  const mask = keep(tf.tidy(() => tf.expandDims(tf.cast(tf.notEqual(tf.tensor2d(batch.inputs, [B, L], 'int32'), 0), 'float32'), -1)));
  // As batchTerms: the flat indices of the non-padding targets and the targets there.
  const idx: number[] = [];
  const tg: number[] = [];
  for (let i = 0; i < B * L; i++) if (batch.targets[i] !== 0) { idx.push(i); tg.push(batch.targets[i]!); }

  const attnGrads = tf.grads((xIn, ln1g, ln1b, wqkv, bqkv, wo, bo) =>
    attentionSublayer(c, xIn as tf.Tensor3D, { ln1g, ln1b, wqkv, bqkv, wo, bo } as AttnWeights, bias, rng));
  const ffnGrads = tf.grads((xIn, ln2g, ln2b, w1, b1, w2, b2) =>
    ffnSublayer(c, xIn as tf.Tensor3D, { ln2g, ln2b, w1, b1, w2, b2 } as FfnWeights, mask, rng));
  const outGrads = tf.grads((hidden, E) => {
    const hP = tf.gather(tf.reshape(hidden, [B * L, D]), tf.tensor1d(idx, 'int32')) as tf.Tensor2D;
    return fullSoftmaxCE(hP, tf.tensor1d(tg, 'int32'), E);
  });

  // Adam over copies of the model's parameters (same shapes), with fixed small random gradients.
  const params = [...model.params.values()];
  const copies = params.map((p) => {
    const t = tf.clone(p);
    const v = tf.variable(t, true);
    t.dispose();
    return v;
  });
  const grads = params.map((p, i) => keep(tf.randomNormal(p.shape, 0, 1e-3, 'float32', seed + 2 + i)));
  const adam: Adam = createAdam(copies, adamConfig);
  const sync = (ts: tf.Tensor[]) => {
    for (const t of ts) t.dataSync();
  };

  const run: Record<PartName, () => void> = {
    attention: () =>
      tf.tidy(() => {
        for (const b of model.blocks) sync(attnGrads([x, b.ln1g, b.ln1b, b.wqkv, b.bqkv, b.wo, b.bo], dy));
      }),
    ffn: () =>
      tf.tidy(() => {
        for (const b of model.blocks) sync(ffnGrads([x, b.ln2g, b.ln2b, b.w1, b.b1, b.w2, b.b2], dy));
      }),
    output: () => tf.tidy(() => sync(outGrads([x, model.itemEmb]))),
    optimizer: () => {
      adam.apply(copies, grads);
      sync([copies[copies.length - 1]!]);
    },
  };
  return {
    time: (part) => elapsed(run[part]),
    dispose: () => {
      adam.dispose();
      for (const t of [...copies, ...keepList]) t.dispose();
    },
  };
}

export function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

/**
 * The breakdown from the step times and each part's times (medians). Parts are timed one by one, so on a busy
 * machine they can add up to more than a whole step: then other = 0 and the shares are of the parts' sum (so none
 * is negative and they still add up to 1), and partsOverStepMs says by how much the parts exceeded the step.
 */
export function summarizeBreakdown(stepTimes: number[], partTimes: Record<PartName, number[]>): StepBreakdown {
  const stepMs = median(stepTimes);
  const attentionMs = median(partTimes.attention);
  const ffnMs = median(partTimes.ffn);
  const outputMs = median(partTimes.output);
  const optimizerMs = median(partTimes.optimizer);
  const parts = attentionMs + ffnMs + outputMs + optimizerMs;
  const otherMs = Math.max(0, stepMs - parts);
  const whole = Math.max(stepMs, parts);
  const share = (v: number) => (whole > 0 ? v / whole : 0);
  return {
    stepMs, attentionMs, ffnMs, outputMs, optimizerMs, otherMs, partsOverStepMs: Math.max(0, parts - stepMs),
    shares: { attention: share(attentionMs), ffn: share(ffnMs), output: share(outputMs), optimizer: share(optimizerMs), other: share(otherMs) },
  };
}
