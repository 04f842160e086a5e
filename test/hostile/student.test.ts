// Hostile input for student training, run folders, eval and bench: every reproduction of the hardening brief.
// CLI runs are in-process (main()) when they cannot hang; runs that used to hang or exhaust memory go to a child
// process (node + tsx loader, --max-old-space-size=256) with a timeout, so a regression fails fast.
import { spawn } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { lockCacheDir } from '../../src/util/lock.js';
import { main } from '../../src/cli/main.js';
import { datasetFromFlags } from '../../src/data/options.js';
import { RecdistillError } from '../../src/errors.js';
import { readTensors, writeTensors } from '../../src/student/model/checkpoint.js';
import { resolveStudentOptions, validateStudentOptions } from '../../src/student/training/config.js';
import type { TrainHooks } from '../../src/student/training/hooks.js';
import { checkTrainMemory } from '../../src/student/training/memory.js';
import { checkStudentFile, loadStudent } from '../../src/student/serving/serve.js';
import { trainStudent } from '../../src/student/training/train.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-hostile-student-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const DATA = { dataset: 'synthetic', syntheticUsers: 100, syntheticItems: 80 };
const S = ['--dataset', 'synthetic', '--synthetic-users', '100', '--synthetic-items', '80', '--max-len', '10', '--dims', '8', '--ffn-dims', '8', '--backend', 'wasm'];
const quiet = () => {};
const CLI = join(process.cwd(), 'src', 'cli', 'main.ts');
const TRAIN_CHILD = join(process.cwd(), 'test', 'student', 'fixtures', 'train-child.ts');

/** main() in-process with stdout/stderr captured. */
async function cli(args: string[]): Promise<{ code: number; err: string; out: string }> {
  let err = '';
  let out = '';
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((err += String(c)), true));
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((out += String(c)), true));
  try {
    return { code: await main(args), err, out };
  } finally {
    e.mockRestore();
    o.mockRestore();
  }
}

/** The CLI in a child: node --max-old-space-size=256 with tsx's loader, killed after `timeoutMs`. */
function child(args: string[], timeoutMs: number): Promise<{ code: number | null; signal: string | null; err: string; ms: number }> {
  const t0 = Date.now();
  const p = spawn(process.execPath, ['--max-old-space-size=256', '--import', 'tsx', CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-4000)));
  const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) => p.on('exit', (code, signal) => {
    clearTimeout(timer);
    resolve({ code, signal, err, ms: Date.now() - t0 });
  }));
}

const allFinite = (path: string) => Object.values(readTensors(path).tensors).every((t) => (t.data as Float32Array).every((x) => Number.isFinite(x)));

let base = ''; // a finished small run, copied for every mutation
beforeAll(async () => {
  await initBackend('wasm');
  mkdirSync(join(tmp, 'hostile'), { recursive: true });
  base = join(tmp, 'base');
  const ds = await datasetFromFlags(DATA);
  await trainStudent({ ds, opts: resolveStudentOptions({ flags: { ...DATA, maxLen: 10, dims: 8, ffnDims: 8, epochs: 2, backend: 'wasm' } }), outDir: base, backend: 'wasm', log: quiet });
});
const copyRun = (name: string) => {
  const dir = join(tmp, name);
  cpSync(base, dir, { recursive: true });
  return dir;
};

describe('1. divergence: nothing non-finite is checkpointed, the best weights so far survive', () => {
  it('--lr 1e7 and --lr 1e6 (finite but exploding loss) stop with E_NUMERIC naming the loss, epoch and --lr; a rerun does the same', async () => {
    for (const lr of ['1e7', '1e6']) {
      const out = join(tmp, `lr${lr}`);
      for (let attempt = 0; attempt < 2; attempt++) {
        const r = await cli(['student:train', ...S, '--epochs', '10', '--lr', lr, '--out', out]);
        expect(r.code, r.err).toBe(1);
        expect(r.err).toMatch(/E_NUMERIC/);
        expect(r.err).toMatch(/diverged at epoch 1, step \d+: loss ce = [\d.e+]+, more than 10000x its first-step value/);
        expect(r.err).toMatch(/--lr \(now 1000+; e\.g\./);
        expect(r.err).toMatch(/model\.safetensors was not written/);
        if (existsSync(join(out, 'checkpoint.safetensors'))) expect(allFinite(join(out, 'checkpoint.safetensors'))).toBe(true);
      }
    }
  });

  it('a NaN loss after two validated epochs ends the run with the epoch <= 2 best weights in model.safetensors + metrics.json', async () => {
    const ds = await datasetFromFlags(DATA);
    const out = join(tmp, 'nan-after-2');
    // 100 windows / batch 32 = 4 steps per epoch: step 8 is the first of epoch 3.
    const hooks: TrainHooks = {
      variables: () => [],
      extraTerms: (ctx) => ({ spike: tf.scalar(ctx.step >= 8 ? NaN : 0) }),
      weights: () => ({ spike: 1 }),
    };
    const opts = resolveStudentOptions({ flags: { ...DATA, maxLen: 10, dims: 8, ffnDims: 8, epochs: 10, backend: 'wasm' } });
    const run = () => trainStudent({ ds, opts, outDir: out, backend: 'wasm', log: quiet, hooks });
    const err = await run().then(() => undefined, (e: unknown) => e as RecdistillError);
    expect(err).toBeInstanceOf(RecdistillError);
    expect(err!.code).toBe('E_NUMERIC');
    expect(err!.message).toMatch(/non-finite training loss at epoch 3, step 8 \(ce=[\d.]+, spike=NaN\)/);
    expect(err!.message).toContain(join(out, 'model.safetensors'));
    expect(err!.message).toMatch(/lower --lr/);
    const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as { bestEpoch: number; diverged: { epoch: number; step: number } };
    expect(metrics.bestEpoch).toBeGreaterThanOrEqual(1);
    expect(metrics.bestEpoch).toBeLessThanOrEqual(2);
    expect(metrics.diverged).toMatchObject({ epoch: 3, step: 8 });
    expect(checkStudentFile(out).numItems).toBe(ds.items.length - 1); // finite, consistent
    expect(allFinite(join(out, 'checkpoint.safetensors'))).toBe(true);
    // The kept checkpoint resumes (it is not poisoned): the replay diverges at the same step and keeps the model.
    const again = await run().then(() => undefined, (e: unknown) => e as RecdistillError);
    expect(again?.code).toBe('E_NUMERIC');
    expect(again!.message).toMatch(/epoch 3, step 8/);
  });

  it('an Adam moment that overflows while the loss stays finite is caught at the epoch end, before the checkpoint', async () => {
    const ds = await datasetFromFlags(DATA);
    const out = join(tmp, 'adam-overflow');
    const hv = tf.variable(tf.zeros([1]), true);
    const hooks: TrainHooks = {
      variables: () => [hv],
      // loss 0 * 1e38 = 0 (finite), gradient 1e38: Adam's v = g^2 overflows to Inf.
      extraTerms: (ctx) => ({ blow: tf.mul(tf.sum(hv), ctx.step >= 4 ? 1e38 : 0) }),
      weights: () => ({ blow: 1 }),
    };
    const opts = resolveStudentOptions({ flags: { ...DATA, maxLen: 10, dims: 8, ffnDims: 8, epochs: 5, backend: 'wasm' } });
    const err = await trainStudent({ ds, opts, outDir: out, backend: 'wasm', log: quiet, hooks }).then(() => undefined, (e: unknown) => e as RecdistillError);
    hv.dispose();
    expect(err?.code).toBe('E_NUMERIC');
    expect(err!.message).toMatch(/diverged in epoch 2: 1 tensors hold NaN\/Inf .*adam\.v\/hook\.0/);
    expect(allFinite(join(out, 'checkpoint.safetensors'))).toBe(true);
    expect(existsSync(join(out, 'model.safetensors'))).toBe(true); // epoch 1's weights
  });

  it('a poisoned checkpoint (written by an older version) is refused on resume, naming the file and --no-resume', async () => {
    const dir = copyRun('poisoned');
    const path = join(dir, 'checkpoint.safetensors');
    const { tensors, metadata } = readTensors(path);
    (tensors['adam.v/item_emb']!.data as Float32Array)[5] = Infinity;
    writeTensors(path, tensors, metadata);
    const r = await cli(['student:train', ...S, '--epochs', '4', '--out', dir]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/E_NUMERIC/);
    expect(r.err).toContain(`${path}: tensor "adam.v/item_emb" holds Infinity`);
    expect(r.err).toMatch(/--no-resume/);
  });
});

describe('2. option ranges are checked up front, naming the option', () => {
  it('--batch-size 0 and -4 (used to loop forever / exhaust the heap) fail at once', async () => {
    const [zero, neg] = await Promise.all([
      child(['student:train', ...S, '--batch-size', '0', '--out', join(tmp, 'bs0')], 20_000),
      child(['student:train', ...S, '--batch-size', '-4', '--out', join(tmp, 'bs-4')], 20_000),
    ]);
    for (const r of [zero, neg]) {
      expect(r.signal, `killed after ${r.ms} ms: ${r.err}`).toBe(null);
      expect(r.code, r.err).toBe(2);
      expect(r.err).toMatch(/E_USAGE\]: --batch-size must be an integer >= 1/);
    }
    expect(existsSync(join(tmp, 'bs0'))).toBe(false); // refused before anything was written
  });

  it('every numeric training option has a range (student:train and the library)', async () => {
    const cases: Array<[string, string, RegExp]> = [
      ['--lr', '0', /--lr must be a number > 0/],
      ['--lr', '-1', /--lr must be a number > 0/],
      ['--epochs', '0', /--epochs must be an integer >= 1/],
      ['--dropout', '1', /--dropout must be a number >= 0 and < 1/],
      ['--attn-dropout', '-0.1', /--attn-dropout must be a number >= 0 and < 1/],
      ['--max-len', '0', /--max-len must be an integer >= 1/],
      ['--dims', '0', /--dims must be an integer >= 1/],
      ['--patience', '-1', /--patience must be an integer >= 0/],
      ['--heads', '3', /--heads \(3\) must divide --dims \(8\)/],
      ['--eval-every', '0', /--eval-every must be an integer >= 1/],
      ['--negatives', '0', /--negatives must be an integer >= 1/],
      ['--eval-batch', '0', /--eval-batch must be an integer >= 1/],
      ['--beta2', '1', /--beta2 must be a number >= 0 and < 1/],
      ['--weight-decay', '-1', /--weight-decay must be a number >= 0/],
    ];
    for (const [flag, value, re] of cases) {
      const r = await cli(['student:train', ...S, flag, value, '--out', join(tmp, 'ranges')]);
      expect(r.code, `${flag} ${value}: ${r.err}`).toBe(2);
      expect(r.err).toMatch(re);
    }
    expect(() => validateStudentOptions({ batchSize: -4 })).toThrow(/--batch-size/);
    const ds = await datasetFromFlags(DATA);
    const opts = { ...resolveStudentOptions({ flags: DATA }), batchSize: 0 };
    await expect(trainStudent({ ds, opts, outDir: join(tmp, 'ranges-lib'), backend: 'wasm', log: quiet })).rejects.toThrow(/--batch-size must be an integer >= 1/);
  });
});

describe('3. run folders that lie: sizes checked before allocating, non-finite weights refused, bad JSON named', () => {
  it('model.safetensors metadata config.numItems = 1e8 (used to allocate 4 GB) is refused before allocating', async () => {
    const dir = copyRun('lying-items');
    const path = join(dir, 'model.safetensors');
    const { tensors, metadata } = readTensors(path);
    writeTensors(path, tensors, { ...metadata, config: JSON.stringify({ ...JSON.parse(metadata.config!), numItems: 1e8 }) });
    const r = await child(['eval', '--student', dir], 30_000);
    expect(r.signal, `killed after ${r.ms} ms: ${r.err}`).toBe(null);
    expect(r.code, r.err).toBe(1);
    expect(r.err).toContain(`${path}: tensor "item_emb" is F32 [`);
    expect(r.err).toMatch(/numItems 100000000/);
    // Bounds: an absurd value is named even before the shapes are compared.
    writeTensors(path, tensors, { ...metadata, config: JSON.stringify({ ...JSON.parse(metadata.config!), dims: -3 }) });
    expect(() => checkStudentFile(dir)).toThrow(/model\.safetensors \(metadata "config"\): "dims" must be an integer in 1\.\.65536, got -3/);
    writeTensors(path, tensors, { ...metadata, config: JSON.stringify({ ...JSON.parse(metadata.config!), blocks: 1 }) });
    expect(() => checkStudentFile(dir)).toThrow(/unexpected tensors "block1\./);
  });

  it('NaN weights: eval and bench (loadStudent / checkStudentFile) refuse them naming the file and tensor', async () => {
    const dir = copyRun('nan-weights');
    const path = join(dir, 'model.safetensors');
    const { tensors, metadata } = readTensors(path);
    (tensors['block0.ffn.w1']!.data as Float32Array)[3] = NaN;
    writeTensors(path, tensors, metadata);
    const r = await cli(['eval', '--student', dir]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`error [E_NUMERIC]: ${path}: tensor "block0.ffn.w1" holds NaN at index 3`);
    expect(existsSync(join(dir, 'eval.json'))).toBe(false);
    await expect(loadStudent(dir)).rejects.toThrow(/block0\.ffn\.w1" holds NaN/);
    expect(() => checkStudentFile(dir)).toThrow(/holds NaN/);
  });

  it('structurally bad JSON in model metadata, config.json, metrics.json and checkpoint state: errors name the file', async () => {
    const dir = copyRun('bad-json');
    const model = join(dir, 'model.safetensors');
    const { tensors, metadata } = readTensors(model);
    writeTensors(model, tensors, { ...metadata, config: '{"numItems": ' });
    await expect(loadStudent(dir)).rejects.toThrow(/model\.safetensors \(metadata "config"\) is not valid JSON/);
    writeTensors(model, tensors, { ...metadata, config: '[1, 2]' });
    await expect(loadStudent(dir)).rejects.toThrow(/model\.safetensors \(metadata "config"\): expected a JSON object/);
    writeTensors(model, tensors, metadata);

    const cfg = join(dir, 'config.json');
    const good = readFileSync(cfg, 'utf8');
    for (const [text, re] of [['{"format": 1, "options": 5}', /config\.json: "options" must be an object/], ['null', /config\.json: expected a JSON object/], ['{', /config\.json is not valid JSON/]] as const) {
      writeFileSync(cfg, text);
      const r = await cli(['eval', '--student', dir]);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/E_INPUT/);
      expect(r.err).toContain(cfg);
      expect(r.err).toMatch(re);
    }
    writeFileSync(cfg, good);

    const ckpt = join(dir, 'checkpoint.safetensors');
    const c = readTensors(ckpt);
    for (const [state, re] of [['{"epoch": "two"}', /"epoch" must be a non-negative integer, got "two"/], ['{not json', /is not valid JSON/], ['[]', /expected a JSON object/]] as const) {
      writeTensors(ckpt, c.tensors, { ...c.metadata, state });
      const r = await cli(['student:train', ...S, '--epochs', '4', '--out', dir]);
      expect(r.code).toBe(1);
      expect(r.err).toContain(`${ckpt} (metadata "state")`);
      expect(r.err).toMatch(re);
    }
  });
});

describe('4. run folders: one writer, and --out never replaces a folder that is not a run', () => {
  it('a second student:train on a folder being trained is refused naming the pid; the first finishes', async () => {
    const out = join(tmp, 'locked');
    // A slow trainer (each epoch then sleeps 400 ms) in a child; start the second one once it has checkpointed.
    const first = spawn(process.execPath, ['--import', 'tsx', TRAIN_CHILD, out, '4', '400'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((r) => first.on('exit', (code) => r(code)));
    let stdout = '';
    first.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    // Waits on the child's output; the deadline is only a safety net, generous for a machine under heavy load.
    const deadline = Date.now() + 400_000;
    while (Date.now() < deadline && !stdout.includes('epoch 1')) await new Promise((r) => setTimeout(r, 25));
    expect(stdout).toContain('epoch 1');
    const r = await cli(['student:train', ...S, '--out', out]);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toContain(`${out} is being written by another process (pid ${first.pid})`);
    expect(await exited).toBe(0);
    expect(stdout).toContain('done');
    expect(existsSync(join(out, '.lock'))).toBe(false);
    // A lock held in this process blocks it too (deterministic), and is released after.
    const unlock = lockCacheDir(out);
    const again = await cli(['student:train', ...S, '--out', out]);
    unlock();
    expect(again.code).toBe(2);
    expect(again.err).toContain(`pid ${process.pid}`);
  }, 900_000);

  it('--out pointing at a folder that is not a run (other files) is refused and left untouched', async () => {
    const dir = join(tmp, 'not-a-run');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'thesis.tex'), 'precious');
    const r = await cli(['student:train', ...S, '--epochs', '1', '--out', dir]);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`--out ${dir} exists and is not a student run folder (no config.json`);
    expect(r.err).toContain('"thesis.tex"');
    expect(readFileSync(join(dir, 'thesis.tex'), 'utf8')).toBe('precious');
    expect(existsSync(join(dir, 'config.json'))).toBe(false);
    // A config.json that is not a run's is not enough.
    writeFileSync(join(dir, 'config.json'), '{"compilerOptions": {}}');
    const r2 = await cli(['student:train', ...S, '--epochs', '1', '--out', dir]);
    expect(r2.code).toBe(2);
    expect(r2.err).toMatch(/is not a student run folder: .*config\.json: "format" is undefined/);
    // A file as --out.
    const r3 = await cli(['student:train', ...S, '--epochs', '1', '--out', join(dir, 'thesis.tex')]);
    expect(r3.code).toBe(2);
    expect(r3.err).toMatch(/thesis\.tex exists and is not a folder/);
  });
});

describe('5. no evaluable users', () => {
  it('every user with <= 2 interactions: E_EMPTY saying no user has a validation item, nothing written', async () => {
    const csv = join(tmp, 'short.csv');
    const rows = ['user_id,item_id,timestamp'];
    for (let u = 0; u < 50; u++) rows.push(`u${u},i${u % 7},${u * 10}`, `u${u},i${(u + 3) % 7},${u * 10 + 1}`);
    writeFileSync(csv, rows.join('\n') + '\n');
    const out = join(tmp, 'short-run');
    const r = await cli(['student:train', '--dataset', 'generic', '--source', csv, '--max-len', '10', '--dims', '8', '--ffn-dims', '8', '--out', out]);
    expect(r.code, r.err).toBe(1);
    expect(r.err).toMatch(/E_EMPTY\]: .*no user has a validation item \(every one of the 50 users has at most 2 interactions/);
    expect(existsSync(out)).toBe(false);
  });
});

describe('6. memory: a full softmax that cannot fit is refused up front with an estimate', () => {
  it('the estimate for one million items with the defaults suggests --loss sampled', () => {
    const a = { numItems: 1_000_000, dims: 64, maxLen: 200, blocks: 2, heads: 1, ffnDims: 64, loss: 'ce', negatives: 256, evalBatch: 256, batchRows: 32, batchLen: 200, backend: 'wasm' };
    expect(() => checkTrainMemory(a, 64 * 1024 ** 3)).toThrow(/would need about [\d.]+ GiB .*full-softmax logits 6400 positions x 1000001 items.*more than 4\.0 GiB \(the wasm backend's 4 GiB memory limit\)\. Use --loss sampled/);
    // Sampled at 64 dims still cannot fit: the item table is 64,063,424 parameters (1000001 x 64 + the rest), x4 bytes
    // x7 copies = 1,793,775,872 B, plus Adam's update (10 copies: 2,562,536,960 B) = 4,356,312,832 B > 4 GiB; the
    // message then names --dims.
    expect(() => checkTrainMemory({ ...a, loss: 'sampled', evalBatch: 64 }, 64 * 1024 ** 3)).toThrow(/would need about 4\.1 GiB .*update 2\.4 GiB.*Use a smaller --dims \(now 64\)/);
    // At 48 dims: 48,041,456 parameters x4 x7 = 1,345,160,768 B + the update 1,921,658,240 B (above the step's
    // 1,891,123,536 B and the evaluation's 512,000,512 B) = 3,266,819,008 B.
    expect(checkTrainMemory({ ...a, dims: 48, loss: 'sampled', evalBatch: 64 }, 64 * 1024 ** 3).bytes).toBe(3_266_819_008);
  });

  it('student:train on a catalogue too large for the full softmax exits E_USAGE at once (child, 256 MB heap)', async () => {
    const out = join(tmp, 'too-big');
    const r = await child(['student:train', '--dataset', 'synthetic', '--synthetic-users', '300', '--synthetic-items', '20000', '--synthetic-min-len', '150', '--synthetic-max-len', '200',
      '--batch-size', '300', '--max-len', '200', '--backend', 'wasm', '--out', out], 400_000); // safety net: the 256 MB heap is what proves nothing big was allocated
    expect(r.signal, `killed after ${r.ms} ms: ${r.err}`).toBe(null);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(/student:train would need about [\d.]+ GiB .*full-softmax logits \d+ positions x \d+ items.*Use --loss sampled/);
    expect(existsSync(out)).toBe(false);
  }, 900_000);
});

describe('7. eval never loses its results', () => {
  it('a read-only run folder: eval.json goes to a temp folder named in the log; --out writes where asked', async () => {
    const dir = copyRun('read-only');
    // Root ignores permissions: an eval.json that is a non-empty folder makes the write fail for everyone.
    mkdirSync(join(dir, 'eval.json', 'x'), { recursive: true });
    chmodSync(dir, 0o555);
    try {
      const r = await cli(['eval', '--student', dir, '--json']);
      expect(r.code, r.err).toBe(0);
      const m = /wrote (\S+eval\.json) and eval\.md instead/.exec(r.err);
      expect(m, r.err).not.toBe(null);
      expect(r.err).toContain(`the run folder ${dir} is not writable`);
      const saved = JSON.parse(readFileSync(m![1]!, 'utf8')) as { test: Record<string, number> };
      // the temp eval.json holds the run's own test metrics (the training run wrote the same into metrics.json)
      expect(saved.test['ndcg@10']).toBeCloseTo((JSON.parse(readFileSync(join(dir, 'metrics.json'), 'utf8')) as { test: Record<string, number> }).test['ndcg@10']!, 6);
      rmSync(join(m![1]!, '..'), { recursive: true, force: true });
      const outDir = join(tmp, 'eval-out');
      const r2 = await cli(['eval', '--student', dir, '--out', outDir]);
      expect(r2.code, r2.err).toBe(0);
      expect(JSON.parse(readFileSync(join(outDir, 'eval.json'), 'utf8')).test['ndcg@10']).toBe(saved.test['ndcg@10']);
      expect(existsSync(join(outDir, 'eval.md'))).toBe(true);
    } finally {
      chmodSync(dir, 0o755);
    }
  });
});
