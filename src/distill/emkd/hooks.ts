import * as tf from '@tensorflow/tfjs-core';
import type { CacheReader } from '../../cache/reader.js';
import type { PreparedDataset } from '../../data/types.js';
import { RecdistillError } from '../../errors.js';
import type { StepContext, TrainHooks } from '../../student/training/hooks.js';
import type { ModelConfig } from '../../student/model/model.js';
import { makeRng, mixSeed } from '../../util/rng.js';
import { stderrLog, type LogFn } from '../../util/progress.js';
import { crossEntropy } from '../losses.js';
import { lookupTeacherBatch } from '../teacher-batch.js';
import { buildClozeHooks, selectionScorerFor } from './cloze.js';
import { EMKD_TERMS, type EmkdFlags, type EmkdTerm } from './flags.js';
import { reportEnsemble } from './ensemble.js';
import { attributeCE, infoNCE, maskedItemCE, mutualKL, teacherKL, zeroOf } from './losses.js';
import { createNetworks, encodeWithRows, type EmkdNetworks } from './networks.js';
import { attributeTable, maskView, type MaskedView } from './views.js';

/**
 * EMKD as student:train hooks (Du et al., SIGIR 2023). Design:
 * - The K-network student is the trainer's model (network 1: trained, checkpointed and served exactly as a
 *   plain student; model.safetensors is network 1) plus networks 2..K, separate SASRec encoders sharing
 *   nothing, created as hook variables (./networks.ts). The trainer runs network 1 on the batch and computes its
 *   next-item loss `ce`; the hook runs everything else inside the same gradient tape.
 * - Masked views: `emkdViews` per step, each masking max(1, round(ratio * n)) of every row's n non-padding items
 *   (./views.ts), drawn from mixSeed(seed, step, 0xe3a5, view), so a recomputed or resumed step masks the same
 *   slots. Every network sees the same masked views (as in the reference code). The mask token is a learned row
 *   per network appended to its item table for the masked pass (id N + 1).
 * - Network 1's masked passes go through ctx.encode (the student's encoder; dropout continues the step's
 *   stream); networks 2..K draw their dropout from mixSeed(seed, step, 0xe3d0, n), one stream per network.
 * - SASRec is causal: the state at a masked slot has seen the items before it and the mask token in its place,
 *   and predicts the original item there (L1). Sequence representations for L3 / L4 are the final states at the
 *   last slot (the most recent item; what serving scores from).
 * Terms (unweighted; weights() applies the lambdas). Sums run over networks / pairs, means over views and rows:
 *   emkd_ce    sum_{n>=2} next-item CE of network n (weight 1: each network learns the task; network 1's is `ce`);
 *   emkd_mask  L1 sum_n mean_v CE of the original item at the masked slots of view v in network n;
 *   emkd_attr  L2 sum_n CE of the next item's attribute classes from network n's state (linear head per network);
 *              skipped with one message when the dataset's items have no genres / categories;
 *   emkd_intra L3 sum_n mean_v InfoNCE(anchor = original in n, positive = view v in n, negatives = the batch);
 *   emkd_inter L4 sum_{i != j} mean_v InfoNCE(anchor = original in i, positive = view v in j, negatives = batch);
 *   emkd_kl    L5 sum_{a < b} mutualKL(next-item logits of a, of b) at every non-padding position, plus with a
 *              teacher cache sum_n teacherKL(teacher top-K soft labels -> network n): the teacher is a member whose
 *              distribution does not move.
 */
export { EMKD_TERMS, type EmkdFlags, type EmkdTerm } from './flags.js';

/** Range checks of the EMKD flags (E_USAGE naming the flag). */
export function checkEmkdFlags(f: EmkdFlags): void {
  const bad = (flag: string, want: string, v: number) => {
    throw new RecdistillError('E_USAGE', `--${flag} must be ${want}, got ${v}.`);
  };
  if (!Number.isInteger(f.emkd) || f.emkd < 0 || f.emkd > 16) bad('emkd', 'an integer in 0..16 (the number of parallel networks; 0 = off)', f.emkd);
  const serve = f.serve ?? 'member';
  if (serve !== 'member' && serve !== 'ensemble') throw new RecdistillError('E_USAGE', `--serve must be one of member, ensemble; got ${JSON.stringify(serve)}.`);
  if (serve === 'ensemble' && f.emkd === 0) throw new RecdistillError('E_USAGE', '--serve ensemble serves the average of the networks EMKD trains: it needs --emkd K (K >= 1; got --emkd 0). Add --emkd K, or drop --serve (one network serves by default).');
  if (!(f.emkdMaskRatio > 0 && f.emkdMaskRatio <= 1)) bad('emkd-mask-ratio', 'in (0, 1]', f.emkdMaskRatio);
  if (!(f.emkdTemperature > 0)) bad('emkd-temperature', '> 0', f.emkdTemperature);
  if (!Number.isInteger(f.emkdViews) || f.emkdViews < 1 || f.emkdViews > 64) bad('emkd-views', 'an integer in 1..64', f.emkdViews);
  for (const flag of Object.values(EMKD_TERMS)) if (!(f[flag] >= 0)) bad(flag.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()), '>= 0', f[flag]);
}

/** The teacher member of L5: an opened cache with soft labels and how many of its top-K to use. */
export interface TeacherMember {
  reader: CacheReader;
  k: number;
}

let instance = 0;

export function buildEmkdHooks(f: EmkdFlags, ds: PreparedDataset, config: ModelConfig, seed: number, o: { teacher?: TeacherMember; log?: LogFn } = {}): TrainHooks & { networks: EmkdNetworks } {
  checkEmkdFlags(f);
  const K = f.emkd;
  if (K < 1) throw new RecdistillError('E_USAGE', 'buildEmkdHooks: --emkd must be >= 1.');
  if (config.attention === 'bidirectional') {
    if (o.teacher && f.lambdaEmkdKl > 0) throw new RecdistillError('E_USAGE', 'EMKD with --attention bidirectional (the reference\'s cloze networks) has no teacher member: drop --cache, or use --attention causal.');
    return buildClozeHooks(f, ds, config, seed, { log: o.log });
  }
  const log = o.log ?? stderrLog;
  const T = f.emkdTemperature;
  const on = (t: keyof typeof EMKD_TERMS) => f[EMKD_TERMS[t]] > 0;
  const attrs = on('emkd_attr') ? attributeTable(ds) : undefined;
  if (on('emkd_attr') && !attrs) log(`EMKD: ${ds.name} has no item attributes (no item has a genre / category): L2 (--lambda-emkd-attr ${f.lambdaEmkdAttr}) is skipped.`);
  const A = attrs?.names.length ?? 0;
  const teacher = on('emkd_kl') ? o.teacher : undefined;
  if (teacher && !teacher.reader.hasSoftLabels) throw new RecdistillError('E_INPUT', `teacher cache ${teacher.reader.dir} has no soft labels; EMKD's teacher member (L5 with --cache) needs them (finish teacher:cache, or --lambda-emkd-kl 0).`);
  const nets = createNetworks(config, K, seed, A, `emkd${++instance}`);
  const N = config.numItems;
  const D = config.dims;
  const maskId = N + 1;
  const needViews = on('emkd_mask') || on('emkd_intra') || (on('emkd_inter') && K > 1);

  const extraTerms = (ctx: StepContext): Record<string, tf.Scalar> => {
    if (!ctx.inputs || !ctx.encode) throw new RecdistillError('E_INTERNAL', 'EMKD needs the step context\'s inputs and encode (src/student/training/step.ts).');
    const inputs = ctx.inputs;
    const encode1 = ctx.encode;
    const B = ctx.users.length;
    const L = inputs.length / B;
    const targets = ctx.targets.dataSync() as Int32Array;
    const vs: number[] = [];
    for (let s = 0; s < B * L; s++) if (targets[s]! > 0 && ctx.positions[s]! >= 0) vs.push(s);
    const vsT = tf.tensor1d(Int32Array.from(vs), 'int32');
    const tgt = Int32Array.from(vs, (s) => targets[s]!);
    const E: tf.Tensor2D[] = [ctx.itemEmbeddings as tf.Tensor2D, ...nets.extra.map((m) => m.itemEmb as tf.Tensor2D)];
    const rngs = nets.extra.map((_, i) => makeRng(mixSeed(seed, ctx.step, 0xe3d0, i + 2)));
    // Final states of the original batch per network [B, L, D] (network 1's is the trainer's).
    const finals: tf.Tensor3D[] = [ctx.hidden[ctx.hidden.length - 1]!];
    nets.extra.forEach((m, i) => finals.push(encodeWithRows(m, inputs, B, L, rngs[i]).at(-1)!));
    const flat = (h: tf.Tensor3D) => tf.reshape(h, [B * L, D]) as tf.Tensor2D;
    const lastSlot = (h: tf.Tensor3D) => tf.reshape(tf.slice(h, [0, L - 1, 0], [B, 1, D]), [B, D]) as tf.Tensor2D;
    const atValid = finals.map((h) => tf.gather(flat(h), vsT) as tf.Tensor2D); // per network [P, D]
    // Next-item logits over items 1..N at the non-padding positions, per network [P, N] (shared by emkd_ce and L5).
    const logits = new Map<number, tf.Tensor2D>();
    const logitsOf = (n: number) => {
      if (!logits.has(n)) logits.set(n, tf.slice(tf.matMul(atValid[n]!, tf.transpose(E[n]!)), [0, 1], [-1, -1]) as tf.Tensor2D);
      return logits.get(n)!;
    };
    const out: Partial<Record<EmkdTerm, tf.Scalar>> = {};
    if (K > 1) {
      const tgtT = tf.tensor1d(Int32Array.from(tgt, (t) => t - 1), 'int32');
      let ce: tf.Scalar = tf.scalar(0);
      for (let n = 1; n < K; n++) ce = tf.add(ce, vs.length ? crossEntropy(logitsOf(n), tgtT) : zeroOf(E[n]!));
      out.emkd_ce = ce;
    }
    // Masked views: the same views for every network.
    const views: MaskedView[] = needViews ? Array.from({ length: f.emkdViews }, (_, v) => maskView(inputs, B, L, f.emkdMaskRatio, makeRng(mixSeed(seed, ctx.step, 0xe3a5, v)), maskId)) : [];
    const masked: tf.Tensor3D[][] = views.map((view) =>
      Array.from({ length: K }, (_, n) => (n === 0 ? encode1(view.items, nets.maskRows[0]) : encodeWithRows(nets.extra[n - 1]!, view.items, B, L, rngs[n - 1], nets.maskRows[n])).at(-1)!),
    );
    const meanOverViews = (f1: (v: number) => tf.Scalar): tf.Scalar => {
      let s: tf.Scalar = tf.scalar(0);
      for (let v = 0; v < views.length; v++) s = tf.add(s, f1(v));
      return tf.div(s, views.length) as tf.Scalar;
    };
    if (on('emkd_mask')) {
      let l1: tf.Scalar = tf.scalar(0);
      for (let n = 0; n < K; n++) {
        l1 = tf.add(l1, meanOverViews((v) => {
          const view = views[v]!;
          return maskedItemCE(tf.gather(flat(masked[v]![n]!), tf.tensor1d(view.slots, 'int32')) as tf.Tensor2D, E[n]!, view.originals);
        }));
      }
      out.emkd_mask = l1;
    }
    if (attrs && nets.attrHeads.length) {
      const rows = vs.map((s, i) => [s, i] as const).filter(([, i]) => attrs.has[tgt[i]!]);
      let l2: tf.Scalar = tf.scalar(0);
      if (rows.length === 0) for (const h of nets.attrHeads) l2 = tf.add(l2, tf.add(zeroOf(h.w), zeroOf(h.b)));
      else {
        const rT = tf.tensor1d(Int32Array.from(rows, ([, i]) => i), 'int32');
        const t = new Float32Array(rows.length * A);
        rows.forEach(([, i], r) => t.set(attrs.targets.subarray(tgt[i]! * A, (tgt[i]! + 1) * A), r * A));
        const tT = tf.tensor2d(t, [rows.length, A]);
        nets.attrHeads.forEach((h, n) => {
          const hs = tf.gather(atValid[n]!, rT) as tf.Tensor2D;
          l2 = tf.add(l2, attributeCE(tf.add(tf.matMul(hs, h.w), h.b) as tf.Tensor2D, tT));
        });
      }
      out.emkd_attr = l2;
    }
    const anchors = finals.map(lastSlot); // per network [B, D]
    const positives = masked.map((perNet) => perNet.map(lastSlot)); // [view][network] [B, D]
    if (on('emkd_intra')) {
      let l3: tf.Scalar = tf.scalar(0);
      for (let n = 0; n < K; n++) l3 = tf.add(l3, meanOverViews((v) => infoNCE(anchors[n]!, positives[v]![n]!, T)));
      out.emkd_intra = l3;
    }
    if (on('emkd_inter') && K > 1) {
      let l4: tf.Scalar = tf.scalar(0);
      for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) if (i !== j) l4 = tf.add(l4, meanOverViews((v) => infoNCE(anchors[i]!, positives[v]![j]!, T)));
      out.emkd_inter = l4;
    }
    if (on('emkd_kl') && (K > 1 || teacher)) {
      let l5: tf.Scalar = tf.scalar(0);
      for (let a = 0; a < K; a++) for (let b = a + 1; b < K; b++) l5 = tf.add(l5, mutualKL(logitsOf(a), logitsOf(b), T));
      if (teacher) l5 = tf.add(l5, teacherTerm(ctx, teacher, Uint8Array.from({ length: B * L }, (_, s) => (targets[s]! > 0 && ctx.positions[s]! >= 0 ? 1 : 0)), finals.map(flat), E));
      out.emkd_kl = l5;
    }
    return out as Record<string, tf.Scalar>;
  };

  /** sum_n teacherKL at the slots the cache holds a row for; every network's logits at the teacher's top-K. */
  const teacherTerm = (ctx: StepContext, t: TeacherMember, valid: Uint8Array, flats: tf.Tensor2D[], E: tf.Tensor2D[]): tf.Scalar => {
    const tb = lookupTeacherBatch(t.reader, ctx.users, ctx.positions, { tapped: [], k: t.k }, valid);
    const M = tb.slots.length;
    if (M === 0) return E.reduce((z, e) => tf.add(z, zeroOf(e)), tf.scalar(0)) as tf.Scalar;
    const slotsT = tf.tensor1d(tb.slots, 'int32');
    const idxT = tf.tensor1d(tb.topkIndex!, 'int32');
    const probs = tf.tensor2d(tb.topkProb!, [M, t.k]);
    let s: tf.Scalar = tf.scalar(0);
    flats.forEach((h, n) => {
      const hs = tf.gather(h, slotsT); // [M, D]
      const eK = tf.reshape(tf.gather(E[n]!, idxT), [M, t.k, D]); // [M, k, D]
      const sK = tf.sum(tf.mul(tf.expandDims(hs, 1), eK), -1) as tf.Tensor2D; // [M, k]
      s = tf.add(s, teacherKL(sK, probs, T, t.reader.temperature));
    });
    return s;
  };

  const weights: Record<string, number> = K > 1 ? { emkd_ce: 1 } : {};
  for (const [term, flag] of Object.entries(EMKD_TERMS)) {
    if (f[flag] <= 0) continue;
    if (term === 'emkd_attr' && !attrs) continue;
    if ((term === 'emkd_inter' && K === 1) || (term === 'emkd_kl' && K === 1 && !teacher)) continue;
    weights[term] = f[flag];
  }

  return {
    networks: nets,
    variables: () => nets.variables,
    extraTerms,
    weights: () => weights,
    // After training (src/student/training/finish.ts): the ensemble exported and evaluated, serve.json written.
    report: (run) => reportEnsemble(run, (f.serve ?? 'member') as 'member' | 'ensemble'),
    // With --serve ensemble the best epoch is chosen on the ensemble's validation NDCG@10 (what is served).
    selectionScorer: selectionScorerFor(f, nets),
    // --serve member is left out (runs written before selection followed --serve keep their identity).
    provenance: () => ({
      K,
      // Selecting the epoch on the ensemble changes the kept weights: part of the identity (absent = network 1).
      ...(selectionScorerFor(f, nets) ? { selection: 'ensemble' } : {}),
      maskRatio: f.emkdMaskRatio,
      temperature: T,
      views: f.emkdViews,
      lambdas: { ...weights },
      attributes: attrs ? { classes: A } : null,
      teacherMember: teacher ? { k: teacher.k, cacheTemperature: teacher.reader.temperature } : null,
      // The checkpoint's hook variables of the K-network student, in this order (src/distill/emkd/ensemble.ts).
      layout: { networkParams: nets.paramNames, maskRows: K, attrHeads: nets.attrHeads.length, variables: nets.variables.length },
    }),
    dispose() {
      for (const v of nets.variables) v.dispose();
    },
  };
}
