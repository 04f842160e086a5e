/**
 * --filter-alpha: the causal frequency-filter branch (src/student/model/filter.ts), checked against values computed
 * independently: the kernel by hand, its last slot against BSARec's FFT low-pass written as a naive DFT,
 * gradients by finite differences, causality and padding by perturbation, and a trained run through the
 * model file (serve's loader).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { validateStudentOptions } from '../../src/student/training/config.js';
import { filterBranch, filterMatrix, lowPassKernel } from '../../src/student/model/filter.js';
import { createSasrec, disposeModel, encode, encodeLast, sasrecParams, type ModelConfig } from '../../src/student/model/model.js';
import { checkModelConfig, loadStudent, readStudentFile } from '../../src/student/serving/serve.js';
import { trainStudent } from '../../src/student/training/train.js';
import { makeRng } from '../../src/util/rng.js';
import { compareGrads, dot64, genFor, numericGrads, toF64 } from '../backend/fd.js';
import { maxAbsDiff } from '../helpers/compare.js';
import { smallDataset, smallOptions } from './fixtures/small.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-filter-'));
beforeAll(async () => {
  await initBackend('wasm');
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** BSARec's FrequencyLayer low-pass (rfft over M slots, zero bins >= kept, irfft), as a naive DFT, at slot t. */
function dftLowPass(x: number[], kept: number, t: number): number {
  const M = x.length;
  let out = 0;
  for (let k = 0; k <= Math.floor(M / 2) && k < kept; k++) {
    let re = 0;
    let im = 0;
    for (let n = 0; n < M; n++) {
      re += x[n]! * Math.cos((2 * Math.PI * k * n) / M);
      im -= x[n]! * Math.sin((2 * Math.PI * k * n) / M);
    }
    // irfft: bin 0 and the Nyquist bin once, the others with their conjugate mirror (twice the real part).
    const w = k === 0 || 2 * k === M ? 1 : 2;
    out += (w * (re * Math.cos((2 * Math.PI * k * t) / M) - im * Math.sin((2 * Math.PI * k * t) / M))) / M;
  }
  return out;
}

describe('the low-pass kernel', () => {
  it('hand values: M = 4 with 2 bins is [3/4, 1/4, -1/4, 1/4]; keeping every bin is the identity', () => {
    expect(Array.from(lowPassKernel(4, 2)).map((v) => Number(v.toFixed(12)) + 0)).toEqual([0.75, 0.25, -0.25, 0.25]);
    expect(Array.from(lowPassKernel(6, 4)).map((v) => Number(v.toFixed(12)) + 0)).toEqual([1, 0, 0, 0, 0, 0]);
    // 1 bin: the mean of the window.
    expect(Array.from(lowPassKernel(5, 1))).toEqual([0.2, 0.2, 0.2, 0.2, 0.2]);
  });

  it('the causal matrix is lower-triangular Toeplitz and the same for any batch length', () => {
    const t6 = filterMatrix(8, 3, 6, 'causal');
    const t3 = filterMatrix(8, 3, 3, 'causal');
    const h = lowPassKernel(8, 3);
    for (let s = 0; s < 6; s++) for (let j = 0; j < 6; j++) expect(t6[s * 6 + j]).toBe(j <= s ? Math.fround(h[s - j]!) : 0);
    for (let s = 0; s < 3; s++) for (let j = 0; j < 3; j++) expect(t3[s * 3 + j]).toBe(t6[s * 6 + j]);
  });
});

describe('filterBranch', () => {
  it('at the last slot of a full window equals BSARec\'s FFT low-pass plus beta^2 times the rest', () => {
    const M = 10;
    const D = 3;
    const rng = makeRng(5);
    const x = Array.from({ length: M * D }, () => rng.next() * 2 - 1);
    const beta = [0.5, -1.2, 0];
    const got = tf.tidy(() => filterBranch(tf.tensor3d(x, [1, M, D]), tf.tensor1d(beta), M, 3).arraySync()[0]!);
    for (let d = 0; d < D; d++) {
      const col = Array.from({ length: M }, (_, n) => x[n * D + d]!);
      const low = dftLowPass(col, 3, M - 1);
      expect(got[M - 1]![d]).toBeCloseTo(low + beta[d]! ** 2 * (col[M - 1]! - low), 5);
    }
  });

  it("span 'window' equals BSARec's FFT low-pass at every slot, full or left-padded window", () => {
    const M = 10;
    const D = 2;
    const rng = makeRng(8);
    const beta = [0.7, -0.3];
    for (const L of [10, 6]) {
      const x = Array.from({ length: L * D }, () => rng.next() * 2 - 1);
      const got = tf.tidy(() => filterBranch(tf.tensor3d(x, [1, L, D]), tf.tensor1d(beta), M, 3, 'window').arraySync()[0]!);
      for (let d = 0; d < D; d++) {
        // BSARec filters the maxLen window; the M - L slots before the batch's are padding (zero here).
        const col = [...new Array<number>(M - L).fill(0), ...Array.from({ length: L }, (_, n) => x[n * D + d]!)];
        for (let s = 0; s < L; s++) {
          const low = dftLowPass(col, 3, M - L + s);
          expect(got[s]![d]).toBeCloseTo(low + beta[d]! ** 2 * (col[M - L + s]! - low), 5);
        }
      }
    }
    // Same last row as the causal matrix; the top-left [L, L] of the maxLen matrix (what the ONNX export slices).
    const w = filterMatrix(8, 3, 8, 'window');
    const c = filterMatrix(8, 3, 8, 'causal');
    expect(Array.from(w.slice(56))).toEqual(Array.from(c.slice(56)));
    const w5 = filterMatrix(8, 3, 5, 'window');
    for (let s = 0; s < 5; s++) for (let j = 0; j < 5; j++) expect(w5[s * 5 + j]).toBe(w[s * 8 + j]);
  });

  it('gradients w.r.t. x and beta match finite differences', () => {
    const g = genFor('filterBranch');
    const x = g.uniform([2, 5, 3]);
    const beta = g.away([3]);
    const w = Float32Array.from({ length: 30 }, (_, i) => Math.sin(i + 1));
    const loss = (xs: tf.Tensor[]) => dot64(filterBranch(xs[0] as tf.Tensor3D, xs[1]!, 7, 3), w);
    const analytic = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(filterBranch(a as tf.Tensor3D, b, 7, 3), tf.tensor(w, [2, 5, 3]))))([x, beta]).map(toF64);
    const { worst, where } = compareGrads(analytic, numericGrads(loss, [x, beta]));
    expect(worst, where).toBeLessThan(1e-2);
  });
});

describe('a model with --filter-alpha', () => {
  const base: ModelConfig = { numItems: 9, maxLen: 6, dims: 4, blocks: 2, heads: 2, ffnDims: 6, dropout: 0, attnDropout: 0 };

  for (const norm of ['pre', 'post'] as const) {
    it(`${norm}-LN: a slot does not see later slots, padding does not change the last state, encodeLast is the last slot`, () => {
      const m = createSasrec({ ...base, norm, filterAlpha: 0.7, filterBins: 3 }, 3);
      const a = tf.tidy(() => encode(m, Int32Array.from([2, 7, 4, 6, 8, 1]), 1, 6).at(-1)!.arraySync()[0]!);
      const b = tf.tidy(() => encode(m, Int32Array.from([2, 7, 4, 6, 8, 5]), 1, 6).at(-1)!.arraySync()[0]!);
      expect(maxAbsDiff(a.slice(0, 5).flat(), b.slice(0, 5).flat())).toBeLessThan(1e-6);
      expect(maxAbsDiff(a[5]!, b[5]!)).toBeGreaterThan(1e-3);
      const short = tf.tidy(() => encodeLast(m, Int32Array.from([4, 6, 8]), 1, 3).arraySync()[0]!);
      const padded = tf.tidy(() => encodeLast(m, Int32Array.from([0, 0, 4, 6, 8]), 1, 5).arraySync()[0]!);
      const full = tf.tidy(() => encode(m, Int32Array.from([0, 0, 4, 6, 8]), 1, 5).at(-1)!.arraySync()[0]![4]!);
      expect(maxAbsDiff(short, padded)).toBeLessThan(1e-5);
      expect(maxAbsDiff(full, padded)).toBeLessThan(1e-5);
      // The branch is live: the same weights without it give another state.
      const plain = createSasrec({ ...base, norm }, 3);
      const noFilter = tf.tidy(() => encodeLast(plain, Int32Array.from([4, 6, 8]), 1, 3).arraySync()[0]!);
      expect(maxAbsDiff(short, noFilter)).toBeGreaterThan(1e-3);
      disposeModel(m);
      disposeModel(plain);
    });
  }

  it("span 'window': earlier slots see later ones; one block's last state is the causal model's; padding changes nothing", () => {
    const one = { ...base, blocks: 1, filterAlpha: 0.7, filterBins: 3 };
    const win = createSasrec({ ...one, filterSpan: 'window' }, 3);
    const causal = createSasrec(one, 3);
    const a = tf.tidy(() => encode(win, Int32Array.from([2, 7, 4, 6, 8, 1]), 1, 6).at(-1)!.arraySync()[0]!);
    const b = tf.tidy(() => encode(win, Int32Array.from([2, 7, 4, 6, 8, 5]), 1, 6).at(-1)!.arraySync()[0]!);
    expect(maxAbsDiff(a[0]!, b[0]!)).toBeGreaterThan(1e-4); // slot 0 sees slot 5
    const last = tf.tidy(() => encodeLast(win, Int32Array.from([4, 6, 8]), 1, 3).arraySync()[0]!);
    expect(maxAbsDiff(last, tf.tidy(() => encodeLast(causal, Int32Array.from([4, 6, 8]), 1, 3).arraySync()[0]!))).toBeLessThan(1e-5);
    expect(maxAbsDiff(last, tf.tidy(() => encodeLast(win, Int32Array.from([0, 0, 4, 6, 8]), 1, 5).arraySync()[0]!))).toBeLessThan(1e-5);
    // With two blocks the second reads the first's window-filtered states: no longer the causal model.
    const win2 = createSasrec({ ...base, filterAlpha: 0.7, filterSpan: 'window' }, 3);
    const causal2 = createSasrec({ ...base, filterAlpha: 0.7 }, 3);
    const h = Int32Array.from([4, 6, 8, 2]);
    expect(maxAbsDiff(tf.tidy(() => encodeLast(win2, h, 1, 4).arraySync()[0]!), tf.tidy(() => encodeLast(causal2, h, 1, 4).arraySync()[0]!))).toBeGreaterThan(1e-4);
    for (const m of [win, causal, win2, causal2]) disposeModel(m);
  });

  it('adds beta per block (and a LayerNorm per block when post-LN) after every other parameter; alpha 0 is the plain model', () => {
    const pre = createSasrec({ ...base, filterAlpha: 0.5 }, 4);
    const post = createSasrec({ ...base, norm: 'post', filterAlpha: 0.5 }, 4);
    const plain = createSasrec({ ...base, filterAlpha: 0 }, 4);
    const names = [...pre.params.keys()];
    expect(names.slice(-2)).toEqual(['block0.filter.beta', 'block1.filter.beta']);
    expect([...post.params.keys()].slice(-6)).toEqual(['block0.filter.beta', 'block0.filter.ln.g', 'block0.filter.ln.b', 'block1.filter.beta', 'block1.filter.ln.g', 'block1.filter.ln.b']);
    expect([...plain.params.keys()]).toEqual(names.slice(0, -2));
    // The shared parameters start from the same draws as the plain model's.
    expect(Array.from(pre.params.get('block1.ffn.w2')!.dataSync())).toEqual(Array.from(plain.params.get('block1.ffn.w2')!.dataSync()));
    const count = (m: typeof pre) => [...m.params.values()].reduce((s, v) => s + v.size, 0);
    expect(sasrecParams({ ...base, filterAlpha: 0.5 })).toBe(count(pre));
    expect(sasrecParams({ ...base, norm: 'post', filterAlpha: 0.5 })).toBe(count(post));
    expect(sasrecParams(base)).toBe(count(plain));
    for (const m of [pre, post, plain]) disposeModel(m);
  });

  it('--init xavier draws beta from N(0, 1) on its own stream and keeps the other tensors as without the filter', () => {
    const x = createSasrec({ ...base, init: 'xavier', filterAlpha: 0.5 }, 6);
    const plain = createSasrec({ ...base, init: 'xavier' }, 6);
    for (const [n, v] of plain.params) expect(Array.from(x.params.get(n)!.dataSync())).toEqual(Array.from(v.dataSync()));
    const beta = Array.from(x.params.get('block0.filter.beta')!.dataSync());
    expect(beta.some((b) => Math.abs(b) > 0.3)).toBe(true); // unit scale, not an xavier std of ~0.2 or less
    disposeModel(x);
    disposeModel(plain);
  });

  it('bad values and combinations are refused naming the option', () => {
    expect(() => validateStudentOptions({ filterAlpha: 1 })).toThrow(/--filter-alpha must be a number >= 0 and < 1/);
    expect(() => validateStudentOptions({ filterBins: 0 })).toThrow(/--filter-bins must be an integer >= 1/);
    expect(() => validateStudentOptions({ filterAlpha: 0.5, attention: 'bidirectional' })).toThrow(/--filter-alpha .* --attention causal/);
    expect(() => validateStudentOptions({ filterAlpha: 0.5, padKeys: 'attend' })).toThrow(/--pad-keys mask/);
    expect(() => checkModelConfig({ ...base, filterAlpha: 1.5 }, 'm')).toThrow(/"filterAlpha" must be a number in \[0, 1\)/);
    // A window filter sees later slots: only prefix windows (trained at their last slot) keep the targets unseen.
    expect(() => validateStudentOptions({ filterAlpha: 0.5, filterSpan: 'window' })).toThrow(/--filter-span window .* --windows last: use --windows prefixes/);
    expect(() => validateStudentOptions({ filterAlpha: 0.5, filterSpan: 'window', windows: 'all' })).toThrow(/--windows all/);
    expect(() => validateStudentOptions({ filterAlpha: 0.5, filterSpan: 'window', windows: 'prefixes' })).not.toThrow();
    expect(() => checkModelConfig({ ...base, filterSpan: 'window' } as ModelConfig, 'm')).toThrow(/"filterSpan" must be "window" \(with "filterAlpha" > 0\)/);
  });

  it('a trained run keeps the branch in its model file and serves it (the ONNX export is checked in onnx.test.ts)', async () => {
    const dir = join(tmp, 'run');
    const opts = smallOptions({ filterAlpha: 0.6, epochs: 1 });
    await trainStudent({ ds: await smallDataset(), opts, outDir: dir, backend: 'wasm', log: () => {} });
    const file = readStudentFile(dir);
    expect(file.config).toMatchObject({ filterAlpha: 0.6, filterBins: 3 });
    const s = await loadStudent(dir);
    const m = createSasrec(file.config, 1);
    for (const [n, v] of m.params) v.assign(tf.tensor(file.tensors[n]!.data as Float32Array, v.shape));
    const h = [3, 9, 4, 7];
    const want = tf.tidy(() => tf.matMul(encodeLast(m, Int32Array.from(h), 1, 4), m.itemEmb, false, true).dataSync());
    expect(maxAbsDiff(Array.from(s.scores(h)).slice(1), Array.from(want).slice(1))).toBeLessThan(1e-4);
    s.dispose();
    disposeModel(m);
  });
});
