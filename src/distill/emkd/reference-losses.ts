import * as tf from '@tensorflow/tfjs-core';
import type { Rng } from '../../util/rng.js';
import { zeroOf } from './losses.js';
import type { MaskedView } from './views.js';

/**
 * The reference code's own loss forms (hw-du/EMKD commit 984d46c, trainers/bert.py and dataloaders/bert.py), for the
 * bidirectional cloze networks (src/distill/emkd/cloze.ts). The cloze CE is ./losses.ts maskedItemCE and the KL is
 * ./losses.ts mutualKL (both already the reference's forms); what differs from the causal variant's terms is here:
 * - clozeView: BERT4Rec masking (each item selected with p; a selected slot becomes MASK 80%, a random item 10%,
 *   stays 10%; every selected slot is a label);
 * - contrastive: ICL and CCL on whole sequence representations (the [L, D] states flattened), M positives;
 * - attributeBCE: BCE-with-logits of the current item's attributes (multi-hot), mean over rows and attributes.
 */

/**
 * A cloze view of left-padded rows [B * L] (dataloaders/bert.py get_masked_seq): one uniform draw per non-padding
 * slot; below `p` the slot is selected and a second look at the same draw (r / p) picks MASK (< 0.8), a random item
 * 1..N (< 0.9) or the item itself. `slots` / `originals` are every selected slot and its item (the labels).
 */
export function clozeView(inputs: Int32Array, p: number, rng: Rng, numItems: number, maskId: number): MaskedView {
  const items = Int32Array.from(inputs);
  const slots: number[] = [];
  for (let s = 0; s < inputs.length; s++) {
    if (inputs[s] === 0) continue;
    const r = rng.next();
    if (r >= p) continue;
    const q = r / p;
    if (q < 0.8) items[s] = maskId;
    else if (q < 0.9) items[s] = 1 + rng.int(numItems);
    slots.push(s);
  }
  return { items, slots: Int32Array.from(slots), originals: Int32Array.from(slots, (s) => inputs[s]!) };
}

/** Row-wise cosine similarities [B, B'] of a [B, F] and b [B', F] (a zero row counts as a tiny vector, not NaN). */
function cosines(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  const unit = (x: tf.Tensor2D) => tf.div(x, tf.maximum(tf.sqrt(tf.sum(tf.square(x), -1, true)), 1e-8));
  return tf.matMul(unit(a), unit(b), false, true) as tf.Tensor2D;
}

/** Row-wise cosine of a [B, F] and b [B, F] -> [B]. */
function rowCosines(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor1D {
  const unit = (x: tf.Tensor2D) => tf.div(x, tf.maximum(tf.sqrt(tf.sum(tf.square(x), -1, true)), 1e-8));
  return tf.sum(tf.mul(unit(a), unit(b)), -1) as tf.Tensor1D;
}

/**
 * ICL / CCL of the reference (classes ICL and CCL): anchor [B, F] (network n's states of the unmasked sequence,
 * flattened), negatives [B, F] (ICL: the anchors themselves; CCL: network u's anchors), positives M x [B, F]
 * (the M views' states: network n's for ICL, network u's for CCL), temperature T:
 *   neg_bj = cos(anchor_b, negatives_j) / T for j != b, and 0 for j = b (the reference multiplies by 1 - eye,
 *            so the own entry is a constant exp(0) in the denominator, not removed);
 *   L = mean_b [ logsumexp_j neg_bj - logsumexp_m cos(anchor_b, positive_m,b) / T ].
 * Not bounded below by 0 (the positives are not in the denominator). Fewer than 2 rows: 0.
 */
export function contrastive(anchor: tf.Tensor2D, negatives: tf.Tensor2D, positives: tf.Tensor2D[], temperature: number): tf.Scalar {
  const B = anchor.shape[0];
  if (B < 2 || positives.length === 0) return tf.add(zeroOf(anchor), zeroOf(negatives)) as tf.Scalar;
  const offDiag = tf.sub(1, tf.eye(B));
  const neg = tf.mul(tf.div(cosines(anchor, negatives), temperature), offDiag); // [B, B]
  const pos = tf.stack(positives.map((p) => tf.div(rowCosines(anchor, p), temperature)), 1); // [B, M]
  return tf.mean(tf.sub(tf.logSumExp(neg, -1), tf.logSumExp(pos, -1))) as tf.Scalar;
}

/**
 * The attribute term (nn.BCEWithLogitsLoss): logits [R, A], multi-hot targets [R, A] (1 for each attribute of the
 * row's item, 0 elsewhere, all 0 for an item without any), mean over the R x A entries of
 *   max(x, 0) - x t + log(1 + exp(-|x|)).
 */
export function attributeBCE(logits: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar {
  if (logits.shape[0] === 0) return zeroOf(logits);
  const x = logits;
  return tf.mean(tf.add(tf.sub(tf.relu(x), tf.mul(x, targets)), tf.log1p(tf.exp(tf.neg(tf.abs(x)))))) as tf.Scalar;
}
