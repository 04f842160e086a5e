import { describe, expect, it } from 'vitest';
import { chunkRanges, forEachCsvRow, forEachLine, type LoadContext } from '../../src/data/formats/common.js';

const ctx = (onBadRow: 'error' | 'skip' = 'error'): LoadContext => ({ onBadRow, skipped: { count: 0 } });

// Quoted fields with commas, doubled quotes and an embedded newline (a record spanning lines 3-4).
const CSV = 'id,title,genres\n1,"Heat, The (1995)",Drama\n2,"Say ""Hi""\nagain (2001)",Comedy\n3,Plain (1990),\n\n4,"x,y",A|B\n';
const WANT = [
  { f: ['id', 'title', 'genres'], line: 1 },
  { f: ['1', 'Heat, The (1995)', 'Drama'], line: 2 },
  { f: ['2', 'Say "Hi"\nagain (2001)', 'Comedy'], line: 4 },
  { f: ['3', 'Plain (1990)', ''], line: 5 },
  { f: ['4', 'x,y', 'A|B'], line: 7 },
];

function rows(text: string | Buffer, chunk: number, c = ctx()) {
  const out: { f: string[]; line: number }[] = [];
  forEachCsvRow(Buffer.isBuffer(text) ? text : Buffer.from(text), 'f.csv', ',', c, (f, line) => out.push({ f, line }), chunk);
  return out;
}

describe('chunked reading', () => {
  it('cuts only at newlines outside quotes', () => {
    const buf = Buffer.from(CSV);
    for (const size of [1, 5, 17, 30, 1000]) {
      const ranges = [...chunkRanges(buf, 0, size, 0x22)];
      expect(ranges[0]![0]).toBe(0);
      expect(ranges[ranges.length - 1]![1]).toBe(buf.length);
      for (const [, e] of ranges.slice(0, -1)) {
        expect(buf[e - 1]).toBe(10);
        // The quoted newline after 'Say ""Hi""' (inside quotes) is never a cut point.
        expect(buf.subarray(0, e).toString()).not.toMatch(/Hi""\n$/);
      }
    }
  });

  it('every chunk size gives the same records and absolute line numbers', () => {
    for (const size of [1, 3, 16, 40, 1 << 20]) expect(rows(CSV, size)).toEqual(WANT);
  });

  it('errors carry absolute line numbers across chunks', () => {
    const bad = 'a,b\n1,2\n3,4\n5,"open\n';
    for (const size of [1, 4, 1000]) expect(() => rows(bad, size)).toThrow(/f\.csv line \d: expected well-formed RFC-4180 quoting/);
    const short = 'a,b\n1,2\n3,4\n5\n6,7\n';
    for (const size of [1, 1000]) expect(() => rows(short, size)).toThrow(/f\.csv line 4: expected the same number of columns as the header \(2/);
    const c = ctx('skip');
    expect(rows(short, 2, c).map((r) => r.line)).toEqual([1, 2, 3, 5]);
    expect(c.skipped.count).toBe(1);
  });

  it('forEachLine: same lines for any chunk size; invalid UTF-8 named by its line in the whole file', () => {
    const text = 'héllo\n\nwörld\r\nlast';
    for (const size of [1, 2, 7, 1000]) {
      const got: [string, number][] = [];
      forEachLine(Buffer.from(text), 'x.txt', 'utf8', (l, n) => got.push([l, n]), undefined, size);
      expect(got).toEqual([['héllo', 1], ['wörld', 3], ['last', 4]]);
    }
    const bad = Buffer.concat([Buffer.from('ok\nok\nok\n'), Buffer.from('caf\xe9\n', 'latin1'), Buffer.from('ok\n')]);
    for (const size of [1, 4, 1000]) expect(() => forEachLine(bad, 'x.txt', 'utf8', () => {}, undefined, size)).toThrow(/x\.txt line 4: invalid UTF-8/);
  });
});
