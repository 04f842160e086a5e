import { describe, expect, it } from 'vitest';
import { buildPrepared, computeStats } from '../../src/data/prepare.js';
import { splitUser } from '../../src/data/split.js';
import type { RawDataset, RawInteraction } from '../../src/data/types.js';

const OPTS = { minRating: 0, kCore: 0, maxHistory: 0, onBadRow: 'error' as const };

/** Rows as [user, item, time, rating?]; order = position. */
function rows(xs: [string, string, number, number?][]): RawInteraction[] {
  return xs.map(([user, item, time, rating], order) => ({ user, item, time, rating, order }));
}

function raw(xs: RawInteraction[], hash = 'h'): RawDataset {
  return { interactions: xs, items: new Map([['a', { title: 'Alpha (1990)', year: 1990, genres: ['Drama'] }]]), rawHash: hash, files: ['t'] };
}

describe('time order and leave-one-out split', () => {
  it('sorts by time, keeps file order on ties, and takes last = test, second-to-last = validation', () => {
    // File order: p(t5) q(t3) r(t3) s(t1). Time order with stable ties: s q r p.
    // The same rows with q and r swapped in the file: the tie resolves the other way (s r q p).
    const swapped = buildPrepared('t', raw(rows([['u', 'p', 5], ['u', 'r', 3], ['u', 'q', 3], ['u', 's', 1]])), OPTS, 't');
    expect([...swapped.users[0]!.items]).toEqual([4, 3, 2, 1]);

    const d = buildPrepared('t', raw(rows([['u', 'p', 5], ['u', 'q', 3], ['u', 'r', 3], ['u', 's', 1]])), OPTS, 't');
    // Dense ids follow the sorted raw ids: p=1 q=2 r=3 s=4; 0 is padding.
    expect(d.items.map((i) => i.rawId)).toEqual(['', 'p', 'q', 'r', 's']);
    expect([...d.users[0]!.items]).toEqual([4, 2, 3, 1]);
    const s = splitUser(d.users[0]!);
    expect([...s.train]).toEqual([4, 2]);
    expect(s.valid).toBe(3);
    expect(s.test).toBe(1);
  });

  it('--tie-order item: same-time rows go by raw item id (numeric ids as numbers), whatever the file order; the fingerprint records it', () => {
    // File order: p9(t5) x10(t3) x2(t3) s(t1) -> by time then item id: s, x2, x10, p9 (10 after 2: numeric ids compare as numbers).
    const xs = rows([['u', '9', 5], ['u', '10', 3], ['u', '2', 3], ['u', '1', 1]]);
    const byItem = buildPrepared('t', raw(xs), { ...OPTS, tieOrder: 'item' }, 't');
    expect(Array.from(byItem.users[0]!.items, (id) => byItem.items[id]!.rawId)).toEqual(['1', '2', '10', '9']);
    const byFile = buildPrepared('t', raw(xs), OPTS, 't');
    expect(Array.from(byFile.users[0]!.items, (id) => byFile.items[id]!.rawId)).toEqual(['1', '10', '2', '9']);
    expect(byItem.fingerprint).not.toBe(byFile.fingerprint);
    // tieOrder 'file' given explicitly is the default: same data, same fingerprint as before the option existed.
    expect(buildPrepared('t', raw(xs), { ...OPTS, tieOrder: 'file' }, 't').fingerprint).toBe(byFile.fingerprint);
  });

  it('users with fewer than 3 items keep everything for training and have no targets', () => {
    expect(splitUser(Int32Array.from([7, 8]))).toEqual({ train: Int32Array.from([7, 8]), valid: 0, test: 0 });
    expect(splitUser(Int32Array.from([7]))).toEqual({ train: Int32Array.from([7]), valid: 0, test: 0 });
    const three = splitUser(Int32Array.from([1, 2, 3]));
    expect([...three.train]).toEqual([1]);
    expect([three.valid, three.test]).toEqual([2, 3]);
  });
});

describe('iterated k-core', () => {
  it('repeats until stable (here 3 rounds of removal)', () => {
    // u1:{a,b} u2:{a,b} is a 2-core. u4:{c} goes in round 1, then c has 1 user (round 2),
    // then u3 has 1 item (round 3).
    const xs = rows([['u1', 'a', 1], ['u1', 'b', 2], ['u2', 'a', 1], ['u2', 'b', 2], ['u3', 'a', 1], ['u3', 'c', 2], ['u4', 'c', 1]]);
    const core = buildPrepared('t', raw(xs), { ...OPTS, kCore: 2 }, 't');
    expect(core.users.map((u) => [u.rawId, [...u.items].map((i) => core.items[i]!.rawId).join('')])).toEqual([['u1', 'ab'], ['u2', 'ab']]);
    expect(core.items.slice(1).map((i) => i.rawId)).toEqual(['a', 'b']); // a single pass would have kept c and u3
    expect(buildPrepared('t', raw(xs), OPTS, 't').users).toHaveLength(4); // k-core off keeps everyone
    expect(() => buildPrepared('t', raw(xs), { ...OPTS, kCore: 3 }, 't')).toThrow(/no interactions left/);
  });
});

describe('buildPrepared', () => {
  const xs = rows([['1', 'a', 1, 5], ['1', 'b', 2, 2], ['1', 'c', 3, 4], ['2', 'a', 1, 4], ['2', 'c', 2, 1], ['10', 'b', 1, 3]]);

  it('counts, dense ids, titles, stats', () => {
    const d = buildPrepared('t', raw(xs), OPTS, 't');
    expect(d.users.map((u) => u.rawId)).toEqual(['1', '2', '10']); // numeric order of raw ids
    expect(d.items[1]).toEqual({ id: 1, rawId: 'a', title: 'Alpha (1990)', year: 1990, genres: ['Drama'] });
    expect(d.items[2]!.title).toBe('b'); // no text: the raw id
    expect(d.stats).toEqual({ users: 3, items: 3, interactions: 6, meanSeqLen: 2, medianSeqLen: 2, density: 6 / 9 });
  });

  it('min rating, max history and the fingerprint', () => {
    const d = buildPrepared('t', raw(xs), { ...OPTS, minRating: 3 }, 't');
    expect(d.stats.interactions).toBe(4);
    expect([...d.users[0]!.items]).toEqual([1, 3]); // user 1 keeps a(5), c(4)
    const h = buildPrepared('t', raw(xs), { ...OPTS, maxHistory: 2 }, 't');
    expect(h.users.map((u) => [...u.items])).toEqual([[2, 3], [1, 3], [2]]); // most recent 2
    const base = buildPrepared('t', raw(xs), OPTS, 't').fingerprint;
    expect(buildPrepared('t', raw(xs), OPTS, 'elsewhere').fingerprint).toBe(base); // the path is not content
    expect(buildPrepared('t', raw(xs), { ...OPTS, onBadRow: 'skip' }, 't').fingerprint).toBe(base);
    expect(h.fingerprint).not.toBe(base);
    expect(buildPrepared('t', raw(xs, 'other-bytes'), OPTS, 't').fingerprint).not.toBe(base);
  });

  it('empty input and empty-after-filtering are distinct errors', () => {
    expect(() => buildPrepared('t', raw([]), OPTS, 't')).toThrow(/no interactions found in t/);
    expect(() => buildPrepared('t', raw(xs), { ...OPTS, kCore: 5 }, 't')).toThrow(/no interactions left .* after filtering \(6 read; min-rating 0, k-core 5\)/);
  });

  it('median of an even count averages the middle two', () => {
    const users = [3, 1, 4, 2].map((n, i) => ({ rawId: String(i), items: new Int32Array(n) }));
    expect(computeStats(users, 5).medianSeqLen).toBe(2.5);
  });
});
