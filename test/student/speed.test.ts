import { describe, expect, it } from 'vitest';
import { parseVariant } from '../../src/cli/commands/student-speed.js';
import { runCmd, TINY_DATA } from '../bench/fixtures.js';

describe('student:speed', () => {
  it('parses variants into typed student options and names what is wrong', () => {
    expect(parseVariant('loss=sampled, negatives=64,batch-size=16,emb-scale=false')).toEqual({ loss: 'sampled', negatives: 64, batchSize: 16, embScale: false });
    expect(() => parseVariant('batch-sise=3')).toThrow(/--variants "batch-sise=3": unknown option "batch-sise"\. Did you mean --batch-size/);
    expect(() => parseVariant('negatives=1.5')).toThrow(/--variants "negatives=1.5": option "negatives" expects an integer, got "1.5"/);
    expect(() => parseVariant('emb-scale=maybe')).toThrow(/option "emb-scale" expects a boolean/);
    expect(() => parseVariant('loss=softmax')).toThrow(/option "loss" must be one of ce, sampled, bce/);
  });

  it('times each variant on the dataset\'s real epoch: its batch count and positions', async () => {
    // TINY_DATA: 40 users of 5..12 items; a user of n items trains n - 3 steps (validation and test held out).
    const s = (await runCmd(() => import('../../src/cli/commands/student-speed.js'), {
      ...TINY_DATA, preset: 'none', dims: 8, ffnDims: 8, blocks: 1, variants: 'batch-size=8;batch-size=40', steps: 2, warmup: 1, rounds: 1, validUsers: 10,
    })) as { rows: Array<{ stepsPerEpoch: number; positionsPerEpoch: number; msPerStep: number; secondsPerEpoch: number; trainSecondsPerEpoch: number; validSecondsPerEpoch: number }> };
    const { prepareDataset, PREPARE_DEFAULTS } = await import('../../src/data/prepare.js');
    const ds = prepareDataset({ ...PREPARE_DEFAULTS, dataset: 'synthetic', source: '', synthetic: { users: 40, items: 30, minLen: 5, maxLen: 12, seed: 3 } });
    const users = ds.users.filter((u) => u.items.length >= 4).length;
    const positions = ds.users.reduce((a, u) => a + Math.max(0, u.items.length - 3), 0);
    expect(s.rows.map((r) => r.stepsPerEpoch)).toEqual([Math.ceil(users / 8), Math.ceil(users / 40)]);
    expect(s.rows.map((r) => r.positionsPerEpoch)).toEqual([positions, positions]);
    for (const r of s.rows) expect(r.secondsPerEpoch).toBeCloseTo(r.trainSecondsPerEpoch + r.validSecondsPerEpoch, 9);
    expect(s.rows[0]!.trainSecondsPerEpoch).toBeCloseTo((s.rows[0]!.msPerStep * s.rows[0]!.stepsPerEpoch) / 1000, 9);
  });
});
