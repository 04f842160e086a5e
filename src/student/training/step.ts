import * as tf from '@tensorflow/tfjs-core';
import type { PreparedDataset } from '../../data/types.js';
import type { StepContext, TrainHooks } from './hooks.js';
import type { Batch } from '../model/batches.js';
import { bceLoss, fullSoftmaxCE, proposal, sampledSoftmaxCE } from './losses.js';
import { encode, scores, type Sasrec } from '../model/model.js';
import type { Rng } from '../../util/rng.js';

/**
 * One training step's maths: the record of named UNWEIGHTED loss terms (`ce` = the next-item loss chosen by
 * --loss, plus whatever `hooks.extraTerms(ctx)` returns), their weighted sum, and gradients.
 * `gradientsOf` is deliberately one small function: a balancing strategy asks it for one term at a time.
 */
export interface LossSetup {
  kind: 'ce' | 'sampled' | 'bce';
  negatives: number;
  /** Label smoothing of the full-softmax CE (kind 'ce' only; 0 = none). */
  labelSmoothing?: number;
  /** Proposal distribution for sampled softmax (q_0 = 0). */
  q?: Float64Array;
  /** Per-user item sets for BCE negatives (items the user interacted with). */
  seen?: Array<Set<number>>;
}

export function lossSetup(ds: Pick<PreparedDataset, 'items' | 'users'>, kind: LossSetup['kind'], negatives: number, sampler: 'uniform' | 'popularity', labelSmoothing = 0): LossSetup {
  const N = ds.items.length - 1;
  if (kind === 'sampled') {
    const counts = new Float64Array(N + 1);
    for (const u of ds.users) for (let i = 0; i < u.items.length - 2; i++) counts[u.items[i]!]! += 1;
    return { kind, negatives, q: proposal(sampler, counts) };
  }
  if (kind === 'bce') return { kind, negatives, seen: ds.users.map((u) => new Set(u.items)) };
  return labelSmoothing > 0 ? { kind, negatives, labelSmoothing } : { kind, negatives };
}

/** Forward pass of one batch -> unweighted loss terms. Call inside a gradient tape. */
/**
 * `withCe: false` leaves the full-softmax CE out (the balancer's per-term gradients of the other terms): that op
 * keeps its softmax for its own gradient, which never runs when CE is not differentiated, so computing it there
 * leaked [P, N] per call.
 */
export function batchTerms(model: Sasrec, batch: Batch, loss: LossSetup, rng: Rng, step: number, hooks?: TrainHooks, opts: { withCe?: boolean } = {}): Record<string, tf.Scalar> {
  const { B, L } = batch;
  const D = model.config.dims;
  const N = model.config.numItems;
  // Hooks that replace the next-item loss and run every pass themselves (EMKD's cloze networks): no main forward.
  if (opts.withCe === false && hooks?.ownForward) return hookTerms({}, model, batch, [], rng, step, hooks);
  const hidden = encode(model, batch.inputs, B, L, { rng }); // per block [B, L, D]
  const idx: number[] = [];
  const tg: number[] = [];
  for (let i = 0; i < B * L; i++) if (batch.targets[i] !== 0) { idx.push(i); tg.push(batch.targets[i]!); }
  // Logits only at the non-padding positions: [P, D]
  const hP = tf.gather(tf.reshape(hidden[hidden.length - 1]!, [B * L, D]), tf.tensor1d(idx, 'int32')) as tf.Tensor2D;
  const targets = new Int32Array(tg);
  let ce: tf.Scalar | undefined;
  if (loss.kind === 'ce') ce = opts.withCe === false ? undefined : fullSoftmaxCE(hP, tf.tensor1d(targets, 'int32'), model.itemEmb, loss.labelSmoothing ?? 0);
  else if (loss.kind === 'sampled') ce = sampledSoftmaxCE(hP, targets, model.itemEmb, loss.q!, loss.negatives, rng);
  else {
    const negs = new Int32Array(targets.length);
    for (let p = 0; p < targets.length; p++) {
      const seen = loss.seen![batch.users[Math.floor(idx[p]! / L)]!]!;
      let j = 1 + rng.int(N);
      for (let tries = 0; seen.has(j) && tries < 100; tries++) j = 1 + rng.int(N);
      negs[p] = j;
    }
    ce = bceLoss(hP, targets, negs, model.itemEmb);
  }
  return hookTerms(ce ? { ce } : {}, model, batch, hidden, rng, step, hooks);
}

/** `terms` plus the hooks' terms for this batch (the step context built from the main forward's `hidden`). */
function hookTerms(terms: Record<string, tf.Scalar>, model: Sasrec, batch: Batch, hidden: tf.Tensor3D[], rng: Rng, step: number, hooks?: TrainHooks): Record<string, tf.Scalar> {
  const { B, L } = batch;
  if (hooks) {
    const ctx: StepContext = {
      users: batch.users,
      positions: batch.positions,
      targets: tf.tensor2d(batch.targets, [B, L], 'int32'),
      hidden,
      itemEmbeddings: model.itemEmb,
      step,
      scores: (h) => scores(model, h),
      inputs: batch.inputs,
      encode: (items, extraRows) => encode(extraRows ? { ...model, itemEmb: tf.concat([model.itemEmb, extraRows], 0) as tf.Variable } : model, items, B, items.length / B, { rng }),
    };
    for (const [k, v] of Object.entries(hooks.extraTerms(ctx))) {
      if (k in terms) throw new Error(`distillation hook returned a term named "${k}", which is reserved.`);
      terms[k] = v;
    }
  }
  return terms;
}

/** sum_k w_k * term_k (`ce` defaults to weight 1, other missing weights to 0). */
export function combine(terms: Record<string, tf.Scalar>, weights: Record<string, number>): tf.Scalar {
  let total: tf.Scalar | undefined;
  for (const [k, t] of Object.entries(terms)) {
    const w = weights[k] ?? (k === 'ce' ? 1 : 0);
    if (w === 0) continue;
    const part = w === 1 ? t : (tf.mul(t, w) as tf.Scalar);
    total = total ? (tf.add(total, part) as tf.Scalar) : part;
  }
  return total ?? tf.scalar(0);
}

/** Value and gradients of f with respect to vars (same order). */
export function gradientsOf(f: () => tf.Scalar, vars: tf.Variable[]): { value: tf.Scalar; grads: tf.Tensor[] } {
  const { value, grads } = tf.variableGrads(f, vars);
  return { value, grads: vars.map((v) => grads[v.name] ?? tf.zerosLike(v)) };
}
