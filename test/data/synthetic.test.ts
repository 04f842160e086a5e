import { describe, expect, it } from 'vitest';
import { buildPrepared } from '../../src/data/prepare.js';
import { splitUser } from '../../src/data/split.js';
import { generateSynthetic } from '../../src/data/synthetic.js';
import type { PreparedDataset } from '../../src/data/types.js';

const OPTS = { minRating: 0, kCore: 0, maxHistory: 0, onBadRow: 'error' as const };

function topK(counts: Map<number, number>, k: number, exclude = new Set<number>()): number[] {
  return [...counts.entries()].filter(([i]) => !exclude.has(i)).sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, k).map(([i]) => i);
}

/** HR@10 on the test split of "most frequent successor of the previous item" vs "most popular". */
function successorVsPopularity(d: PreparedDataset): { successor: number; popularity: number } {
  const succ = new Map<number, Map<number, number>>();
  const pop = new Map<number, number>();
  for (const u of d.users) {
    const h = u.items.subarray(0, u.items.length - 1); // everything but the test target
    for (let i = 0; i < h.length; i++) {
      pop.set(h[i]!, (pop.get(h[i]!) ?? 0) + 1);
      if (i === 0) continue;
      const m = succ.get(h[i - 1]!) ?? new Map<number, number>();
      m.set(h[i]!, (m.get(h[i]!) ?? 0) + 1);
      succ.set(h[i - 1]!, m);
    }
  }
  const popTop = topK(pop, 10);
  let hs = 0;
  let hp = 0;
  for (const u of d.users) {
    const { test } = splitUser(u);
    const prev = u.items[u.items.length - 2]!;
    const s = topK(succ.get(prev) ?? new Map(), 10);
    const rec = [...s, ...topK(pop, 10, new Set(s))].slice(0, 10);
    if (rec.includes(test)) hs++;
    if (popTop.includes(test)) hp++;
  }
  return { successor: hs / d.users.length, popularity: hp / d.users.length };
}

describe('synthetic dataset', () => {
  it('is deterministic for a seed and differs across seeds', () => {
    const a = generateSynthetic({ users: 50, items: 60, seed: 7 });
    const b = generateSynthetic({ users: 50, items: 60, seed: 7 });
    const c = generateSynthetic({ users: 50, items: 60, seed: 8 });
    expect(b.rawHash).toBe(a.rawHash);
    expect(b.interactions).toEqual(a.interactions);
    expect([...b.items.values()]).toEqual([...a.items.values()]);
    expect(c.rawHash).not.toBe(a.rawHash);
  });

  it('has the default size, readable titles, sequels in order, lengths in range', () => {
    const raw = generateSynthetic();
    const d = buildPrepared('synthetic', raw, OPTS, '');
    expect(d.stats.users).toBe(500);
    expect(d.stats.items).toBeLessThanOrEqual(300);
    expect(d.stats.items).toBeGreaterThan(250);
    for (const u of d.users) {
      expect(u.items.length).toBeGreaterThanOrEqual(15);
      expect(u.items.length).toBeLessThanOrEqual(60);
      expect(new Set(u.items).size).toBe(u.items.length); // nobody watches an item twice
    }
    const titles = [...raw.items.values()].map((t) => t.title);
    for (const t of titles) expect(t).toMatch(/^[A-Z][a-z]+ [A-Z][a-z]+( \d+)?( [IVX]+)? \(\d{4}\)$/);
    expect(new Set(titles).size).toBe(titles.length);
    // A sequel is always preceded by its previous instalment right before it in the catalogue, with a later year.
    const ii = titles.findIndex((t) => / II \(/.test(t));
    expect(titles[ii]!.replace(/ II \(\d{4}\)$/, '')).toBe(titles[ii - 1]!.replace(/ \(\d{4}\)$/, ''));
    expect(raw.items.get(String(ii + 1))!.year!).toBeGreaterThan(raw.items.get(String(ii))!.year!);
    expect([...raw.items.values()].every((t) => t.genres.length >= 1)).toBe(true);
  });

  it('carries sequential structure: successor baseline beats popularity by >= 2x HR@10', () => {
    for (const seed of [42, 3]) {
      const d = buildPrepared('synthetic', generateSynthetic({ seed }), OPTS, '');
      const r = successorVsPopularity(d);
      expect(r.successor).toBeGreaterThanOrEqual(2 * r.popularity);
      expect(r.successor).toBeGreaterThan(0.4);
    }
  });

  it('rejects sizes that cannot work', () => {
    expect(() => generateSynthetic({ users: 0 })).toThrow(/--synthetic-users/);
    expect(() => generateSynthetic({ minLen: 10, maxLen: 5 })).toThrow(/sequence lengths/);
  });
});
