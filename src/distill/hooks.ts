import * as tf from '@tensorflow/tfjs-core';
import { readManifest } from '../cache/format.js';
import { openCache, type CacheReader } from '../cache/reader.js';
import { resolveOptions } from '../config/options.js';
import type { PreparedDataset } from '../data/types.js';
import { RecdistillError } from '../errors.js';
import type { HooksFactory, StepContext, TrainHooks } from '../student/training/hooks.js';
import { parseAlign, upgradeAlignProvenance } from './align.js';
import { createBalancer, type BalanceMode } from './balance.js';
import { distillOptions, type DistillFlags } from './options.js';
import { activeLambdas, LOSS_ORDER, TERMS, type StepShared, type TermName, type TermSetup } from './terms/index.js';
import { fmtPairs } from './terms/util.js';
import { computeStats, lookupTeacherBatch } from './teacher-batch.js';
import { stderrLog, type LogFn } from '../util/progress.js';
import { withEmkd } from './emkd/compose.js';
import { buildEmkdHooks, checkEmkdFlags } from './emkd/hooks.js';
import { studentModelConfig } from './emkd/networks.js';

/** Pick and validate the distillation flags out of student:train's resolved options. */
export function distillFlagsFrom(opts: Record<string, unknown>): DistillFlags {
  const picked: Record<string, unknown> = {};
  for (const k of Object.keys(distillOptions)) if (opts[k] !== undefined) picked[k] = opts[k];
  const f = resolveOptions(distillOptions, { flags: picked });
  // Ranges (lambdas >= 0, temperatures > 0, --balance-every >= 1 ...) are the spec's, checked as the flags resolve.
  if (f.lambdaRel > 0 && f.relDistance === 0 && f.relAngle === 0) throw new RecdistillError('E_USAGE', '--lambda-rel needs --rel-distance or --rel-angle > 0 (both are 0).');
  checkEmkdFlags(f);
  return f;
}

let instance = 0;

/**
 * Distillation hooks for the student trainer; undefined when neither --cache nor --emkd is given (plain
 * training). --emkd K adds the EMKD hooks (src/distill/emkd), with or without a cache; with one, the teacher's
 * soft labels join EMKD's L5 as a fixed member. EMKD builds networks 2..K with the student's model config, read
 * from `opts` (student:train passes all its options; another caller must pass the student's options too:
 * src/distill/emkd/networks.ts studentModelConfig).
 */
export const buildDistillHooks: HooksFactory = async (opts, dataset, model, runtime = {}) => {
  const f = distillFlagsFrom(opts);
  const seed = typeof opts.seed === 'number' ? opts.seed : 0;
  if (!f.cache && f.emkd === 0) return undefined;
  const emkdWith = (reader?: CacheReader): TrainHooks | undefined => {
    if (f.emkd === 0) return undefined;
    const k = reader ? (f.kdTopK > 0 ? f.kdTopK : reader.k) : 0;
    if (reader && f.lambdaEmkdKl > 0 && k > reader.k) throw new RecdistillError('E_USAGE', `--kd-top-k ${k} exceeds the cached top-K (${reader.k}) of ${reader.dir} (EMKD's teacher member reads that many).`);
    return buildEmkdHooks(f, dataset, studentModelConfig(opts, dataset, model), seed, { teacher: reader ? { reader, k } : undefined });
  };
  if (!f.cache) return withEmkd(undefined, emkdWith()!);
  if (f.emkd === 0 && Object.keys(activeLambdas(f)).length === 0) {
    // A cache with every weight at 0 would train plain CE while the user believes it distils.
    throw new RecdistillError('E_USAGE', `--cache ${f.cache} is given but every distillation weight is 0 (--lambda-cos, --lambda-l2, --lambda-ms, --lambda-kd, --lambda-emb, --lambda-rel), so the run would train plain CE. Give at least one, e.g. --lambda-kd 1 --lambda-cos 0.5, or leave --cache out for a CE-only run.`);
  }
  const reader = openCache(f.cache, { fingerprint: dataset.fingerprint, datasetRecord: dataset, dataset: { users: dataset.users.length, items: dataset.items.length - 1 }, maxShards: shardsInBudget(f.cache, f.cacheMemoryMb), verify: runtime.verify });
  let distill: TrainHooks | undefined;
  try {
    distill = buildWithReader(reader, f, dataset, model, seed);
    const emkd = emkdWith(reader);
    return emkd ? withEmkd(distill, emkd) : distill;
  } catch (e) {
    if (distill) distill.dispose?.(); // closes the reader too
    else reader.close();
    throw e;
  }
};

/**
 * How many decoded shards fit in the memory budget. A batch draws users from every shard, so a reader that
 * holds fewer shards than the cache has re-decodes shards on almost every step (measured on ML-100K: 8 shards,
 * the reader's default of 4 made a KD step ~4x slower than CE); a cache that fits stays decoded.
 */
function shardsInBudget(dir: string, budgetMb: number): number {
  const m = readManifest(dir);
  const perRow = m.teacher.layers.length * m.teacher.hiddenSize * 4 + m.softLabels.k * 8 + 8;
  const biggest = Math.max(1, ...m.shards.map((s) => s.rows)) * perRow;
  return Math.max(1, Math.floor((budgetMb * 1024 * 1024) / biggest));
}

/** The hooks for an opened cache (exported for tests that build a cache in a temp dir). */
export function buildWithReader(reader: CacheReader, f: DistillFlags, dataset: PreparedDataset, model: { dims: number; blocks: number }, seed = 0, log: LogFn = stderrLog): TrainHooks {
  const D = model.dims;
  const H = reader.hiddenSize;
  const lambdas = activeLambdas(f);
  const on = (t: TermName) => lambdas[t] !== undefined;
  const active = TERMS.filter((t) => on(t.name));
  const pairs = parseAlign(f.align, model.blocks, reader.layers.length);
  const id = ++instance;
  const vars: tf.Variable[] = [];
  const setup: TermSetup = {
    f, reader, dataset, D, H, K: f.kdTopK > 0 ? f.kdTopK : reader.k, blocks: model.blocks, seed, pairs,
    msPairs: pairs.filter((p) => p.block < model.blocks - 1),
    // rel compares the last block (the state the student scores with) with the teacher layer aligned with it.
    relPair: pairs.find((p) => p.block === model.blocks - 1),
    on,
    variable(name, init) {
      const v = tf.variable(init, true, `distill${id}/${name}`);
      init.dispose();
      vars.push(v);
      return v;
    },
  };
  for (const t of active) t.check?.(setup);
  setup.stats = f.standardise && (on('cos') || on('l2') || on('rel')) ? (reader.stats() ?? computeStats(reader, dataset.users.length)) : undefined;
  // Each term's own variables, in TERMS order (proj<b>, ms<b>, emb/w), then the --balance unshare adapters below.
  const terms = new Map(active.map((t) => [t.name, t.create(setup)]));
  // --balance unshare: an unshared term reads the shared states / item embeddings through a gradient stop and is
  // computed through its own trainable adapter, so only that adapter (never the encoder or the item embeddings)
  // learns from it. cos, l2 train through their projections proj<b>, ms its adapters ms<b>, emb its emb/w; kd and
  // rel get unshare/kd, unshare/rel: D -> D on the last-block state, created up front in mode unshare only (the
  // variable list and the checkpoint layout never change mid-run; other modes keep theirs). They are residual,
  // h + h·W + b with W = 0, b = 0 at start: identity at start, and AdamW's decay (which acts on them before they
  // get any gradient) pulls them back to identity, not to zero.
  const unshareMode = f.balance === 'unshare';
  const adapters = new Map(active.filter((t) => unshareMode && t.ownAdapter).map((t) => [t.name, { w: setup.variable(`unshare/${t.name}/w`, tf.zeros([D, D])), b: setup.variable(`unshare/${t.name}/b`, tf.zeros([D])) }]));
  const tapped = [...new Set(pairs.map((p) => p.tapped))];
  // Teacher layers a batch looks up: every aligned one for Dcos / Dl2, else only rel's.
  const lookupTapped = on('cos') || on('l2') ? tapped : on('rel') && setup.relPair ? [setup.relPair.tapped] : [];
  const balancer = createBalancer(f.balance as BalanceMode, lambdas as Record<string, number>, { unshareAfter: f.unshareAfter, unshareBelow: f.unshareBelow, log });
  const balanced = Object.keys(lambdas).filter((k) => (lambdas as Record<string, number>)[k]! > 0);
  const coverage = { slots: 0, withTeacher: 0 };

  const extraTerms = (ctx: StepContext): Record<string, tf.Scalar> => {
    const st = stepShared(ctx, setup, lookupTapped, (t) => balancer.isUnshared(t, ctx.step), adapters, active.some((t) => t.readsTeacher));
    if (st.tb) {
      coverage.withTeacher += st.tb.slots.length;
      for (const v of st.valid) coverage.slots += v;
    }
    const out: Record<string, tf.Scalar> = {};
    for (const name of LOSS_ORDER) {
      const v = terms.get(name)?.compute(st);
      if (v) out[name] = v;
    }
    return out;
  };
  const termRecord = (name: TermName) => terms.get(name)?.provenance?.() ?? {};

  return {
    variables: () => vars,
    extraTerms,
    weights: (step) => balancer.weights(step),
    balance:
      f.balance === 'none'
        ? undefined
        : {
            every: f.balanceEvery,
            // An unshared term's gradient on the shared variables is zero: it is no longer measured.
            get terms() {
              const un = balancer.unshared();
              return balanced.filter((k) => !un[k]);
            },
            update: (g, step) => balancer.update(g, step),
          },
    saveState: () => ({ balancer: balancer.state() }),
    restoreState: (st) => balancer.restore((st.balancer ?? {}) as Parameters<typeof balancer.restore>[0]),
    epochInfo() {
      const info = balancer.info();
      if (coverage.slots) info.teacherCoverage = coverage.withTeacher / coverage.slots;
      coverage.slots = coverage.withTeacher = 0;
      return info;
    },
    // Keys in the order config.json has always had them; rel, kd and ranking come from their terms.
    provenance: () => ({
      cache: reader.dir,
      cacheKey: reader.key,
      teacher: { kind: reader.manifest.teacher.kind, model: reader.manifest.teacher.model, layers: reader.layers, hiddenSize: H },
      lambdas,
      align: fmtPairs(pairs, reader.layers),
      // Student blocks in `align` count from 0 (runs without this key counted from 1: upgradeAlignProvenance).
      alignFrom: 0,
      rel: termRecord('rel').rel,
      kd: termRecord('kd').kd,
      ranking: termRecord('kd').ranking,
      standardise: f.standardise,
      balance: f.balance === 'none' ? 'none' : { mode: f.balance, every: f.balanceEvery, ...(unshareMode ? { unshareAfter: f.unshareAfter, unshareBelow: f.unshareBelow } : {}) },
    }),
    upgradeProvenance: upgradeAlignProvenance,
    dispose() {
      for (const v of vars) v.dispose();
      reader.close();
    },
  };
}

/** What every term reads at one step: the batch's valid slots, the teacher rows, the (stopped) student states. */
function stepShared(ctx: StepContext, s: TermSetup, lookupTapped: number[], cut: (t: TermName) => boolean, adapters: Map<TermName, { w: tf.Variable; b: tf.Variable }>, needTeacher: boolean): StepShared {
  const { D } = s;
  const B = ctx.users.length;
  const L = ctx.positions.length / B;
  const targets = Int32Array.from(ctx.targets.dataSync()); // [B * L]
  const valid = new Uint8Array(B * L);
  for (let i = 0; i < B * L; i++) valid[i] = ctx.positions[i]! >= 0 && targets[i]! > 0 ? 1 : 0;
  const flat = (block: number) => tf.reshape(ctx.hidden[block]!, [B * L, D]) as tf.Tensor2D; // [B*L, D]
  // --balance unshare: the balancer decided between steps which terms are unshared at this step; those read the
  // shared states and item embeddings through a gradient stop (the same values, no gradient back).
  const stoppedH = new Map<number, tf.Tensor2D>();
  let stoppedE: tf.Tensor2D | undefined;
  const embFor = (t: TermName): tf.Tensor2D => (cut(t) ? (stoppedE ??= stopGradient(ctx.itemEmbeddings as tf.Tensor2D)) : (ctx.itemEmbeddings as tf.Tensor2D));
  const tb = needTeacher ? lookupTeacherBatch(s.reader, ctx.users, ctx.positions, { tapped: lookupTapped, k: s.on('kd') ? s.K : 0, stats: s.stats }, valid) : undefined;
  return {
    ctx, targets, valid, tb, lookupTapped, cut, embFor,
    slotsT: tb ? tf.tensor1d(tb.slots, 'int32') : undefined,
    flatFor(t, block) {
      if (!cut(t)) return flat(block);
      if (!stoppedH.has(block)) stoppedH.set(block, stopGradient(flat(block)));
      return stoppedH.get(block)!;
    },
    // The student's scores h . E^T (src/student/model/model.ts scores), through the stopped E for an unshared term.
    scoresFor: (t, h) => (cut(t) ? tf.matMul(h, tf.transpose(embFor(t))) : (ctx.scores(h) as tf.Tensor2D)),
    adapted(t, h) {
      const a = adapters.get(t);
      return cut(t) && a ? (tf.add(tf.add(h, tf.matMul(h, a.w)), a.b) as tf.Tensor2D) : h;
    },
  };
}

/**
 * Identity forward, zero gradient backward (tfjs-core has no stopGradient): what flows through it still has its
 * value, nothing upstream of it learns from what is computed downstream.
 */
export const stopGradient = tf.customGrad((x) => ({ value: tf.clone(x as tf.Tensor), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) })) as <T extends tf.Tensor>(x: T) => T;
