/**
 * Gradient balancing under resume: the balancer's weights and moving averages go into the checkpoint, so a
 * gradcos-balanced distilled run killed between epochs resumes to byte-identical weights.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBalancer } from '../../src/distill/balance.js';
import { readTensors } from '../../src/student/checkpoint.js';
import { writeReplicaModel } from '../../src/teacher/replica/index.js';
import { runCmd } from '../bench/fixtures.js';
import { SMALL_DATA } from '../student/fixtures/small.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-balance-resume-'));
let cache = '';
beforeAll(async () => {
  const lm = writeReplicaModel({ out: join(tmp, 'lm'), layout: 'optimum', dtype: 'fp32', seed: 1, layers: 2, hidden: 32, heads: 2, kvHeads: 1, merges: 200, maxPositions: 512, externalDataChunks: 0 });
  const r = await runCmd(() => import('../../src/cli/commands/teacher-cache.js'), { ...SMALL_DATA, model: lm.out, dtype: 'fp32', layers: '-1', maxPromptTokens: 512, topK: 10, head: 'zeroshot', overheadSample: 0, offline: true, out: join(tmp, 'cache') });
  cache = String(r.cache);
}, 120_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const child = (out: string, epochs: number, slowMs: number) =>
  spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures', 'balanced-child.ts'), out, cache, String(epochs), String(slowMs)], { cwd: join(import.meta.dirname, '..', '..'), stdio: ['ignore', 'pipe', 'pipe'] });
const runToEnd = (out: string, epochs: number) =>
  new Promise<void>((resolve, reject) => {
    const p = child(out, epochs, 0);
    let text = '';
    p.stdout.on('data', (d: Buffer) => (text += d.toString()));
    p.stderr.on('data', (d: Buffer) => (text += d.toString()));
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`child exited ${code}: ${text}`))));
  });

describe('balancer state', () => {
  it('round-trips: a restored balancer continues exactly like the original', () => {
    const a = createBalancer('gradcos', { kd: 0.5, cos: 2 });
    const b = createBalancer('gradcos', { kd: 0.5, cos: 2 });
    b.restore(JSON.parse(JSON.stringify(a.state())));
    expect(b.state()).toEqual(a.state());
    expect(() => b.restore({ current: { ce: 'x' }, ema: {}, measurements: 1 })).toThrow(/balancer state/);
  });
});

describe('a balanced distilled run killed between epochs', () => {
  it('resumes from its checkpoint (balancer state included) to the same bytes as an uninterrupted run', async () => {
    const killed = join(tmp, 'killed');
    await new Promise<void>((resolve, reject) => {
      const p = child(killed, 4, 1500);
      let text = '';
      p.stderr.on('data', (d: Buffer) => (text += d.toString()));
      p.stdout.on('data', (d: Buffer) => {
        text += d.toString();
        if (d.toString().includes('epoch 2')) p.kill('SIGKILL');
      });
      p.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`child was not killed (exit ${code}): ${text.slice(-1500)}`))));
    });
    const mid = readTensors(join(killed, 'checkpoint.safetensors'));
    expect(JSON.parse(mid.metadata.state!).epoch).toBe(2);
    const saved = JSON.parse(mid.metadata.hooks!);
    expect(saved.balancer.measurements).toBeGreaterThan(0); // the balancer had measured before the kill
    await runToEnd(killed, 4);
    const straight = join(tmp, 'straight');
    await runToEnd(straight, 4);
    expect(readFileSync(join(killed, 'model.safetensors')).equals(readFileSync(join(straight, 'model.safetensors')))).toBe(true);
  }, 240_000);
});
