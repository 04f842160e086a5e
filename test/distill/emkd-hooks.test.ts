/**
 * EMKD hooks (src/distill/emkd): masking (seeded, never padding), attribute classes, every term of a K = 2
 * student on a tiny real batch recomputed by plain-JS loops from the networks' states, gradients through the
 * trainer's own step (batchTerms) against finite differences, the teacher cache as L5's fixed member, and the
 * composition with the cache-based distillation hooks.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import type { PreparedDataset } from '../../src/data/types.js';
import { buildDistillHooks } from '../../src/distill/index.js';
import { buildEmkdHooks, type EmkdFlags } from '../../src/distill/emkd/hooks.js';
import { encodeWithRows } from '../../src/distill/emkd/networks.js';
import { attributeTable, maskView } from '../../src/distill/emkd/views.js';
import { buildWindows, makeBatch, type Batch } from '../../src/student/model/batches.js';
import type { TrainHooks } from '../../src/student/training/hooks.js';
import { createSasrec, encode, type Sasrec } from '../../src/student/model/model.js';
import { batchTerms, lossSetup } from '../../src/student/training/step.js';
import { modelConfigFrom, trainStudent } from '../../src/student/training/train.js';
import { evaluateEnsemble } from '../../src/distill/emkd/ensemble.js';
import { makeRng, mixSeed } from '../../src/util/rng.js';
import { compareGrads } from '../backend/fd.js';
import { smallDataset, smallOptions } from '../student/fixtures/small.js';
import { asRows, dot, itemLogits, jsAttrCE, jsInfoNCE, jsMaskedCE, jsMutualKL, jsTeacherKL, mean, type M } from './emkd-reference.js';
import { teacherTopK, twoUserDataset, writeTinyCache } from './fixtures.js';

const SEED = 42;
const flags = (o: Partial<EmkdFlags> = {}): EmkdFlags => ({
  emkd: 2, emkdMaskRatio: 0.3, emkdTemperature: 0.5, emkdViews: 2,
  lambdaEmkdMask: 1, lambdaEmkdAttr: 1, lambdaEmkdIntra: 1, lambdaEmkdInter: 1, lambdaEmkdKl: 1, ...o,
});

beforeAll(async () => {
  await initBackend('wasm');
});

describe('maskView', () => {
  // row 0: 6 items; row 1: 4 items left-padded; row 2: 1 item; row 3: all padding
  const inputs = Int32Array.from([1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 9, 10, 0, 0, 0, 0, 0, 11, 0, 0, 0, 0, 0, 0]);
  const B = 4;
  const L = 6;

  it('masks max(1, round(ratio * n)) of each row\'s n items, never padding, and keeps the originals', () => {
    const v = maskView(inputs, B, L, 0.5, makeRng(1), 99);
    const perRow = [0, 0, 0, 0];
    for (const s of v.slots) perRow[Math.floor(s / L)]! += 1;
    expect(perRow).toEqual([3, 2, 1, 0]);
    for (let i = 0; i < v.slots.length; i++) {
      const s = v.slots[i]!;
      expect(inputs[s]).not.toBe(0);
      expect(v.originals[i]).toBe(inputs[s]);
      expect(v.items[s]).toBe(99);
    }
    for (let s = 0; s < B * L; s++) if (!v.slots.includes(s)) expect(v.items[s]).toBe(inputs[s]);
    expect(Array.from(v.slots)).toEqual([...v.slots].sort((a, b) => a - b));
  });

  it('is seeded: the same stream masks the same slots, other streams others; every item can be masked', () => {
    const a = maskView(inputs, B, L, 0.3, makeRng(mixSeed(SEED, 5, 0xe3a5, 0)), 99);
    const b = maskView(inputs, B, L, 0.3, makeRng(mixSeed(SEED, 5, 0xe3a5, 0)), 99);
    expect(Array.from(b.slots)).toEqual(Array.from(a.slots));
    const seen = new Set<number>();
    let differs = false;
    for (let step = 0; step < 200; step++) {
      const v = maskView(inputs, B, L, 0.3, makeRng(mixSeed(SEED, step, 0xe3a5, 0)), 99);
      for (const s of v.slots) seen.add(s);
      differs ||= v.slots.join() !== a.slots.join();
    }
    expect(differs).toBe(true);
    expect([...seen].sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 17]); // exactly the non-padding slots
  });
});

describe('attributeTable', () => {
  it('classes from the items\' genres, uniform over an item\'s classes; none -> undefined', () => {
    const ds = twoUserDataset();
    expect(attributeTable(ds)).toBeUndefined();
    ds.items[1]!.genres = ['Drama', 'Comedy'];
    ds.items[3]!.genres = ['Drama'];
    const t = attributeTable(ds)!;
    expect(t.names).toEqual(['Comedy', 'Drama']);
    expect(Array.from(t.targets.subarray(2, 4))).toEqual([0.5, 0.5]);
    expect(Array.from(t.targets.subarray(6, 8))).toEqual([0, 1]);
    expect(Array.from(t.has)).toEqual([0, 1, 0, 1, 0, 0]);
  });
});

/** A tiny batch of the synthetic dataset: 4 windows of at most 6 steps, one shortened to get padding. */
async function tinySetup() {
  const ds = await smallDataset();
  const opts = smallOptions({ maxLen: 6, dims: 4, ffnDims: 4, blocks: 1, heads: 1, dropout: 0, attnDropout: 0 });
  const ws = buildWindows(ds, 6, 'last').slice(0, 4);
  ws[1] = { ...ws[1]!, start: ws[1]!.start + 3, length: ws[1]!.length - 3 };
  const batch = makeBatch(ds, ws);
  const model = createSasrec(modelConfigFrom(ds, opts), 7);
  return { ds, opts, batch, model };
}

/** d f / d vars (zeros for a variable f does not reach), as float64 arrays. */
function gradsOf(f: () => tf.Scalar, vars: tf.Variable[]): Float64Array[] {
  const gs = tf.tidy(() => {
    const { value, grads } = tf.variableGrads(f, vars);
    value.dispose();
    return vars.map((v) => tf.keep(grads[v.name] ?? tf.zerosLike(v)));
  });
  const out = gs.map((g) => Float64Array.from(g.dataSync()));
  gs.forEach((g) => g.dispose());
  return out;
}

const termsAt = (model: Sasrec, batch: Batch, ds: PreparedDataset, hooks: TrainHooks, step: number) =>
  batchTerms(model, batch, lossSetup(ds, 'ce', 0, 'uniform'), makeRng(1), step, hooks, { withCe: false });

describe('EMKD terms of a K = 2 student on a tiny batch', () => {
  it('each term equals its plain-JS recomputation from the networks\' states', async () => {
    const { ds, opts, batch, model } = await tinySetup();
    const f = flags();
    const h = buildEmkdHooks(f, ds, modelConfigFrom(ds, opts), SEED, { log: () => {} });
    const net2 = h.networks.extra[0]!;
    const [mask1, mask2] = h.networks.maskRows;
    const step = 5;
    const got = tf.tidy(() => Object.fromEntries(Object.entries(termsAt(model, batch, ds, h, step)).map(([k, v]) => [k, v.dataSync()[0]!])));
    expect(Object.keys(got).sort()).toEqual(['emkd_attr', 'emkd_ce', 'emkd_inter', 'emkd_intra', 'emkd_kl', 'emkd_mask']);

    const { B, L, inputs, targets } = batch;
    const N = ds.items.length - 1;
    const T = f.emkdTemperature;
    const E = [asRows(model.itemEmb), asRows(net2.itemEmb)];
    const state = (m: Sasrec, items: Int32Array, row?: tf.Tensor) => tf.tidy(() => asRows(encodeWithRows(m, items, B, L, undefined, row).at(-1)!));
    const orig = [state(model, inputs), state(net2, inputs)];
    expect(orig[0]).toEqual(tf.tidy(() => asRows(encode(model, inputs, B, L).at(-1)!)));
    const views = [0, 1].map((v) => maskView(inputs, B, L, f.emkdMaskRatio, makeRng(mixSeed(SEED, step, 0xe3a5, v)), N + 1));
    const masked = views.map((v) => [state(model, v.items, mask1), state(net2, v.items, mask2)]);
    const vs = [...targets.keys()].filter((s) => targets[s]! > 0);
    const last = (rs: M) => Array.from({ length: B }, (_, b) => rs[b * L + L - 1]!);

    expect(got.emkd_ce).toBeCloseTo(jsMaskedCE(vs.map((s) => orig[1]![s]!), E[1]!, vs.map((s) => targets[s]!)), 4);
    let l1 = 0;
    for (const n of [0, 1]) l1 += mean(views.map((v, i) => jsMaskedCE(Array.from(v.slots, (s) => masked[i]![n]![s]!), E[n]!, Array.from(v.originals))));
    expect(got.emkd_mask).toBeCloseTo(l1, 4);
    const attrs = attributeTable(ds)!;
    const A = attrs.names.length;
    let l2 = 0;
    h.networks.attrHeads.forEach((head, n) => {
      const W = asRows(head.w);
      const bias = asRows(head.b)[0]!;
      const rows = vs.filter((s) => attrs.has[targets[s]!]);
      const logits = rows.map((s) => bias.map((bb, a) => bb + orig[n]![s]!.reduce((acc, x, d) => acc + x * W[d]![a]!, 0)));
      l2 += jsAttrCE(logits, rows.map((s) => Array.from(attrs.targets.subarray(targets[s]! * A, (targets[s]! + 1) * A))));
    });
    expect(got.emkd_attr).toBeCloseTo(l2, 4);
    let l3 = 0;
    for (const n of [0, 1]) l3 += mean(masked.map((mv) => jsInfoNCE(last(orig[n]!), last(mv[n]!), T)));
    expect(got.emkd_intra).toBeCloseTo(l3, 4);
    const l4 = mean(masked.map((mv) => jsInfoNCE(last(orig[0]!), last(mv[1]!), T))) + mean(masked.map((mv) => jsInfoNCE(last(orig[1]!), last(mv[0]!), T)));
    expect(got.emkd_inter).toBeCloseTo(l4, 4);
    const logits = [0, 1].map((n) => vs.map((s) => itemLogits(orig[n]![s]!, E[n]!)));
    expect(got.emkd_kl).toBeCloseTo(jsMutualKL(logits[0]!, logits[1]!, T), 5);
    expect(h.weights(0)).toEqual({ emkd_ce: 1, emkd_mask: 1, emkd_attr: 1, emkd_intra: 1, emkd_inter: 1, emkd_kl: 1 });
    h.dispose?.();
  });

  it('a recomputed step gives the same terms; another step masks (and so scores) differently', async () => {
    const { ds, opts, batch, model } = await tinySetup();
    const h = buildEmkdHooks(flags({ lambdaEmkdKl: 0, lambdaEmkdAttr: 0 }), ds, modelConfigFrom(ds, opts), SEED, { log: () => {} });
    const at = (step: number) => tf.tidy(() => Object.values(termsAt(model, batch, ds, h, step)).map((t) => t.dataSync()[0]!));
    expect(at(3)).toEqual(at(3));
    expect(at(4)).not.toEqual(at(3));
    h.dispose?.();
  });

  it('gradients through the trainer\'s step match finite differences (mask rows, network 2, an attribute head)', async () => {
    const { ds, opts, batch, model } = await tinySetup();
    const h = buildEmkdHooks(flags({ lambdaEmkdKl: 0 }), ds, modelConfigFrom(ds, opts), SEED, { log: () => {} });
    const net2 = h.networks.extra[0]!;
    const vars = [...h.networks.maskRows, h.networks.attrHeads[1]!.b, net2.lnfg];
    const names = ['emkd_ce', 'emkd_mask', 'emkd_attr', 'emkd_intra', 'emkd_inter'];
    const values = () => tf.tidy(() => Object.fromEntries(Object.entries(termsAt(model, batch, ds, h, 2)).map(([k, v]) => [k, v.dataSync()[0]!])));
    const eps = 3e-3;
    const numeric: Record<string, Float64Array[]> = Object.fromEntries(names.map((n) => [n, vars.map((v) => new Float64Array(v.size))]));
    vars.forEach((v, i) => {
      const base = Float32Array.from(v.dataSync());
      for (let j = 0; j < base.length; j++) {
        const at = (x: number) => {
          const w = Float32Array.from(base);
          w[j] = x;
          v.assign(tf.tensor(w, v.shape));
          return values();
        };
        const xp = Math.fround(base[j]! + eps);
        const xm = Math.fround(base[j]! - eps);
        const [p, m] = [at(xp), at(xm)];
        for (const n of names) numeric[n]![i]![j] = (p[n]! - m[n]!) / (xp - xm);
      }
      v.assign(tf.tensor(base, v.shape));
    });
    for (const n of names) {
      const analytic = gradsOf(() => termsAt(model, batch, ds, h, 2)[n]!, vars);
      const { worst, where } = compareGrads(analytic, numeric[n]!);
      expect(worst, `${n}: ${where}`).toBeLessThan(3e-2);
    }
    // Which variables each term reaches: L2 only the heads (and the encoders), emkd_ce never the mask rows.
    const g = tf.tidy(() => tf.variableGrads(() => termsAt(model, batch, ds, h, 2).emkd_ce!, vars).grads);
    expect(g[vars[0]!.name]).toBeUndefined();
    h.dispose?.();
  });
});

describe('the teacher cache as L5\'s fixed member', () => {
  const ds = twoUserDataset();
  let dir = '';
  beforeAll(() => {
    dir = writeTinyCache(ds);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  // dims 4: a 2-wide LayerNorm is a sign function (its finite differences jump where the analytic gradient is ~0)
  const student = { dims: 4, blocks: 1, maxLen: 4, heads: 1, ffnDims: 4, dropout: 0, attnDropout: 0 };
  // user 0 at positions 0..3 (targets 2..5); user 1 left-padded at positions 0, 1 (targets 1, 2)
  const batch: Batch = { B: 2, L: 4, users: Int32Array.from([0, 1]), inputs: Int32Array.from([1, 2, 3, 4, 0, 0, 3, 1]), targets: Int32Array.from([2, 3, 4, 5, 0, 0, 1, 2]), positions: Int32Array.from([0, 1, 2, 3, -1, -1, 0, 1]) };
  const withTeacher = [[1, 0, 1], [2, 0, 2], [3, 0, 3], [6, 1, 0], [7, 1, 1]] as const; // [slot, user, position]

  it('K = 2: emkd_kl = mutual KL + KL from the teacher to each network; K = 1: the teacher alone, gradient checked', async () => {
    for (const K of [2, 1]) {
      const model = createSasrec({ ...student, numItems: 5 }, 3);
      const hooks = await buildDistillHooks({ ...student, cache: dir, emkd: K, lambdaEmkdAttr: 0, lambdaEmkdMask: 0, lambdaEmkdIntra: 0, lambdaEmkdInter: 0, emkdTemperature: 2, seed: SEED }, ds, { dims: 4, blocks: 1 });
      const vars = hooks!.variables();
      const got = tf.tidy(() => termsAt(model, batch, ds, hooks!, 0).emkd_kl!.dataSync()[0]!);
      const nets: Sasrec[] = [model];
      if (K === 2) nets.push({ ...model, ...netFromVars(model, vars) });
      const st = nets.map((m) => tf.tidy(() => asRows(encode(m, batch.inputs, 2, 4).at(-1)!)));
      const E = nets.map((m) => asRows(m.itemEmb));
      let want = 0;
      nets.forEach((_, n) => {
        const s = withTeacher.map(([slot, u, p]) => teacherTopK(u, p).map((i) => dot(st[n]![slot]!, E[n]![i]!)));
        want += jsTeacherKL(s, withTeacher.map(() => [0.6, 0.3]), 2, 1);
      });
      if (K === 2) {
        const vs = [0, 1, 2, 3, 6, 7];
        want += jsMutualKL(vs.map((s) => itemLogits(st[0]![s]!, E[0]!)), vs.map((s) => itemLogits(st[1]![s]!, E[1]!)), 2);
      }
      expect(got).toBeCloseTo(want, 5);
      if (K === 1) {
        const v = model.itemEmb;
        const value = () => tf.tidy(() => termsAt(model, batch, ds, hooks!, 0).emkd_kl!.dataSync()[0]!);
        const base = Float32Array.from(v.dataSync());
        const numeric = new Float64Array(base.length);
        for (let j = 4; j < base.length; j++) { // row 0 (padding) is never a teacher item
          const at = (x: number) => {
            const w = Float32Array.from(base);
            w[j] = x;
            v.assign(tf.tensor(w, v.shape));
            return value();
          };
          const [xp, xm] = [Math.fround(base[j]! + 3e-3), Math.fround(base[j]! - 3e-3)];
          numeric[j] = (at(xp) - at(xm)) / (xp - xm);
        }
        v.assign(tf.tensor(base, v.shape));
        const [analytic] = gradsOf(() => termsAt(model, batch, ds, hooks!, 0).emkd_kl!, [v]) as [Float64Array];
        analytic.fill(0, 0, 4);
        const { worst, where } = compareGrads([analytic], [numeric]);
        expect(worst, where).toBeLessThan(3e-2);
      }
      expect(hooks!.provenance?.()).toMatchObject({ emkd: { K, teacherMember: { k: 2, cacheTemperature: 1 }, attributes: null, firstHookVariable: 0 } });
      hooks!.dispose?.();
      for (const x of model.params.values()) x.dispose();
    }
  });

  it('without attributes L2 is skipped with one message', () => {
    const logs: string[] = [];
    const h = buildEmkdHooks(flags(), ds, { ...student, numItems: 5 }, SEED, { log: (l) => logs.push(l) });
    expect(logs).toEqual([expect.stringMatching(/has no item attributes.*L2 \(--lambda-emkd-attr 1\) is skipped/)]);
    expect(h.weights(0)).not.toHaveProperty('emkd_attr');
    expect(h.networks.attrHeads).toEqual([]);
    h.dispose?.();
  });

  it('composes with the distillation hooks: their variables first, EMKD\'s located by the provenance', async () => {
    const hooks = (await buildDistillHooks({ ...student, cache: dir, lambdaCos: 1, emkd: 3, lambdaEmkdAttr: 0, lambdaEmkdMask: 1, seed: SEED }, ds, { dims: 4, blocks: 1 }))!;
    const plain = (await buildDistillHooks({ ...student, cache: dir, lambdaCos: 1, seed: SEED }, ds, { dims: 4, blocks: 1 }))!;
    const nDistill = plain.variables().length;
    const prov = hooks.provenance!() as { emkd: { firstHookVariable: number; layout: { variables: number; networkParams: string[] } }; lambdas: unknown };
    expect(prov.lambdas).toEqual({ cos: 1 });
    expect(prov.emkd.firstHookVariable).toBe(nDistill);
    expect(hooks.variables().length).toBe(nDistill + prov.emkd.layout.variables);
    expect(prov.emkd.layout.variables).toBe(2 * prov.emkd.layout.networkParams.length + 3); // 2 networks + 3 mask rows
    expect(hooks.weights(0)).toMatchObject({ cos: 1, emkd_ce: 1, emkd_mask: 1, emkd_kl: 0.001 });
    const model = createSasrec({ ...student, numItems: 5 }, 3);
    const names = tf.tidy(() => Object.keys(termsAt(model, batch, ds, hooks, 0)).sort());
    expect(names).toEqual(['cos', 'emkd_ce', 'emkd_inter', 'emkd_intra', 'emkd_kl', 'emkd_mask']);
    hooks.dispose?.();
    plain.dispose?.();
  });

  it('refuses options without the student\'s model config, and bad flags', async () => {
    await expect(buildDistillHooks({ emkd: 2, seed: 1 }, ds, { dims: 4, blocks: 1 })).rejects.toThrow(/lack maxLen, heads, ffnDims, dropout, attnDropout/);
    await expect(buildDistillHooks({ ...student, emkd: 2, emkdMaskRatio: 0 }, ds, { dims: 4, blocks: 1 })).rejects.toThrow(/--emkd-mask-ratio must be in \(0, 1\]/);
    await expect(buildDistillHooks({ ...student, emkd: -1 }, ds, { dims: 4, blocks: 1 })).rejects.toThrow(/--emkd must be an integer/);
    await expect(buildDistillHooks({ ...student, emkd: 2, lambdaEmkdKl: -1 }, ds, { dims: 4, blocks: 1 })).rejects.toThrow(/--lambda-emkd-kl must be >= 0/);
    expect(await buildDistillHooks({ ...student, emkd: 0 }, ds, { dims: 4, blocks: 1 })).toBeUndefined();
  });
});

describe('an EMKD run', () => {
  it('K = 2 with two views: training and the ensemble evaluation leave no tensor and no byte behind', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'recdistill-emkd-leaks-'));
    try {
      const ds = await smallDataset();
      const opts = smallOptions({ epochs: 1, blocks: 2 });
      const before = tf.memory();
      const hooks = await buildDistillHooks({ ...opts, emkd: 2, emkdViews: 2, seed: 42 }, ds, { dims: opts.dims, blocks: opts.blocks });
      await trainStudent({ ds, opts, outDir: join(tmp, 'run'), backend: 'wasm', hooks, log: () => {} });
      hooks?.dispose?.();
      const r = await evaluateEnsemble(join(tmp, 'run'), ds);
      expect(r.members).toHaveLength(2);
      const after = tf.memory();
      expect(after.numTensors - before.numTensors).toBe(0);
      expect(after.numBytes - before.numBytes).toBe(0);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }, 900_000);
});

/** Network 2 of a composed K = 2 hook set (no distillation variables): its parameters are the first hook variables. */
function netFromVars(model: Sasrec, vars: tf.Variable[]): Partial<Sasrec> {
  const names = [...model.params.keys()];
  const byName = new Map(names.map((n, i) => [n, vars[i]!]));
  return {
    itemEmb: byName.get('item_emb')!,
    posEmb: byName.get('pos_emb')!,
    lnfg: byName.get('final_ln.g')!,
    lnfb: byName.get('final_ln.b')!,
    blocks: model.blocks.map((_, b) => {
      const p = (n: string) => byName.get(`block${b}.${n}`)!;
      return { ln1g: p('ln1.g'), ln1b: p('ln1.b'), wqkv: p('attn.wqkv'), bqkv: p('attn.bqkv'), wo: p('attn.wo'), bo: p('attn.bo'), ln2g: p('ln2.g'), ln2b: p('ln2.b'), w1: p('ffn.w1'), b1: p('ffn.b1'), w2: p('ffn.w2'), b2: p('ffn.b2') };
    }),
    params: byName,
  };
}
