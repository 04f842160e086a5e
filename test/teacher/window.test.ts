import { describe, expect, it } from 'vitest';
import { planWindows } from '../../src/prompt/window.js';
import { itemText } from '../../src/prompt/item-text.js';
import { parsePromptTemplate } from '../../src/prompt/template.js';

describe('planWindows', () => {
  it('recent: keeps the most recent items that fit, one pass', () => {
    // lines of 3,4,5,2,6 tokens; budget 13 -> items 2..4 (5+2+6 = 13) fit, item 1 (4) would make 17.
    expect(planWindows([3, 4, 5, 2, 6], 13, 'recent')).toEqual([{ start: 2, end: 4, assignFrom: 2 }]);
  });

  it('fits entirely: one pass from item 0 in both modes', () => {
    expect(planWindows([3, 4, 5], 12, 'windows')).toEqual([{ start: 0, end: 2, assignFrom: 0 }]);
    expect(planWindows([3, 4, 5], 12, 'recent')).toEqual([{ start: 0, end: 2, assignFrom: 0 }]);
  });

  it('windows: every position gets a state with at least budget/2 tokens of context', () => {
    // 10 lines of 2 tokens, budget 8 (4 lines per pass), half = 4 tokens = 2 lines.
    // Pass A: items 6..9, assigns from the first item where 2 lines of context are reached: item 7.
    // Pass B ends at 6: items 3..6, assigns 4..6. Pass C ends at 3: items 0..3, starts at 0 so assigns all.
    const w = planWindows(Array(10).fill(2), 8, 'windows');
    expect(w).toEqual([
      { start: 0, end: 3, assignFrom: 0 },
      { start: 3, end: 6, assignFrom: 4 },
      { start: 6, end: 9, assignFrom: 7 },
    ]);
    // Positions are covered exactly once.
    const covered = w.flatMap((x) => Array.from({ length: x.end - x.assignFrom + 1 }, (_, i) => x.assignFrom + i));
    expect(covered).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('rejects a line longer than the budget', () => {
    expect(() => planWindows([3, 20], 10, 'windows')).toThrow(/over the budget/);
  });
});

describe('item text and templates', () => {
  it('formats title, year and genres; no duplicate year; drops "unknown"', () => {
    expect(itemText({ title: 'Toy Story (1995)', year: 1995, genres: ['Animation', "Children's", 'Comedy'] })).toBe("Toy Story (1995) — Animation, Children's, Comedy");
    expect(itemText({ title: 'Amélie', year: 2001, genres: ['unknown'] })).toBe('Amélie (2001)');
    expect(itemText({ title: 'B0001', genres: [] })).toBe('B0001');
    expect(itemText({ title: 'Widget', genres: ['Tools'], extra: { store: 'Acme', main_category: 'Home', empty: ' ' } })).toBe('Widget — Tools [main_category: Home; store: Acme]');
  });

  it('splits a template at {{history}} and hashes its bytes', () => {
    const t = parsePromptTemplate('Intro\n\n{{history}}\nNext?\n', 'x.md');
    expect(t.before).toBe('Intro\n\n');
    expect(t.after).toBe('Next?\n');
    expect(t.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(() => parsePromptTemplate('no slot', 'bad.md')).toThrow(/bad\.md must contain \{\{history\}\} exactly once/);
    expect(() => parsePromptTemplate('{{history}} {{history}}', 'two.md')).toThrow(/found 2/);
  });
});

describe('float16 outputs (fp16 / q4f16 models)', () => {
  it('decodes IEEE half values', async () => {
    const { halfToFloat } = await import('../../src/teacher/llm/runtime.js');
    expect([0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x0000, 0x7c00].map(halfToFloat)).toEqual([1, -2, 0.5, 65504, 2 ** -24, 0, Infinity]);
    expect(Number.isNaN(halfToFloat(0x7e00))).toBe(true);
  });
});
