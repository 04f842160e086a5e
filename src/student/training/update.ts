import * as tf from '@tensorflow/tfjs-core';
import { makeBatch } from '../model/batches.js';
import { type RunState } from '../model/run-folder.js';
import { type TrainHooks } from './hooks.js';
import { modelVariables, type Sasrec } from '../model/model.js';
import { type Adam } from './optim.js';
import { makeRng, mixSeed } from '../../util/rng.js';
import { batchTerms, combine, gradientsOf, type LossSetup } from './step.js';
import { Diverged } from './resume.js';

/**
 * One optimiser update of the student (and the hooks' variables): the batch's loss terms, their weighted sum, its
 * gradients, the divergence checks before any weight moves, then Adam.
 */
/** A loss term this many times its first-step value (floored at 1) means the run has diverged. */
const LOSS_EXPLOSION = 1e4;


/**
 * One optimiser step on `batch`; returns the unweighted, unscaled term values. Throws E_NUMERIC before touching
 * weights on NaN/Inf. `scale` multiplies the gradients (the loss): --step-weight token passes the batch's steps
 * over the epoch's mean steps per batch.
 */
export function trainStep(model: Sasrec, vars: tf.Variable[], adam: Adam, batch: ReturnType<typeof makeBatch>, loss: LossSetup, seed: number, epoch: number, step: number, hooks: TrainHooks | undefined, state: RunState, lr: number, scale = 1): Record<string, number> {
  const weights = hooks?.weights(step) ?? {};
  const rngFor = () => makeRng(mixSeed(seed, epoch, step, 0x5eed));
  if (hooks?.balance && step % hooks.balance.every === 0) {
    const shared = modelVariables(model);
    const perTerm: Record<string, tf.Tensor[]> = {};
    // One forward + backward per term; a term absent from this batch (no teacher rows) is left out.
    for (const name of ['ce', ...hooks.balance.terms]) {
      let absent = false;
      const grads = tf.tidy(() => {
        const { value, grads } = gradientsOf(() => {
          const t = batchTerms(model, batch, loss, rngFor(), step, hooks, { withCe: name === 'ce' })[name];
          if (t) return t;
          absent = true;
          return tf.mul(tf.sum(shared[0]!), 0) as tf.Scalar; // a zero that depends on the weights
        }, shared);
        value.dispose();
        return grads.map((g) => tf.keep(g));
      });
      if (absent) grads.forEach((g) => g.dispose());
      else perTerm[name] = grads;
    }
    hooks.balance.update(perTerm, step);
    for (const gs of Object.values(perTerm)) for (const g of gs) g.dispose();
  }
  const values: Record<string, number> = {};
  tf.tidy(() => {
    const kept: tf.Scalar[] = [];
    const termRef: Record<string, tf.Scalar> = {};
    const { value, grads } = gradientsOf(() => {
      // A hook that replaces the next-item loss (EMKD's cloze networks: ce weight 0) skips its full softmax.
      const terms = batchTerms(model, batch, loss, rngFor(), step, hooks, { withCe: weights.ce !== 0 });
      for (const [k, t] of Object.entries(terms)) kept.push((termRef[k] = tf.keep(t)));
      return combine(terms, weights);
    }, vars);
    for (const [k, t] of Object.entries(termRef)) values[k] = t.dataSync()[0]!;
    const total = value.dataSync()[0]!;
    for (const t of kept) t.dispose();
    const shown = () => Object.entries(values).map(([k, v]) => `${k}=${v}`).join(', ');
    if (!Number.isFinite(total) || Object.values(values).some((x) => !Number.isFinite(x))) {
      throw new Diverged({ epoch, step, loss: values, reason: `non-finite training loss at epoch ${epoch}, step ${step} (${shown()}); weights were not updated.` });
    }
    state.refLoss ??= { ...values };
    for (const [k, x] of Object.entries(values)) {
      const ref = state.refLoss[k];
      if (ref === undefined) continue;
      const limit = LOSS_EXPLOSION * Math.max(1, Math.abs(ref));
      if (Math.abs(x) > limit) {
        throw new Diverged({ epoch, step, loss: values, reason: `training diverged at epoch ${epoch}, step ${step}: loss ${k} = ${x.toPrecision(4)}, more than ${LOSS_EXPLOSION}x its first-step value ${ref.toPrecision(4)} (${shown()}); weights were not updated.` });
      }
    }
    adam.apply(vars, scale === 1 ? grads : grads.map((g) => tf.mul(g, scale)), lr);
  });
  return values;
}
