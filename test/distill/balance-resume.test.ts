/**
 * Gradient balancing under resume: the balancer's weights and moving averages go into the checkpoint, so a
 * gradcos-balanced distilled run killed between epochs resumes to byte-identical weights.
 */
import { killAfterEpoch, runToEnd as runChildToEnd } from '../helpers/children.js';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBalancer } from '../../src/distill/balance.js';
import { readTensors } from '../../src/student/model/checkpoint.js';
import { writeReplicaModel } from '../../src/teacher/replica/index.js';
import { runCmd } from '../bench/fixtures.js';
import { SMALL_DATA } from '../student/fixtures/small.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-balance-resume-'));
let cache = '';
beforeAll(async () => {
  const lm = writeReplicaModel({ out: join(tmp, 'lm'), layout: 'optimum', dtype: 'fp32', seed: 1, layers: 2, hidden: 32, heads: 2, kvHeads: 1, merges: 200, maxPositions: 512, externalDataChunks: 0 });
  const r = await runCmd(() => import('../../src/cli/commands/teacher-cache.js'), { ...SMALL_DATA, model: lm.out, dtype: 'fp32', layers: '-1', maxPromptTokens: 512, topK: 10, head: 'zeroshot', overheadSample: 0, offline: true, out: join(tmp, 'cache') });
  cache = String(r.cache);
}, 900_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const script = join(import.meta.dirname, '..', 'student', 'fixtures', 'train-child.ts');
/** A distilled run (cos + kd, gradcos) against the cache; `extra` overrides (e.g. {balance: 'unshare'}). */
const flags = (extra: Record<string, unknown>) => JSON.stringify({ cache, lambdaCos: 1, lambdaKd: 0.5, balance: 'gradcos', balanceEvery: 3, seed: 42, ...extra });
const runToEnd = (out: string, epochs: number, extra: Record<string, unknown> = {}) => runChildToEnd(script, [out, String(epochs), '0', flags(extra)]);

describe('balancer state', () => {
  it('round-trips: a restored balancer continues exactly like the original', () => {
    const a = createBalancer('gradcos', { kd: 0.5, cos: 2 });
    const b = createBalancer('gradcos', { kd: 0.5, cos: 2 });
    b.restore(JSON.parse(JSON.stringify(a.state())));
    expect(b.state()).toEqual(a.state());
    expect(() => b.restore({ current: { ce: 'x' }, ema: {}, measurements: 1 })).toThrow(/balancer state/);
  });
});

/** Runs a child for 4 epochs and SIGKILLs it once epoch 2 is checkpointed. */
const killAfterEpoch2 = (out: string, extra: Record<string, unknown> = {}) => killAfterEpoch(script, [out, '4', '1500', flags(extra)], 2);

describe('a balanced distilled run killed between epochs', () => {
  it('resumes from its checkpoint (balancer state included) to the same bytes as an uninterrupted run', async () => {
    const killed = join(tmp, 'killed');
    await killAfterEpoch2(killed);
    const mid = readTensors(join(killed, 'checkpoint.safetensors'));
    expect(JSON.parse(mid.metadata.state!).epoch).toBe(2);
    const saved = JSON.parse(mid.metadata.hooks!);
    expect(saved.balancer.measurements).toBeGreaterThan(0); // the balancer had measured before the kill
    await runToEnd(killed, 4);
    const straight = join(tmp, 'straight');
    await runToEnd(straight, 4);
    expect(readFileSync(join(killed, 'model.safetensors')).equals(readFileSync(join(straight, 'model.safetensors')))).toBe(true);
  }, 900_000);
});

describe('an unshare-balanced distilled run killed between epochs', () => {
  // On this data (cos + kd, a measurement every 3 steps) the EMA cosines of both terms turn negative in epoch 2
  // and stay negative: with --unshare-after 1 both are unshared before the kill (the unshared set crosses the
  // checkpoint); with 2 the kill falls inside their run of negative cosines (the run length crosses it) and
  // they are unshared after the resume, at the same step as in the uninterrupted run.
  it.each([
    [1, (b: { unshared: object; streak: Record<string, number> }) => expect(Object.keys(b.unshared).sort()).toEqual(['cos', 'kd'])],
    [2, (b: { unshared: object; streak: Record<string, number> }) => (expect(b.unshared).toEqual({}), expect(b.streak).toEqual({ cos: 1, kd: 1 }))],
  ])('--unshare-after %i: resumes to the same bytes and the same unshare events', async (after, atKill) => {
    const extra = { balance: 'unshare', unshareAfter: after };
    const killed = join(tmp, `unshare${after}-killed`);
    await killAfterEpoch2(killed, extra);
    const mid = readTensors(join(killed, 'checkpoint.safetensors'));
    expect(JSON.parse(mid.metadata.state!).epoch).toBe(2);
    atKill(JSON.parse(mid.metadata.hooks!).balancer);
    await runToEnd(killed, 4, extra);
    const straight = join(tmp, `unshare${after}-straight`);
    await runToEnd(straight, 4, extra);
    const last = (dir: string) => JSON.parse(readFileSync(join(dir, 'history.jsonl'), 'utf8').trim().split('\n').pop()!);
    expect(Object.keys(last(straight).unshared).sort()).toEqual(['cos', 'kd']); // the rule did fire in this run
    expect(last(killed).unshared).toEqual(last(straight).unshared);
    expect(readFileSync(join(killed, 'model.safetensors')).equals(readFileSync(join(straight, 'model.safetensors')))).toBe(true);
  }, 900_000);
});
