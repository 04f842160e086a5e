import { join } from 'node:path';
import { initBackend, type BackendName } from '../backend/index.js';
import { checkCacheFlags, runCacheStage } from '../cache/config.js';
import { readManifest } from '../cache/format.js';
import { checkRanges } from '../config/options.js';
import { datasetFromFlags } from '../data/options.js';
import type { PreparedDataset } from '../data/types.js';
import { RecdistillError } from '../errors.js';
import { sasrecParams } from '../student/model/model.js';
import { checkModelConfig, readRunMetrics } from '../student/serving/serve.js';
import type { ModelConfig } from '../student/model/model.js';
import { readRunConfig } from '../student/model/run-folder.js';
import type { LogFn } from '../util/progress.js';
import { writeAblationReport } from './ablate-report.js';
import { configSlug, runAblation, planConfigs, type AblationConfig, type AblationResult, type ConfigSummary, type Metrics } from './ablate.js';
import { measureRunLatencies } from './ablate-latency.js';
import { ablateCacheConfig, ablateOptions, ablateStudentConfig, ablateStudentOptions, ablateTeacherConfig, ablateTeacherOptions, CONVERGED_EPOCHS, distillPassThrough, EMKD_SUITE_BATCH, RELATION_CONFIGS, type AblateOptions } from './ablate-options.js';
import { betterMain, emkdSummary, evaluateEnsemble, planEmkdConfigs, planEmkdRemovals, type EmkdSuiteSummary, type EnsembleFigures } from './emkd/index.js';
import { runStudentStage } from './stage.js';
import { TERMS } from './terms/index.js';

/** A configuration's summary without its per-run list (the rows of ablation.json's summary keys). */
export type Row = Omit<ConfigSummary, 'runs'>;

/** What `ablate --json` prints and ablation.json holds (with `configs`): the keys are a contract. */
export interface AblationSummary extends Partial<EmkdSuiteSummary> {
  dataset: string;
  fingerprint: string;
  backend: string;
  teacher?: {
    kind: string; cache?: string; key: string; model: string;
    test?: { 'ndcg@10'?: number; 'hr@10'?: number };
    'ndcg@10.mean'?: number; 'ndcg@10.std': null; params?: number; 'p50.ms'?: number;
  };
  student: { preset: string; dims: number; blocks: number; epochs: number | string; lr: number; maxLen: number };
  seeds: number[];
  ce: Row;
  distilled?: Row;
  gain: number;
  ofTeacher?: number;
  ceOfTeacher?: number;
  chosenOn: string;
  /** --suite relation: the rel configuration, and its gain over CE. */
  relation?: Row;
  partial?: boolean;
  configsDone?: string[];
  seconds: number;
}

export type AblationReport = AblationSummary & { report: { markdown: string; json: string; svg: string } };

/**
 * The ablation stage: trains (or reuses) the teacher and its cache, then every configuration over every seed
 * through the student stage, and writes ablation.md / .json / .svg. `ablate` parses flags and calls it.
 */
export async function runAblationStage(given: AblateOptions, env: { log: LogFn; verbose?: boolean }): Promise<AblationReport> {
  const opts = given.suite === 'emkd' && given.batchSize === undefined ? { ...given, batchSize: EMKD_SUITE_BATCH } : given;
  if (opts !== given) env.log(`ablate: --suite emkd trains every row at batch ${EMKD_SUITE_BATCH} (K = 3 networks at the preset's batch do not fit the wasm heap; --batch-size overrides)`);
  checkRanges(ablateOptions, opts); // --seeds >= 1 ...: checked as flags resolve, and here for a library caller
  // The student every run shares (seed and folder aside), resolved and range-checked before anything runs.
  const student = ablateStudentOptions(opts, opts.seed, '');
  if (!opts.cache) checkCacheFlags(opts); // before a teacher is trained
  const backend = await initBackend(opts.backend as BackendName, { threads: opts.threads || undefined });
  const ds = await datasetFromFlags(opts);
  const out = opts.out ?? join('student', `ablate-${ds.name}-${opts.teacher}`);
  const lambdas = Object.fromEntries(TERMS.map((t) => [t.name, opts[t.lambda]]));
  const suite = opts.suite === 'none' ? undefined : opts.suite;
  if (suite && opts.configs !== ablateOptions.configs.default) {
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
      if (main) env.log(`ablate: ${main} validates better (its ensemble's mean validation ndcg@10): each term is removed from it next`);
      return main ? planEmkdRemovals(main) : [];
    } } : {}),
  };
  const t0 = performance.now();
  // The EMKD suite needs no teacher: its networks teach each other (a given --cache adds the teacher row).
  const cache = opts.cache ?? (suite === 'emkd' ? undefined : await teacherCache(opts, ds, out, backend, env.log));
  const manifest = cache ? readManifest(cache) : undefined;
  const teacherTest: Metrics | undefined = manifest?.metrics?.test;
  env.log(`ablate: ${cache ? `cache ${cache} (teacher test ndcg@10 ${teacherTest?.['ndcg@10']?.toFixed(4) ?? '?'})` : 'no teacher'}; ${plan.configs.length} configs x ${plan.seeds.length} seeds`);
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
  const summaryOf = (r: AblationResult, partial: boolean): AblationSummary => ({
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
    log: env.log,
    onConfig: (r) => writeAblationReport(out, r, summaryOf(r, true), { ...header, lines: [...header.lines, `PARTIAL: ${r.configs.length}/${plan.configs.length} configurations done.`] }),
    async train(cfg, seed, distill) {
      // A row's own student options (the EMKD suite's network family) over the ablation's; as student:train, the
      // hooks get the run's student options with the distillation flags.
      const config = ablateStudentConfig(opts, seed, join(out, 'runs', `${configSlug(cfg.name)}-seed${seed}`), { student: cfg.student, distill });
      const quiet: LogFn = (l) => (l.startsWith('epoch ') || l.startsWith('  epoch') ? undefined : env.log(l));
      const r = await runStudentStage(config, { log: env.log, trainLog: env.verbose ? env.log : quiet, backend, dataset: ds });
      if (Number(distill?.emkd) > 0) {
        // The trainer's finish step evaluated the ensemble (metrics.json distill.emkd.serving).
        const ev = async () => evaluateEnsemble(r.run, ds).then((x) => ({ valid: x.valid['ndcg@10']!, test: x.test['ndcg@10']! }));
        const e: { valid: number; test: number } = ensembleNdcg(r.run) ?? (await ev());
        const f = (ensemble[cfg.name] ??= { valid: [], test: [] });
        f.valid.push(e.valid);
        f.test.push(e.test);
        env.log(`ablate: ${cfg.name} seed ${seed}: ensemble of ${Number(distill!.emkd)} valid ndcg@10 ${e.valid.toFixed(4)} test ndcg@10 ${e.test.toFixed(4)}`);
      }
      return { valid: r.valid, test: r.test, seconds: r.trainSeconds, bestEpoch: r.bestEpoch, params: runParams(r.run), runDir: r.run, secondsPerEpoch: r.secondsPerEpoch, memory: r.memory };
    },
  });
  if (opts.latency) {
    // Every configuration's first run and the seqrec teacher, interleaved in one process (ablate-latency.ts).
    // Bidirectional networks have no ONNX graph yet: their rows show no latency.
    const dirs = result.configs.map((c) => c.runs[0]?.runDir).filter((d): d is string => Boolean(d) && !isBidirectional(d!));
    const lat = await measureRunLatencies(teacherRunDir ? [teacherRunDir, ...dirs] : dirs);
    for (const c of result.configs) if (c.runs[0]?.runDir) c['p50.ms'] = lat.get(c.runs[0].runDir)?.p50Ms;
    if (teacherRunDir) header.teacherP50Ms = lat.get(teacherRunDir)?.p50Ms;
    env.log(`ablate: single-request p50 (onnxruntime-node): ${[...(teacherRunDir ? [`teacher ${header.teacherP50Ms?.toFixed(3)} ms`] : []), ...result.configs.map((c) => `${c.name} ${c['p50.ms']?.toFixed(3) ?? '-'} ms`)].join(', ')}`);
  }
  const summary = summaryOf(result, false);
  const files = writeAblationReport(out, result, summary, header);
  env.log(`ablate: wrote ${files.markdown}, ${files.json} and ${files.svg}`);
  return { ...summary, report: files };
}

/** A trained run's model config (its config.json's "model", validated), or undefined when it has none or is unreadable. */
function runModel(dir: string): ModelConfig | undefined {
  try {
    const cfg = readRunConfig(dir);
    return cfg.model ? checkModelConfig(cfg.model, `${join(dir, 'config.json')} "model"`) : undefined;
  } catch {
    return undefined;
  }
}

/** Parameters of a trained run (its config.json's model). */
function runParams(dir: string): number | undefined {
  const model = runModel(dir);
  return model ? sasrecParams(model) : undefined;
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
  return runModel(dir)?.attention === 'bidirectional';
}

/** Train (or resume / reuse) the seqrec teacher unless --teacher-run names one, then build (or reuse) the cache. */
async function teacherCache(o: AblateOptions, ds: PreparedDataset, out: string, backend: string, log: LogFn): Promise<string> {
  let run = o.teacherRun;
  if (o.teacher === 'seqrec' && !run) {
    run = join(out, 'teacher');
    const t = ablateTeacherOptions(o, run, ds);
    log(`ablate: teacher: SASRec D=${t.dims} blocks=${t.blocks} (student:train, no preset) -> ${run}`);
    await runStudentStage(ablateTeacherConfig(o, run), { log, backend, dataset: ds, recordDistill: false });
  }
  const r = await runCacheStage(ablateCacheConfig(o, run), ds, { backend, log });
  return r.cache;
}

const pick = (s: ConfigSummary): Row => {
  const { runs: _r, ...rest } = s;
  return rest;
};

/**
 * --suite relation: `relation` is the rel configuration's summary and `gain` its relative test NDCG@10 over CE
 * (the only distilled configuration, so the same as the validation-chosen one's; stated here, not inferred).
 */
function relationSummary(r: AblationResult): { relation?: Row; gain?: number } {
  const rel = r.configs.find((c) => c.name === 'rel');
  if (!rel) return { relation: undefined }; // a partial report before the rel configuration has finished
  return { relation: pick(rel), gain: rel['ndcg@10.mean'] / r.ce['ndcg@10.mean'] - 1 };
}

