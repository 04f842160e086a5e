import { describe, expect, it } from 'vitest';
import type { PreparedDataset } from '../../src/data/types.js';
import { evaluateRanking, historyFor, popularityScorer, rankUsers, sampleNegatives, type ScoreBatch } from '../../src/eval/evaluate.js';

/** A hand-built dataset: 6 items, 3 users (one too short to evaluate). */
function tiny(): PreparedDataset {
  const seqs = [[1, 2, 3, 4, 5], [2, 3, 6], [4, 1]];
  return {
    name: 'tiny',
    fingerprint: 'f',
    options: {},
    items: Array.from({ length: 7 }, (_, i) => ({ id: i, rawId: String(i), title: `item ${i}`, genres: [] })),
    users: seqs.map((s, i) => ({ rawId: `u${i}`, items: Int32Array.from(s) })),
    stats: { users: 3, items: 6, interactions: 10, meanSeqLen: 10 / 3, medianSeqLen: 3, density: 0.5 },
  };
}

/** Scores = fixed per-item values, the same for every user: [_, 6, 5, 4, 3, 2, 1] (item 1 best). */
const fixed: ScoreBatch = async (users) => {
  const out = new Float32Array(users.length * 7);
  for (let b = 0; b < users.length; b++) for (let j = 1; j <= 6; j++) out[b * 7 + j] = 7 - j;
  return out;
};

describe('evaluateRanking', () => {
  it('uses the right history and target per split', () => {
    const ds = tiny();
    expect([...historyFor(ds, 0, 'valid')]).toEqual([1, 2, 3]);
    expect([...historyFor(ds, 0, 'test')]).toEqual([1, 2, 3, 4]);
    expect([...historyFor(ds, 1, 'valid')]).toEqual([2]);
  });

  it('excludes the history (hand-computed ranks)', async () => {
    const ds = tiny();
    // user 0, test target 5, history {1,2,3,4} excluded: only item 6 remains, scored lower -> rank 0
    // user 1, test target 6, history {2,3} excluded: items 1, 4, 5 score higher -> rank 3
    const r = await rankUsers(ds, fixed, { split: 'test' });
    expect(r.users).toEqual([0, 1]);
    expect([...r.ranks]).toEqual([0, 3]);
    // without exclusion: user 0 target 5 is beaten by 1,2,3,4 -> rank 4; user 1 target 6 -> rank 5
    const r2 = await rankUsers(ds, fixed, { split: 'test', excludeHistory: false });
    expect([...r2.ranks]).toEqual([4, 5]);
    // valid: user 0 target 4, history {1,2,3} -> rank 0; user 1 target 3, history {2} -> only item 1 above -> rank 1
    const m = await evaluateRanking(ds, fixed, { split: 'valid', ks: [1, 5] });
    expect(m['hr@1']).toBe(0.5);
    expect(m['ndcg@5']).toBeCloseTo((1 + 1 / Math.log2(3)) / 2, 12);
    expect(m.users).toBe(2);
  });

  it('gives the same result whatever the batch size, and passes each split to the scorer', async () => {
    const ds = tiny();
    const seen: Array<[number[], string]> = [];
    const spy: ScoreBatch = async (users, split) => {
      seen.push([users, split]);
      return fixed(users, split);
    };
    const a = await evaluateRanking(ds, spy, { split: 'test', batchSize: 1 });
    const b = await evaluateRanking(ds, fixed, { split: 'test', batchSize: 64 });
    expect(a).toEqual(b);
    expect(seen).toEqual([[[0], 'test'], [[1], 'test']]);
  });

  it('rejects a scorer that returns the wrong number of scores', async () => {
    const bad: ScoreBatch = async (users) => new Float32Array(users.length * 6);
    await expect(evaluateRanking(tiny(), bad, { split: 'test' })).rejects.toThrow(/numItems \+ 1/);
  });

  it('sampled protocol: uses every unseen item when fewer than 100 exist, reproducibly', async () => {
    const ds = tiny();
    const mask = new Uint8Array(7);
    const negs = sampleNegatives(ds, 1, 100, 7, mask);
    expect([...negs].sort()).toEqual([1, 4, 5]); // user 1 saw 2, 3, 6
    expect(mask.every((x) => x === 0)).toBe(true);
    // user 1 test target 6 scores 1, below 1, 4, 5 -> rank 3; user 0 has only item 6 unseen, below target 5 -> rank 0
    const r = await rankUsers(ds, fixed, { split: 'test', protocol: 'sampled100' });
    expect([...r.ranks]).toEqual([0, 3]);
  });
});

describe('popularityScorer', () => {
  it('counts only the items visible for the split', async () => {
    const ds = tiny();
    const pop = popularityScorer(ds);
    // valid histories: [1,2,3], [2], [4,1] (short user keeps everything)
    expect([...(await pop([0], 'valid'))]).toEqual([0, 2, 2, 1, 1, 0, 0]);
    // test histories: [1,2,3,4], [2,3], [4,1]
    expect([...(await pop([0, 1], 'test'))].slice(7)).toEqual([0, 2, 2, 2, 2, 0, 0]);
  });
});
