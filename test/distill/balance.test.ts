import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/backend/index.js';
import { createBalancer, gradStats, gradcosFactor, pcgradCeWeight, projectConflicting } from '../../src/distill/balance.js';

beforeAll(async () => {
  await initBackend('cpu');
});

const grads = (ce: number[][], kd: number[][]) => ({ ce: ce.map((v) => tf.tensor1d(v)), kd: kd.map((v) => tf.tensor1d(v)) });

describe('PCGrad', () => {
  it('projects a conflicting gradient on the normal plane of the reference', () => {
    // g = [-1, 1], ref = [1, 0]: g.ref = -1 -> g - (-1/1) ref = [0, 1]
    expect(Array.from(projectConflicting(new Float32Array([-1, 1]), new Float32Array([1, 0])))).toEqual([0, 1]);
    // agreeing gradient untouched
    expect(Array.from(projectConflicting(new Float32Array([1, -2]), new Float32Array([1, 0])))).toEqual([1, -2]);
  });

  it('folding the projection into the CE weight gives the same combined gradient', () => {
    // λ = 0.5, g_kd = [-1, 1, 3], g_ce = [1, 0, 2] -> dot = 5 > 0: no change; use g_kd = [-3, 1, 0] -> dot = -3
    const gce = new Float32Array([1, 0, 2]);
    const gkd = new Float32Array([-3, 1, 0]);
    const s = gradStats(grads([[1, 0], [2]], [[-3, 1], [0]]));
    expect(s.dot.kd).toBeCloseTo(-3, 6);
    expect(s.ceNorm2).toBeCloseTo(5, 6);
    expect(s.norm2.kd).toBeCloseTo(10, 6);
    const wce = pcgradCeWeight({ kd: 0.5 }, s); // 1 - 0.5 * (-3) / 5 = 1.3
    expect(wce).toBeCloseTo(1.3, 6);
    const proj = projectConflicting(gkd, gce);
    for (let i = 0; i < 3; i++) expect(wce * gce[i]! + 0.5 * gkd[i]!).toBeCloseTo(gce[i]! + 0.5 * proj[i]!, 5);
  });
});

describe('gradcos', () => {
  it('ramps from 1 at cos >= 0 to 0 at cos <= -margin', () => {
    expect(gradcosFactor(0.3)).toBe(1);
    expect(gradcosFactor(-0.025, 0.05)).toBeCloseTo(0.5, 9);
    expect(gradcosFactor(-0.5, 0.05)).toBe(0);
  });
});

describe('balancer', () => {
  it('none: weights are the lambdas, CE 1, no matter the gradients', () => {
    const b = createBalancer('none', { kd: 0.5, cos: 2 });
    b.update(grads([[1, 0]], [[-1, 0]]), 10);
    expect(b.weights(11)).toEqual({ ce: 1, kd: 0.5, cos: 2 });
  });

  it('gradcos switches off a term opposed to CE and keeps an aligned one; logs cosines', () => {
    const b = createBalancer('gradcos', { kd: 0.5, cos: 2 });
    b.update({ ce: [tf.tensor1d([1, 0])], kd: [tf.tensor1d([-1, 0.1])], cos: [tf.tensor1d([1, 1])] }, 20);
    expect(b.weights(21)).toEqual({ ce: 1, kd: 0, cos: 2 });
    const info = b.info() as { gradCos: Record<string, number>; weights: Record<string, number> };
    expect(info.gradCos.cos).toBeCloseTo(Math.SQRT1_2, 5);
    expect(info.gradCos.kd).toBeCloseTo(-1 / Math.sqrt(1.01), 5);
    expect(info.weights.kd).toBe(0);
  });

  it('pcgrad raises the CE weight by the conflicting component', () => {
    const b = createBalancer('pcgrad', { kd: 0.5 });
    b.update(grads([[1, 0]], [[-1, 1]]), 5);
    expect(b.weights(6).ce).toBeCloseTo(1.5, 6); // 1 - 0.5 * (-1) / 1
    expect(b.weights(6).kd).toBe(0.5);
  });
});

