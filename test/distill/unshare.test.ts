/**
 * --balance unshare: the rule (N consecutive negative EMA cosines, not before), its state, and the gradient cut:
 * once a term is unshared, the total loss's gradient on the shared variables (item embeddings, the encoder's
 * states) is exactly what it is without that term, while the term's own adapter still learns from it.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/backend/index.js';
import { createBalancer } from '../../src/distill/balance.js';
import { buildDistillHooks } from '../../src/distill/index.js';
import { stopGradient } from '../../src/distill/hooks.js';
import { combine } from '../../src/student/training/step.js';
import type { StepContext, TrainHooks } from '../../src/student/training/hooks.js';
import { twoUserDataset, writeTinyCache } from './fixtures.js';

const ds = twoUserDataset();
let dir = '';
beforeAll(async () => {
  await initBackend('cpu');
  dir = writeTinyCache(ds);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Gradients whose cosine with ce = [1, 0] is `c` (unit vectors). */
const at = (c: Record<string, number>) => {
  const g: Record<string, tf.Tensor[]> = { ce: [tf.tensor1d([1, 0])] };
  for (const [k, v] of Object.entries(c)) g[k] = [tf.tensor1d([v, Math.sqrt(1 - v * v)])];
  return g;
};

describe('unshare rule', () => {
  it('unshares a term after exactly N consecutive negative EMA cosines, not before; logs once; weights stay the lambdas', () => {
    const lines: string[] = [];
    const b = createBalancer('unshare', { kd: 0.5, cos: 2 }, { unshareAfter: 3, log: (l) => lines.push(l) });
    // EMA (decay 0.5) of kd: -0.5, -0.25 (cos 0), -0.625 (cos -1), -0.8125 (cos -1), ...: below 0 at every
    // measurement from the first. cos stays aligned.
    b.update(at({ kd: -0.5, cos: 0.5 }), 0);
    b.update(at({ kd: 0, cos: 0.5 }), 10);
    expect(b.unshared()).toEqual({});
    expect(b.state().streak).toEqual({ kd: 2, cos: 0 });
    b.update(at({ kd: -1, cos: 0.5 }), 20);
    expect(Object.keys(b.unshared())).toEqual(['kd']);
    expect(b.unshared().kd!.step).toBe(20);
    expect(b.unshared().kd!.cos).toBeCloseTo(-0.625, 6);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/term kd unshared after step 20 \(EMA gradient cosine with ce -0\.6250 < 0 for 3 consecutive/);
    // Unshared from the NEXT step (the step that measured still trained shared).
    expect(b.isUnshared('kd', 20)).toBe(false);
    expect(b.isUnshared('kd', 21)).toBe(true);
    expect(b.isUnshared('cos', 21)).toBe(false);
    expect(b.weights(21)).toEqual({ ce: 1, kd: 0.5, cos: 2 }); // not switched off
    // Permanent: aligned cosines later do not share it again, nor log again.
    b.update(at({ kd: 1 }), 30);
    b.update(at({ kd: 1 }), 40);
    expect(b.isUnshared('kd', 41)).toBe(true);
    expect(lines).toHaveLength(1);
    expect(b.info()).toMatchObject({ balance: 'unshare', unshared: { kd: { step: 20 } } });
  });

  it('a non-negative EMA breaks the run; a measurement without the term neither extends nor breaks it', () => {
    const b = createBalancer('unshare', { kd: 1 }, { unshareAfter: 2 });
    b.update(at({ kd: -0.2 }), 0); // ema -0.2, run 1
    b.update(at({ kd: 0.6 }), 1); // ema 0.2, run 0
    b.update(at({ kd: -0.8 }), 2); // ema -0.3, run 1
    b.update(at({}), 3); // kd absent (no teacher rows): run stays 1
    expect(b.unshared()).toEqual({});
    b.update(at({ kd: -0.1 }), 4); // ema -0.2, run 2
    expect(b.unshared().kd?.step).toBe(4);
  });

  it('--unshare-below moves the threshold; other modes never unshare', () => {
    const b = createBalancer('unshare', { kd: 1 }, { unshareAfter: 1, unshareBelow: 0.5 });
    b.update(at({ kd: 0.4 }), 7);
    expect(b.isUnshared('kd', 8)).toBe(true);
    const g = createBalancer('gradcos', { kd: 1 }, { unshareAfter: 1 });
    g.update(at({ kd: -1 }), 7);
    expect(g.isUnshared('kd', 8)).toBe(false);
    expect(() => createBalancer('unshare', { kd: 1 }, { unshareAfter: 0 })).toThrow(/unshareAfter/);
  });

  it('state round-trips (streaks and unshared terms); a pre-unshare checkpoint state restores', () => {
    const a = createBalancer('unshare', { kd: 0.5, cos: 2 }, { unshareAfter: 2 });
    const b = createBalancer('unshare', { kd: 0.5, cos: 2 }, { unshareAfter: 2 });
    a.update(at({ kd: -1, cos: -0.5 }), 0);
    a.update(at({ kd: -1, cos: 0.9 }), 3);
    b.restore(JSON.parse(JSON.stringify(a.state())));
    expect(b.state()).toEqual(a.state());
    for (const x of [a, b]) x.update(at({ cos: -1 }), 6);
    expect(b.state()).toEqual(a.state());
    expect(b.isUnshared('kd', 4)).toBe(true);
    const old = createBalancer('gradcos', { kd: 1 });
    old.restore({ current: { ce: 1, kd: 1 }, ema: { kd: 0.1 }, measurements: 2 });
    expect(old.state()).toMatchObject({ streak: {}, unshared: {} });
    expect(() => old.restore({ current: {}, ema: {}, measurements: 1, unshared: { kd: { step: 'x' } } })).toThrow(/balancer state/);
  });
});

describe('stopGradient', () => {
  it('passes the value, stops the gradient', () => {
    const x = tf.variable(tf.tensor1d([1, 2, 3]));
    const { value, grads } = tf.variableGrads(() => tf.add(tf.sum(tf.square(stopGradient(x))), tf.sum(x)) as tf.Scalar, [x]);
    expect(value.dataSync()[0]).toBe(20);
    expect(Array.from(grads[x.name]!.dataSync())).toEqual([1, 1, 1]);
  });
});

/** The hooks.test.ts batch: user 0 at positions [0..3], user 1 left-padded; student state [s + 1, 2 - b]. */
function context(E: tf.Variable, hidden: tf.Variable[], step: number): StepContext {
  return {
    users: Int32Array.from([0, 1]),
    positions: Int32Array.from([0, 1, 2, 3, -1, -1, 0, 1]),
    targets: tf.tensor2d([2, 3, 4, 5, 0, 0, 1, 2], [2, 4], 'int32'),
    hidden: hidden as unknown as tf.Tensor3D[],
    itemEmbeddings: E,
    step,
    scores: (h) => tf.reshape(tf.matMul(tf.reshape(h, [-1, 2]), E, false, true), [...h.shape.slice(0, -1), 6]),
  };
}

const ALL = { lambdaCos: 0.5, lambdaL2: 0.3, lambdaMs: 0.7, lambdaKd: 1.1, lambdaEmb: 0.4, lambdaRel: 0.6, align: '0:-2,1:-1' };
/** The term's own adapter (see src/distill/hooks.ts): the variable that must still learn from it. */
const OWN: Record<string, RegExp> = { cos: /\/proj\d\/w/, l2: /\/proj\d\/w/, ms: /\/ms0\/w/, kd: /\/unshare\/kd\/w/, emb: /\/emb\/w/, rel: /\/unshare\/rel\/w/ };

describe.each([['kl'], ['ranking']])('an unshared term (kd: %s)', (kd) => {
  it.each(['cos', 'l2', 'ms', 'kd', 'emb', 'rel'])('%s: adds exactly nothing to the shared gradients, still trains its adapter', async (term) => {
    const h = (await buildDistillHooks({ cache: dir, ...ALL, kd, balance: 'unshare', unshareAfter: 1, balanceEvery: 1 }, ds, { dims: 2, blocks: 2 })) as TrainHooks;
    const own = h.variables().filter((v) => OWN[term]!.test(v.name));
    expect(own.length, `${term}'s adapter among ${h.variables().map((v) => v.name).join(', ')}`).toBeGreaterThan(0);
    // Perturb every hook variable off its initial value (identity adapters would hide a wrong path).
    for (const [i, v] of h.variables().entries()) v.assign(tf.add(v, tf.randomNormal(v.shape, 0, 0.1, 'float32', 50 + i)));
    const E = tf.variable(tf.randomNormal([6, 2], 0, 1, 'float32', 3));
    const hidden = [0, 1].map((b) => tf.variable(tf.randomNormal([2, 4, 2], 0, 1, 'float32', 10 + b)));
    const shared = [E, ...hidden];
    // A stand-in for CE that also depends on every shared variable.
    const ce = () => tf.add(tf.sum(tf.square(E)), tf.sum(tf.mul(hidden[1]!, hidden[0]!))) as tf.Scalar;
    const total = (step: number, without?: string) => () => {
      const terms: Record<string, tf.Scalar> = { ce: ce(), ...h.extraTerms(context(E, hidden, step)) };
      expect(Object.keys(terms).sort()).toEqual(['ce', 'cos', 'emb', 'kd', 'l2', 'ms', 'rel']);
      if (without) delete terms[without];
      return combine(terms, h.weights(step));
    };
    const grads = (f: () => tf.Scalar, vars: tf.Variable[]) => {
      const { grads: g } = tf.variableGrads(f, vars);
      return vars.map((v) => Float32Array.from((g[v.name] ?? tf.zerosLike(v)).dataSync()));
    };
    const maxDiff = (a: Float32Array[], b: Float32Array[]) => Math.max(...a.map((x, i) => Math.max(...x.map((v, j) => Math.abs(v - b[i]![j]!)))));
    // Step 0, before: the term pulls the shared variables.
    expect(maxDiff(grads(total(0), shared), grads(total(0, term), shared))).toBeGreaterThan(1e-4);
    const before = Object.fromEntries(Object.entries(h.extraTerms(context(E, hidden, 0))).map(([k, v]) => [k, v.dataSync()[0]!]));
    // The balancer measures at step 0: the term conflicts with ce, the others agree.
    const g: Record<string, tf.Tensor[]> = { ce: [tf.tensor1d([1, 0])] };
    for (const t of ['cos', 'l2', 'ms', 'kd', 'emb', 'rel']) g[t] = [tf.tensor1d(t === term ? [-1, 0.2] : [1, 0.3])];
    expect(h.balance!.terms).toContain(term);
    h.balance!.update(g, 0);
    expect(h.balance!.terms).not.toContain(term);
    expect(h.weights(1)[term]).toBe(h.weights(0)[term]); // its weight stays its lambda
    // Step 1, after: exactly the gradient without the term, on every shared variable...
    expect(maxDiff(grads(total(1), shared), grads(total(1, term), shared))).toBe(0);
    // ... the same value at the moment of unsharing (new adapters start at identity; here perturbed, so only for the others)...
    const after = Object.fromEntries(Object.entries(h.extraTerms(context(E, hidden, 1))).map(([k, v]) => [k, v.dataSync()[0]!]));
    for (const t of Object.keys(before)) if (t !== term || !/unshare/.test(own[0]!.name)) expect(after[t], t).toBeCloseTo(before[t]!, 5);
    // ... and its own adapter still learns from it.
    const [ga] = grads(() => tf.mul(h.extraTerms(context(E, hidden, 1))[term]!, 1), own);
    expect(Math.max(...Array.from(ga!, Math.abs)), `${own[0]!.name}`).toBeGreaterThan(1e-4);
    expect(h.epochInfo?.()).toMatchObject({ unshared: { [term]: { step: 0 } } });
    expect(h.provenance?.()).toMatchObject({ balance: { mode: 'unshare', every: 1, unshareAfter: 1, unshareBelow: 0 } });
    h.dispose?.();
  });
});

describe('unshare adapters', () => {
  it('exist up front in mode unshare only (kd and rel; the other terms have their own already)', async () => {
    const names = async (balance: string) => ((await buildDistillHooks({ cache: dir, ...ALL, balance }, ds, { dims: 2, blocks: 2 })) as TrainHooks).variables().map((v) => v.name.replace(/^distill\d+\//, ''));
    expect(await names('unshare')).toEqual([...(await names('gradcos')), 'unshare/kd/w', 'unshare/kd/b', 'unshare/rel/w', 'unshare/rel/b']);
    await expect(buildDistillHooks({ cache: dir, lambdaKd: 1, balance: 'unshare', unshareAfter: 0 }, ds, { dims: 2, blocks: 2 })).rejects.toThrow(/--unshare-after must be an integer >= 1; got 0/);
  });
});
