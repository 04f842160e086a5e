import { describe, expect, it } from 'vitest';
import { datasetDifference } from '../../src/data/differ.js';

const base = { minRating: 0, kCore: 0, maxHistory: 20, onBadRow: 'error' };

describe('datasetDifference: why two fingerprints differ, in flags', () => {
  it('names each option that differs, with both values', () => {
    expect(datasetDifference({ name: 'ml-100k', options: base }, { name: 'ml-100k', options: { ...base, maxHistory: 50 } }, 'the cache')).toBe(
      'the cache was built with --max-history 20, this run uses 50',
    );
    expect(datasetDifference({ name: 'ml-100k', options: base }, { name: 'ml-100k', options: { ...base, kCore: 5, tieOrder: 'item' } }, 'the model')).toBe(
      'the model was built with --k-core 0, this run uses 5; with --tie-order the default, this run uses item',
    );
  });

  it('another dataset; same options (the raw data changed); nothing recorded; --on-bad-row is not part of the data', () => {
    expect(datasetDifference({ name: 'ml-1m', options: base }, { name: 'ml-100k', options: base }, 'the cache')).toBe('the cache was built on dataset ml-1m, this run uses ml-100k');
    expect(datasetDifference({ name: 'ml-100k', options: base }, { name: 'ml-100k', options: { ...base, onBadRow: 'skip' } }, 'the cache')).toMatch(/same ml-100k options, so the raw data differs/);
    expect(datasetDifference({ name: 'ml-100k' }, { name: 'ml-100k', options: base }, 'the cache')).toMatch(/records no options/);
  });

  it("a loader's format options are compared as flags", () => {
    const g = (userCol: string) => ({ ...base, format: { delimiter: ',', userCol } });
    expect(datasetDifference({ name: 'generic', options: g('user') }, { name: 'generic', options: g('uid') }, 'the cache')).toBe('the cache was built with --user-col user, this run uses uid');
  });
});
