import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/backend/index.js';
import { buildDistillHooks } from '../../src/distill/index.js';
import { lossLine, type StepContext, type TrainHooks } from '../../src/student/training/hooks.js';
import { compareGrads, numericGrads, toF64 } from '../backend/fd.js';
import { teacherState, teacherTopK, twoUserDataset, writeTinyCache } from './fixtures.js';

const ds = twoUserDataset();
let dir = '';

beforeAll(async () => {
  await initBackend('cpu');
  dir = writeTinyCache(ds);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * Batch: user 0 at positions [0,1,2,3] (targets 2,3,4,5), user 1 left-padded [-1,-1,0,1] (targets 0,0,1,2).
 * Slots with a teacher row: 1,2,3 (user 0, position 0 has none) and 6,7. Student state at slot s, block b:
 * [s + 1, 2 - b].
 */
function context(itemEmb: tf.Variable, hiddenStates?: tf.Tensor3D[]): StepContext {
  const B = 2;
  const L = 4;
  const hidden = hiddenStates ?? [0, 1].map((b) => tf.tensor3d(Array.from({ length: B * L }, (_, s) => [s + 1, 2 - b]).flat(), [B, L, 2]));
  return {
    users: Int32Array.from([0, 1]),
    positions: Int32Array.from([0, 1, 2, 3, -1, -1, 0, 1]),
    targets: tf.tensor2d([2, 3, 4, 5, 0, 0, 1, 2], [B, L], 'int32'),
    hidden,
    itemEmbeddings: itemEmb,
    step: 0,
    scores: (h) => tf.matMul(tf.reshape(h, [-1, 2]), itemEmb, false, true),
  };
}

const cos = (a: number[], b: number[]) => (a[0]! * b[0]! + a[1]! * b[1]!) / (Math.hypot(a[0]!, a[1]!) * Math.hypot(b[0]!, b[1]!));
const withTeacher = [
  [1, 0, 1],
  [2, 0, 2],
  [3, 0, 3],
  [6, 1, 0],
  [7, 1, 1],
] as const; // [slot, user, position]

async function hooksFor(flags: Record<string, unknown>): Promise<TrainHooks> {
  const h = await buildDistillHooks({ cache: dir, ...flags }, ds, { dims: 2, blocks: 2 });
  if (!h) throw new Error('expected hooks');
  // Identity projections so the expected values are plain cosines / distances of the fixture vectors.
  for (const v of h.variables()) if (v.name.includes('/proj') && v.name.endsWith('/w')) v.assign(tf.eye(2));
  return h;
}

describe('buildDistillHooks', () => {
  it('no --cache: plain training', async () => {
    expect(await buildDistillHooks({ lambdaKd: 1 }, ds, { dims: 2, blocks: 2 })).toBeUndefined();
  });

  it('--cache with every weight at 0 is refused, naming the weights (it would train plain CE)', async () => {
    await expect(buildDistillHooks({ cache: dir }, ds, { dims: 2, blocks: 2 })).rejects.toThrow(/every distillation weight is 0 \(--lambda-cos.*--lambda-kd.*leave --cache out/);
  });

  it("the training header's loss line names every active term with its weight", async () => {
    expect(lossLine('ce')).toBe('ce');
    const h = await hooksFor({ lambdaCos: 0.5, lambdaL2: 2 });
    expect(lossLine('ce', h)).toBe('ce + 0.5 cos + 2 l2');
    h.dispose?.();
  });

  it("refuses another dataset's cache, naming both fingerprints", async () => {
    const other = twoUserDataset('fp-other');
    await expect(buildDistillHooks({ cache: dir, lambdaCos: 1 }, other, { dims: 2, blocks: 2 })).rejects.toThrow(/fingerprint fp-distill.*fingerprint fp-other/);
  });

  it('Dcos and Dl2 over aligned pairs use only slots that have a teacher row', async () => {
    const h = await hooksFor({ lambdaCos: 0.5, lambdaL2: 2 });
    const E = tf.variable(tf.randomNormal([6, 2], 0, 1, 'float32', 1));
    const terms = h.extraTerms(context(E));
    expect(Object.keys(terms).sort()).toEqual(['cos', 'l2']);
    // pairs: block 0 -> tapped 0, block 1 -> tapped 1 (auto align: 2 blocks over 2 tapped layers)
    let c = 0;
    let l2 = 0;
    for (const b of [0, 1]) {
      for (const [s, u, p] of withTeacher) {
        const st = [s + 1, 2 - b];
        const t = teacherState(u, p, b);
        c += (1 - cos(st, t)) / withTeacher.length;
        l2 += ((st[0]! - t[0]) ** 2 + (st[1]! - t[1]) ** 2) / 2 / withTeacher.length;
      }
    }
    expect(terms.cos!.dataSync()[0]).toBeCloseTo(c / 2, 5);
    expect(terms.l2!.dataSync()[0]).toBeCloseTo(l2 / 2, 4);
    expect(h.weights(0)).toEqual({ ce: 1, cos: 0.5, l2: 2 });
    expect(h.provenance?.()).toMatchObject({ cacheKey: expect.stringMatching(/^[0-9a-f]{12}$/), lambdas: { cos: 0.5, l2: 2 }, align: '0:3,1:7', alignFrom: 0 });
    h.dispose?.();
  });

  it('KL soft labels at T gather the student scores at the teacher top-K', async () => {
    const h = await hooksFor({ lambdaKd: 1, kdTemperature: 2 });
    const E = tf.variable(tf.tensor2d([[0, 0], [1, 0], [0, 1], [1, 1], [-1, 0.5], [0.5, -1]]));
    const got = h.extraTerms(context(E)).kd!.dataSync()[0]!;
    let want = 0;
    const q = [Math.sqrt(0.6), Math.sqrt(0.3)].map((v, _, a) => v / (a[0]! + a[1]!)); // teacher at T = 2 (cache T = 1)
    for (const [s, u, p] of withTeacher) {
      const st = [s + 1, 1]; // last block
      const ids = teacherTopK(u, p);
      const z = ids.map((i) => (st[0]! * E.arraySync()[i]![0]! + st[1]! * E.arraySync()[i]![1]!) / 2);
      const lse = Math.log(Math.exp(z[0]!) + Math.exp(z[1]!));
      want += (q[0]! * (Math.log(q[0]!) - (z[0]! - lse)) + q[1]! * (Math.log(q[1]!) - (z[1]! - lse))) / withTeacher.length;
    }
    expect(got).toBeCloseTo(4 * want, 4);
    h.dispose?.();
  });

  it.each(['cpu', 'wasm'] as const)('every term is differentiable w.r.t. the student and its own variables (%s)', async (backend) => {
    await initBackend(backend);
    const h = await hooksFor({ lambdaCos: 1, lambdaL2: 1, lambdaMs: 1, lambdaKd: 1, kd: 'ranking', lambdaEmb: 1, lambdaRel: 1, align: '0:-2,1:-1' });
    const E = tf.variable(tf.randomNormal([6, 2], 0, 1, 'float32', 3));
    const { value, grads } = tf.variableGrads(() => {
      const t = h.extraTerms(context(E));
      expect(Object.keys(t).sort()).toEqual(['cos', 'emb', 'kd', 'l2', 'ms', 'rel']);
      return tf.addN(Object.values(t)) as tf.Scalar;
    }, [E, ...h.variables()]);
    expect(Number.isFinite(value.dataSync()[0]!)).toBe(true);
    // The gradient of the summed terms w.r.t. the item embeddings and every hook variable (projections, adapter,
    // embedding map) equals central differences of the same hooks' forward pass.
    const vars = [E, ...h.variables()];
    const at = vars.map((v) => tf.clone(v));
    const numeric = numericGrads((xs) => {
      vars.forEach((v, i) => v.assign(xs[i]!));
      return tf.addN(Object.values(h.extraTerms(context(E)))).dataSync()[0]!;
    }, at);
    vars.forEach((v, i) => v.assign(at[i]!));
    const analytic = vars.map((v) => toF64(grads[v.name]!));
    for (const [i, v] of vars.entries()) expect(Math.max(...Array.from(analytic[i]!, Math.abs)), `${v.name}: zero gradient`).toBeGreaterThan(1e-4);
    const { worst, where } = compareGrads(analytic, numeric);
    expect(worst, `${where} (inputs: ${vars.map((v) => v.name).join(', ')})`).toBeLessThan(1e-2);
    h.dispose?.();
    await initBackend('cpu');
  });

  it('relational distillation (rel): 5 * RKD distance + 10 * RKD angle, last block vs the teacher layer aligned with it', async () => {
    const { rkdAngle, rkdDistance } = await import('../../src/distill/losses.js');
    const h = await hooksFor({ lambdaRel: 0.5 });
    expect(h.variables()).toEqual([]); // no projection: the relations compare across widths as they are
    const E = tf.variable(tf.randomNormal([6, 2], 0, 1, 'float32', 1));
    const terms = h.extraTerms(context(E));
    expect(Object.keys(terms)).toEqual(['rel']);
    // Last block (1): student [s + 1, 1] at the slots with a teacher row; teacher: tapped layer 1 (auto align 2 -> -1).
    const S = tf.tensor2d(withTeacher.map(([s]) => [s + 1, 1]));
    const T = tf.tensor2d(withTeacher.map(([, u, p]) => teacherState(u, p, 1)));
    const want = 5 * rkdDistance(S, T).dataSync()[0]! + 10 * rkdAngle(S, T).dataSync()[0]!;
    expect(want).toBeGreaterThan(0.1);
    expect(terms.rel!.dataSync()[0]).toBeCloseTo(want, 5);
    expect(h.weights(0)).toEqual({ ce: 1, rel: 0.5 });
    expect(h.provenance?.()).toMatchObject({ lambdas: { rel: 0.5 }, rel: { distance: 5, angle: 10, maxRows: 64, align: '1:7' } });
    h.dispose?.();
    // --rel-angle 0: the distance term alone; --align 1:-2: the other teacher layer.
    const h2 = await hooksFor({ lambdaRel: 1, relAngle: 0, relDistance: 2, align: '1:-2' });
    const T0 = tf.tensor2d(withTeacher.map(([, u, p]) => teacherState(u, p, 0)));
    expect(h2.extraTerms(context(E)).rel!.dataSync()[0]).toBeCloseTo(2 * rkdDistance(S, T0).dataSync()[0]!, 5);
    h2.dispose?.();
  });

  it('rel is differentiable w.r.t. the student states (last block only), matching finite differences', async () => {
    const h = await hooksFor({ lambdaRel: 1 });
    const E = tf.variable(tf.randomNormal([6, 2], 0, 1, 'float32', 3));
    const hidden = [0, 1].map((b) => tf.variable(tf.randomNormal([2, 4, 2], 0, 1, 'float32', 10 + b)));
    const { value, grads } = tf.variableGrads(() => h.extraTerms(context(E, hidden as unknown as tf.Tensor3D[])).rel!, hidden);
    expect(Number.isFinite(value.dataSync()[0]!)).toBe(true);
    const at = hidden.map((v) => tf.clone(v));
    const numeric = numericGrads((xs) => {
      hidden.forEach((v, i) => v.assign(xs[i]!));
      return h.extraTerms(context(E, hidden as unknown as tf.Tensor3D[])).rel!.dataSync()[0]!;
    }, at);
    hidden.forEach((v, i) => v.assign(at[i]!));
    const analytic = hidden.map((v) => toF64(grads[v.name] ?? tf.zerosLike(v)));
    // Block 0 takes no part; in block 1 only the 5 slots with a teacher row (1, 2, 3, 6, 7) get a gradient.
    expect(Math.max(...Array.from(analytic[0]!, Math.abs))).toBe(0);
    const g1 = analytic[1]!;
    for (let s = 0; s < 8; s++) {
      const norm = Math.hypot(g1[2 * s]!, g1[2 * s + 1]!);
      if ([1, 2, 3, 6, 7].includes(s)) expect(norm, `slot ${s}`).toBeGreaterThan(1e-4);
      else expect(norm, `slot ${s}`).toBe(0);
    }
    const { worst, where } = compareGrads(analytic, numeric);
    expect(worst, where).toBeLessThan(1e-2);
    h.dispose?.();
  });

  it('rel: the last block must be aligned; its weights must be usable', async () => {
    await expect(buildDistillHooks({ cache: dir, lambdaRel: 1, align: '0:-1' }, ds, { dims: 2, blocks: 2 })).rejects.toThrow(/--lambda-rel needs the student's last block \(1\) aligned .*add 1:-1 \(or -1:-1\) to --align/);
    await expect(buildDistillHooks({ cache: dir, lambdaRel: 1, relAngle: -1 }, ds, { dims: 2, blocks: 2 })).rejects.toThrow(/--rel-angle must be a number >= 0; got -1/);
    await expect(buildDistillHooks({ cache: dir, lambdaRel: 1, relAngle: 0, relDistance: 0 }, ds, { dims: 2, blocks: 2 })).rejects.toThrow(/needs --rel-distance or --rel-angle > 0/);
    // rel off (the default): no term, whatever the cache
    const h = await hooksFor({ lambdaCos: 1 });
    expect(Object.keys(h.extraTerms(context(tf.variable(tf.zeros([6, 2])))))).toEqual(['cos']);
    h.dispose?.();
  });

  it('lambda-ms needs an intermediate aligned block; bad flags are usage errors', async () => {
    await expect(buildDistillHooks({ cache: dir, lambdaMs: 1, align: '1:-1' }, ds, { dims: 2, blocks: 2 })).rejects.toThrow(/intermediate student block/);
    await expect(buildDistillHooks({ cache: dir, lambdaKd: -1 }, ds, { dims: 2, blocks: 2 })).rejects.toThrow(/--lambda-kd must be a number >= 0; got -1/);
    await expect(buildDistillHooks({ cache: dir, lambdaKd: 1, kdTopK: 5 }, ds, { dims: 2, blocks: 2 })).rejects.toThrow(/exceeds the cached top-K \(2\)/);
    await expect(buildDistillHooks({ cache: dir, kd: 'mse' }, ds, { dims: 2, blocks: 2 })).rejects.toThrow(/must be one of kl, ranking/);
  });
});

describe('teacher rows', () => {
  it('per-dimension stats over every cached row (for --standardise)', async () => {
    const { openCache } = await import('../../src/cache/reader.js');
    const { computeStats, lookupTeacherBatch } = await import('../../src/distill/teacher-batch.js');
    const reader = openCache(dir, { fingerprint: ds.fingerprint });
    // layer 0 rows: [2,0] [3,0] [4,0] (user 0, p 1..3) and [1,1] [2,1] (user 1, p 0..1)
    const s = computeStats(reader, 2);
    expect(s.mean[0]).toBeCloseTo(2.4, 5);
    expect(s.std[0]).toBeCloseTo(Math.sqrt(1.04), 5);
    expect(s.mean[1]).toBeCloseTo(0.4, 5);
    expect(s.std[1]).toBeCloseTo(Math.sqrt(0.24), 5);
    // standardised lookup of user 1 position 0, layer 0: ((1 - 2.4) / 1.0198, (1 - 0.4) / 0.4899)
    const tb = lookupTeacherBatch(reader, Int32Array.from([1]), Int32Array.from([-1, 0]), { tapped: [0], k: 1, stats: s });
    expect(Array.from(tb.slots)).toEqual([1]);
    expect(tb.hidden[0]![0]).toBeCloseTo(-1.4 / Math.sqrt(1.04), 5);
    expect(tb.hidden[0]![1]).toBeCloseTo(0.6 / Math.sqrt(0.24), 5);
    expect(Array.from(tb.topkIndex!)).toEqual([2]);
    reader.close();
  });
});
