import * as tf from '@tensorflow/tfjs-core';
import type { PreparedDataset } from '../../data/types.js';
import { RecdistillError } from '../../errors.js';
import { historyFor, type ScoreBatch } from '../../eval/evaluate.js';
import type { StepContext, TrainHooks } from '../../student/training/hooks.js';
import { maskId as maskIdOf, type ModelConfig, type Sasrec } from '../../student/model/model.js';
import { scoreHistories } from '../../student/serving/scorer.js';
import { averageScores } from '../../student/serving/serve-plan.js';
import { makeRng, mixSeed } from '../../util/rng.js';
import { stderrLog, type LogFn } from '../../util/progress.js';
import { reportEnsemble } from './ensemble.js';
import { itemLogits, itemsCE, mutualKLSum, zeroOf } from './losses.js';
import { createNetworks, encodeWithRows, type EmkdNetworks } from './networks.js';
import { attributeBCE, clozeView, contrastive } from './reference-losses.js';
import { attributeTable, type MaskedView } from './views.js';
import type { EmkdFlags } from './flags.js';

/**
 * EMKD as the reference code writes it (hw-du/EMKD commit 984d46c): K bidirectional cloze networks (BERT4Rec,
 * src/student/model/model.ts attention 'bidirectional'), selected by `student:train --emkd K --attention bidirectional`.
 * Network 1 is the trainer's model, networks 2..K hook variables (./networks.ts), as in the causal variant.
 * Each step, for the batch's training sequences (each window's inputs followed by its last target: the items the
 * reference's window holds), with M = --emkd-views cloze views (./reference-losses.ts clozeView, p = --emkd-mask-ratio,
 * drawn from mixSeed(seed, step, 0xc10e, view), the same views for every network):
 *   emkd_cloze  sum_v sum_n CE of the original item at view v's selected slots, network n (weight 1: it is the
 *               recommendation loss; the trainer's next-item `ce` gets weight 0 and is not computed);
 *   emkd_kl     sum_v sum_{a<b} mutualKL at view v's selected slots (both directions, target detached);
 *   emkd_attr   sum_n BCE of the current item's attributes from network n's state on the unmasked sequence, at the
 *               last view's selected slots (the reference reuses the last view's `active_index`);
 *   emkd_intra  sum_n ICL(network n's unmasked states flattened to [L D]; negatives: the other anchors of the batch;
 *               positives: n's M views);
 *   emkd_inter  sum_{n != u} CCL(anchor n; negatives: u's anchors; positives: u's M views).
 * The terms are returned unweighted; the lambdas are --lambda-emkd-attr / -intra / -inter / -kl (the reference's 1,
 * lambda_ 0.01 for both contrastive terms, mu 0.001). Temperature --emkd-temperature (tau) is the KL's and the
 * contrastive terms'. Every pass is in training mode (dropout), as the reference's.
 */
export function buildClozeHooks(f: EmkdFlags, ds: PreparedDataset, config: ModelConfig, seed: number, o: { log?: LogFn } = {}): TrainHooks & { networks: EmkdNetworks } {
  const K = f.emkd;
  const log = o.log ?? stderrLog;
  const T = f.emkdTemperature;
  const attrs = f.lambdaEmkdAttr > 0 ? attributeTable(ds) : undefined;
  if (f.lambdaEmkdAttr > 0 && !attrs) log(`EMKD: ${ds.name} has no item attributes (no item has a genre / category): the attribute term (--lambda-emkd-attr ${f.lambdaEmkdAttr}) is skipped.`);
  if (f.lambdaEmkdMask > 0) log(`EMKD: --lambda-emkd-mask ${f.lambdaEmkdMask} is the causal variant's masked-item term; cloze networks are trained by the cloze CE itself (emkd_cloze), so it is not used.`);
  const A = attrs?.names.length ?? 0;
  const multiHot = attrs ? Float32Array.from(attrs.targets, (x) => (x > 0 ? 1 : 0)) : undefined; // [N + 1, A]
  const nets = createNetworks(config, K, seed, A, `emkd-cloze${++instance}`);
  const N = config.numItems;
  const D = config.dims;
  const M = f.emkdViews;
  const weights: Record<string, number> = { ce: 0, emkd_cloze: 1 };
  if (attrs && f.lambdaEmkdAttr > 0) weights.emkd_attr = f.lambdaEmkdAttr;
  if (f.lambdaEmkdIntra > 0) weights.emkd_intra = f.lambdaEmkdIntra;
  if (K > 1 && f.lambdaEmkdInter > 0) weights.emkd_inter = f.lambdaEmkdInter;
  if (K > 1 && f.lambdaEmkdKl > 0) weights.emkd_kl = f.lambdaEmkdKl;
  const on = (t: string) => t in weights;

  const extraTerms = (ctx: StepContext): Record<string, tf.Scalar> => {
    if (!ctx.inputs || !ctx.encode) throw new RecdistillError('E_INTERNAL', 'EMKD needs the step context\'s inputs and encode (src/student/training/step.ts).');
    const B = ctx.users.length;
    const { items: seq, L } = trainingSequences(ctx.inputs, ctx.targets.dataSync() as Int32Array, B, config.maxLen);
    const encode1 = ctx.encode;
    const rngs = nets.extra.map((_, i) => makeRng(mixSeed(seed, ctx.step, 0xe3d0, i + 2)));
    const pass = (n: number, items: Int32Array): tf.Tensor2D => {
      const h = n === 0 ? encode1(items).at(-1)! : encodeWithRows(nets.extra[n - 1]!, items, B, L, rngs[n - 1]).at(-1)!;
      return tf.reshape(h, [B * L, D]) as tf.Tensor2D; // [B L, D]
    };
    const E: tf.Tensor2D[] = [ctx.itemEmbeddings as tf.Tensor2D, ...nets.extra.map((m) => m.itemEmb as tf.Tensor2D)];
    const needAnchors = on('emkd_attr') || on('emkd_intra') || on('emkd_inter');
    const anchors = needAnchors ? Array.from({ length: K }, (_, n) => pass(n, seq)) : [];
    const views: MaskedView[] = Array.from({ length: M }, (_, v) => clozeView(seq, f.emkdMaskRatio, makeRng(mixSeed(seed, ctx.step, 0xc10e, v)), N, maskIdOf(config)));
    const states = views.map((view) => Array.from({ length: K }, (_, n) => pass(n, view.items))); // [view][network] [B L, D]
    const out: Record<string, tf.Scalar> = {};
    let cloze: tf.Scalar = tf.scalar(0);
    let kl: tf.Scalar = tf.scalar(0);
    views.forEach((view, v) => {
      if (view.slots.length === 0) {
        for (let n = 0; n < K; n++) cloze = tf.add(cloze, tf.add(zeroOf(states[v]![n]!), zeroOf(E[n]!)));
        return;
      }
      // Only the selected slots' states reach the output layer: [S, D] x [N + 1, D]^T, then the items 1..N (the
      // padding column is no class), one [S, N] matrix per network shared by the cloze CE and the KL.
      const slots = tf.tensor1d(view.slots, 'int32');
      const items = states[v]!.map((h, n) => itemLogits(tf.gather(h, slots) as tf.Tensor2D, E[n]!)); // [S, N]
      for (let n = 0; n < K; n++) cloze = tf.add(cloze, itemsCE(items[n]!, view.originals));
      if (on('emkd_kl')) kl = tf.add(kl, mutualKLSum(items, T)); // every pair a < b
    });
    out.emkd_cloze = cloze;
    if (on('emkd_kl')) out.emkd_kl = kl;
    if (on('emkd_attr')) out.emkd_attr = attributeTerm(anchors, views.at(-1)!, seq);
    const flat = (h: tf.Tensor2D) => tf.reshape(h, [B, L * D]) as tf.Tensor2D; // a sequence's states as one vector
    if (on('emkd_intra')) {
      let icl: tf.Scalar = tf.scalar(0);
      for (let n = 0; n < K; n++) icl = tf.add(icl, contrastive(flat(anchors[n]!), flat(anchors[n]!), states.map((s) => flat(s[n]!)), T));
      out.emkd_intra = icl;
    }
    if (on('emkd_inter')) {
      let ccl: tf.Scalar = tf.scalar(0);
      for (let n = 0; n < K; n++) for (let u = 0; u < K; u++) if (u !== n) ccl = tf.add(ccl, contrastive(flat(anchors[n]!), flat(anchors[u]!), states.map((s) => flat(s[u]!)), T));
      out.emkd_inter = ccl;
    }
    return out;
  };

  /** sum_n attributeBCE at `view`'s selected slots of the unmasked sequence `seq`; anchors per network [B L, D]. */
  const attributeTerm = (anchors: tf.Tensor2D[], view: MaskedView, seq: Int32Array): tf.Scalar => {
    let s: tf.Scalar = tf.scalar(0);
    if (view.slots.length === 0) {
      nets.attrHeads.forEach((h) => (s = tf.add(s, tf.add(zeroOf(h.w), zeroOf(h.b)))));
      return s;
    }
    const t = new Float32Array(view.slots.length * A);
    view.slots.forEach((slot, r) => t.set(multiHot!.subarray(seq[slot]! * A, (seq[slot]! + 1) * A), r * A));
    const targets = tf.tensor2d(t, [view.slots.length, A]);
    const slots = tf.tensor1d(view.slots, 'int32');
    nets.attrHeads.forEach((h, n) => {
      const logits = tf.add(tf.matMul(tf.gather(anchors[n]!, slots), h.w), h.b) as tf.Tensor2D; // [S, A]
      s = tf.add(s, attributeBCE(logits, targets));
    });
    return s;
  };

  return {
    networks: nets,
    variables: () => nets.variables,
    extraTerms,
    weights: () => weights,
    // Every pass is run here (on the training sequences, not the trainer's inputs): the trainer skips its own.
    ownForward: true,
    report: (run) => reportEnsemble(run, (f.serve ?? 'member') as 'member' | 'ensemble'),
    selectionScorer: selectionScorerFor(f, nets),
    provenance: () => ({
      K,
      networks: 'bidirectional cloze (reference)',
      maskRatio: f.emkdMaskRatio,
      temperature: T,
      views: M,
      lambdas: { ...weights },
      attributes: attrs ? { classes: A, loss: 'bce' } : null,
      // Validation selects the epoch on what the run serves (the reference: the ensemble).
      selection: f.serve === 'ensemble' && K > 1 ? 'ensemble' : 'network 1',
      layout: { networkParams: nets.paramNames, maskRows: 0, attrHeads: nets.attrHeads.length, variables: nets.variables.length },
    }),
    dispose() {
      for (const v of nets.variables) v.dispose();
    },
  };
}

let instance = 0;

/**
 * The batch's training sequences for cloze: each row's inputs followed by its last target (targets are the inputs
 * shifted by one, so that is the whole window), kept to the last L = min(L_in + 1, maxLen) slots, left-padded.
 */
export function trainingSequences(inputs: Int32Array, targets: Int32Array, B: number, maxLen: number): { items: Int32Array; L: number } {
  const Lin = inputs.length / B;
  const L = Math.min(Lin + 1, maxLen);
  const items = new Int32Array(B * L);
  for (let b = 0; b < B; b++) {
    const row = [...inputs.subarray(b * Lin, (b + 1) * Lin), targets[b * Lin + Lin - 1]!].slice(-L);
    items.set(row, b * L);
  }
  return { items, L };
}

/**
 * With --serve ensemble (K > 1), validation scores the K networks' average, so the best epoch is the served model's
 * (both EMKD variants); undefined otherwise (the trainer validates network 1).
 */
export function selectionScorerFor(f: EmkdFlags, nets: EmkdNetworks): TrainHooks['selectionScorer'] {
  if (f.serve !== 'ensemble' || f.emkd < 2) return undefined;
  return (model: Sasrec, ds: PreparedDataset): ScoreBatch => {
    const fns = [model, ...nets.extra].map((m) => (h: Int32Array[]) => scoreHistories(m, h));
    return async (users, split) => averageScores(fns, users.map((u) => historyFor(ds, u, split)));
  };
}
