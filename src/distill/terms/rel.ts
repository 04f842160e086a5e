import * as tf from '@tensorflow/tfjs-core';
import { RecdistillError } from '../../errors.js';
import { makeRng, mixSeed } from '../../util/rng.js';
import { relationRows, rkdAngle, rkdDistance, RKD_MAX_ROWS } from '../losses.js';
import type { TermModule, TermSetup } from './types.js';
import { fmtPairs, gatherRowsJs } from './util.js';

/**
 * Relational distillation (RKD, Park et al.): the batch's pairwise distances (x --rel-distance) and triplet angles
 * (x --rel-angle) of the last block's states against those of the teacher layer aligned with it (auto: the last
 * tapped layer), the same teacher rows Dcos / Dl2 use for that block.
 */
export const relTerm: TermModule = {
  name: 'rel', lambda: 'lambdaRel', ablateLambda: 1, inAll: false, readsTeacher: true, ownAdapter: true,
  what: 'relations: RKD distances and angles of the batch, last block against its aligned teacher layer (Park et al.)',
  check(s) {
    if (!s.relPair) {
      throw new RecdistillError('E_USAGE', `--lambda-rel needs the student's last block (${s.blocks - 1}) aligned with a teacher layer (aligned: ${fmtPairs(s.pairs, s.reader.layers)}); add ${s.blocks - 1}:-1 (or -1:-1) to --align.`);
    }
  },
  create(s) {
    const relPair = s.relPair!;
    return {
      compute(st) {
        if (!st.tb) return undefined;
        const last = st.flatFor('rel', s.blocks - 1);
        return relLoss(s, st.ctx.step, st.adapted('rel', last), st.tb.slots, st.tb.hidden[st.lookupTapped.indexOf(relPair.tapped)]!);
      },
      provenance: () => ({ rel: { distance: s.f.relDistance, angle: s.f.relAngle, maxRows: RKD_MAX_ROWS, align: `${relPair.block}:${s.reader.layers[relPair.tapped]}` } }),
    };
  },
};

/**
 * wd * RKD distance + wa * RKD angle between the last-block states at the slots with a teacher row and those
 * teacher rows. More than RKD_MAX_ROWS (64) such rows: a uniform subsample, drawn in JS before any teacher row
 * becomes a tensor, from a generator seeded by the run seed and the step (the trainer's RNG is not exposed to
 * hooks; this one is just as reproducible, and a forward pass recomputed within the step for gradient balancing
 * draws the same rows). Both terms see the same rows.
 */
function relLoss(s: TermSetup, step: number, last: tf.Tensor2D, slots: Int32Array, teacher: Float32Array): tf.Scalar {
  const rows = relationRows(slots.length, RKD_MAX_ROWS, makeRng(mixSeed(s.seed, step, 0x4e1)));
  const pick = rows ?? Int32Array.from(slots.keys());
  if (pick.length < 2) return tf.mul(tf.sum(last), 0) as tf.Scalar; // nothing to relate; keeps a gradient path
  const hs = tf.gather(last, tf.tensor1d(Int32Array.from(pick, (r) => slots[r]!), 'int32')) as tf.Tensor2D; // [m, D]
  const ht = tf.tensor2d(gatherRowsJs(teacher, s.H, pick), [pick.length, s.H]); // [m, H]
  let rel: tf.Scalar = tf.mul(tf.sum(hs), 0) as tf.Scalar;
  if (s.f.relDistance > 0) rel = tf.add(rel, tf.mul(rkdDistance(hs, ht), s.f.relDistance));
  if (s.f.relAngle > 0) rel = tf.add(rel, tf.mul(rkdAngle(hs, ht), s.f.relAngle));
  return rel;
}
