import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend, type BackendName } from '../../backend/index.js';
import { cacheOptions, checkCacheFlags, resolveCacheConfig, runCacheStage, type CacheConfig } from '../../cache/config.js';
import { readManifest } from '../../cache/format.js';
import { defineOptions, type Resolved } from '../../config/options.js';
import { datasetFromFlags, datasetOptions } from '../../data/options.js';
import type { PreparedDataset } from '../../data/types.js';
import { RecdistillError } from '../../errors.js';
import { configSlug, runAblation, planConfigs, writeAblationReport, type AblationResult, type ConfigSummary, type Metrics } from '../../distill/ablate.js';
import { buildDistillHooks } from '../../distill/hooks.js';
import { distillOptions } from '../../distill/options.js';
import type { StudentOptions } from '../../student/config.js';
import { sasrecParams } from '../../student/model.js';
import { presetOption, presetStudentOptions, resolveStudentPreset } from '../../student/presets.js';
import { trainStudent } from '../../student/train.js';
import type { LogFn } from '../../util/progress.js';
import { defineCommand } from '../command.js';

// Distillation flags other than the cache and the lambdas pass through to every distilled run.
const { cache: _c, lambdaCos: _a, lambdaL2: _b, lambdaMs: _m, lambdaKd: _k, lambdaEmb: _e, lambdaRel: _r, ...distillPassThrough } = distillOptions;
// Every student:train option reaches every student run; `out` is the ablation's folder here, `epochs` its budget.
const { out: _o, epochs: _ep, ...studentRunOptions } = presetStudentOptions();

/** --suite: a named set of configurations with its own summary keys. */
const SUITES = { relation: 'rel' } as const;

const options = defineOptions({
  ...datasetOptions,
  teacher: { type: 'string', help: 'teacher: seqrec (a larger SASRec trained here) or llm (an ONNX LM, --model)', default: 'seqrec', choices: ['seqrec', 'llm'] },
  teacherRun: { type: 'string', help: 'seqrec: an existing teacher run folder (default: train one into <out>/teacher)' },
  cache: { type: 'string', help: 'an existing teacher cache (default: build it under --cache-root with the cache flags below, as teacher:cache would)' },
  // teacher:cache's flags, the same table (src/cache/config.ts): same names, same defaults, same cache key.
  ...cacheOptions,
  // The seqrec teacher trained here: student:train's defaults (no preset), these four on top when given.
  teacherDims: { type: 'int', help: 'seqrec teacher trained here: hidden size and feed-forward width (default: student:train\'s --dims / --ffn-dims)' },
  teacherBlocks: { type: 'int', help: 'seqrec teacher trained here: blocks (default: student:train\'s --blocks)' },
  teacherEpochs: { type: 'int', help: 'seqrec teacher trained here: max epochs, early stopping on validation (default: student:train\'s --epochs)' },
  teacherLr: { type: 'number', help: 'seqrec teacher trained here: learning rate (default: student:train\'s --lr)' },
  // The student runs: every student:train option (its defaults), under --preset (small by default).
  ...studentRunOptions,
  preset: presetOption('small'),
  epochs: { type: 'int', help: 'student training budget in epochs (same for every configuration)', default: 15 },
  untilConverged: { type: 'boolean', help: 'train every student to early stopping (--patience validations without a better validation NDCG@10; at most 500 epochs) instead of --epochs', default: false },
  seeds: { type: 'int', help: 'seeds per configuration (seed, seed+1, ...)', default: 3 },
  seed: { type: 'int', help: 'first seed (also the seed of the teacher trained here and of the cache head)', default: 42 },
  configs: { type: 'string', help: 'configurations besides CE-only: terms alone (cos,l2,ms,kd,emb,rel), all (every term but rel; all+rel adds it), or +-joined sets', default: 'cos,l2,ms,kd,emb,all' },
  suite: { type: 'string', help: 'relation: CE vs relational distillation only (--configs rel); the summary carries ce, relation and gain', default: 'none', choices: ['none', 'relation'] },
  lambdaCos: { type: 'number', help: 'λcos when the term is on', default: 1 },
  lambdaL2: { type: 'number', help: 'λl2 when the term is on', default: 0.1 },
  lambdaMs: { type: 'number', help: 'λms when the term is on', default: 0.5 },
  lambdaKd: { type: 'number', help: 'λkd when the term is on', default: 1 },
  lambdaEmb: { type: 'number', help: 'λemb when the term is on', default: 0.5 },
  lambdaRel: { type: 'number', help: 'λrel when the term is on (not part of all: all+rel)', default: 1 },
  ...distillPassThrough,
  out: { type: 'string', help: 'output folder (default: student/ablate-<dataset>-<teacher>)' },
});

export type AblateOptions = Resolved<typeof options>;

/** Upper bound on epochs with --until-converged: early stopping ends every run long before. */
const CONVERGED_EPOCHS = 500;

/**
 * The options of one student run: what `student:train --preset <preset>` resolves from the same flags (defaults <
 * preset < --config file < flags), with this run's seed and folder, and --until-converged's epoch bound.
 */
export function ablateStudentOptions(o: AblateOptions, seed: number, out: string): StudentOptions {
  return resolveStudentPreset(o.preset, { ...o, seed, out, epochs: o.untilConverged ? CONVERGED_EPOCHS : o.epochs });
}

/**
 * The seqrec teacher trained when no --teacher-run is given: what `student:train` (no preset) resolves from the
 * same dataset flags and seed, with --teacher-dims/-blocks/-epochs/-lr on top when given.
 */
export function ablateTeacherOptions(o: AblateOptions, out: string): StudentOptions {
  const dataset: Record<string, unknown> = {};
  for (const k of Object.keys(datasetOptions)) dataset[k] = o[k as keyof AblateOptions];
  return resolveStudentPreset('none', { ...dataset, seed: o.seed, out, dims: o.teacherDims, ffnDims: o.teacherDims, blocks: o.teacherBlocks, epochs: o.teacherEpochs, lr: o.teacherLr });
}

/** The cache the ablation builds: teacher:cache's resolution of the same cache flags (teacherRun = --student-run). */
export function ablateCacheConfig(o: AblateOptions, teacherRun: string | undefined): CacheConfig {
  return resolveCacheConfig({ ...o, teacher: o.teacher, run: teacherRun });
}

/** Parameters of a trained run (its config.json's model). */
function runParams(dir: string): number | undefined {
  try {
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { model?: Parameters<typeof sasrecParams>[0] };
    return cfg.model ? sasrecParams(cfg.model) : undefined;
  } catch {
    return undefined;
  }
}

/** Train (or resume / reuse) the seqrec teacher unless --teacher-run names one, then build (or reuse) the cache. */
async function teacherCache(o: AblateOptions, ds: PreparedDataset, out: string, backend: string, log: LogFn): Promise<string> {
  let run = o.teacherRun;
  if (o.teacher === 'seqrec' && !run) {
    run = join(out, 'teacher');
    const t = ablateTeacherOptions(o, run);
    log(`ablate: teacher: SASRec D=${t.dims} blocks=${t.blocks} (student:train, no preset) -> ${run}`);
    await trainStudent({ ds, opts: t, outDir: run, backend, log });
  }
  const r = await runCacheStage(ablateCacheConfig(o, run), ds, { backend, log });
  return r.cache;
}

const pick = (s: ConfigSummary) => {
  const { runs: _r, ...rest } = s;
  return rest;
};

/**
 * --suite relation: `relation` is the rel configuration's summary and `gain` its relative test NDCG@10 over CE
 * (the only distilled configuration, so the same as the validation-chosen one's; stated here, not inferred).
 */
function relationSummary(r: AblationResult): Record<string, unknown> {
  const rel = r.configs.find((c) => c.name === SUITES.relation);
  if (!rel) return { relation: undefined }; // a partial report before the rel configuration has finished
  return { relation: pick(rel), gain: rel['ndcg@10.mean'] / r.ce['ndcg@10.mean'] - 1 };
}

export default defineCommand({
  description: 'CE-only vs each distillation term alone vs all terms, same small student and seeds; best distilled config chosen on validation',
  options,
  async run(opts, ctx) {
    if (opts.seeds < 1) throw new RecdistillError('E_USAGE', `--seeds must be >= 1, got ${opts.seeds}.`);
    // The student every run shares (seed and folder aside), resolved and range-checked before anything runs.
    const student = ablateStudentOptions(opts, opts.seed, '');
    if (!opts.cache) checkCacheFlags(opts); // before a teacher is trained
    const backend = await initBackend(opts.backend as BackendName);
    const ds = await datasetFromFlags(opts);
    const out = opts.out ?? join('student', `ablate-${ds.name}-${opts.teacher}`);
    const lambdas = { cos: opts.lambdaCos, l2: opts.lambdaL2, ms: opts.lambdaMs, kd: opts.lambdaKd, emb: opts.lambdaEmb, rel: opts.lambdaRel };
    const suite = opts.suite === 'none' ? undefined : opts.suite;
    if (suite && opts.configs !== options.configs.default) {
      throw new RecdistillError('E_USAGE', `--suite ${suite} runs --configs ${SUITES[suite]}; give one of --suite and --configs, not both.`);
    }
    const plan = { configs: planConfigs(suite ? SUITES[suite] : opts.configs, lambdas), seeds: Array.from({ length: opts.seeds }, (_, i) => opts.seed + i) };
    const t0 = performance.now();
    const cache = opts.cache ?? (await teacherCache(opts, ds, out, backend, ctx.log));
    const manifest = readManifest(cache);
    const teacherTest: Metrics | undefined = manifest.metrics?.test;
    ctx.log(`ablate: cache ${cache} (teacher test ndcg@10 ${teacherTest?.['ndcg@10']?.toFixed(4) ?? '?'}); ${plan.configs.length} configs x ${plan.seeds.length} seeds`);
    // A seqrec teacher's size: its run folder's model (the manifest records the folder).
    const teacherParams = manifest.teacher.kind === 'seqrec' ? runParams(opts.teacherRun ?? manifest.teacher.model) : undefined;
    const distillBase: Record<string, unknown> = { cache };
    for (const k of Object.keys(distillPassThrough)) distillBase[k] = opts[k as keyof AblateOptions];

    const header = {
      title: `Ablation: ${ds.name}, ${opts.teacher} teacher`,
      lines: [
        `Student (--preset ${opts.preset}): SASRec D=${student.dims}, ${student.blocks} blocks, ${opts.untilConverged ? `trained to early stopping (patience ${student.patience}, at most ${CONVERGED_EPOCHS} epochs)` : `${student.epochs} epochs budget`}, lr ${student.lr}, maxLen ${student.maxLen}; seeds ${plan.seeds.join(', ')}; backend ${backend}.`,
        `Teacher cache: \`${cache}\` (key ${manifest.key}). Mean ± sample std over seeds. Full ranking, history excluded.`,
        `The distilled configuration is chosen on validation NDCG@10; test numbers are reported, never used for the choice.`,
      ],
      teacher: teacherTest,
      teacherParams,
    };
    const summaryOf = (r: AblationResult, partial: boolean): Record<string, unknown> => ({
      dataset: ds.name,
      fingerprint: ds.fingerprint,
      backend,
      teacher: {
        kind: opts.teacher,
        cache,
        key: manifest.key,
        model: manifest.teacher.model,
        test: teacherTest ? { 'ndcg@10': teacherTest['ndcg@10'], 'hr@10': teacherTest['hr@10'] } : undefined,
        // One teacher run: its test NDCG@10 is the mean; no spread over seeds.
        'ndcg@10.mean': teacherTest?.['ndcg@10'],
        'ndcg@10.std': null,
        params: teacherParams,
      },
      student: { preset: opts.preset, dims: student.dims, blocks: student.blocks, epochs: opts.untilConverged ? `early stopping (patience ${student.patience})` : student.epochs, lr: student.lr, maxLen: student.maxLen },
      seeds: plan.seeds,
      ce: pick(r.ce),
      distilled: r.distilled ? pick(r.distilled) : undefined,
      gain: r.gain,
      ofTeacher: r.distilled && teacherTest?.['ndcg@10'] ? r.distilled['ndcg@10.mean'] / teacherTest['ndcg@10'] : undefined,
      ceOfTeacher: teacherTest?.['ndcg@10'] ? r.ce['ndcg@10.mean'] / teacherTest['ndcg@10'] : undefined,
      chosenOn: 'validation ndcg@10 (mean over seeds)',
      ...(suite === 'relation' ? relationSummary(r) : {}),
      ...(partial ? { partial: true, configsDone: r.configs.map((c) => c.name) } : {}),
      seconds: (performance.now() - t0) / 1000,
    });
    const result: AblationResult = await runAblation(plan, distillBase, {
      log: ctx.log,
      onConfig: (r) => writeAblationReport(out, r, summaryOf(r, true), { ...header, lines: [...header.lines, `PARTIAL: ${r.configs.length}/${plan.configs.length} configurations done.`] }),
      async train(cfg, seed, distill) {
        const so = ablateStudentOptions(opts, seed, join(out, 'runs', `${configSlug(cfg.name)}-seed${seed}`));
        // As student:train: the hooks get the run's student options with the distillation flags.
        const hooks = distill ? await buildDistillHooks({ ...so, ...distill, seed }, ds, { dims: so.dims, blocks: so.blocks }) : undefined;
        try {
          const quiet: LogFn = (l) => (l.startsWith('epoch ') || l.startsWith('  epoch') ? undefined : ctx.log(l));
          const r = await trainStudent({ ds, opts: so, outDir: so.out!, backend, hooks, log: ctx.verbose ? ctx.log : quiet });
          return { valid: r.valid, test: r.test, seconds: r.trainSeconds, bestEpoch: r.bestEpoch, params: runParams(r.run), runDir: r.run };
        } finally {
          hooks?.dispose?.();
        }
      },
    });
    const summary = summaryOf(result, false);
    const files = writeAblationReport(out, result, summary, header);
    ctx.log(`ablate: wrote ${files.markdown} and ${files.json}`);
    return { ...summary, report: files };
  },
  format(s) {
    const f = (x: unknown) => (typeof x === 'number' ? x.toFixed(4) : '-');
    const ce = s.ce as Record<string, unknown>;
    const d = s.distilled as Record<string, unknown> | undefined;
    const t = (s.teacher as { test?: Record<string, number> }).test;
    const rel = s.relation as Record<string, unknown> | undefined;
    const line = (label: string, c: Record<string, unknown>) => `${label} test ndcg@10 ${f(c['ndcg@10.mean'])} ± ${f(c['ndcg@10.std'])} hr@10 ${f(c['hr@10.mean'])}`;
    return [
      `teacher test ndcg@10 ${f(t?.['ndcg@10'])} hr@10 ${f(t?.['hr@10'])}`,
      line('ce       ', ce),
      rel ? line('relation ', rel) : d ? line(`distilled (${String(d.name)}, chosen on valid)`, d) : 'no distilled config',
      `gain ${(Number(s.gain) * 100).toFixed(1)}% relative test NDCG@10`,
      `report ${(s.report as { markdown: string }).markdown}`,
    ].join('\n');
  },
});
