/**
 * The bidirectional (cloze) network family of src/student/model/model.ts: it sees the whole sequence, masks padding, owns
 * a MASK row, scores a history through a MASK appended to it; and a causal model's parameters, initial weights
 * and outputs are what they were without the family.
 */
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { validateStudentOptions } from '../../src/student/training/config.js';
import { appendMask, createSasrec, disposeModel, encode, encodeLast, paramShapes, sasrecParams, type ModelConfig } from '../../src/student/model/model.js';

const causal: ModelConfig = { numItems: 20, maxLen: 8, dims: 8, blocks: 2, heads: 2, dropout: 0, attnDropout: 0, ffnDims: 8 };
const bidi: ModelConfig = { ...causal, attention: 'bidirectional' };

beforeAll(async () => {
  await initBackend('wasm');
});

/** Final states [B, L, D] as nested arrays. */
const states = (m: ReturnType<typeof createSasrec>, items: number[][]) =>
  tf.tidy(() => encode(m, Int32Array.from(items.flat()), items.length, items[0]!.length).at(-1)!.arraySync() as number[][][]);

const close = (a: number[], b: number[], tol = 1e-5) => a.every((x, i) => Math.abs(x - b[i]!) < tol);

describe('bidirectional network', () => {
  it('an earlier slot sees a later item (the causal model does not)', () => {
    const mb = createSasrec(bidi, 3);
    const mc = createSasrec(causal, 3);
    const a = [[0, 0, 4, 5, 6, 7]];
    const b = [[0, 0, 4, 5, 6, 9]];
    expect(close(states(mb, a)[0]![2]!, states(mb, b)[0]![2]!)).toBe(false);
    expect(close(states(mc, a)[0]![2]!, states(mc, b)[0]![2]!)).toBe(true);
    disposeModel(mb);
    disposeModel(mc);
  });

  it('padding is masked: more left padding gives the same states for the real slots', () => {
    const m = createSasrec(bidi, 5);
    const short = states(m, [[4, 5, 21]]); // 21 = MASK (numItems + 1)
    const long = states(m, [[0, 0, 0, 4, 5, 21]]);
    for (let l = 0; l < 3; l++) expect(close(short[0]![l]!, long[0]![l + 3]!)).toBe(true);
    expect(long[0]![0]!.every((x) => x === 0)).toBe(true); // padding rows zeroed
    disposeModel(m);
  });

  it('scores a history through MASK appended to it; at maxLen the oldest item gives way', () => {
    expect(Array.from(appendMask(Int32Array.from([0, 4, 5, 1, 2, 3]), 2, 3, bidi).items)).toEqual([0, 4, 5, 21, 1, 2, 3, 21]);
    const full = Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
    const q = appendMask(full, 1, 8, bidi);
    expect(q.L).toBe(8);
    expect(Array.from(q.items)).toEqual([2, 3, 4, 5, 6, 7, 8, 21]);
    const m = createSasrec(bidi, 7);
    const last = tf.tidy(() => encodeLast(m, Int32Array.from([0, 4, 5]), 1, 3).arraySync() as number[][]);
    const viaMask = states(m, [[0, 4, 5, 21]])[0]![3]!;
    expect(close(last[0]!, viaMask)).toBe(true);
    // The MASK row is a parameter: changing it changes the scores (not by a constant shift, which LayerNorm removes).
    const before = last[0]!;
    m.maskEmb!.assign(tf.add(m.maskEmb!, tf.tensor2d([[1, -1, 2, 0, 0, -2, 1, 0]])));
    const after = tf.tidy(() => encodeLast(m, Int32Array.from([0, 4, 5]), 1, 3).arraySync() as number[][])[0]!;
    expect(close(before, after)).toBe(false);
    disposeModel(m);
  });

  it('adds one parameter, mask_emb [1, D], last; a causal model keeps its parameters and initial weights', () => {
    expect([...paramShapes(bidi).keys()]).toEqual([...paramShapes(causal).keys(), 'mask_emb']);
    expect(paramShapes(bidi).get('mask_emb')).toEqual([1, 8]);
    expect(sasrecParams(bidi) - sasrecParams(causal)).toBe(8);
    const mb = createSasrec(bidi, 11);
    const mc = createSasrec(causal, 11);
    expect(mc.maskEmb).toBeUndefined();
    // Same seed: every shared parameter starts equal (the MASK row is drawn after them).
    for (const [name, v] of mc.params) expect(Array.from(v.dataSync())).toEqual(Array.from(mb.params.get(name)!.dataSync()));
    disposeModel(mb);
    disposeModel(mc);
  });

  it('bidirectional with padKeys attend is a usage error naming both options', () => {
    expect(() => validateStudentOptions({ attention: 'bidirectional', padKeys: 'attend' })).toThrow(/--attention bidirectional .*--pad-keys mask/);
    expect(() => validateStudentOptions({ attention: 'sideways' as 'causal' })).toThrow(/--attention must be one of causal, bidirectional/);
  });
});
