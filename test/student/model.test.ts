import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { segmentSum } from '../../src/backend/kernels.js';
import { fullSoftmaxCE, fullSoftmaxCEValue, logSumExp } from '../../src/student/training/losses.js';
import { attentionBias } from '../../src/student/model/layers.js';
import { createSasrec, disposeModel, encode, encodeLast, modelVariables } from '../../src/student/model/model.js';
import { makeRng } from '../../src/util/rng.js';
import { topK } from '../../src/student/serving/serve.js';

const cfg = { numItems: 20, maxLen: 8, dims: 8, blocks: 2, heads: 2, dropout: 0, attnDropout: 0, ffnDims: 8 };

beforeAll(async () => {
  expect(await initBackend('wasm')).toBe('wasm');
});

describe('backend kernels', () => {
  it('segmentSum adds rows into segments and drops out-of-range ids', () => {
    const out = new Float32Array(6);
    segmentSum(Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]), Int32Array.from([2, 0, 2, 9]), 3, 2, out);
    expect([...out]).toEqual([3, 4, 0, 0, 6, 8]);
  });

  it('gather gradient (UnsortedSegmentSum on wasm) matches the cpu backend', async () => {
    const grad = () =>
      tf.tidy(() => {
        const E = tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8]]);
        const w = tf.tensor2d([[1, 10], [2, 20], [3, 30]]);
        return tf.grad((e: tf.Tensor) => tf.sum(tf.mul(tf.gather(e, tf.tensor1d([3, 1, 3], 'int32')), w)))(E).arraySync();
      });
    const wasm = grad();
    await initBackend('cpu');
    const cpu = grad();
    await initBackend('wasm');
    expect(wasm).toEqual([[0, 0], [2, 20], [0, 0], [4, 40]]);
    expect(wasm).toEqual(cpu);
  });
});

describe('SASRec model', () => {
  it('is causal: changing a later item leaves earlier positions unchanged', () => {
    const m = createSasrec(cfg, 1);
    const a = Int32Array.from([0, 0, 3, 5, 7, 9]);
    const b = Int32Array.from([0, 0, 3, 5, 7, 11]);
    const ha = tf.tidy(() => encode(m, a, 1, 6)[1]!.arraySync()[0]!);
    const hb = tf.tidy(() => encode(m, b, 1, 6)[1]!.arraySync()[0]!);
    for (let i = 0; i < 5; i++) ha[i]!.forEach((v, d) => expect(hb[i]![d]).toBeCloseTo(v, 5));
    expect(Math.abs(ha[5]![0]! - hb[5]![0]!) + Math.abs(ha[5]![1]! - hb[5]![1]!)).toBeGreaterThan(1e-4);
    // padding rows are zero in every block
    expect(ha[0]!.every((v) => v === 0)).toBe(true);
    disposeModel(m);
  });

  it('gives the same last state whatever the amount of left padding', () => {
    const m = createSasrec(cfg, 2);
    const short = tf.tidy(() => encode(m, Int32Array.from([4, 6, 8]), 1, 3)[1]!.arraySync()[0]![2]!);
    const padded = tf.tidy(() => encode(m, Int32Array.from([0, 0, 0, 0, 4, 6, 8]), 1, 7)[1]!.arraySync()[0]![6]!);
    short.forEach((v, d) => expect(padded[d]).toBeCloseTo(v, 5));
    disposeModel(m);
  });

  it('encodeLast equals the last slot of encode (with padding in the batch)', () => {
    const m = createSasrec(cfg, 6);
    const items = Int32Array.from([0, 0, 3, 4, 5, 1, 2, 3, 4, 5]);
    const full = tf.tidy(() => encode(m, items, 2, 5)[1]!.arraySync());
    const last = tf.tidy(() => encodeLast(m, items, 2, 5).arraySync());
    for (let b = 0; b < 2; b++) last[b]!.forEach((v, d) => expect(v).toBeCloseTo(full[b]![4]![d]!, 5));
    disposeModel(m);
  });

  it('attention bias masks future and padding keys', () => {
    const b = attentionBias(Int32Array.from([0, 7, 8]), 1, 3).arraySync()[0]![0]!;
    expect(b.map((r) => r.map((v) => (v < -1e8 ? 'x' : '.')).join(''))).toEqual(['xxx', 'x.x', 'x..']);
  });

  it('is deterministic for a seed', () => {
    const a = createSasrec(cfg, 3);
    const b = createSasrec(cfg, 3);
    expect(Array.from(a.itemEmb.dataSync())).toEqual(Array.from(b.itemEmb.dataSync()));
    expect(Array.from(a.itemEmb.dataSync().slice(0, 8))).toEqual(new Array(8).fill(0)); // padding row
    disposeModel(a);
    disposeModel(b);
  });
});

describe('losses', () => {
  it('logSumExp matches the definition and its gradient is the softmax', () => {
    const x = tf.tensor2d([[1, 2, 3], [0, 0, 0]]);
    const v = logSumExp(x).arraySync() as number[];
    expect(v[0]).toBeCloseTo(Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)), 5);
    expect(v[1]).toBeCloseTo(Math.log(3), 5);
    const g = tf.grad((t: tf.Tensor) => tf.sum(logSumExp(t)))(x).arraySync() as number[][];
    expect(g[1]![0]).toBeCloseTo(1 / 3, 5);
  });

  it('the custom-gradient full-softmax CE equals plain autodiff in value and gradient', () => {
    const m = createSasrec(cfg, 4);
    const h = tf.randomNormal([5, 8], 0, 1, 'float32', 9) as tf.Tensor2D;
    const t = tf.tensor1d([1, 20, 3, 3, 7], 'int32');
    const fast = tf.variableGrads(() => fullSoftmaxCE(h, t, m.itemEmb), [m.itemEmb]);
    const ref = tf.variableGrads(() => fullSoftmaxCEValue(h, t, m.itemEmb), [m.itemEmb]);
    expect(fast.value.dataSync()[0]).toBeCloseTo(ref.value.dataSync()[0]!, 4);
    const gf = fast.grads[m.itemEmb.name]!.dataSync();
    const gr = ref.grads[m.itemEmb.name]!.dataSync();
    for (let i = 0; i < gr.length; i++) expect(gf[i]).toBeCloseTo(gr[i]!, 5);
    const dh = tf.grad((x: tf.Tensor) => fullSoftmaxCE(x as tf.Tensor2D, t, m.itemEmb))(h).dataSync();
    const dhRef = tf.grad((x: tf.Tensor) => fullSoftmaxCEValue(x as tf.Tensor2D, t, m.itemEmb))(h).dataSync();
    for (let i = 0; i < dh.length; i++) expect(dh[i]).toBeCloseTo(dhRef[i]!, 5);
    disposeModel(m);
  });

  it('every model variable receives a gradient through encode + CE', () => {
    const m = createSasrec({ ...cfg, dropout: 0.2 }, 5);
    const items = Int32Array.from([0, 2, 3, 4, 5, 6, 7, 8]);
    const { grads } = tf.variableGrads(() => {
      const hs = encode(m, items, 1, 8, { rng: makeRng(1) });
      const h = tf.reshape(tf.slice(hs[1]!, [0, 1, 0], [1, 7, 8]), [7, 8]) as tf.Tensor2D;
      return fullSoftmaxCE(h, tf.tensor1d([3, 4, 5, 6, 7, 8, 9], 'int32'), m.itemEmb);
    }, modelVariables(m));
    for (const v of modelVariables(m)) {
      const g = grads[v.name]!;
      expect(tf.sum(tf.abs(g)).dataSync()[0]).toBeGreaterThan(0);
    }
    disposeModel(m);
  });
});

describe('topK', () => {
  it('returns the k best ids (not padding), skipping excluded ones, ties by smaller id', () => {
    const s = Float32Array.from([100, 0.1, 0.9, 0.5, 0.9, 0.3]);
    expect(topK(s, 3)).toEqual({ items: [2, 4, 3], scores: [s[2], s[4], s[3]] });
    expect(topK(s, 2, new Set([2])).items).toEqual([4, 3]);
    expect(topK(s, 10).items).toEqual([2, 4, 3, 5, 1]);
  });
});
