import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { alignFromZero, parseAlign, upgradeAlignProvenance } from '../../src/distill/align.js';
import { parseLayerList, resolveIndex, resolveLayerList } from '../../src/util/layers.js';

const space = { flag: '--layers', of: 'a model with 4 layers' };

describe('--layers: parse and resolve (negative counts from the end)', () => {
  const ok: Array<[string, number[]]> = [
    ['-1', [3]],
    ['0', [0]],
    ['-4,-1', [0, 3]],
    [' -4 , -1 ', [0, 3]],
    ['3,0', [3, 0]], // request order is kept: it is the order of the cache's layers axis
    ['+1', [1]],
  ];
  it.each(ok)('"%s" -> %j', (spec, want) => expect(resolveLayerList(spec, 4, space)).toEqual(want));

  const bad: Array<[string, RegExp]> = [
    ['', /--layers: give at least one entry/],
    ['  ', /--layers: give at least one entry/],
    ['1,,2', /--layers "1,,2": entry 2 is empty/],
    ['1,', /--layers "1,": entry 2 is empty/],
    [',1', /--layers ",1": entry 1 is empty/],
    ['-0', /--layers "-0": "-0" is ambiguous; write 0 for the first or -1 for the last/],
    ['1.5', /--layers "1.5": "1.5" is not an integer/],
    ['1e1', /"1e1" is not an integer/],
    ['a', /"a" is not an integer/],
    ['4', /--layers 4 is out of range for a model with 4 layers \(valid: 0\.\.3 or -4\.\.-1\)/],
    ['-5', /--layers -5 is out of range/],
    ['0,4', /--layers "0,4": 4 is out of range/],
    ['1,1', /--layers "1,1": 1 appears twice of a model with 4 layers/],
    ['3,-1', /--layers "3,-1": 3 and -1 are the same entry \(3\)/],
  ];
  it.each(bad)('"%s" is refused', (spec, msg) => {
    expect(() => resolveLayerList(spec, 4, space)).toThrow(msg);
  });

  it('parsing alone keeps negatives (resolved once the depth is known)', () => {
    expect(parseLayerList('-4, -1', '--layers')).toEqual([-4, -1]);
    expect(() => parseLayerList('-1,', '--layers')).toThrow(/entry 2 is empty/);
  });

  it('a single index (--head-layer) names the flag and the valid range', () => {
    const tapped = { flag: '--head-layer', of: 'the 2 tapped layers' };
    expect(resolveIndex(-1, 2, tapped)).toBe(1);
    expect(resolveIndex(0, 2, tapped)).toBe(0);
    expect(() => resolveIndex(2, 2, tapped)).toThrow(/^--head-layer 2 is out of range for the 2 tapped layers \(valid: 0\.\.1 or -2\.\.-1\)\.$/);
    expect(() => resolveIndex(-0, 2, tapped)).toThrow(/--head-layer -0 is out of range/);
    expect(() => resolveIndex(0.5, 2, tapped)).toThrow(/out of range/);
    expect(() => resolveIndex(0, 0, tapped)).toThrow(/there are none/);
  });
});

describe('--align B:T (B a student block from 0, T into the tapped list; negatives from the end in both)', () => {
  const ok: Array<[string, number, number, Array<{ block: number; tapped: number }>]> = [
    ['0:-4,1:-1', 2, 4, [{ block: 0, tapped: 0 }, { block: 1, tapped: 3 }]],
    ['1:1', 2, 4, [{ block: 1, tapped: 1 }]],
    ['1:-1, 0:0', 2, 4, [{ block: 0, tapped: 0 }, { block: 1, tapped: 3 }]],
    ['-1:-1', 2, 4, [{ block: 1, tapped: 3 }]], // the last block, as --layers -1 is the last layer
    // empty: spread the blocks evenly, the last block on the last tapped layer
    ['', 2, 4, [{ block: 0, tapped: 1 }, { block: 1, tapped: 3 }]],
    ['', 3, 1, [{ block: 0, tapped: 0 }, { block: 1, tapped: 0 }, { block: 2, tapped: 0 }]],
  ];
  it.each(ok)('"%s" with %i blocks, %i tapped', (spec, blocks, tapped, want) => expect(parseAlign(spec, blocks, tapped)).toEqual(want));

  const bad: Array<[string, RegExp]> = [
    ['2:-1', /--align "2:-1": 2 is out of range for the student's 2 blocks \(valid: 0\.\.1 or -2\.\.-1\)/],
    ['-3:-1', /-3 is out of range for the student's 2 blocks/],
    ['0:-5', /--align "0:-5": -5 is out of range for the cache's 4 tapped layers \(valid: 0\.\.3 or -4\.\.-1\)/],
    ['0:4', /4 is out of range for the cache's 4 tapped layers/],
    ['0-1', /"0-1" is not block:layer/],
    ['0:', /"0:" is not block:layer/],
    ['0:-0', /"-0" is ambiguous/],
    ['0:x', /"x" is not an integer/],
    ['0:0,,1:1', /--align "0:0,,1:1": entry 2 is empty/],
    ['0:0,', /entry 2 is empty/],
    ['1:0,1:1', /student block 1 is aligned twice/],
    ['1:0,-1:1', /student block 1 is aligned twice/],
  ];
  it.each(bad)('"%s" is refused', (spec, msg) => expect(() => parseAlign(spec, 2, 4)).toThrow(msg));

  it('an align stored with blocks from 1 (runs before alignFrom) reads as blocks from 0', () => {
    expect(alignFromZero('1:-4,2:-1')).toBe('0:-4,1:-1');
    expect(upgradeAlignProvenance({ cache: 'c', align: '1:3,2:7', standardise: false, rel: { distance: 5, align: '2:7' } }))
      .toEqual({ cache: 'c', align: '0:3,1:7', alignFrom: 0, standardise: false, rel: { distance: 5, align: '1:7' } });
    const today = { align: '0:3,1:7', alignFrom: 0 };
    expect(upgradeAlignProvenance(today)).toBe(today);
  });
});

describe('one resolver', () => {
  it('no module under src/ resolves a negative index by hand', () => {
    const files = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
    // `i < 0 ? n + i : i` and the like
    const byHand = /\b([\w.]+) < 0 \? [\w.]+ \+ \1\b/;
    const offenders = files('src').filter((f) => !f.endsWith(join('util', 'layers.ts')) && byHand.test(readFileSync(f, 'utf8')));
    expect(offenders).toEqual([]);
  });
});
