import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend, type BackendName } from '../../backend/index.js';
import { cacheOptions, checkCacheFlags, resolveCacheConfig, runCacheStage, type CacheConfig } from '../../cache/config.js';
import { readManifest } from '../../cache/format.js';
import { defineOptions, type Resolved } from '../../config/options.js';
import { datasetFromFlags, datasetOptions } from '../../data/options.js';
import type { PreparedDataset } from '../../data/types.js';
import { RecdistillError } from '../../errors.js';
import { configSlug, runAblation, planConfigs, writeAblationReport, type AblationConfig, type AblationResult, type ConfigSummary, type Metrics } from '../../distill/ablate.js';
import { measureRunLatencies } from '../../distill/ablate-latency.js';
import { betterMain, emkdSummary, evaluateEnsemble, planEmkdConfigs, planEmkdRemovals, type EnsembleFigures } from '../../distill/emkd/index.js';
import { buildDistillHooks } from '../../distill/hooks.js';
import { distillRecord } from '../../distill/options.js';
import { distillOptions } from '../../distill/options.js';
import type { StudentOptions } from '../../student/config.js';
import { sasrecParams } from '../../student/model.js';
import { presetOption, presetStudentOptions, resolveStudentPreset } from '../../student/presets.js';
import { readRunMetrics } from '../../student/serve.js';
import { trainStudent } from '../../student/train.js';
import type { LogFn } from '../../util/progress.js';
import { defineCommand } from '../command.js';

// Distillation flags other than the cache and the lambdas pass through to every distilled run (not --serve: the EMKD
// rows report both the member and the ensemble).
const { cache: _c, lambdaCos: _a, lambdaL2: _b, lambdaMs: _m, lambdaKd: _k, lambdaEmb: _e, lambdaRel: _r, serve: _s, ...distillPassThrough } = distillOptions;
// Every student:train option reaches every student run; `out` is the ablation's folder here, `epochs` its budget.
const { out: _o, epochs: _ep, ...studentRunOptions } = presetStudentOptions();

/**
 * --suite: a named set of configurations with its own summary keys. relation: rel alone and with the other
 * distillation terms; emkd: the EMKD rows of src/distill/emkd/plan.ts (no teacher needed; with --cache one more
 * row where the teacher's soft labels join the causal ensemble's KL).
 */
const SUITES = ['relation', 'emkd'] as const;
const RELATION_CONFIGS = 'rel,all+rel';
/**
 * --suite emkd's batch size when --batch-size is not given: K = 3 networks at the small preset's 128 do not fit
 * the wasm 4 GiB heap on ML-100K (the memory estimate refuses them), and every row, CE included, must share one.
 */
export const EMKD_SUITE_BATCH = 64;

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
  suite: { type: 'string', help: `relation: CE vs relational distillation (--configs ${RELATION_CONFIGS}), summary keys ce, relation, gain; emkd: one causal and one bidirectional network, EMKD K = 3 with the reference's cloze networks and with causal ones, then each term removed from the better (plus the teacher as a member with --cache), summary keys single, ensemble, ensembleGain, member, memberGain, chosen`, default: 'none', choices: ['none', ...SUITES] },
  latency: { type: 'boolean', help: 'measure each configuration\'s single-request p50 latency (onnxruntime-node) beside the teacher\'s at the end', default: true },
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
export function ablateStudentOptions(o: AblateOptions, seed: number, out: string, ds?: Pick<PreparedDataset, 'stats' | 'name'>): StudentOptions {
  return resolveStudentPreset(o.preset, { ...o, seed, out, epochs: o.untilConverged ? CONVERGED_EPOCHS : o.epochs }, ds);
}

/**
 * The seqrec teacher trained when no --teacher-run is given: what `student:train` (no preset) resolves from the
 * same dataset flags and seed, with --teacher-dims/-blocks/-epochs/-lr on top when given.
 */
export function ablateTeacherOptions(o: AblateOptions, out: string, ds?: Pick<PreparedDataset, 'stats' | 'name'>): StudentOptions {
  const dataset: Record<string, unknown> = {};
  for (const k of Object.keys(datasetOptions)) dataset[k] = o[k as keyof AblateOptions];
  return resolveStudentPreset('auto', { ...dataset, seed: o.seed, out, dims: o.teacherDims, ffnDims: o.teacherDims, blocks: o.teacherBlocks, epochs: o.teacherEpochs, lr: o.teacherLr }, ds);
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

/** An EMKD run's ensemble validation and test NDCG@10 as its metrics.json reports them (distill.emkd.serving). */
function ensembleNdcg(dir: string): { valid: number; test: number } | undefined {
  type Split = Record<string, number> | undefined;
  const serving = (readRunMetrics(dir)?.distill as { emkd?: { serving?: { ensemble?: { valid?: Split; test?: Split } } } } | null | undefined)?.emkd?.serving;
  const [v, t] = [serving?.ensemble?.valid?.['ndcg@10'], serving?.ensemble?.test?.['ndcg@10']];
  return typeof v === 'number' && typeof t === 'number' ? { valid: v, test: t } : undefined;
}

/** Whether a run folder's model is a bidirectional (cloze) network (no ONNX export: no latency row). */
function isBidirectional(dir: string): boolean {
  try {
    return (JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { model?: { attention?: string } }).model?.attention === 'bidirectional';
  } catch {
    return false;
  }
}

/** Train (or resume / reuse) the seqrec teacher unless --teacher-run names one, then build (or reuse) the cache. */
async function teacherCache(o: AblateOptions, ds: PreparedDataset, out: string, backend: string, log: LogFn): Promise<string> {
  let run = o.teacherRun;
  if (o.teacher === 'seqrec' && !run) {
    run = join(out, 'teacher');
    const t = ablateTeacherOptions(o, run, ds);
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
  const rel = r.configs.find((c) => c.name === 'rel');
  if (!rel) return { relation: undefined }; // a partial report before the rel configuration has finished
  return { relation: pick(rel), gain: rel['ndcg@10.mean'] / r.ce['ndcg@10.mean'] - 1 };
}

export default defineCommand({
  description: 'CE-only vs each distillation term alone vs all terms, same small student and seeds; best distilled config chosen on validation',
  options,
  async run(given, ctx) {
    const opts = given.suite === 'emkd' && given.batchSize === undefined ? { ...given, batchSize: EMKD_SUITE_BATCH } : given;
    if (opts !== given) ctx.log(`ablate: --suite emkd trains every row at batch ${EMKD_SUITE_BATCH} (K = 3 networks at the preset's batch do not fit the wasm heap; --batch-size overrides)`);
    if (opts.seeds < 1) throw new RecdistillError('E_USAGE', `--seeds must be >= 1, got ${opts.seeds}.`);
    // The student every run shares (seed and folder aside), resolved and range-checked before anything runs.
    const student = ablateStudentOptions(opts, opts.seed, '');
    if (!opts.cache) checkCacheFlags(opts); // before a teacher is trained
    const backend = await initBackend(opts.backend as BackendName, { threads: opts.threads || undefined });
    const ds = await datasetFromFlags(opts);
    const out = opts.out ?? join('student', `ablate-${ds.name}-${opts.teacher}`);
    const lambdas = { cos: opts.lambdaCos, l2: opts.lambdaL2, ms: opts.lambdaMs, kd: opts.lambdaKd, emb: opts.lambdaEmb, rel: opts.lambdaRel };
    const suite = opts.suite === 'none' ? undefined : opts.suite;
    if (suite && opts.configs !== options.configs.default) {
      throw new RecdistillError('E_USAGE', `--suite ${suite} runs its own configurations; give one of --suite and --configs, not both.`);
    }
    const configs: AblationConfig[] =
      suite === 'emkd' ? planEmkdConfigs({ teacherRow: Boolean(opts.cache) }) : planConfigs(suite === 'relation' ? RELATION_CONFIGS : opts.configs, lambdas);
    /** --suite emkd: each EMKD run's ensemble (K-network average) validation and test NDCG@10, per configuration. */
    const ensemble: EnsembleFigures = {};
    const plan = {
      configs,
      seeds: Array.from({ length: opts.seeds }, (_, i) => opts.seed + i),
      // --suite emkd: each term removed from the better K = 3 row, once both have run.
      ...(suite === 'emkd' ? { extend: (done: ConfigSummary[]) => {
        const main = betterMain(done, ensemble);
        if (main) ctx.log(`ablate: ${main} validates better (its ensemble's mean validation ndcg@10): each term is removed from it next`);
        return main ? planEmkdRemovals(main) : [];
      } } : {}),
    };
    const t0 = performance.now();
    // The EMKD suite needs no teacher: its networks teach each other (a given --cache adds the teacher row).
    const cache = opts.cache ?? (suite === 'emkd' ? undefined : await teacherCache(opts, ds, out, backend, ctx.log));
    const manifest = cache ? readManifest(cache) : undefined;
    const teacherTest: Metrics | undefined = manifest?.metrics?.test;
    ctx.log(`ablate: ${cache ? `cache ${cache} (teacher test ndcg@10 ${teacherTest?.['ndcg@10']?.toFixed(4) ?? '?'})` : 'no teacher'}; ${plan.configs.length} configs x ${plan.seeds.length} seeds`);
    // A seqrec teacher's size: its run folder's model (the manifest records the folder).
    const teacherRunDir = manifest?.teacher.kind === 'seqrec' ? (opts.teacherRun ?? manifest.teacher.model) : undefined;
    const teacherParams = teacherRunDir ? runParams(teacherRunDir) : undefined;
    const distillBase: Record<string, unknown> = { cache };
    for (const k of Object.keys(distillPassThrough)) distillBase[k] = opts[k as keyof AblateOptions];

    const header = {
      title: `Ablation: ${ds.name}, ${opts.teacher} teacher`,
      lines: [
        `Student (--preset ${opts.preset}): SASRec D=${student.dims}, ${student.blocks} blocks, ${opts.untilConverged ? `trained to early stopping (patience ${student.patience}, at most ${CONVERGED_EPOCHS} epochs)` : `${student.epochs} epochs budget`}, lr ${student.lr}, maxLen ${student.maxLen}; seeds ${plan.seeds.join(', ')}; backend ${backend}.`,
        cache ? `Teacher cache: \`${cache}\` (key ${manifest!.key}). Mean ± sample std over seeds. Full ranking, history excluded.` : 'No teacher. Mean ± sample std over seeds. Full ranking, history excluded.',
        `The distilled configuration is chosen on validation NDCG@10; test numbers are reported, never used for the choice.`,
      ],
      teacher: teacherTest,
      teacherParams,
      teacherP50Ms: undefined as number | undefined,
    };
    const summaryOf = (r: AblationResult, partial: boolean): Record<string, unknown> => ({
      dataset: ds.name,
      fingerprint: ds.fingerprint,
      backend,
      teacher: manifest && {
        kind: manifest.teacher.kind,
        cache,
        key: manifest.key,
        model: manifest.teacher.model,
        test: teacherTest ? { 'ndcg@10': teacherTest['ndcg@10'], 'hr@10': teacherTest['hr@10'] } : undefined,
        // One teacher run: its test NDCG@10 is the mean; no spread over seeds.
        'ndcg@10.mean': teacherTest?.['ndcg@10'],
        'ndcg@10.std': null,
        params: teacherParams,
        'p50.ms': header.teacherP50Ms,
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
      ...(suite === 'emkd' ? (emkdSummary(r.configs, ensemble) ?? {}) : {}),
      ...(partial ? { partial: true, configsDone: r.configs.map((c) => c.name) } : {}),
      seconds: (performance.now() - t0) / 1000,
    });
    const result: AblationResult = await runAblation(plan, distillBase, {
      log: ctx.log,
      onConfig: (r) => writeAblationReport(out, r, summaryOf(r, true), { ...header, lines: [...header.lines, `PARTIAL: ${r.configs.length}/${plan.configs.length} configurations done.`] }),
      async train(cfg, seed, distill) {
        // A row's own student options (the EMKD suite's network family) over the ablation's.
        const so = ablateStudentOptions({ ...opts, ...cfg.student } as AblateOptions, seed, join(out, 'runs', `${configSlug(cfg.name)}-seed${seed}`), ds);
        // As student:train: the hooks get the run's student options with the distillation flags.
        const hooks = distill ? await buildDistillHooks({ ...so, ...distill, seed }, ds, { dims: so.dims, blocks: so.blocks }) : undefined;
        try {
          const quiet: LogFn = (l) => (l.startsWith('epoch ') || l.startsWith('  epoch') ? undefined : ctx.log(l));
          const r = await trainStudent({ ds, opts: so, outDir: so.out!, backend, hooks, log: ctx.verbose ? ctx.log : quiet, recordOptions: distillRecord({ ...distill }) });
          if (Number(distill?.emkd) > 0) {
            // The trainer's finish step evaluated the ensemble (metrics.json distill.emkd.serving).
            const ev = async () => evaluateEnsemble(r.run, ds).then((x) => ({ valid: x.valid['ndcg@10']!, test: x.test['ndcg@10']! }));
            const e: { valid: number; test: number } = ensembleNdcg(r.run) ?? (await ev());
            const f = (ensemble[cfg.name] ??= { valid: [], test: [] });
            f.valid.push(e.valid);
            f.test.push(e.test);
            ctx.log(`ablate: ${cfg.name} seed ${seed}: ensemble of ${Number(distill!.emkd)} valid ndcg@10 ${e.valid.toFixed(4)} test ndcg@10 ${e.test.toFixed(4)}`);
          }
          return { valid: r.valid, test: r.test, seconds: r.trainSeconds, bestEpoch: r.bestEpoch, params: runParams(r.run), runDir: r.run, secondsPerEpoch: r.secondsPerEpoch, memory: r.memory };
        } finally {
          hooks?.dispose?.();
        }
      },
    });
    if (opts.latency) {
      // Every configuration's first run and the seqrec teacher, interleaved in one process (ablate-latency.ts).
      // Bidirectional networks have no ONNX graph yet: their rows show no latency.
      const dirs = result.configs.map((c) => c.runs[0]?.runDir).filter((d): d is string => Boolean(d) && !isBidirectional(d!));
      const lat = await measureRunLatencies(teacherRunDir ? [teacherRunDir, ...dirs] : dirs);
      for (const c of result.configs) if (c.runs[0]?.runDir) c['p50.ms'] = lat.get(c.runs[0].runDir)?.p50Ms;
      if (teacherRunDir) header.teacherP50Ms = lat.get(teacherRunDir)?.p50Ms;
      ctx.log(`ablate: single-request p50 (onnxruntime-node): ${[...(teacherRunDir ? [`teacher ${header.teacherP50Ms?.toFixed(3)} ms`] : []), ...result.configs.map((c) => `${c.name} ${c['p50.ms']?.toFixed(3) ?? '-'} ms`)].join(', ')}`);
    }
    const summary = summaryOf(result, false);
    const files = writeAblationReport(out, result, summary, header);
    ctx.log(`ablate: wrote ${files.markdown}, ${files.json} and ${files.svg}`);
    return { ...summary, report: files };
  },
  format(s) {
    // One seed has no spread: its std is NaN (null in JSON), printed '-', never 'NaN'.
    const f = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(4) : '-');
    const ce = s.ce as Record<string, unknown>;
    const d = s.distilled as Record<string, unknown> | undefined;
    const t = (s.teacher as { test?: Record<string, number> } | undefined)?.test;
    const rel = s.relation as Record<string, unknown> | undefined;
    const member = s.member as Record<string, unknown> | undefined;
    const ensemble = s.ensemble as Record<string, unknown> | undefined;
    const single = s.single as Record<string, unknown> | undefined;
    const chosen = s.chosen as { config: string; 'valid.ndcg@10.mean': number; ensemble: Record<string, number>; member: Record<string, number>; ensembleGain: number } | undefined;
    const line = (label: string, c: Record<string, unknown>) => `${label} test ndcg@10 ${f(c['ndcg@10.mean'])} ± ${f(c['ndcg@10.std'])} hr@10 ${f(c['hr@10.mean'])}`;
    const pm = (c: Record<string, unknown>) => `${f(c['ndcg@10.mean'])} ± ${f(c['ndcg@10.std'])}`;
    const pct = (x: unknown) => `${(Number(x) * 100).toFixed(1)}%`;
    const emkd = member && ensemble && single
      ? [
          `single   (${String(single.config)}) test ndcg@10 ${pm(single)}`,
          `ensemble (${String(ensemble.config)}, K-network average) test ndcg@10 ${pm(ensemble)}, ${pct(s.ensembleGain)} over single`,
          `member   (${String(member.config)}, network 1) test ndcg@10 ${pm(member)}, ${pct(s.memberGain)} over single`,
          ...(chosen ? [`chosen on valid: ${chosen.config} (ensemble valid ndcg@10 ${f(chosen['valid.ndcg@10.mean'])}), ensemble test ndcg@10 ${pm(chosen.ensemble)}, ${pct(chosen.ensembleGain)} over its single network`] : []),
        ]
      : undefined;
    return [
      ...(s.teacher ? [`teacher test ndcg@10 ${f(t?.['ndcg@10'])} hr@10 ${f(t?.['hr@10'])}`] : []),
      ...(emkd ?? [
        line('ce       ', ce),
        rel ? line('relation ', rel) : d ? line(`distilled (${String(d.name)}, chosen on valid)`, d) : 'no distilled config',
        `gain ${pct(s.gain)} relative test NDCG@10`,
      ]),
      `report ${(s.report as { markdown: string }).markdown}`,
    ].join('\n');
  },
});
