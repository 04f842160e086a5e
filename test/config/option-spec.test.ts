import { describe, expect, it } from 'vitest';
import { checkRanges, legacyValuesOf, resolveOptions, runKeysOf, type OptionSpecs } from '../../src/config/options.js';
import { datasetOptions } from '../../src/data/options.js';
import { LEGACY_RUN_VALUES, RUN_KEYS, validateStudentOptions } from '../../src/student/training/config.js';

/**
 * The option spec carries ranges, run identity and legacy values; RUN_KEYS, LEGACY_RUN_VALUES and the range checks
 * are derived from it. The tables below are the hand-written ones the spec replaced (main 1af469f), order included:
 * config.json's "options" and every stored run identity are written in RUN_KEYS order.
 */
const HAND_WRITTEN_RUN_KEYS = [
  ...Object.keys(datasetOptions),
  'maxLen', 'dims', 'blocks', 'heads', 'ffnDims', 'dropout', 'attnDropout', 'norm', 'init', 'embScale', 'padKeys', 'attnOutDropout', 'attention', 'filterAlpha', 'filterBins', 'filterSpan', // filterSpan: added after the hand-written tables
  'loss', 'negatives', 'sampler', 'windows', 'batchSize', 'lr', 'beta2', 'weightDecay', 'seed',
  'beta1', 'lrSchedule', 'warmupSteps', 'labelSmoothing', 'ema', 'batching', 'stepWeight',
];
const HAND_WRITTEN_LEGACY = {
  norm: 'pre', init: 'default', embScale: true, beta1: 0.9, lrSchedule: 'constant', warmupSteps: 0, labelSmoothing: 0,
  padKeys: 'mask', attnOutDropout: true, ema: 0, tieOrder: 'file', batching: 'length', stepWeight: 'batch', attention: 'causal',
  filterAlpha: 0, filterBins: 3, filterSpan: 'causal',
};

describe('the option spec', () => {
  it('derives the run keys and legacy values the hand-written tables held, in the same order', () => {
    expect([...RUN_KEYS]).toEqual(HAND_WRITTEN_RUN_KEYS);
    expect(Object.entries(LEGACY_RUN_VALUES)).toEqual(Object.entries(HAND_WRITTEN_LEGACY));
  });

  it('orders keys added later by when they were added, after the original ones', () => {
    const specs: OptionSpecs = {
      b: { type: 'int', help: '', run: true, legacy: { value: 0, since: 2 } },
      a: { type: 'int', help: '', run: true },
      c: { type: 'int', help: '', run: true, legacy: { value: 'x', since: 1 } },
      d: { type: 'int', help: '' },
    };
    expect(runKeysOf(specs)).toEqual(['a', 'c', 'b']);
    expect(legacyValuesOf(specs)).toEqual({ c: 'x', b: 0 });
  });

  it('checks min/max when options resolve and for values built by hand, naming the flag and the bound', () => {
    const specs = { batchSize: { type: 'int', help: '', min: 1, max: 10 }, rate: { type: 'number', help: '', min: 0, max: 1, exclusiveMax: true }, lr: { type: 'number', help: '', min: 0, exclusiveMin: true } } satisfies OptionSpecs;
    expect(() => resolveOptions(specs, { flags: { batchSize: '0' } })).toThrow(/--batch-size must be an integer >= 1 and <= 10; got 0\./);
    expect(() => resolveOptions(specs, { file: { rate: 1 }, filePath: 'c.json' })).toThrow(/--rate must be a number >= 0 and < 1; got 1 \(config file c\.json\)\./);
    expect(() => checkRanges(specs, { lr: 0 })).toThrow(/--lr must be a number > 0; got 0\./);
    expect(() => checkRanges(specs, { batchSize: 2.5 })).toThrow(/--batch-size must be an integer/);
    expect(resolveOptions(specs, { flags: { batchSize: '10', rate: '0.99', lr: '1e-9' } })).toEqual({ batchSize: 10, rate: 0.99, lr: 1e-9 });
  });

  it('validateStudentOptions checks every choice option, windows and sampler included', () => {
    expect(() => validateStudentOptions({ windows: 'some' } as never)).toThrow(/--windows must be one of last, all, prefixes; got "some"/);
    expect(() => validateStudentOptions({ sampler: 'zipf' } as never)).toThrow(/--sampler must be one of uniform, popularity; got "zipf"/);
    expect(() => validateStudentOptions({ windows: 'all', sampler: 'popularity' })).not.toThrow();
  });
});
