/**
 * student:export: the ONNX graph of a trained run gives the tfjs model's scores and recommendations
 * through onnxruntime-node, for histories shorter than, equal to and longer than maxLen, one at a time
 * and batched; also for a post-LN model without the sqrt(D) embedding scale (--norm post --no-emb-scale) and for
 * models with the frequency-filter branch (--filter-alpha, pre- and post-LN).
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportStudentOnnx, loadStudentOnnx } from '../../src/student/serving/onnx.js';
import { loadStudent, type LoadedStudent } from '../../src/student/serving/serve.js';
import { runCmd, TINY_DATA } from '../bench/fixtures.js';

const root = mkdtempSync(join(tmpdir(), 'recdistill-onnx-student-'));
const run = join(root, 'run');
const postRun = join(root, 'post');
const filterRun = join(root, 'filter');
const filterPostRun = join(root, 'filter-post');
const filterWindowRun = join(root, 'filter-window');
let tfjs: LoadedStudent;
let tfjsPost: LoadedStudent;
let tfjsFilter: LoadedStudent;
let tfjsFilterPost: LoadedStudent;
let tfjsFilterWindow: LoadedStudent;
beforeAll(async () => {
  const train = (flags: Record<string, unknown>) => runCmd(() => import('../../src/cli/commands/student-train.js'), { ...TINY_DATA, epochs: 2, dims: 16, blocks: 2, heads: 2, ffnDims: 24, maxLen: 8, batchSize: 32, ...flags });
  await train({ out: run });
  await train({ out: postRun, norm: 'post', embScale: false, init: 'xavier' });
  await train({ out: filterRun, filterAlpha: 0.7 });
  await train({ out: filterPostRun, norm: 'post', filterAlpha: 0.4, filterBins: 2 });
  await train({ out: filterWindowRun, filterAlpha: 0.7, filterSpan: 'window', windows: 'prefixes' });
  tfjs = await loadStudent(run);
  tfjsPost = await loadStudent(postRun);
  tfjsFilter = await loadStudent(filterRun);
  tfjsFilterPost = await loadStudent(filterPostRun);
  tfjsFilterWindow = await loadStudent(filterWindowRun);
});
afterAll(() => {
  tfjs?.dispose();
  tfjsPost?.dispose();
  tfjsFilter?.dispose();
  tfjsFilterPost?.dispose();
  tfjsFilterWindow?.dispose();
  rmSync(root, { recursive: true, force: true });
});

const histories = [[3], [5, 9, 2, 7, 1], [1, 2, 3, 4, 5, 6, 7, 8], [30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19]].map((h) => Int32Array.from(h));

describe('student ONNX export', () => {
  it.each([
    ['pre-LN, scaled embeddings (defaults)', () => [run, tfjs, { norm: 'pre', embScale: true }] as const],
    ['post-LN, unscaled embeddings, xavier init', () => [postRun, tfjsPost, { norm: 'post', embScale: false, init: 'xavier' }] as const],
    ['pre-LN with the frequency-filter branch', () => [filterRun, tfjsFilter, { norm: 'pre', filterAlpha: 0.7, filterBins: 3 }] as const],
    ['post-LN with the frequency-filter branch', () => [filterPostRun, tfjsFilterPost, { norm: 'post', filterAlpha: 0.4, filterBins: 2 }] as const],
    ['pre-LN with the window frequency filter (prefix windows)', () => [filterWindowRun, tfjsFilterWindow, { norm: 'pre', filterAlpha: 0.7, filterBins: 3, filterSpan: 'window' }] as const],
  ])('scores equal the tfjs model within fp tolerance, one by one and batched: %s', async (_, get) => {
    const [dir, tfjs, config] = get();
    const onnx = await loadStudentOnnx(dir);
    expect(onnx.config).toMatchObject(config);
    expect(tfjs.info.config).toMatchObject(config);
    let maxDiff = 0;
    let maxAbs = 0;
    for (const h of histories) {
      const a = tfjs.scores(h);
      const b = await onnx.scoreBatch([h]);
      expect(b.length).toBe(a.length);
      for (let i = 0; i < a.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
        maxAbs = Math.max(maxAbs, Math.abs(a[i]!));
      }
    }
    expect(maxAbs).toBeGreaterThan(0.01);
    expect(maxDiff).toBeLessThan(1e-4);
    // A padded batch of different lengths gives each row's own scores.
    const batched = await onnx.scoreBatch(histories);
    const W = tfjs.info.config.numItems + 1;
    for (const [r, h] of histories.entries()) {
      const a = tfjs.scores(h);
      for (let i = 0; i < W; i++) expect(Math.abs(batched[r * W + i]! - a[i]!)).toBeLessThan(1e-4);
    }
    for (const h of histories) {
      const want = tfjs.recommend(h, 10);
      expect((await onnx.recommend(h, 10)).items).toEqual(want.items);
    }
    await onnx.dispose();
  });

  it('top-k in the graph excludes the history and padding, like recommend()', async () => {
    const onnx = await loadStudentOnnx(run);
    for (const h of histories) {
      const want = tfjs.recommend(h, 10);
      const got = await onnx.recommend(h, 10);
      expect(got.items).toEqual(want.items);
      for (const [i, s] of got.scores.entries()) expect(Math.abs(s - want.scores[i]!)).toBeLessThan(1e-4);
      for (const id of got.items) expect(h.includes(id) || id === 0).toBe(false);
    }
    // k larger than what is left: every non-history item, nothing padded in.
    const all = await onnx.recommend(histories[1]!, 1000);
    expect(all.items.length).toBe(tfjs.info.config.numItems - new Set(histories[1]).size);
    await onnx.dispose();
  });

  it('student:export writes a file any onnxruntime session loads, with the documented I/O', async () => {
    const file = join(root, 'student.onnx');
    const r = await runCmd(() => import('../../src/cli/commands/student-export.js'), { student: run, onnx: file });
    expect(r.onnx).toBe(file);
    const s = await ort.InferenceSession.create(file);
    expect(s.inputNames).toEqual(['history', 'k']);
    expect(s.outputNames).toEqual(['scores', 'top_scores', 'top_ids']);
    const h = histories[1]!;
    const out = await s.run({ history: new ort.Tensor('int64', BigInt64Array.from(h, BigInt), [1, h.length]), k: new ort.Tensor('int64', BigInt64Array.of(3n), [1]) });
    expect(Array.from(out.top_ids!.data as BigInt64Array, Number)).toEqual(tfjs.recommend(h, 3).items);
    await s.release();
    expect(() => exportStudentOnnx(join(root, 'nope'), file)).toThrow(/not found/);
  });

  it('reads the model through the validated reader: NaN weights are refused, naming the tensor', async () => {
    const { readTensors, writeTensors } = await import('../../src/student/model/checkpoint.js');
    const bad = join(root, 'bad');
    mkdirSync(bad);
    const { tensors, metadata } = readTensors(join(run, 'model.safetensors'));
    (tensors['block0.ffn.w1']!.data as Float32Array)[3] = NaN;
    writeTensors(join(bad, 'model.safetensors'), tensors, metadata);
    await expect(loadStudentOnnx(bad)).rejects.toThrow(/block0\.ffn\.w1.*NaN/);
    expect(() => exportStudentOnnx(bad, join(root, 'bad.onnx'))).toThrow(/NaN/);
  });
});
