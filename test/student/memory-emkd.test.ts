/**
 * The up-front memory estimate counts EMKD (src/student/training/memory.ts estimateEmkd): every part of a tiny shape
 * against hand-computed bytes, growth with K, the hooks' provenance as its input, and the known ML-100K data point
 * (--preset small, d=16, 2 blocks, maxLen 50, 1682 items: K = 3 at batch 128 did not fit the wasm heap, batch 64
 * did), through the function and through student:train's own check on a synthetic catalogue of that shape.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { datasetFromFlags } from '../../src/data/options.js';
import { buildDistillHooks } from '../../src/distill/index.js';
import { resolveStudentPreset } from '../../src/student/training/presets.js';
import { checkTrainMemory, emkdMemoryInput, estimateTrainMemory, type TrainMemoryInput } from '../../src/student/training/memory.js';
import { trainStudent } from '../../src/student/training/train.js';
import { smallDataset, smallOptions } from './fixtures/small.js';

const RAM = 64 * 1024 ** 3; // limit = the wasm heap's 4 GiB
const ALL = ['emkd_ce', 'emkd_mask', 'emkd_attr', 'emkd_intra', 'emkd_inter', 'emkd_kl'];

beforeAll(async () => {
  await initBackend('wasm');
});

describe('estimateTrainMemory with EMKD, by hand', () => {
  // N1 = 10 items + padding, D = 2, 1 block, 1 head, F = 3, maxLen 4; 2 rows of 4 positions: P = 8.
  const tiny: TrainMemoryInput = { numItems: 9, dims: 2, maxLen: 4, blocks: 1, heads: 1, ffnDims: 3, loss: 'ce', negatives: 0, evalBatch: 1, batchRows: 2, batchLen: 4, backend: 'wasm' };
  // One network: 10*2 + 4*2 + (3*4 + 3*2 + 4 + 2 + 2*2*3 + 3 + 2 + 4*2 = 49) + 2*2 = 81 floats, x4 bytes x7 copies.
  const params = 81 * 4 * 7; // 2268
  // Full-softmax loss: 2 [8, 10] matrices; activations per position 52*2 + 64 + (96*2 + 10*3 + 13*1*4 + 16 = 290) = 458
  // floats; the item table's gradient pieces 7 x 10 x 2 and Adam's update 10 x 81 floats per network.
  const base = { parameters: params, loss: 8 * 10 * 2 * 4, activations: 8 * 458 * 4, 'embedding gradients': 7 * 10 * 2 * 4, update: 10 * 81 * 4, evaluation: 1 * 10 * 4 * 2 }; // 2268, 640, 14656, 560, 3240, 80
  // One encoder pass: 8 positions x (34*2 + (11*1*4 + 58*2 + 8*3)) = 8 x 252 floats; masked slots 2 rows x round(0.5*4).
  const pass = 8 * 252 * 4; // 8064 bytes
  const logits = 8 * 10 * 4; // one [P, N1] matrix: 320 bytes
  const masked = 2 * 2 * 10 * 4; // one [M, N1] matrix: 160 bytes

  it('K = 1, 2, 3: each part and the total', () => {
    const e0 = estimateTrainMemory(tiny, RAM);
    expect(e0.parts).toEqual(base);
    expect(e0.bytes).toBe(2268 + 640 + 14656 + 560); // parameters + the training step (above the update and the evaluation)

    const e2 = estimateTrainMemory({ ...tiny, emkd: { K: 2, views: 1, maskRatio: 0.5, terms: ALL } }, RAM);
    const p2 = { 'emkd networks': params, 'emkd passes': 3 * pass, 'emkd next-item': 12 * logits, 'emkd kl': (39 + 4) * logits, 'emkd masked': 2 * 13 * masked, 'emkd contrast': (2 + 2) * 10 * 4 * 4 };
    expect(p2).toEqual({ 'emkd networks': 2268, 'emkd passes': 24192, 'emkd next-item': 3840, 'emkd kl': 13760, 'emkd masked': 4160, 'emkd contrast': 640 });
    expect(e2.parts).toEqual({ ...base, 'embedding gradients': 2 * 560, update: 2 * 3240, ...p2 }); // both networks' tables and Adam updates
    expect(e2.bytes).toBe(2268 + 2268 + (640 + 14656 + 1120 + 24192 + 3840 + 13760 + 4160 + 640)); // 67544

    const e3 = estimateTrainMemory({ ...tiny, emkd: { K: 3, views: 1, maskRatio: 0.5, terms: ALL } }, RAM);
    // 2 more networks, 2 + 3 passes, 3 pairs of KL, 3 networks' masked CE, 3 intra + 6 inter contrasts.
    expect(e3.parts).toEqual({ ...base, 'embedding gradients': 1680, update: 9720, 'emkd networks': 4536, 'emkd passes': 40320, 'emkd next-item': 7680, 'emkd kl': 38720, 'emkd masked': 6240, 'emkd contrast': 1440 });
    expect(e3.bytes).toBe(2268 + 4536 + (640 + 14656 + 1680 + 40320 + 7680 + 38720 + 6240 + 1440)); // 118180
    expect(e0.bytes).toBeLessThan(e2.bytes);
    expect(e2.bytes).toBeLessThan(e3.bytes);
  });

  it('terms that are off cost nothing; views multiply the masked passes', () => {
    const e = estimateTrainMemory({ ...tiny, emkd: { K: 2, views: 3, maskRatio: 0.5, terms: ['emkd_ce', 'emkd_mask'] } }, RAM);
    expect(e.parts['emkd kl']).toBe(0);
    expect(e.parts['emkd contrast']).toBe(0);
    expect(e.parts['emkd passes']).toBe((1 + 2 * 3) * pass);
    expect(e.parts['emkd masked']).toBe(2 * 3 * 13 * masked);
    // No view-based term: only networks 2..K's own pass.
    expect(estimateTrainMemory({ ...tiny, emkd: { K: 2, views: 3, maskRatio: 0.5, terms: ['emkd_ce'] } }, RAM).parts['emkd passes']).toBe(pass);
  });

  it('reads K, views, mask ratio and the terms that are on from the EMKD hooks\' own provenance', async () => {
    const ds = await smallDataset();
    const opts = smallOptions();
    const hooks = (await buildDistillHooks({ ...opts, emkd: 3, emkdViews: 2, emkdMaskRatio: 0.2, lambdaEmkdIntra: 0, lambdaEmkdMask: 1, seed: 1 }, ds, { dims: opts.dims, blocks: opts.blocks }))!;
    try {
      expect(emkdMemoryInput(hooks.provenance!())).toEqual({ K: 3, views: 2, maskRatio: 0.2, terms: ['emkd_ce', 'emkd_mask', 'emkd_attr', 'emkd_inter', 'emkd_kl'] });
    } finally {
      hooks.dispose?.();
    }
    expect(emkdMemoryInput({ lambdas: { cos: 1 } })).toBeUndefined(); // distillation without EMKD
    expect(emkdMemoryInput(null)).toBeUndefined();
  });
});

describe('estimateTrainMemory for the cloze networks (--attention bidirectional), by hand', () => {
  // The same tiny shape: N1 = 10, D = 2, 1 block, 1 head, F = 3; 2 rows of 4 positions (P = 8); K = 2, one view,
  // mask ratio 0.5: Mc = 2 rows x round(0.5 x 4) = 4 selected slots.
  const tiny: TrainMemoryInput = { numItems: 9, dims: 2, maxLen: 4, blocks: 1, heads: 1, ffnDims: 3, loss: 'ce', negatives: 0, evalBatch: 1, batchRows: 2, batchLen: 4, backend: 'wasm' };
  const CLOZE = ['ce', 'emkd_cloze', 'emkd_attr', 'emkd_intra', 'emkd_inter', 'emkd_kl'];

  it('the trainer\'s own pass and loss are not counted; the output layer at the selected slots only; every part in the total', () => {
    const e = estimateTrainMemory({ ...tiny, emkd: { K: 2, views: 1, maskRatio: 0.5, terms: CLOZE } }, RAM);
    // passes: K + K M = 4, each 8 x 252 floats plus 3 tables with MASK, 11 x 2: 2082 floats.
    // cloze: K M (3 [Mc, N1] + 2 [N1, D]) + 3 [Mc, N1] = 2 (120 + 40) + 120 = 440 floats; KL: K M 3 [Mc, N1] = 240.
    // contrast: 2 intra + 2 inter pairs, each (8 + 10 M) [B, L D] + 10 M [B, B] = 18 x 16 + 40 = 328 floats.
    const parts = {
      parameters: 2268, loss: 0, activations: 0, 'embedding gradients': 1120, update: 6480, evaluation: 80,
      'emkd networks': 2268, 'emkd passes': 4 * 2082 * 4, 'emkd cloze': 440 * 4, 'emkd kl': 240 * 4, 'emkd contrast': 4 * 328 * 4,
    };
    expect(e.parts).toEqual(parts);
    expect(e.bytes).toBe(2268 + 2268 + (1120 + 33312 + 1760 + 960 + 5248)); // 46936: 'emkd cloze' counts (it was left out)
    const noKl = estimateTrainMemory({ ...tiny, emkd: { K: 2, views: 1, maskRatio: 0.5, terms: CLOZE.filter((t) => t !== 'emkd_kl') } }, RAM);
    expect(noKl.parts['emkd kl']).toBe(0);
    expect(noKl.bytes).toBe(46936 - 960);
  });

  it('Beauty at d 64, K 3, M 2 (the measured case): batch 128 fits now; a size that does not is refused with the cloze figures', () => {
    const beauty = (batchRows: number, dims: number, views: number): TrainMemoryInput => ({
      numItems: 12101, dims, maxLen: 20, blocks: 2, heads: 2, ffnDims: 4 * dims, loss: 'ce', negatives: 256, evalBatch: 256, batchRows, batchLen: 20, backend: 'wasm',
      emkd: { K: 3, views, maskRatio: 0.15, terms: ['ce', 'emkd_cloze', 'emkd_attr', 'emkd_intra', 'emkd_inter', 'emkd_kl'] },
    });
    const MiB = 1024 ** 2;
    expect(Math.round(checkTrainMemory(beauty(32, 64, 2), RAM).bytes / MiB)).toBe(781); // wasm heap measured: 710 MiB
    expect(Math.round(checkTrainMemory(beauty(128, 64, 2), RAM).bytes / MiB)).toBe(2389); // measured: 2,256 MiB
    expect(() => checkTrainMemory(beauty(256, 256, 8), RAM)).toThrow(/cloze CE and KL at the selected slots \(about 768 of 5120 positions per view\) x 12102 items/);
    expect(() => checkTrainMemory(beauty(256, 256, 8), RAM)).not.toThrow(/full-softmax logits/);
  });
});

describe('the ML-100K data point (--preset small)', () => {
  const ml100k = (batchRows: number, K: number): TrainMemoryInput => ({
    numItems: 1682, dims: 16, maxLen: 50, blocks: 2, heads: 1, ffnDims: 16, loss: 'ce', negatives: 256, evalBatch: 256, batchRows, batchLen: 50, backend: 'wasm',
    emkd: { K, views: 1, maskRatio: 0.15, terms: ALL },
  });

  it('K = 3 at batch 128 is refused naming --emkd and --batch-size; K = 3 at batch 64 and K = 2 at batch 128 fit', () => {
    let err: unknown;
    try {
      checkTrainMemory(ml100k(128, 3), RAM);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'E_USAGE' });
    expect((err as Error).message).toMatch(/^student:train would need about 6\.7 GiB .*emkd kl .*more than 4\.0 GiB \(the wasm backend's 4 GiB memory limit\)\. Use fewer networks \(--emkd, now 3.*\), or a smaller --batch-size \(now 128 rows per batch\)/);
    expect(checkTrainMemory(ml100k(64, 3), RAM).bytes).toBeLessThan(4 * 1024 ** 3);
    expect(checkTrainMemory(ml100k(128, 2), RAM).bytes).toBeLessThan(4 * 1024 ** 3); // K = 2 at batch 128 trained
  });

  it('student:train refuses K = 3 at batch 128 before creating the run folder (synthetic catalogue of that shape)', async () => {
    const flags = { dataset: 'synthetic', syntheticUsers: 800, syntheticItems: 1682, syntheticMinLen: 60, syntheticMaxLen: 70, syntheticSeed: 7 };
    const ds = await datasetFromFlags(flags);
    expect(ds.items.length - 1).toBe(1682);
    const opts = resolveStudentPreset('small', { ...flags, batchSize: 128, backend: 'wasm' });
    const hooks = await buildDistillHooks({ ...opts, emkd: 3, lambdaEmkdMask: 1, seed: 1 }, ds, { dims: opts.dims, blocks: opts.blocks });
    const tmp = mkdtempSync(join(tmpdir(), 'recdistill-emkd-memory-'));
    try {
      const out = join(tmp, 'run');
      const run = trainStudent({ ds, opts, outDir: out, backend: 'wasm', hooks, log: () => {} });
      await expect(run).rejects.toMatchObject({ code: 'E_USAGE' });
      await expect(run).rejects.toThrow(/would need about 6\.7 GiB .*--emkd, now 3.*--batch-size \(now 128 rows per batch\)/);
      expect(existsSync(out)).toBe(false);
    } finally {
      hooks?.dispose?.();
      rmSync(tmp, { recursive: true, force: true });
    }
  }, 900_000);
});
