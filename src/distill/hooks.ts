import * as tf from '@tensorflow/tfjs-core';
import { readManifest } from '../cache/format.js';
import { openCache, type CacheReader } from '../cache/reader.js';
import { resolveOptions } from '../config/options.js';
import type { PreparedDataset } from '../data/types.js';
import { RecdistillError } from '../errors.js';
import type { HooksFactory, StepContext, TrainHooks } from '../student/hooks.js';
import { parseAlign, type AlignPair } from './align.js';
import { createBalancer, type BalanceMode } from './balance.js';
import { itemCrossEntropy, cosineDistance, embeddingDistance, klTopK, l2Distance, rankingLoss, rankingWeights, relationRows, rkdAngle, rkdDistance, RKD_MAX_ROWS, topKMembership } from './losses.js';
import { activeLambdas, distillOptions, type DistillFlags, type TermName } from './options.js';
import { computeStats, lookupTeacherBatch } from './teacher-batch.js';
import { makeRng, mixSeed } from '../util/rng.js';
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
export function shardsInBudget(dir: string, budgetMb: number): number {
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
  const pairs = parseAlign(f.align, model.blocks, reader.layers.length);
  const msPairs = pairs.filter((p) => p.block < model.blocks - 1);
  if (on('ms') && msPairs.length === 0) {
    throw new RecdistillError('E_USAGE', `--lambda-ms needs an aligned intermediate student block (the student has ${model.blocks} block(s); aligned: ${fmtPairs(pairs, reader)}); use --align or more --blocks.`);
  }
  // Relational distillation compares the last block (the state the student scores with) with the teacher layer
  // the alignment gives it (auto: the last tapped layer), the same teacher rows Dcos / Dl2 use for that block.
  const relPair = pairs.find((p) => p.block === model.blocks - 1);
  if (on('rel') && !relPair) {
    throw new RecdistillError('E_USAGE', `--lambda-rel needs the student's last block (${model.blocks}) aligned with a teacher layer (aligned: ${fmtPairs(pairs, reader)}); add ${model.blocks}:-1 to --align.`);
  }
  const K = f.kdTopK > 0 ? f.kdTopK : reader.k;
  if (on('kd') && !reader.hasSoftLabels) throw new RecdistillError('E_INPUT', `teacher cache ${reader.dir} has no soft labels; --lambda-kd needs them (finish teacher:cache).`);
  if (on('kd') && K > reader.k) throw new RecdistillError('E_USAGE', `--kd-top-k ${K} exceeds the cached top-K (${reader.k}) of ${reader.dir}.`);
  const stats = f.standardise && (on('cos') || on('l2') || on('rel')) ? (reader.stats() ?? computeStats(reader, dataset.users.length)) : undefined;
  const teacherItems = on('emb') ? centredRows(reader.itemEmbeddings(), H) : undefined; // [N+1, H]

  const id = ++instance;
  const vars: tf.Variable[] = [];
  const mk = (name: string, init: tf.Tensor) => {
    const v = tf.variable(init, true, `distill${id}/${name}`);
    init.dispose();
    vars.push(v);
    return v;
  };
  // Hidden projections D -> H, one per aligned pair (shared by Dcos and Dl2). [D, H], [H]
  const proj = on('cos') || on('l2') ? pairs.map((p) => ({ w: mk(`proj${p.block + 1}/w`, tf.randomNormal([D, H], 0, 1 / Math.sqrt(D), 'float32', seed + 11 * (p.block + 1))), b: mk(`proj${p.block + 1}/b`, tf.zeros([H])) })) : [];
  // Multi-supervision adapters D -> D, identity at start (the intermediate state scored by the item embeddings).
  const adapters = on('ms') ? msPairs.map((p) => ({ w: mk(`ms${p.block + 1}/w`, tf.eye(D)), b: mk(`ms${p.block + 1}/b`, tf.zeros([D])) })) : [];
  // Teacher item text embedding -> student item space. [H, D]
  const embW = on('emb') ? mk('emb/w', tf.randomNormal([H, D], 0, 1 / Math.sqrt(H), 'float32', seed + 7)) : undefined;
  // --balance unshare: an unshared term reads the shared states / item embeddings through a gradient stop and is
  // computed through its own trainable adapter, so only that adapter (never the encoder or the item embeddings)
  // learns from it. Which adapter each term uses:
  //   cos, l2: the D -> H projections proj<b> (trained by cos and l2 only, never by CE);
  //   ms:      its adapters ms<b> (D -> D, identity at start);
  //   emb:     emb/w (teacher item space -> student item space; the student's item rows are stopped);
  //   kd, rel: unshare/kd, unshare/rel below, D -> D on the last-block state, created up front in mode unshare
  //            only (the variable list and the checkpoint layout never change mid-run; other modes keep theirs).
  // The new adapters are residual, h + h·W + b with W = 0, b = 0 at start: identity at start, and AdamW's decay
  // (which acts on them before they get any gradient) pulls them back to identity, not to zero.
  const unshareMode = f.balance === 'unshare';
  const ownAdapter = (t: TermName) => (unshareMode && on(t) ? { w: mk(`unshare/${t}/w`, tf.zeros([D, D])), b: mk(`unshare/${t}/b`, tf.zeros([D])) } : undefined);
  const kdAdapter = ownAdapter('kd');
  const relAdapter = ownAdapter('rel');
  const residual = (h: tf.Tensor2D, a: { w: tf.Variable; b: tf.Variable }) => tf.add(tf.add(h, tf.matMul(h, a.w)), a.b) as tf.Tensor2D;
  const tapped = [...new Set(pairs.map((p) => p.tapped))];
  // Teacher layers a batch looks up: every aligned one for Dcos / Dl2, else only rel's.
  const lookupTapped = proj.length ? tapped : on('rel') && relPair ? [relPair.tapped] : [];
  const balancer = createBalancer(f.balance as BalanceMode, lambdas as Record<string, number>, { unshareAfter: f.unshareAfter, unshareBelow: f.unshareBelow, log });
  const balanced = Object.keys(lambdas).filter((k) => (lambdas as Record<string, number>)[k]! > 0);
  const coverage = { slots: 0, withTeacher: 0 };

  const extraTerms = (ctx: StepContext): Record<string, tf.Scalar> => {
    const B = ctx.users.length;
    const L = ctx.positions.length / B;
    const targets = Int32Array.from(ctx.targets.dataSync()); // [B * L]
    const valid = new Uint8Array(B * L);
    for (let s = 0; s < B * L; s++) valid[s] = ctx.positions[s]! >= 0 && targets[s]! > 0 ? 1 : 0;
    const flat = (block: number) => tf.reshape(ctx.hidden[block]!, [B * L, D]) as tf.Tensor2D; // [B*L, D]
    // --balance unshare: the balancer decided between steps which terms are unshared at this step; those read the
    // shared states and item embeddings through a gradient stop (the same values, no gradient back).
    const cut = (t: TermName) => balancer.isUnshared(t, ctx.step);
    const stoppedH = new Map<number, tf.Tensor2D>();
    const flatFor = (t: TermName, block: number): tf.Tensor2D => {
      if (!cut(t)) return flat(block);
      if (!stoppedH.has(block)) stoppedH.set(block, stopGradient(flat(block)));
      return stoppedH.get(block)!;
    };
    let stoppedE: tf.Tensor2D | undefined;
    const embFor = (t: TermName): tf.Tensor2D => (cut(t) ? (stoppedE ??= stopGradient(ctx.itemEmbeddings as tf.Tensor2D)) : (ctx.itemEmbeddings as tf.Tensor2D));
    // The student's scores h . E^T (src/student/model.ts scores), through the stopped E for an unshared term.
    const scoresFor = (t: TermName, h: tf.Tensor2D): tf.Tensor2D => (cut(t) ? tf.matMul(h, tf.transpose(embFor(t))) : (ctx.scores(h) as tf.Tensor2D));
    const out: Partial<Record<TermName, tf.Scalar>> = {};
    const needTeacher = on('cos') || on('l2') || on('kd') || on('rel');
    const tb = needTeacher ? lookupTeacherBatch(reader, ctx.users, ctx.positions, { tapped: lookupTapped, k: on('kd') ? K : 0, stats }, valid) : undefined;
    if (tb) {
      coverage.withTeacher += tb.slots.length;
      for (const v of valid) coverage.slots += v;
    }
    const M = tb?.slots.length ?? 0;
    const slotsT = tb ? tf.tensor1d(tb.slots, 'int32') : undefined;
    if (tb && slotsT && proj.length) {
      let cos: tf.Scalar = tf.scalar(0);
      let l2: tf.Scalar = tf.scalar(0);
      pairs.forEach((p, i) => {
        const projected = new Map<boolean, tf.Tensor2D>(); // by cut: cos and l2 share it unless one is unshared
        const psFor = (t: TermName): tf.Tensor2D => {
          if (!projected.has(cut(t))) {
            const hs = tf.gather(flatFor(t, p.block), slotsT); // [M, D]
            projected.set(cut(t), tf.add(tf.matMul(hs, proj[i]!.w), proj[i]!.b) as tf.Tensor2D); // [M, H]
          }
          return projected.get(cut(t))!;
        };
        const ht = tf.tensor2d(tb.hidden[tapped.indexOf(p.tapped)]!, [M, H]); // [M, H]
        if (on('cos')) cos = tf.add(cos, cosineDistance(psFor('cos'), ht));
        if (on('l2')) l2 = tf.add(l2, l2Distance(psFor('l2'), ht));
      });
      if (on('cos')) out.cos = connect(tf.div(cos, pairs.length), proj.map((p) => p.w));
      if (on('l2')) out.l2 = connect(tf.div(l2, pairs.length), proj.map((p) => p.w));
    }
    if (on('ms')) {
      const vs = indicesOf(valid);
      const vsT = tf.tensor1d(vs, 'int32');
      const tgt = tf.tensor1d(Int32Array.from(vs, (s) => targets[s]!), 'int32');
      let ms: tf.Scalar = tf.scalar(0);
      msPairs.forEach((p, i) => {
        const a = tf.add(tf.matMul(tf.gather(flatFor('ms', p.block), vsT), adapters[i]!.w), adapters[i]!.b) as tf.Tensor2D; // [Mv, D]
        ms = tf.add(ms, itemCrossEntropy(scoresFor('ms', a), tgt)); // scores: [Mv, N+1], padding column excluded
      });
      out.ms = connect(tf.div(ms, msPairs.length), adapters.map((a) => a.w));
    }
    if (on('kd') && tb && slotsT) {
      const E = embFor('kd');
      if (M === 0) out.kd = tf.mul(tf.sum(E), 0) as tf.Scalar;
      else {
        const h = tf.gather(flatFor('kd', model.blocks - 1), slotsT) as tf.Tensor2D; // [M, D]
        out.kd = kdTerm(cut('kd') ? residual(h, kdAdapter!) : h, E, (x) => scoresFor('kd', x), tb.topkIndex!, tb.topkProb!, M);
      }
    }
    if (on('rel') && tb && relPair) {
      const last = flatFor('rel', model.blocks - 1);
      out.rel = relTerm(ctx, cut('rel') ? residual(last, relAdapter!) : last, tb.slots, tb.hidden[lookupTapped.indexOf(relPair.tapped)]!);
    }
    if (on('emb') && teacherItems && embW) {
      const ids = batchItems(dataset, ctx.users, ctx.positions, targets);
      const es = tf.gather(embFor('emb'), tf.tensor1d(ids, 'int32')) as tf.Tensor2D; // [n, D]
      const et = tf.tensor2d(gatherRowsJs(teacherItems, H, ids), [ids.length, H]); // [n, H]
      out.emb = embeddingDistance(es, tf.matMul(et, embW));
    }
    return out as Record<string, tf.Scalar>;
  };

  /**
   * λrel's term: wd * RKD distance + wa * RKD angle between the last-block states at the slots with a teacher row
   * and those teacher rows. More than RKD_MAX_ROWS (64) such rows: a uniform subsample, drawn in JS before any
   * teacher row becomes a tensor, from a generator seeded by the run seed and the step (the trainer's RNG is not
   * exposed to hooks; this one is just as reproducible, and a forward pass recomputed within the step for
   * gradient balancing draws the same rows). Both terms see the same rows.
   */
  const relTerm = (ctx: StepContext, last: tf.Tensor2D, slots: Int32Array, teacher: Float32Array): tf.Scalar => {
    const rows = relationRows(slots.length, RKD_MAX_ROWS, makeRng(mixSeed(seed, ctx.step, 0x4e1)));
    const pick = rows ?? Int32Array.from(slots.keys());
    if (pick.length < 2) return tf.mul(tf.sum(last), 0) as tf.Scalar; // nothing to relate; keeps a gradient path
    const hs = tf.gather(last, tf.tensor1d(Int32Array.from(pick, (r) => slots[r]!), 'int32')) as tf.Tensor2D; // [m, D]
    const ht = tf.tensor2d(gatherRowsJs(teacher, H, pick), [pick.length, H]); // [m, H]
    let rel: tf.Scalar = tf.mul(tf.sum(hs), 0) as tf.Scalar;
    if (f.relDistance > 0) rel = tf.add(rel, tf.mul(rkdDistance(hs, ht), f.relDistance));
    if (f.relAngle > 0) rel = tf.add(rel, tf.mul(rkdAngle(hs, ht), f.relAngle));
    return rel;
  };

  // Student logits at the teacher's top-K, [M, K]: h . E[i_k]. The student scores are h . E^T (the output layer
  // shares the item embeddings, src/student/hooks.ts), so gathering K rows of E costs M*K*D instead of the
  // M*(N+1)*D of full scores, and its gradient is a K-row scatter instead of a dense [M, N+1] one.
  const logitsAtK = (E: tf.Tensor2D, h: tf.Tensor2D, idxT: tf.Tensor2D, M: number): tf.Tensor2D => {
    const eK = tf.reshape(tf.gather(E, tf.reshape(idxT, [M * K])), [M, K, D]); // [M, K, D]
    return tf.sum(tf.mul(tf.expandDims(h, 1), eK), -1) as tf.Tensor2D; // [M, K]
  };

  // E: the item embeddings (stopped when kd is unshared), scoresOf: the student's full scores through that E.
  const kdTerm = (h: tf.Tensor2D, E: tf.Tensor2D, scoresOf: (h: tf.Tensor2D) => tf.Tensor2D, idx: Int32Array, prob: Float32Array, M: number): tf.Scalar => {
    const idxT = tf.tensor2d(idx, [M, K], 'int32');
    const sK = logitsAtK(E, h, idxT, M); // [M, K]
    if (f.kd === 'kl') return klTopK(sK, tf.tensor2d(prob, [M, K]), f.kdTemperature, reader.temperature);
    // Ranking (DLLM2Rec) needs the full softmax: log p(i_k) = s_k - logsumexp(s) with padding item 0 masked out;
    // agreement with the student's own top-K is a constant weight (no gradient through topk).
    const scores = scoresOf(h); // [M, N+1]
    const masked = tf.add(scores, tf.mul(tf.oneHot(tf.tensor1d([0], 'int32'), scores.shape[1]), -1e9)) as tf.Tensor2D;
    const studentTop = tf.topk(masked, K).indices.dataSync() as Int32Array;
    const w = rankingWeights(prob, topKMembership(studentTop, K, idx, K), K, {
      lambda: f.rankLambda,
      gammaPosition: f.gammaPosition,
      gammaConfidence: f.gammaConfidence,
      gammaConsistency: f.gammaConsistency,
    });
    const logp = tf.sub(sK, tf.logSumExp(masked, -1, true)) as tf.Tensor2D; // [M, K]
    return rankingLoss(logp, tf.tensor2d(w, [M, K]));
  };

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
    provenance: () => ({
      cache: reader.dir,
      cacheKey: reader.key,
      teacher: { kind: reader.manifest.teacher.kind, model: reader.manifest.teacher.model, layers: reader.layers, hiddenSize: H },
      lambdas,
      align: fmtPairs(pairs, reader),
      rel: on('rel') ? { distance: f.relDistance, angle: f.relAngle, maxRows: RKD_MAX_ROWS, align: `${relPair!.block + 1}:${reader.layers[relPair!.tapped]}` } : undefined,
      kd: on('kd') ? { loss: f.kd, k: K, temperature: f.kd === 'kl' ? f.kdTemperature : undefined, cacheTemperature: reader.temperature } : undefined,
      ranking: on('kd') && f.kd === 'ranking' ? { lambda: f.rankLambda, gammaPosition: f.gammaPosition, gammaConfidence: f.gammaConfidence, gammaConsistency: f.gammaConsistency } : undefined,
      standardise: f.standardise,
      balance: f.balance === 'none' ? 'none' : { mode: f.balance, every: f.balanceEvery, ...(unshareMode ? { unshareAfter: f.unshareAfter, unshareBelow: f.unshareBelow } : {}) },
    }),
    dispose() {
      for (const v of vars) v.dispose();
      reader.close();
    },
  };
}

/**
 * Identity forward, zero gradient backward (tfjs-core has no stopGradient): what flows through it still has its
 * value, nothing upstream of it learns from what is computed downstream.
 */
export const stopGradient = tf.customGrad((x) => ({ value: tf.clone(x as tf.Tensor), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) })) as <T extends tf.Tensor>(x: T) => T;

/** A zero-batch term still has to touch its variables (the optimiser wants a path to every variable). */
function connect(term: tf.Tensor, ws: tf.Variable[]): tf.Scalar {
  let t = term as tf.Scalar;
  for (const w of ws) t = tf.add(t, tf.mul(tf.sum(w), 0));
  return t;
}

function indicesOf(mask: Uint8Array): Int32Array {
  const out: number[] = [];
  for (let s = 0; s < mask.length; s++) if (mask[s]) out.push(s);
  return Int32Array.from(out);
}

/** Unique item ids in the batch (inputs and targets), ascending, padding excluded. */
export function batchItems(dataset: PreparedDataset, users: Int32Array, positions: Int32Array, targets: Int32Array): Int32Array {
  const B = users.length;
  const L = positions.length / B;
  const set = new Set<number>();
  for (let b = 0; b < B; b++) {
    const seq = dataset.users[users[b]!]!.items;
    for (let l = 0; l < L; l++) {
      const p = positions[b * L + l]!;
      if (p >= 0) set.add(seq[p]!);
      const t = targets[b * L + l]!;
      if (t > 0) set.add(t);
    }
  }
  set.delete(0);
  return Int32Array.from([...set].sort((a, b) => a - b));
}

function gatherRowsJs(m: Float32Array, width: number, ids: Int32Array): Float32Array {
  const out = new Float32Array(ids.length * width);
  ids.forEach((id, i) => out.set(m.subarray(id * width, (id + 1) * width), i * width));
  return out;
}

/** Subtract the mean over rows 1..N (LLM embeddings share a large common direction that cosine would reward). */
function centredRows(m: Float32Array, width: number): Float32Array {
  const n = m.length / width - 1;
  const mean = new Float64Array(width);
  for (let i = 1; i <= n; i++) for (let d = 0; d < width; d++) mean[d]! += m[i * width + d]! / n;
  const out = new Float32Array(m.length);
  for (let i = 1; i <= n; i++) for (let d = 0; d < width; d++) out[i * width + d] = m[i * width + d]! - mean[d]!;
  return out;
}

function fmtPairs(pairs: AlignPair[], reader: CacheReader): string {
  return pairs.map((p) => `${p.block + 1}:${reader.layers[p.tapped]}`).join(',');
}
