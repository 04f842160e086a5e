import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/backend/index.js';
import { buildDistillHooks } from '../../src/distill/index.js';
import type { StepContext, TrainHooks } from '../../src/student/hooks.js';
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
function context(itemEmb: tf.Variable): StepContext {
  const B = 2;
  const L = 4;
  const hidden = [0, 1].map((b) => tf.tensor3d(Array.from({ length: B * L }, (_, s) => [s + 1, 2 - b]).flat(), [B, L, 2]));
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
    expect(h.provenance?.()).toMatchObject({ cacheKey: expect.stringMatching(/^[0-9a-f]{12}$/), lambdas: { cos: 0.5, l2: 2 }, align: '1:3,2:7' });
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
    const h = await hooksFor({ lambdaCos: 1, lambdaL2: 1, lambdaMs: 1, lambdaKd: 1, kd: 'ranking', lambdaEmb: 1, align: '1:-2,2:-1' });
    const E = tf.variable(tf.randomNormal([6, 2], 0, 1, 'float32', 3));
    const { value, grads } = tf.variableGrads(() => {
      const t = h.extraTerms(context(E));
      expect(Object.keys(t).sort()).toEqual(['cos', 'emb', 'kd', 'l2', 'ms']);
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

  it('lambda-ms needs an intermediate aligned block; bad flags are usage errors', async () => {
    await expect(buildDistillHooks({ cache: dir, lambdaMs: 1, align: '2:-1' }, ds, { dims: 2, blocks: 2 })).rejects.toThrow(/intermediate student block/);
    await expect(buildDistillHooks({ cache: dir, lambdaKd: -1 }, ds, { dims: 2, blocks: 2 })).rejects.toThrow(/--lambda-kd must be >= 0/);
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
