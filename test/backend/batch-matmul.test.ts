import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { viewCalls } from '../../src/backend/batch-matmul.js';

/**
 * The wasm BatchMatMul the project registers (B 2-D XNNPACK matmuls on heap views, src/backend/batch-matmul.ts)
 * against a float64 triple loop written here, for every case attention and its gradient produce (transposes,
 * 3-D and 4-D batches, a broadcast single batch item) and for batch 1, left to the stock kernel (already
 * XNNPACK). Batch dims broadcasting both ways ([2,1,..] x [1,3,..]) also stay with the stock kernel, whose answer
 * there differs from a per-item product (tfjs-backend-wasm 4.22); no model here multiplies such shapes. Also: the gradients through it, and that it is the kernel in use.
 */

/** Seeded uniform values in [-1, 1). */
function values(n: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

/** Reference: C[b] = op(A[b]) op(B[b]) in float64, batch dims broadcast (a batch of 1 repeats). */
function reference(a: number[], as: number[], b: number[], bs: number[], ta: boolean, tb: boolean): { data: number[]; shape: number[] } {
  const [ar, ac] = as.slice(-2) as [number, number];
  const [br, bc] = bs.slice(-2) as [number, number];
  const M = ta ? ac : ar;
  const K = ta ? ar : ac;
  const N = tb ? br : bc;
  const na = as.slice(0, -2).reduce((x, y) => x * y, 1);
  const nb = bs.slice(0, -2).reduce((x, y) => x * y, 1);
  const batchShape = na >= nb ? as.slice(0, -2) : bs.slice(0, -2);
  const n = Math.max(na, nb);
  const out: number[] = [];
  for (let q = 0; q < n; q++) {
    const ao = (na === 1 ? 0 : q) * ar * ac;
    const bo = (nb === 1 ? 0 : q) * br * bc;
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let acc = 0;
        for (let k = 0; k < K; k++) acc += a[ao + (ta ? k * ac + i : i * ac + k)]! * b[bo + (tb ? j * bc + k : k * bc + j)]!;
        out.push(acc);
      }
    }
  }
  return { data: out, shape: [...batchShape, M, N] };
}

const CASES: Array<{ name: string; as: number[]; bs: number[]; ta: boolean; tb: boolean; view: boolean }> = [
  { name: 'Q K^T [B,L,D] x [B,L,D]^T', as: [4, 7, 5], bs: [4, 7, 5], ta: false, tb: true, view: true },
  { name: 'S V [B,L,L] x [B,L,D]', as: [4, 7, 7], bs: [4, 7, 5], ta: false, tb: false, view: true },
  { name: 'S^T dC [B,L,L]^T x [B,L,D]', as: [4, 7, 7], bs: [4, 7, 5], ta: true, tb: false, view: true },
  { name: 'both transposed', as: [3, 6, 4], bs: [3, 5, 6], ta: true, tb: true, view: true },
  { name: '4-D heads [B,H,L,D] x [B,H,D,L]', as: [2, 3, 6, 4], bs: [2, 3, 4, 6], ta: false, tb: false, view: true },
  { name: 'broadcast single item [1,L,D] x [B,D,N]', as: [1, 6, 4], bs: [5, 4, 3], ta: false, tb: false, view: true },
  { name: 'batch 1 (stock, already XNNPACK)', as: [1, 6, 4], bs: [1, 4, 3], ta: false, tb: false, view: false },
];

describe('wasm BatchMatMul on XNNPACK views', () => {
  beforeAll(async () => {
    await initBackend('wasm', { threads: 1 });
    expect(tf.getBackend()).toBe('wasm');
  });

  for (const c of CASES) {
    it(`${c.name}: equals a float64 triple loop${c.view ? '' : ' (stock kernel)'}`, () => {
      const av = values(c.as.reduce((x, y) => x * y, 1), 1);
      const bv = values(c.bs.reduce((x, y) => x * y, 1), 2);
      const before = viewCalls;
      const got = tf.tidy(() => tf.matMul(tf.tensor(av, c.as), tf.tensor(bv, c.bs), c.ta, c.tb));
      const calls = viewCalls - before;
      const ref = reference(av, c.as, bv, c.bs, c.ta, c.tb);
      expect(got.shape).toEqual(ref.shape);
      const d = got.dataSync();
      for (let i = 0; i < ref.data.length; i++) expect(Math.abs(d[i]! - ref.data[i]!)).toBeLessThan(1e-5);
      expect(calls).toBe(c.view ? 1 : 0);
      got.dispose();
    });
  }

  it('gradients of sum(W * A B^T) through it equal the float64 products W B and W^T A', () => {
    const [B, L, D] = [3, 5, 4];
    const av = values(B * L * D, 3);
    const bv = values(B * L * D, 4);
    const wv = values(B * L * L, 5);
    const [ga, gb] = tf.tidy(() => {
      const w = tf.tensor(wv, [B, L, L]);
      return tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(w, tf.matMul(a, b, false, true))))([tf.tensor(av, [B, L, D]), tf.tensor(bv, [B, L, D])]);
    });
    // d/dA = W B, d/dB = W^T A (per batch item).
    const wantA = reference(wv, [B, L, L], bv, [B, L, D], false, false);
    const wantB = reference(wv, [B, L, L], av, [B, L, D], true, false);
    const da = ga!.dataSync();
    const db = gb!.dataSync();
    for (let i = 0; i < wantA.data.length; i++) expect(Math.abs(da[i]! - wantA.data[i]!)).toBeLessThan(1e-5);
    for (let i = 0; i < wantB.data.length; i++) expect(Math.abs(db[i]! - wantB.data[i]!)).toBeLessThan(1e-5);
    ga!.dispose();
    gb!.dispose();
  });

  it('frees its temporaries: no tensor and no heap id left behind', () => {
    const before = tf.memory().numTensors;
    const bytes = tf.memory().numBytes;
    for (let i = 0; i < 5; i++) tf.tidy(() => void tf.matMul(tf.ones([4, 6, 3]), tf.ones([4, 6, 3]), true, false).dataSync());
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.memory().numBytes).toBe(bytes);
  });
});
