/**
 * The student options added to compare with pmixer/SASRec.pytorch (norm, init, embScale, labelSmoothing, beta1,
 * lrSchedule/warmupSteps), each checked against values computed independently of the code under test
 * (hand-written loops, hand-computed numbers, finite differences), plus: their defaults reproduce the
 * behaviour from before they existed, and run folders written before them still load and resume.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { RecdistillError } from '../../src/errors.js';
import { readTensors, writeTensors } from '../../src/student/model/checkpoint.js';
import { validateStudentOptions } from '../../src/student/training/config.js';
import { fullSoftmaxCE, fullSoftmaxCEValue } from '../../src/student/training/losses.js';
import { createSasrec, disposeModel, encode, encodeLast, modelVariables, type ModelConfig } from '../../src/student/model/model.js';
import { createEma, disposeEma, updateEma, withShadow } from '../../src/student/training/ema.js';
import { createAdam, scheduledLr } from '../../src/student/training/optim.js';
import { checkModelConfig, loadStudent, readStudentFile } from '../../src/student/serving/serve.js';
import { modelConfigFrom, runIdentity, trainStudent } from '../../src/student/training/train.js';
import { trainStep } from '../../src/student/training/update.js';
import { buildWindows, makeBatch } from '../../src/student/model/batches.js';
import type { RunState } from '../../src/student/model/run-folder.js';
import { lossSetup } from '../../src/student/training/step.js';
import { datasetFromFlags } from '../../src/data/options.js';
import type { PreparedDataset } from '../../src/data/types.js';
import { makeRng } from '../../src/util/rng.js';
import { maxAbsDiff } from '../helpers/compare.js';
import { SMALL_DATA, smallDataset, smallOptions } from './fixtures/small.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-quality-options-'));
const quiet = () => {};
const NEW_KEYS = ['norm', 'init', 'embScale', 'labelSmoothing', 'beta1', 'lrSchedule', 'warmupSteps', 'padKeys', 'attnOutDropout', 'ema', 'batching', 'stepWeight'];
/** The new options written out at their default values. */
const OLD_VALUES = { norm: 'pre', init: 'default', embScale: true, labelSmoothing: 0, beta1: 0.9, lrSchedule: 'constant', warmupSteps: 0, padKeys: 'mask', attnOutDropout: true, ema: 0, batching: 'length', stepWeight: 'batch' };

beforeAll(async () => {
  await initBackend('wasm');
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Model tensors of a safetensors file (the data only, metadata aside). */
function tensorData(file: string): Record<string, number[]> {
  const { tensors } = readTensors(file);
  return Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, Array.from(t.data as Float32Array)]));
}

// ---- plain-JS post-LN SASRec (loops over numbers; no tfjs) -----------------------------------------------------

function lnRow(x: number[], g: Float32Array, b: Float32Array): number[] {
  const mean = x.reduce((s, v) => s + v, 0) / x.length;
  const variance = x.reduce((s, v) => s + (v - mean) ** 2, 0) / x.length;
  return x.map((v, d) => ((v - mean) / Math.sqrt(variance + 1e-8)) * g[d]! + b[d]!);
}

/** y = x W + b for one row; W row-major [x.length, cols]. */
function affine(x: number[], W: Float32Array, b: Float32Array, cols: number): number[] {
  const y: number[] = [];
  for (let c = 0; c < cols; c++) {
    let s = b[c]!;
    for (let r = 0; r < x.length; r++) s += x[r]! * W[r * cols + c]!;
    y.push(s);
  }
  return y;
}

/**
 * pmixer's log2feats with norm_first = False for one left-padded sequence: x = E[i] (* sqrt(D)) + P[pos]; per
 * block x = LN1(x + MHA(x)), x = LN2(x + FFN(x)); then the final LayerNorm. A real query attends to the real
 * keys at or before it; padding rows are zero.
 */
function postLnReference(cfg: ModelConfig, w: (name: string) => Float32Array, given: number[], embScale: boolean, padAttend = false): number[][] {
  const { dims: D, heads: H, maxLen, ffnDims: F } = cfg;
  // padAttend (pmixer as written): the sequence is left-padded to maxLen, every row (padding too) is computed
  // and attends to every key at or before it; the caller gets the last given.length rows, padding zeroed.
  const items = padAttend ? [...new Array(maxLen - given.length).fill(0), ...given] : given;
  const L = items.length;
  const dh = D / H;
  const E = w('item_emb');
  const P = w('pos_emb');
  const real = items.map((id) => id !== 0);
  let x = items.map((id, i) => {
    const row: number[] = [];
    for (let d = 0; d < D; d++) row.push(real[i] ? E[id * D + d]! * (embScale ? Math.sqrt(D) : 1) + P[(maxLen - L + i) * D + d]! : 0);
    return row;
  });
  for (let bi = 0; bi < cfg.blocks; bi++) {
    const p = (n: string) => w(`block${bi}.${n}`);
    const qkv = x.map((row) => affine(row, p('attn.wqkv'), p('attn.bqkv'), 3 * D));
    const next: number[][] = [];
    for (let i = 0; i < L; i++) {
      if (!real[i] && !padAttend) {
        next.push(new Array(D).fill(0));
        continue;
      }
      const ctx = new Array(D).fill(0);
      for (let h = 0; h < H; h++) {
        const keys = [...Array(i + 1).keys()].filter((j) => real[j] || padAttend);
        const s = keys.map((j) => {
          let dot = 0;
          for (let t = 0; t < dh; t++) dot += qkv[i]![h * dh + t]! * qkv[j]![D + h * dh + t]!;
          return dot / Math.sqrt(dh);
        });
        const m = Math.max(...s);
        const e = s.map((v) => Math.exp(v - m));
        const z = e.reduce((a, b) => a + b, 0);
        keys.forEach((j, n) => {
          for (let t = 0; t < dh; t++) ctx[h * dh + t] += (e[n]! / z) * qkv[j]![2 * D + h * dh + t]!;
        });
      }
      const a = affine(ctx, p('attn.wo'), p('attn.bo'), D);
      const y = lnRow(x[i]!.map((v, d) => v + a[d]!), p('ln1.g'), p('ln1.b'));
      const f1 = affine(y, p('ffn.w1'), p('ffn.b1'), F).map((v) => Math.max(0, v));
      const f2 = affine(f1, p('ffn.w2'), p('ffn.b2'), D);
      next.push(lnRow(y.map((v, d) => v + f2[d]!), p('ln2.g'), p('ln2.b')));
    }
    x = next;
  }
  return x.map((row, i) => (real[i] ? lnRow(row, w('final_ln.g'), w('final_ln.b')) : new Array(D).fill(0))).slice(L - given.length);
}

describe('--norm post (and --no-emb-scale)', () => {
  const cfg: ModelConfig = { numItems: 9, maxLen: 6, dims: 4, blocks: 2, heads: 2, ffnDims: 6, dropout: 0, attnDropout: 0, norm: 'post' };
  const items = [0, 0, 3, 1, 9, 5, 2, 4, 6, 1, 3, 8]; // B = 2, L = 6: the first row is left-padded

  for (const embScale of [true, false]) {
    it(`the forward pass equals a plain-JS post-LN SASRec (embScale ${embScale}), and encodeLast its last slot`, () => {
      const m = createSasrec({ ...cfg, embScale }, 5);
      // Random gains and biases too (init gives LN 1/0 and zero biases), so that each one's place is checked.
      const rng = makeRng(77);
      for (const [name, v] of m.params) {
        const data = Float32Array.from({ length: v.size }, () => (name.endsWith('.g') ? 1 : 0) + (rng.next() - 0.5));
        v.assign(tf.tensor(data, v.shape));
      }
      const weights = new Map([...m.params].map(([n, v]) => [n, v.dataSync() as Float32Array]));
      const got = tf.tidy(() => encode(m, Int32Array.from(items), 2, 6).at(-1)!.arraySync());
      const last = tf.tidy(() => encodeLast(m, Int32Array.from(items), 2, 6).arraySync());
      for (let b = 0; b < 2; b++) {
        const want = postLnReference(m.config, (n) => weights.get(n)!, items.slice(b * 6, b * 6 + 6), embScale);
        expect(maxAbsDiff(got[b]!.flat(), want.flat())).toBeLessThan(1e-5);
        expect(maxAbsDiff(last[b]!, want[5]!)).toBeLessThan(1e-5);
      }
      expect(got[0]![0]!.every((v) => v === 0)).toBe(true); // padding row
      disposeModel(m);
    });
  }

  it('--pad-keys attend equals pmixer as written (padded to maxLen, padding attended, not zeroed) for a shorter batch', () => {
    const m = createSasrec({ ...cfg, padKeys: 'attend' }, 9);
    const rng = makeRng(78);
    for (const [name, v] of m.params) {
      const data = Float32Array.from({ length: v.size }, () => (name.endsWith('.g') ? 1 : 0) + (rng.next() - 0.5));
      v.assign(tf.tensor(data, v.shape));
    }
    const weights = new Map([...m.params].map(([n, v]) => [n, v.dataSync() as Float32Array]));
    const short = [0, 3, 1, 9, 5, 2, 4, 6]; // B = 2, L = 4 < maxLen = 6
    const got = tf.tidy(() => encode(m, Int32Array.from(short), 2, 4).at(-1)!.arraySync());
    const last = tf.tidy(() => encodeLast(m, Int32Array.from(short), 2, 4).arraySync());
    for (let b = 0; b < 2; b++) {
      const want = postLnReference(m.config, (n) => weights.get(n)!, short.slice(b * 4, b * 4 + 4), true, true);
      expect(maxAbsDiff(got[b]!.flat(), want.flat())).toBeLessThan(1e-5);
      expect(maxAbsDiff(last[b]!, want[3]!)).toBeLessThan(1e-5);
      // The padding changes the real rows: masking it gives a different state.
      const masked = postLnReference(m.config, (n) => weights.get(n)!, short.slice(b * 4, b * 4 + 4), true, false);
      expect(maxAbsDiff(want[3]!, masked[3]!)).toBeGreaterThan(1e-3);
    }
    disposeModel(m);
  });

  it('post-LN gives the same last state whatever the amount of left padding', () => {
    const m = createSasrec({ ...cfg, init: 'xavier' }, 2);
    const short = tf.tidy(() => encodeLast(m, Int32Array.from([4, 6, 8]), 1, 3).arraySync()[0]!);
    const padded = tf.tidy(() => encodeLast(m, Int32Array.from([0, 0, 4, 6, 8]), 1, 5).arraySync()[0]!);
    expect(maxAbsDiff(short, padded)).toBeLessThan(1e-5);
    disposeModel(m);
  });
});

describe('--label-smoothing (full-softmax CE)', () => {
  // Padding row 0 = [5, 5] would dominate the softmax if it were a class (h1 . E0 = 15).
  const E = [[5, 5], [1, 0], [0, 1], [0, 0]];
  const H = [[1, 2], [0, -1]];
  const T = [1, 3];

  /** -sum_j q_j log p_j over items 1..3, q = 0.7 on the target + 0.1 on each item, by hand-written loops, in doubles. */
  function reference(h: number[][], e: number[][]): number {
    let total = 0;
    h.forEach((row, p) => {
      const logits = e.slice(1).map((r) => r[0]! * row[0]! + r[1]! * row[1]!);
      const lse = Math.log(logits.reduce((s, o) => s + Math.exp(o), 0));
      logits.forEach((o, j) => (total -= (0.1 + (j + 1 === T[p] ? 0.7 : 0)) * (o - lse)));
    });
    return total / h.length;
  }

  it('value equals the hand-computed number; the padding column gets no target mass', () => {
    // Row 1: logits [1, 2, 0], q = [0.8, 0.1, 0.1]: log(e + e^2 + 1) - 1 = 1.4076059644443806.
    // Row 2: logits [0, -1, 0], q = [0.1, 0.1, 0.8]: log(2 + 1/e) + 0.1 = 0.9619948040582511.
    const want = (1.4076059644443806 + 0.9619948040582511) / 2;
    expect(reference(H, E)).toBeCloseTo(want, 12);
    const [h, e, t] = [tf.tensor2d(H), tf.tensor2d(E), tf.tensor1d(T, 'int32')];
    expect(fullSoftmaxCEValue(h, t, e, 0.3).dataSync()[0]).toBeCloseTo(want, 5);
    const ev = tf.variable(e, true, 'ls_e');
    const fast = tf.variableGrads(() => fullSoftmaxCE(h, t, ev, 0.3), [ev]);
    expect(fast.value.dataSync()[0]).toBeCloseTo(want, 5);
    // Padding row: zero gradient, and moving it changes nothing.
    expect(Array.from(fast.grads.ls_e!.dataSync().slice(0, 2))).toEqual([0, 0]);
    const moved = tf.tensor2d([[-40, 300], ...E.slice(1)]);
    expect(fullSoftmaxCEValue(h, t, moved, 0.3).dataSync()[0]).toBeCloseTo(want, 5);
    ev.dispose();
    // Smoothing 0 is the plain CE: row 1 log(e + e^2 + 1) - 1, row 2 log(2 + 1/e) - 0.
    const plain = (Math.log(Math.E + Math.E ** 2 + 1) - 1 + Math.log(2 + 1 / Math.E)) / 2;
    expect(fullSoftmaxCEValue(h, t, e, 0).dataSync()[0]).toBeCloseTo(plain, 5);
  });

  it('its custom gradient (h and item embeddings) matches finite differences of the reference', () => {
    const h = tf.variable(tf.tensor2d(H), true, 'ls_h2');
    const e = tf.variable(tf.tensor2d(E), true, 'ls_e2');
    const { grads } = tf.variableGrads(() => fullSoftmaxCE(h, tf.tensor1d(T, 'int32'), e, 0.3), [h, e]);
    const fd = (which: 'h' | 'e') => {
      const base = which === 'h' ? H : E;
      const out: number[] = [];
      base.forEach((row, r) =>
        row.forEach((_, c) => {
          const shifted = (d: number) => base.map((rr, i) => rr.map((v, j) => (i === r && j === c ? v + d : v)));
          const f = (d: number) => (which === 'h' ? reference(shifted(d), E) : reference(H, shifted(d)));
          out.push((f(1e-6) - f(-1e-6)) / 2e-6);
        }),
      );
      return out;
    };
    expect(maxAbsDiff(grads.ls_h2!.dataSync(), fd('h'))).toBeLessThan(1e-5);
    expect(maxAbsDiff(grads.ls_e2!.dataSync(), fd('e'))).toBeLessThan(1e-5);
    h.dispose();
    e.dispose();
  });

  it('is refused (E_USAGE) for the losses that do not implement it', async () => {
    for (const loss of ['sampled', 'bce'] as const) {
      let err: unknown;
      try {
        validateStudentOptions({ loss, labelSmoothing: 0.1 });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(RecdistillError);
      expect((err as RecdistillError).code).toBe('E_USAGE');
      expect((err as Error).message).toMatch(/--label-smoothing .*--loss ce.*not for --loss/);
    }
    expect(() => validateStudentOptions({ loss: 'ce', labelSmoothing: 1 })).toThrow(/--label-smoothing must be a number >= 0 and < 1/);
    const ds = await smallDataset();
    await expect(trainStudent({ ds, opts: smallOptions({ loss: 'bce', labelSmoothing: 0.1 }), outDir: join(tmp, 'ls-bce'), backend: 'wasm', log: quiet })).rejects.toThrow(/--label-smoothing/);
  });
});

describe('--init xavier', () => {
  const std = (a: ArrayLike<number>) => {
    let s = 0;
    let ss = 0;
    for (let i = 0; i < a.length; i++) {
      s += a[i]!;
      ss += a[i]! ** 2;
    }
    return Math.sqrt(ss / a.length - (s / a.length) ** 2);
  };

  it('Xavier-normal with torch fans, padding row exactly zero, biases as torch leaves them', () => {
    // item_emb [4001, 32]: std sqrt(2 / (4001 + 32)) = 0.022265; attn.wqkv [32, 96] (torch in_proj [96, 32]):
    // sqrt(2 / 128) = 0.125; ffn.w1 [32, 48]: sqrt(2 / 80) = 0.158114; pos_emb (torch [maxLen + 1, D]): sqrt(2 / 233) = 0.092648.
    const m = createSasrec({ numItems: 4000, maxLen: 200, dims: 32, blocks: 1, heads: 2, ffnDims: 48, dropout: 0, attnDropout: 0, init: 'xavier' }, 9);
    const get = (n: string) => m.params.get(n)!.dataSync() as Float32Array;
    const emb = get('item_emb');
    expect(Array.from(emb.slice(0, 32))).toEqual(new Array(32).fill(0));
    expect(std(emb.slice(32)) / 0.022265).toBeGreaterThan(0.9);
    expect(std(emb.slice(32)) / 0.022265).toBeLessThan(1.1);
    for (const [name, want] of [['block0.attn.wqkv', 0.125], ['block0.ffn.w1', 0.158114], ['pos_emb', 0.092648]] as const) {
      expect(std(get(name)) / want, name).toBeGreaterThan(0.9);
      expect(std(get(name)) / want, name).toBeLessThan(1.1);
    }
    // torch: MHA biases 0; Conv1d bias U(+-1/sqrt(in)) (1/sqrt(32) = 0.17678, 1/sqrt(48) = 0.14434); LN 1 / 0.
    expect(get('block0.attn.bqkv').every((v) => v === 0) && get('block0.attn.bo').every((v) => v === 0)).toBe(true);
    for (const [name, bound] of [['block0.ffn.b1', 0.17678], ['block0.ffn.b2', 0.14434]] as const) {
      const b = get(name);
      expect(b.every((v) => Math.abs(v) <= bound)).toBe(true);
      expect(Math.max(...b.map(Math.abs))).toBeGreaterThan(bound / 2);
    }
    expect(get('block0.ln1.g').every((v) => v === 1) && get('final_ln.b').every((v) => v === 0)).toBe(true);
    disposeModel(m);
  });

  it('init "default" (and a config without the field) is the Glorot-uniform init of before', () => {
    const cfg: ModelConfig = { numItems: 20, maxLen: 8, dims: 8, blocks: 2, heads: 2, ffnDims: 8, dropout: 0, attnDropout: 0 };
    const [a, b, c] = [createSasrec(cfg, 3), createSasrec({ ...cfg, init: 'default', norm: 'pre', embScale: true }, 3), createSasrec({ ...cfg, init: 'xavier' }, 3)];
    for (const n of a.params.keys()) expect(Array.from(b.params.get(n)!.dataSync())).toEqual(Array.from(a.params.get(n)!.dataSync()));
    // Glorot-uniform: |w| <= sqrt(6 / (8 + 24)) for wqkv [8, 24]; xavier-normal exceeds it somewhere.
    expect(Math.max(...Array.from(a.params.get('block0.attn.wqkv')!.dataSync(), Math.abs))).toBeLessThanOrEqual(Math.sqrt(6 / 32));
    expect(Array.from(c.params.get('item_emb')!.dataSync())).not.toEqual(Array.from(a.params.get('item_emb')!.dataSync()));
    [a, b, c].forEach(disposeModel);
  });
});

describe('--lr-schedule, --warmup-steps, --beta1', () => {
  it('schedule values at chosen steps', () => {
    for (const s of [0, 5, 1000]) expect(scheduledLr('constant', 0.01, s, 0, 100)).toBe(0.01);
    // warmup 4: 0.0025, 0.005, 0.0075, 0.01, then 0.01
    expect([0, 1, 2, 3, 4, 50].map((s) => scheduledLr('warmup', 0.01, s, 4, 100))).toEqual([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01]);
    expect(scheduledLr('warmup', 0.01, 0, 0, 100)).toBe(0.01);
    // cosine, warmup 2 of 12 steps: 0.005, 0.01, then 0.01 * (1 + cos(pi (s - 2) / 10)) / 2
    const cos = [0, 1, 2, 4, 7, 11, 12, 30].map((s) => scheduledLr('cosine', 0.01, s, 2, 12));
    const want = [0.005, 0.01, 0.01, 0.009045084971874737, 0.005, 0.0002447174185242324, 0, 0];
    cos.forEach((v, i) => expect(v).toBeCloseTo(want[i]!, 15));
    expect(scheduledLr('cosine', 0.01, 0, 0, 10)).toBe(0.01);
  });

  it('Adam uses beta1 and the step\'s learning rate (hand-computed two steps)', () => {
    // Gradients +1 then -1, beta1 0.5, beta2 0.98, lr 0.03 then 0.06: step 1 moves -0.03 (m/sqrt(v) = 1 after
    // bias correction); step 2: m = -0.25, v = 0.0396, lr_t = 0.06 sqrt(0.0396) / 0.75, update = -0.06 / 3.
    const run = (beta1: number) => {
      const p = tf.variable(tf.scalar(1), true);
      const adam = createAdam([p], { lr: 1, beta1, beta2: 0.98, eps: 0, weightDecay: 0 });
      adam.apply([p], [tf.scalar(1)], 0.03);
      adam.apply([p], [tf.scalar(-1)], 0.06);
      const v = p.dataSync()[0]!;
      adam.dispose();
      p.dispose();
      return v;
    };
    expect(run(0.5)).toBeCloseTo(1 - 0.03 + 0.02, 6);
    // beta1 0.9: m = -0.01, lr_t = 0.06 sqrt(0.0396) / 0.19, update = -0.06 / 19.
    expect(run(0.9)).toBeCloseTo(1 - 0.03 + 0.06 / 19, 6);
  });

  it('--warmup-steps without a schedule is refused; a cosine run\'s identity carries --epochs', async () => {
    expect(() => validateStudentOptions({ warmupSteps: 5 })).toThrow(/--warmup-steps 5 has no effect with --lr-schedule constant/);
    expect(() => validateStudentOptions({ lrSchedule: 'linear' } as never)).toThrow(/--lr-schedule must be one of constant, warmup, cosine/);
    const ds = await smallDataset();
    const options = (o: Record<string, unknown>) => (runIdentity(ds, smallOptions(o)).options as Record<string, unknown>);
    expect(options({ lrSchedule: 'cosine', epochs: 7 }).epochs).toBe(7);
    expect(options({ lrSchedule: 'warmup', warmupSteps: 3 }).epochs).toBeUndefined();
  });

  it('a cosine run interrupted after epoch 1 resumes to the same weights as an uninterrupted one', async () => {
    const ds = await smallDataset();
    // ~7 steps an epoch: a 10-step warm-up crosses the epoch boundary.
    const opts = smallOptions({ epochs: 2, dropout: 0.2, lrSchedule: 'cosine', warmupSteps: 10, beta1: 0.8 });
    const straight = join(tmp, 'cos-straight');
    await trainStudent({ ds, opts, outDir: straight, backend: 'wasm', log: quiet });
    const cut = join(tmp, 'cos-cut');
    const stop = trainStudent({ ds, opts, outDir: cut, backend: 'wasm', log: quiet, onEpoch: (e) => { if (e === 1) throw new Error('interrupted'); } });
    await expect(stop).rejects.toThrow('interrupted');
    const logs: string[] = [];
    await trainStudent({ ds, opts, outDir: cut, backend: 'wasm', log: (l) => logs.push(l) });
    expect(logs.some((l) => /resuming .* after epoch 1/.test(l))).toBe(true);
    expect(readFileSync(join(cut, 'model.safetensors')).equals(readFileSync(join(straight, 'model.safetensors')))).toBe(true);
  }, 900_000);
});

describe('--ema (moving average of the weights)', () => {
  it('the shadow follows decay * shadow + (1 - decay) * weights from the initial weights (hand values)', async () => {
    const w = tf.variable(tf.tensor1d([1, 2]));
    const ema = createEma([w], 0.5);
    w.assign(tf.tensor1d([3, 4]));
    updateEma(ema, [w]);
    expect(Array.from(ema.shadow[0]!.dataSync())).toEqual([2, 3]);
    w.assign(tf.tensor1d([5, 8]));
    updateEma(ema, [w]);
    expect(Array.from(ema.shadow[0]!.dataSync())).toEqual([3.5, 5.5]);
    // withShadow evaluates on the shadow and restores the raw weights, even when the callback throws.
    expect(await withShadow(ema, [w], async () => Array.from(w.dataSync()))).toEqual([3.5, 5.5]);
    await expect(withShadow(ema, [w], async () => { throw new Error('x'); })).rejects.toThrow('x');
    expect(Array.from(w.dataSync())).toEqual([5, 8]);
    disposeEma(ema);
    w.dispose();
    expect(() => validateStudentOptions({ ema: 1 })).toThrow(/--ema must be a number >= 0 and < 1/);
  });

  it('the kept weights are the averaged ones, and an interrupted run resumes to the same files', async () => {
    const ds = await smallDataset();
    const opts = smallOptions({ epochs: 2, dropout: 0.2, ema: 0.9, patience: 5 });
    const straight = join(tmp, 'ema-straight');
    await trainStudent({ ds, opts, outDir: straight, backend: 'wasm', log: quiet });
    const cut = join(tmp, 'ema-cut');
    const stop = trainStudent({ ds, opts, outDir: cut, backend: 'wasm', log: quiet, onEpoch: (e) => { if (e === 1) throw new Error('interrupted'); } });
    await expect(stop).rejects.toThrow('interrupted');
    // After epoch 1 (the best so far by construction): the kept copy is the shadow, not the raw weights.
    const ck = tensorData(join(cut, 'checkpoint.safetensors'));
    expect(ck['best/item_emb']).toEqual(ck['ema/item_emb']);
    expect(ck['best/item_emb']).not.toEqual(ck['model/item_emb']);
    await trainStudent({ ds, opts, outDir: cut, backend: 'wasm', log: quiet });
    for (const f of ['model.safetensors', 'checkpoint.safetensors']) expect(tensorData(join(cut, f))).toEqual(tensorData(join(straight, f)));
  }, 900_000);
});

describe('defaults and old run folders', () => {
  const ds = smallDataset();
  const defaults = join(tmp, 'defaults');

  // The one option whose default moved away from the behaviour of old runs (--batching random): given at its
  // old value, the run is the old run. Everything else is at its default.
  const OLD = { batching: 'length' };

  it('the options written out at their old values train what runs from before them trained; the identity has none of them', async () => {
    const explicit = join(tmp, 'explicit');
    await trainStudent({ ds: await ds, opts: smallOptions({ epochs: 2, dropout: 0.2, ...OLD }), outDir: defaults, backend: 'wasm', log: quiet });
    await trainStudent({ ds: await ds, opts: smallOptions({ epochs: 2, dropout: 0.2, ...OLD_VALUES }), outDir: explicit, backend: 'wasm', log: quiet });
    for (const f of ['model.safetensors', 'checkpoint.safetensors']) expect(tensorData(join(explicit, f))).toEqual(tensorData(join(defaults, f)));
    const identity = JSON.parse(readTensors(join(defaults, 'checkpoint.safetensors')).metadata.identity!);
    for (const k of NEW_KEYS) expect(identity.options, k).not.toHaveProperty(k);
    // ... while any new option away from its default trains something else
    const post = join(tmp, 'post');
    await trainStudent({ ds: await ds, opts: smallOptions({ epochs: 2, dropout: 0.2, ...OLD, norm: 'post' }), outDir: post, backend: 'wasm', log: quiet });
    expect(tensorData(join(post, 'model.safetensors'))['item_emb']).not.toEqual(tensorData(join(defaults, 'model.safetensors'))['item_emb']);
    expect(readStudentFile(post).config).toMatchObject({ norm: 'post', init: 'default', embScale: true });
    const random = join(tmp, 'random-batching');
    await trainStudent({ ds: await ds, opts: smallOptions({ epochs: 2, dropout: 0.2, batching: 'random' }), outDir: random, backend: 'wasm', log: quiet });
    expect(tensorData(join(random, 'model.safetensors'))['item_emb']).not.toEqual(tensorData(join(defaults, 'model.safetensors'))['item_emb']);
    expect(JSON.parse(readTensors(join(random, 'checkpoint.safetensors')).metadata.identity!).options).toMatchObject({ batching: 'random' });
    // Today's defaults are random batches: the identity says so, and they train the run above.
    const today = join(tmp, 'today');
    await trainStudent({ ds: await ds, opts: smallOptions({ epochs: 2, dropout: 0.2 }), outDir: today, backend: 'wasm', log: quiet });
    expect(JSON.parse(readTensors(join(today, 'checkpoint.safetensors')).metadata.identity!).options).toMatchObject({ batching: 'random' });
    expect(tensorData(join(today, 'model.safetensors'))).toEqual(tensorData(join(random, 'model.safetensors')));
  }, 900_000);

  it('a model file without the new config fields loads as pre-LN, default init, scaled embeddings', async () => {
    const old = join(tmp, 'old-model');
    const { tensors, metadata } = readTensors(join(defaults, 'model.safetensors'));
    const config = JSON.parse(metadata.config!);
    expect(config).toMatchObject({ norm: 'pre', init: 'default', embScale: true });
    for (const k of ['norm', 'init', 'embScale']) delete config[k];
    rmSync(old, { recursive: true, force: true });
    mkdirSync(old);
    writeTensors(join(old, 'model.safetensors'), tensors, { ...metadata, config: JSON.stringify(config) });
    expect(readStudentFile(old).config).toMatchObject({ norm: 'pre', init: 'default', embScale: true });
    const [a, b] = [await loadStudent(defaults), await loadStudent(old)];
    const h = [3, 9, 4, 7];
    expect(Array.from(b.scores(h))).toEqual(Array.from(a.scores(h)));
    a.dispose();
    b.dispose();
    expect(() => checkModelConfig({ ...config, norm: 'middle' }, 'x')).toThrow(/"norm" must be "pre" or "post"/);
    expect(() => checkModelConfig({ ...config, embScale: 'yes' }, 'x')).toThrow(/"embScale" must be a boolean/);
  });

  it('a run folder whose config.json and checkpoint lack the new keys resumes; a non-default value is refused naming it', async () => {
    const dir = defaults;
    const cfgPath = join(dir, 'config.json');
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
    for (const k of NEW_KEYS) {
      delete cfg.options[k];
      delete cfg.train[k];
      delete cfg.model[k];
    }
    writeFileSync(cfgPath, JSON.stringify(cfg));
    const logs: string[] = [];
    await trainStudent({ ds: await ds, opts: smallOptions({ epochs: 3, dropout: 0.2, ...OLD }), outDir: dir, backend: 'wasm', log: (l) => logs.push(l) });
    expect(logs.some((l) => /resuming .* after epoch 2/.test(l))).toBe(true);
    await expect(trainStudent({ ds: await ds, opts: smallOptions({ epochs: 4, dropout: 0.2, ...OLD, beta1: 0.8, labelSmoothing: 0.1 }), outDir: dir, backend: 'wasm', log: quiet }))
      .rejects.toThrow(/beta1: checkpoint 0\.9 vs now 0\.8; labelSmoothing: checkpoint 0 vs now 0\.1/);
  }, 900_000);
});

describe('--step-weight token', () => {
  it('scales the step\'s gradients: Adam\'s first moment after one step is scale times that of scale 1', async () => {
    const ds = await smallDataset();
    const o = smallOptions();
    const moments = (scale: number) => {
      const model = createSasrec(modelConfigFrom(ds, o), 1);
      const vars = modelVariables(model);
      const adam = createAdam(vars, { lr: o.lr, beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0 });
      const batch = makeBatch(ds, buildWindows(ds, o.maxLen, 'last').slice(0, 8));
      const state: RunState = { epoch: 0, step: 0, best: -Infinity, bestEpoch: 0, sinceBest: 0, trainSeconds: 0, stepsTimed: 0, stepSeconds: 0, history: [], done: false };
      const values = trainStep(model, vars, adam, batch, lossSetup(ds, 'ce', 0, 'uniform'), o.seed, 1, 0, undefined, state, o.lr, scale);
      const m = adam.m.map((t) => Float32Array.from(t.dataSync() as Float32Array));
      adam.dispose();
      disposeModel(model);
      return { m, values };
    };
    const one = moments(1);
    const scaled = moments(2.5);
    expect(scaled.values).toEqual(one.values); // the reported loss is the unscaled mean
    let checked = 0;
    one.m.forEach((m1, i) => m1.forEach((x, j) => {
      if (Math.abs(x) < 1e-6) return;
      expect(scaled.m[i]![j]! / x).toBeCloseTo(2.5, 4);
      checked++;
    }));
    expect(checked).toBeGreaterThan(1000);
  });

  it('trains what batch weighting trains when every batch has the same number of steps, and something else otherwise', async () => {
    // 192 users whose histories exceed maxLen + 3: every window has maxLen steps, 6 full batches of 32.
    const even = { syntheticUsers: 192, syntheticMinLen: 30, syntheticMaxLen: 30 };
    const evenDs = await datasetFromFlags({ ...SMALL_DATA, ...even });
    const train = async (name: string, ds: PreparedDataset, flags: Record<string, unknown>) => {
      const dir = join(tmp, name);
      await trainStudent({ ds, opts: smallOptions({ epochs: 2, ...flags }), outDir: dir, backend: 'wasm', log: quiet });
      return tensorData(join(dir, 'model.safetensors'));
    };
    expect(await train('even-token', evenDs, { ...even, batching: 'length', stepWeight: 'token' })).toEqual(await train('even-batch', evenDs, { ...even, batching: 'length', stepWeight: 'batch' }));
    const ds = await smallDataset();
    expect((await train('uneven-token', ds, { batching: 'length', stepWeight: 'token' }))['item_emb']).not.toEqual((await train('uneven-batch', ds, { batching: 'length', stepWeight: 'batch' }))['item_emb']);
    expect(() => validateStudentOptions({ stepWeight: 'step' } as never)).toThrow(/--step-weight must be one of batch, token/);
  }, 900_000);
});
