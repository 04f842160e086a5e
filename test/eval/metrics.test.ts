import { describe, expect, it } from 'vitest';
import { hitAt, ndcgAt, rankAmong, rankOf, reciprocalRank, summarizeRanks } from '../../src/eval/metrics.js';

describe('rankOf (pessimistic ties)', () => {
  // column 0 is padding and never a candidate
  const s = Float32Array.from([99, 0.5, 0.9, 0.5, 0.1]);
  it('counts strictly greater and equal-scored other items', () => {
    expect(rankOf(s, 0, 4, 2)).toBe(0); // 0.9 is the unique best
    expect(rankOf(s, 0, 4, 1)).toBe(2); // item 2 (0.9) and tie item 3 (0.5) rank above
    expect(rankOf(s, 0, 4, 3)).toBe(2);
    expect(rankOf(s, 0, 4, 4)).toBe(3);
  });
  it('skips excluded items but never the target', () => {
    const ex = new Uint8Array(5);
    ex[2] = 1;
    ex[1] = 1; // target 1 is "excluded" too: it must still be ranked
    expect(rankOf(s, 0, 4, 1, ex)).toBe(1); // only the tie with item 3 remains
    expect(rankOf(s, 0, 4, 4, ex)).toBe(1); // item 3 (0.5) above; 1 and 2 excluded
  });
  it('reads a row at an offset', () => {
    const two = Float32Array.from([0, 1, 2, 3, 0, 3, 2, 1]);
    expect(rankOf(two, 4, 3, 1)).toBe(0);
    expect(rankOf(two, 0, 3, 1)).toBe(2);
  });
  it('gives a NaN target the worst rank and ignores NaN competitors', () => {
    expect(rankOf(Float32Array.from([0, NaN, 1, 2]), 0, 3, 1)).toBe(2);
    expect(rankOf(Float32Array.from([0, 1, NaN, 2]), 0, 3, 1)).toBe(1);
  });
  it('a constant scorer gets the worst rank, not a lucky one', () => {
    expect(rankOf(new Float32Array(11), 0, 10, 5)).toBe(9);
  });
});

describe('rankAmong (sampled protocol)', () => {
  it('ranks only against the listed candidates', () => {
    const s = Float32Array.from([0, 0.3, 0.9, 0.3, 0.1, 0.8]);
    expect(rankAmong(s, 0, 1, Int32Array.from([4, 5]))).toBe(1);
    expect(rankAmong(s, 0, 1, Int32Array.from([4, 3]))).toBe(1); // tie counts against
    expect(rankAmong(s, 0, 1, Int32Array.from([4, 1]))).toBe(0); // target in the list is skipped
  });
});

describe('HR / NDCG / MRR', () => {
  it('matches hand-computed values', () => {
    expect(hitAt(0, 1)).toBe(1);
    expect(hitAt(1, 1)).toBe(0);
    expect(ndcgAt(0, 10)).toBe(1);
    expect(ndcgAt(1, 10)).toBeCloseTo(1 / Math.log2(3), 12); // 0.6309
    expect(ndcgAt(9, 10)).toBeCloseTo(1 / Math.log2(11), 12);
    expect(ndcgAt(10, 10)).toBe(0);
    expect(reciprocalRank(3)).toBe(0.25);
  });
  it('summarises ranks, including K larger than the catalogue', () => {
    // ranks 0, 1, 4 and 30 (a catalogue of 31 items); K = 100 covers everything
    const m = summarizeRanks(Int32Array.from([0, 1, 4, 30]), [1, 5, 100]);
    expect(m['hr@1']).toBe(0.25);
    expect(m['hr@5']).toBe(0.75);
    expect(m['hr@100']).toBe(1);
    expect(m['ndcg@5']).toBeCloseTo((1 + 1 / Math.log2(3) + 1 / Math.log2(6)) / 4, 12);
    expect(m['ndcg@100']).toBeCloseTo((1 + 1 / Math.log2(3) + 1 / Math.log2(6) + 1 / Math.log2(32)) / 4, 12);
    expect(m.mrr).toBeCloseTo((1 + 1 / 2 + 1 / 5 + 1 / 31) / 4, 12);
    expect(m.users).toBe(4);
  });
  it('returns zeros for no users', () => {
    expect(summarizeRanks([], [10])).toEqual({ 'hr@10': 0, 'ndcg@10': 0, mrr: 0, users: 0 });
  });
});

describe('metricsTable', () => {
  it('has the columns of the metrics it is given (eval --ks 1,50), not a fixed set', async () => {
    const { metricsTable } = await import('../../src/eval/report.js');
    const t = metricsTable([{ name: 'student', m: { 'hr@50': 0.5, 'ndcg@50': 0.25, 'hr@1': 0.1, 'ndcg@1': 0.1, mrr: 0.2, users: 10 } }]);
    expect(t.split('\n')[0]).toBe('| model | hr@1 | ndcg@1 | hr@50 | ndcg@50 | mrr | users |');
    expect(t.split('\n')[2]).toBe('| student | 0.1000 | 0.1000 | 0.5000 | 0.2500 | 0.2000 | 10 |');
  });
});
