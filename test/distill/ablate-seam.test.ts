import type { CacheSummary } from '../../src/cache/run.js';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkCacheFlags, resolveCacheConfig } from '../../src/cache/config.js';
import { cacheKey, readManifest } from '../../src/cache/format.js';
import ablate from '../../src/cli/commands/ablate.js';
import { ablateCacheConfig, ablateStudentOptions, ablateTeacherOptions } from '../../src/distill/ablate-options.js';
import type { CommandContext } from '../../src/cli/command.js';
import studentTrain from '../../src/cli/commands/student-train.js';
import teacherCache from '../../src/cli/commands/teacher-cache.js';
import { resolveOptions, type OptionSpecs } from '../../src/config/options.js';
import { resolveStudentPreset } from '../../src/student/training/presets.js';

/**
 * The seam between ablate and the stand-alone commands: for the same flags, an ablation builds the cache
 * teacher:cache builds (same config, same key) and trains the runs student:train --preset small trains (same
 * resolved options, same run identity). Tiny synthetic data, cpu backend.
 */
const tmp = mkdtempSync(join(tmpdir(), 'ablate-seam-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const DATA = { dataset: 'synthetic', syntheticUsers: 40, syntheticItems: 30, syntheticMinLen: 5, syntheticMaxLen: 10, syntheticSeed: 3 };
const ctx: CommandContext = { log: () => {}, json: true, verbose: false };
const opts = <O extends OptionSpecs>(cmd: { options: O }, flags: Record<string, unknown>, file?: Record<string, unknown>) => resolveOptions(cmd.options, { flags, file });
const readJson = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, any>;

describe('ablate = teacher:cache + student:train for the same options', () => {
  it('cache config, resolved for both teacher kinds, is the one teacher:cache resolves (cache flags, not a copy)', () => {
    const flags = { hiddenDtype: 'f16', usersPerShard: 16, usersInFlight: 2, topK: 7, temperature: 2, seed: 5, cacheRoot: join(tmp, 'c') };
    const llm = { ...flags, model: 'some/model', dtype: 'fp32', layers: '-3,-1', maxPromptTokens: 256, head: 'zeroshot', headLr: 0.5 };
    const a = ablateCacheConfig(opts(ablate, { ...llm, teacher: 'llm' }), undefined);
    const t = resolveCacheConfig({ ...opts(teacherCache, { ...llm, teacher: 'llm' }), teacher: 'llm' });
    expect(a).toEqual(t);
    expect(a).toMatchObject({ hiddenDtype: 'F16', usersPerShard: 16, usersInFlight: 2, k: 7, temperature: 2, layers: '-3,-1', head: { kind: 'zeroshot', epochs: 0, lr: 0.5, seed: 5 } });
    // One meaning of --layers: auto = the llm's last layer; -1 is the last layer for both kinds.
    expect(ablateCacheConfig(opts(ablate, { teacher: 'llm' }), undefined).layers).toBe('-1');
    expect(ablateCacheConfig(opts(ablate, { teacher: 'llm' }), undefined).hiddenDtype).toBe('F32'); // teacher:cache's default
    // Head flags do not apply to a seqrec teacher (its soft labels are its own scores): refused, not ignored.
    expect(() => checkCacheFlags(opts(ablate, { headLayer: 0 }))).toThrow(/--head-layer 0: a seqrec teacher's soft labels are its own scores/);
  });

  it('ablate --until-converged: epochs 500 with early stopping on --patience; --preset small under --config and flags', () => {
    const a = opts(ablate, { ...DATA, untilConverged: true, patience: 7 });
    expect(ablateStudentOptions(a, 43, 'o')).toMatchObject({ epochs: 500, patience: 7, dims: 16, seed: 43, out: 'o' });
    // defaults < preset < --config file < flags, in student:train too
    const s = opts(studentTrain, { ...DATA, preset: 'small', lr: 0.01 }, { dims: 24, lr: 0.02 });
    expect(resolveStudentPreset(s.preset, s)).toMatchObject({ dims: 24, lr: 0.01, blocks: 2, ffnDims: 16, maxLen: 50, batchSize: 128, patience: 10, dropout: 0.3 });
    expect(resolveStudentPreset(opts(studentTrain, DATA).preset, opts(studentTrain, DATA))).toMatchObject({ dims: 64, ffnDims: 64, maxLen: 200, lr: 0.002, batchSize: 32, patience: 20 });
    // The seqrec teacher ablate trains: student:train with no preset, same dataset flags and seed.
    const st = opts(studentTrain, { ...DATA, seed: 9, out: 'T' });
    expect(ablateTeacherOptions(opts(ablate, { ...DATA, seed: 9, dims: 4, dropout: 0.1 }), 'T')).toEqual(resolveStudentPreset(st.preset, st));
  });

  it('same cache key as teacher:cache (and as the ablation caches built before), same run identity as student:train --preset small', async () => {
    // A tiny 2-block seqrec teacher.
    const teacher = join(tmp, 'teacher');
    await studentTrain.run(opts(studentTrain, { ...DATA, dims: 8, ffnDims: 8, blocks: 2, maxLen: 10, epochs: 1, backend: 'cpu', out: teacher }), ctx);

    // teacher:cache returns a cache summary, or a token count with --count-only.
    const tc = (await teacherCache.run(opts(teacherCache, { ...DATA, teacher: 'seqrec', studentRun: teacher, topK: 5, backend: 'cpu', cacheRoot: join(tmp, 'tc') }), ctx)) as CacheSummary;
    const student = { maxLen: 10, dropout: 0.1, epochs: 1, backend: 'cpu' };
    const ab = (await ablate.run(opts(ablate, { ...DATA, ...student, teacher: 'seqrec', teacherRun: teacher, topK: 5, cacheRoot: join(tmp, 'ab'), seeds: 1, configs: 'kd', out: join(tmp, 'out') }), ctx)) as Record<string, any>;

    // (a) the cache: built independently under two roots, same key, same folder name.
    expect(ab.teacher.key).toBe(tc.key);
    expect(basename(ab.teacher.cache)).toBe(basename(String(tc.cache)));
    // ... and the key the ablation's hand-built seqrec options gave before the cache stage had one config:
    // every block tapped, F32, 128 users per shard, a 'teacher' head with nothing trained.
    const m = readManifest(String(tc.cache));
    expect(m.teacher.layers).toEqual([0, 1]);
    const before = cacheKey({
      fingerprint: m.dataset.fingerprint,
      teacher: m.teacher,
      hiddenDtype: 'F32',
      usersPerShard: 128,
      softLabels: { k: 5, temperature: 1, head: 'teacher' },
      head: { kind: 'teacher', layer: -1, epochs: 0, lr: 0, batchSize: 0, patience: 0, seed: 42 },
    });
    expect(tc.key).toBe(before);

    // (b) the CE run: what student:train --preset small trains from the same flags (run identity, model, options).
    const st = join(tmp, 'st');
    await studentTrain.run(opts(studentTrain, { ...DATA, ...student, preset: 'small', out: st }), ctx);
    const mine = readJson(join(st, 'config.json'));
    const theirs = readJson(join(tmp, 'out', 'runs', 'ce-seed42', 'config.json'));
    const { out: _a, ...mineTrain } = mine.train;
    const { out: _b, ...theirsTrain } = theirs.train;
    for (const k of ['format', 'dataset', 'fingerprint', 'options', 'distill', 'model'] as const) expect(theirs[k], k).toEqual(mine[k]);
    expect(theirsTrain).toEqual(mineTrain);
    // An option ablate did not forward before reaches the run; the preset's values are there, its name is not.
    expect(theirs.options).toMatchObject({ dropout: 0.1, dims: 16, blocks: 2, ffnDims: 16, maxLen: 10, lr: 0.005, batchSize: 128 });
    expect(theirs.model.dropout).toBe(0.1);
    expect(JSON.stringify(theirs)).not.toMatch(/preset/);
    // The distilled run read the cache teacher:cache builds.
    expect(readJson(join(tmp, 'out', 'runs', 'kd-seed42', 'config.json')).distill).toMatchObject({ cacheKey: tc.key });
  });
});
