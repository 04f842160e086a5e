import { spawn } from 'node:child_process';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { lastJsonLine } from '../../src/util/process.js';
import { benchStudent } from '../../src/student/training/bench.js';
import { attentionSublayer, ffnSublayer, summarizeBreakdown, type StepBreakdown } from '../../src/student/training/bench-breakdown.js';
import { parseThreadList, type BenchRow } from '../../src/student/training/bench-runner.js';
import { attentionBias, layerNorm } from '../../src/student/model/layers.js';
import { createSasrec, disposeModel, encode, type ModelConfig } from '../../src/student/model/model.js';
import { maxAbsDiff } from '../helpers/compare.js';

/**
 * student:bench's step breakdown (src/student/training/bench-breakdown.ts) and its rows per (backend, threads).
 * No timing thresholds: the numbers depend on the machine and its load; only shapes and identities are checked.
 */

const ROOT = join(import.meta.dirname, '..', '..');
const TINY = ['--num-items', '30', '--max-len', '6', '--dims', '8', '--batch-size', '3', '--steps', '2', '--cpu-steps', '2', '--requests', '2'];
const PARTS = ['attention', 'ffn', 'output', 'optimizer', 'other'] as const;

beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
});

function runCli(args: string[]): Promise<{ summary: Record<string, unknown>; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => {
      const summary = lastJsonLine(stdout);
      if (code !== 0 || !summary) reject(new Error(`student:bench exited ${code}: ${stderr.slice(-3000)}`));
      else resolve({ summary, stderr });
    });
  });
}

/** A results row as the summary prints it (breakdown on, the default). */
type Row = BenchRow & { breakdown: StepBreakdown };

function expectBreakdown(b: Row['breakdown'], tol: number): void {
  for (const k of ['stepMs', 'attentionMs', 'ffnMs', 'outputMs', 'optimizerMs', 'otherMs'] as const) expect(typeof b[k], k).toBe('number');
  expect(Object.keys(b.shares).sort()).toEqual([...PARTS].sort());
  expect(PARTS.reduce((s, k) => s + b.shares[k]!, 0)).toBeCloseTo(1, tol);
  // other - partsOverStep = step - parts: one of the two is 0, neither negative (a negative share means nothing)
  expect(b.otherMs - b.partsOverStepMs).toBeCloseTo(b.stepMs - b.attentionMs - b.ffnMs - b.outputMs - b.optimizerMs, tol === 3 ? 1 : 6);
  expect(Math.min(b.otherMs, b.partsOverStepMs, ...Object.values(b.shares))).toBeGreaterThanOrEqual(0);
}

describe('student:bench breakdown', () => {
  it('the sub-layers it times, chained, give encode()\'s block outputs exactly (pre and post norm, padding, 2 heads)', () => {
    for (const norm of ['pre', 'post'] as const) {
      const cfg: ModelConfig = { numItems: 20, maxLen: 7, dims: 8, blocks: 2, heads: 2, ffnDims: 12, dropout: 0, attnDropout: 0, norm };
      const m = createSasrec(cfg, 5);
      const B = 3;
      const L = 7;
      const items = Int32Array.from({ length: B * L }, (_, i) => (i < 3 || (i >= 7 && i < 8) ? 0 : 1 + ((i * 7) % 20))); // left padding in rows 0 and 1
      const [want0, want1, got0, got1] = tf.tidy(() => {
        const ref = encode(m, items, B, L);
        const ids = tf.tensor2d(items, [B, L], 'int32');
        const keep = tf.expandDims(tf.cast(tf.notEqual(ids, 0), 'float32'), -1);
        const bias = attentionBias(items, B, L);
        // The embedding part of model.ts run() (not timed as a part: it is in "other").
        const emb = tf.reshape(tf.gather(m.itemEmb, tf.reshape(ids, [B * L])), [B, L, 8]);
        let x = tf.mul(tf.add(tf.mul(emb, Math.sqrt(8)), tf.slice(m.posEmb, [0, 0], [L, 8])), keep) as tf.Tensor3D;
        const outs: tf.Tensor[] = [];
        for (const blk of m.blocks) {
          x = ffnSublayer(cfg, attentionSublayer(cfg, x, blk, bias, undefined), blk, keep, undefined);
          outs.push(x);
        }
        outs[1] = tf.mul(layerNorm(outs[1]!, m.lnfg, m.lnfb), keep);
        return [ref[0]!, ref[1]!, outs[0]!, outs[1]!].map((t) => t.dataSync());
      });
      expect(want0!.length).toBe(B * L * 8);
      expect(maxAbsDiff(got0!, want0!), `${norm} block 0`).toBe(0);
      expect(maxAbsDiff(got1!, want1!), `${norm} block 1 + final LN`).toBe(0);
      disposeModel(m);
    }
  });

  it('benchStudent on the cpu backend: breakdown fields, shares sum to 1, other = step - parts, no leaked tensors', () => {
    const before = tf.memory().numTensors;
    const r = benchStudent({ numItems: 30, maxLen: 6, dims: 8, blocks: 2, heads: 1, ffnDims: 8, dropout: 0.2, attnDropout: 0.1, batchSize: 3, steps: 3, requests: 2, breakdown: true });
    expect(tf.memory().numTensors).toBe(before);
    expect(r.breakdown).toBeDefined();
    expectBreakdown(r.breakdown!, 9);
    expect(benchStudent({ numItems: 30, maxLen: 6, dims: 8, blocks: 1, heads: 1, ffnDims: 8, dropout: 0.2, attnDropout: 0, batchSize: 3, steps: 1, requests: 1 }).breakdown).toBeUndefined();
  });

  it('benchStudent prints progress while it times steps (every step with progressMs 0), not after the last', () => {
    const logs: string[] = [];
    benchStudent({ numItems: 30, maxLen: 6, dims: 8, blocks: 1, heads: 1, ffnDims: 8, dropout: 0, attnDropout: 0, batchSize: 3, steps: 3, requests: 1, progressMs: 0 }, (l) => logs.push(l));
    expect(logs.map((l) => l.split(' steps/s')[0]!.replace(/ [\d.]+$/, ''))).toEqual(['student:bench steps: 1/3', 'student:bench steps: 2/3']);
  });

  it('summarizeBreakdown: medians; parts that add up to more than the step give other 0 and shares of their sum, none negative', () => {
    const b = summarizeBreakdown([10, 30, 20], { attention: [8, 9, 7], ffn: [6, 6, 6], output: [5, 50, 4], optimizer: [2, 1, 3] });
    // parts 8 + 6 + 5 + 2 = 21 ms > the 20 ms step
    expect(b).toMatchObject({ stepMs: 20, attentionMs: 8, ffnMs: 6, outputMs: 5, optimizerMs: 2, otherMs: 0, partsOverStepMs: 1 });
    expect(b.shares).toEqual({ attention: 8 / 21, ffn: 6 / 21, output: 5 / 21, optimizer: 2 / 21, other: 0 });
    // parts under the step: other is the rest, shares of the step
    const u = summarizeBreakdown([40], { attention: [8], ffn: [6], output: [5], optimizer: [1] });
    expect(u).toMatchObject({ otherMs: 20, partsOverStepMs: 0 });
    expect(u.shares).toEqual({ attention: 0.2, ffn: 0.15, output: 0.125, optimizer: 0.025, other: 0.5 });
  });

  it('--threads: default $RECDISTILL_THREADS, else 1,<cores>; deduplicated, order kept, usage errors', () => {
    expect(parseThreadList('', 2, '')).toEqual([1, 2]);
    expect(parseThreadList('', 1, '')).toEqual([1]);
    expect(parseThreadList('', 64, '')).toEqual([1, 8]);
    expect(parseThreadList('2, 1,2', 2, '')).toEqual([2, 1]);
    // $RECDISTILL_THREADS (set by threads-bench for its children) replaces the default, not a given list.
    expect(parseThreadList('', 2, '2')).toEqual([2]);
    expect(parseThreadList('1', 2, '2')).toEqual([1]);
    expect(() => parseThreadList('', 2, 'x')).toThrow(/RECDISTILL_THREADS/);
    for (const bad of ['0', '1,x', '1.5', '9', '-1', '1,,2']) expect(() => parseThreadList(bad, 2, ''), bad).toThrow(/--threads/);
  });

  it('--threads 1 --json: one row per backend with threads 1, today\'s summary shape plus the breakdown', async () => {
    const { summary, stderr } = await runCli(['student:bench', '--backends', 'cpu,wasm', '--threads', '1', ...TINY, '--json']);
    expect(summary.config).toMatchObject({ numItems: 30, maxLen: 6, dims: 8, blocks: 2, heads: 1, batchSize: 3 });
    const rows = summary.results as Row[];
    expect(rows.map((r) => [r.backend, r.threads])).toEqual([['cpu', 1], ['wasm', 1]]);
    for (const r of rows) {
      for (const k of ['msPerStep', 'serveMsMedian', 'serveMsP90'] as const) expect(typeof r[k], k).toBe('number');
      expect(r.threadsRequested).toBeUndefined();
      expectBreakdown(r.breakdown, 3);
    }
    expect((summary.loadAverage as { before: number[] }).before).toHaveLength(3);
    expect(stderr).toMatch(/backend\s+threads\s+ms\/step\s+serve ms\s+attention\s+ffn\s+output\s+optimizer\s+other/);
  });

  it('wasm --threads 2,1: one child and one row per count, in the order asked (threads = what the backend started with)', async () => {
    const { summary } = await runCli(['student:bench', '--backends', 'wasm', '--threads', '2,1', ...TINY, '--no-breakdown', '--json']);
    const rows = summary.results as Row[];
    expect(rows).toHaveLength(2);
    // A threaded start that falls back (one notice line) reports 1 thread and the count asked for.
    expect([rows[0]!.threadsRequested ?? rows[0]!.threads, rows[1]!.threads]).toEqual([2, 1]);
    for (const r of rows) expect(r.breakdown).toBeUndefined();
  });
});
