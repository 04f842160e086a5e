import { describe, expect, it } from 'vitest';
import studentTrain from '../../src/cli/commands/student-train.js';
import { resolveOptions } from '../../src/config/options.js';
import { autoPreset, resolveStudentPreset, STUDENT_PRESETS } from '../../src/student/training/presets.js';

const flags = (f: Record<string, unknown>) => resolveOptions(studentTrain.options, { flags: { dataset: 'synthetic', ...f } });
const stats = (medianSeqLen: number) => ({ users: 1000, items: 500, interactions: 9000, meanSeqLen: 9, medianSeqLen, density: 0.01 });

describe('--preset auto: a student configuration chosen from the data', () => {
  it('short histories (median under 20 items) take the short preset; longer ones the plain defaults', () => {
    // Amazon Beauty's median history is 6 items, MovieLens 100K's 64.
    expect(autoPreset({ name: 'amazon-beauty', stats: stats(6) })).toMatchObject({ preset: 'short' });
    expect(autoPreset({ name: 'amazon-beauty', stats: stats(6) }).reason).toMatch(/amazon-beauty's median history is 6 items \(< 20\): preset short \(maxLen 50, /);
    expect(autoPreset({ name: 'ml-100k', stats: stats(64) })).toMatchObject({ preset: 'none' });
    expect(autoPreset({ name: 'x', stats: stats(19.5) }).preset).toBe('short');
    expect(autoPreset({ name: 'x', stats: stats(20) }).preset).toBe('none');
  });

  it('is student:train\'s default; it resolves to the chosen preset\'s values, under --config and flags', () => {
    const o = flags({});
    expect(o.preset).toBe('auto');
    const short = resolveStudentPreset(o.preset, o, { name: 'b', stats: stats(6) });
    expect(short).toEqual(resolveStudentPreset('short', o));
    expect(short).toMatchObject({ ...STUDENT_PRESETS.short });
    expect(short.maxLen).toBe(50);
    // Without a dataset (the range check before loading), and on long histories: the plain defaults.
    expect(resolveStudentPreset(o.preset, o)).toEqual(resolveStudentPreset('none', o));
    expect(resolveStudentPreset(o.preset, o, { name: 'm', stats: stats(64) })).toMatchObject({ maxLen: 200, batchSize: 32, loss: 'ce', lr: 0.002 });
    // A flag beats the preset.
    const f = flags({ maxLen: 30, loss: 'ce' });
    expect(resolveStudentPreset(f.preset, f, { name: 'b', stats: stats(6) })).toMatchObject({ maxLen: 30, loss: 'ce', batchSize: STUDENT_PRESETS.short.batchSize });
  });
});
