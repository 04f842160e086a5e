import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend, type BackendName } from '../../backend/index.js';
import { readManifest } from '../../cache/format.js';
import { defineOptions, resolveOptions } from '../../config/options.js';
import { datasetFromFlags, datasetOptions } from '../../data/options.js';
import type { PreparedDataset } from '../../data/types.js';
import { RecdistillError } from '../../errors.js';
import { configSlug, runAblation, planConfigs, writeAblationReport, type AblationResult, type ConfigSummary, type Metrics } from '../../distill/ablate.js';
import { buildDistillHooks } from '../../distill/hooks.js';
import { distillOptions } from '../../distill/options.js';
import { studentOptions, type StudentOptions } from '../../student/config.js';
import { sasrecParams } from '../../student/model.js';
import { trainStudent } from '../../student/train.js';
import { HEAD_DEFAULTS } from '../../teacher/head.js';
import { llmTeacherOptions } from '../../teacher/llm/options.js';
import type { LogFn } from '../../util/progress.js';
import { defineCommand } from '../command.js';

// Distillation flags other than the cache and the lambdas pass through to every distilled run.
const { cache: _c, lambdaCos: _a, lambdaL2: _b, lambdaMs: _m, lambdaKd: _k, lambdaEmb: _e, lambdaRel: _r, ...distillPassThrough } = distillOptions;

/** --suite: a named set of configurations with its own summary keys. */
const SUITES = { relation: 'rel' } as const;

const options = defineOptions({
  ...datasetOptions,
  teacher: { type: 'string', help: 'teacher: seqrec (a larger SASRec trained here) or llm (an ONNX LM, --model)', default: 'seqrec', choices: ['seqrec', 'llm'] },
  ...llmTeacherOptions,
  teacherRun: { type: 'string', help: 'seqrec: an existing teacher run folder (default: train one into <out>/teacher)' },
  cache: { type: 'string', help: 'an existing teacher cache (default: build it under --cache-root)' },
  cacheRoot: { type: 'string', help: 'where built caches go', default: 'teacher-cache' },
  teacherDims: { type: 'int', help: 'seqrec teacher: hidden size', default: 64 },
  teacherBlocks: { type: 'int', help: 'seqrec teacher: blocks', default: 2 },
  teacherEpochs: { type: 'int', help: 'seqrec teacher: max epochs (early stopping on validation)', default: 50 },
  teacherLr: { type: 'number', help: 'seqrec teacher: learning rate', default: 0.005 },
  topK: { type: 'int', help: 'cache soft labels: top-K items per position', default: 50 },
  temperature: { type: 'number', help: 'cache soft labels: temperature', default: 1 },
  dims: { type: 'int', help: 'student hidden size', default: 16 },
  blocks: { type: 'int', help: 'student blocks', default: 2 },
  ffnDims: { type: 'int', help: 'student feed-forward width', default: 16 },
  maxLen: { type: 'int', help: 'sequence length (student and seqrec teacher)', default: 50 },
  epochs: { type: 'int', help: 'student training budget in epochs (same for every configuration)', default: 15 },
  untilConverged: { type: 'boolean', help: 'train every student to early stopping (--patience validations without a better validation NDCG@10; at most 500 epochs), and a teacher (without --teacher-run) with student:train\'s default configuration to early stopping', default: false },
  lr: { type: 'number', help: 'student learning rate', default: 0.005 },
  batchSize: { type: 'int', help: 'sequences per step', default: 128 },
  patience: { type: 'int', help: 'early stopping patience (validations)', default: 10 },
  seeds: { type: 'int', help: 'seeds per configuration (seed, seed+1, ...)', default: 3 },
  seed: { type: 'int', help: 'first seed', default: 42 },
  configs: { type: 'string', help: 'configurations besides CE-only: terms alone (cos,l2,ms,kd,emb,rel), all (every term but rel; all+rel adds it), or +-joined sets', default: 'cos,l2,ms,kd,emb,all' },
  suite: { type: 'string', help: 'relation: CE vs relational distillation only (--configs rel); the summary carries ce, relation and gain', default: 'none', choices: ['none', 'relation'] },
  lambdaCos: { type: 'number', help: 'λcos when the term is on', default: 1 },
  lambdaL2: { type: 'number', help: 'λl2 when the term is on', default: 0.1 },
  lambdaMs: { type: 'number', help: 'λms when the term is on', default: 0.5 },
  lambdaKd: { type: 'number', help: 'λkd when the term is on', default: 1 },
  lambdaEmb: { type: 'number', help: 'λemb when the term is on', default: 0.5 },
  lambdaRel: { type: 'number', help: 'λrel when the term is on (not part of all: all+rel)', default: 1 },
  ...distillPassThrough,
  backend: { type: 'string', help: 'tfjs backend', default: 'auto', choices: ['auto', 'node', 'wasm', 'cpu'] },
  out: { type: 'string', help: 'output folder (default: student/ablate-<dataset>-<teacher>)' },
});

type Opts = { [K in keyof typeof options]: unknown } & Record<string, unknown>;

function datasetFlags(o: Opts): Record<string, unknown> {
  const flags: Record<string, unknown> = {};
  for (const k of Object.keys(datasetOptions)) if (o[k] !== undefined) flags[k] = o[k];
  return flags;
}

/** Upper bound on epochs with --until-converged: early stopping ends every run long before. */
const CONVERGED_EPOCHS = 500;

function studentOpts(o: Opts, extra: Record<string, unknown>): StudentOptions {
  const flags: Record<string, unknown> = datasetFlags(o);
  for (const k of ['dims', 'blocks', 'ffnDims', 'maxLen', 'epochs', 'lr', 'batchSize', 'patience', 'backend'] as const) flags[k] = o[k];
  if (o.untilConverged) flags.epochs = CONVERGED_EPOCHS;
  return resolveOptions(studentOptions, { flags: { ...flags, ...extra } }) as StudentOptions;
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

/** Train (or resume / reuse) the seqrec teacher and build (or reuse) its cache. */
async function seqrecTeacherCache(o: Opts, ds: PreparedDataset, out: string, backend: string, log: LogFn): Promise<string> {
  let run = o.teacherRun as string | undefined;
  if (!run) {
    run = join(out, 'teacher');
    // --until-converged: the strongest ID model the project trains, student:train's defaults, to early stopping.
    const t = o.untilConverged
      ? (resolveOptions(studentOptions, { flags: { ...datasetFlags(o), seed: o.seed, out: run } }) as StudentOptions)
      : studentOpts(o, { dims: o.teacherDims, blocks: o.teacherBlocks, ffnDims: o.teacherDims, epochs: o.teacherEpochs, lr: o.teacherLr, patience: 5, seed: o.seed, out: run });
    log(`ablate: teacher: SASRec D=${t.dims} blocks=${t.blocks} -> ${run}`);
    await trainStudent({ ds, opts: t, outDir: run, backend, log });
  }
  const { runTeacherCache } = await import('../../cache/run.js');
  // Tap every teacher block unless --layers names some (its llm default, -1, would tap only the last).
  const layers = o.layers === '-1' ? Array.from({ length: o.teacherBlocks as number }, (_, i) => i).join(',') : (o.layers as string);
  const { loadSeqrecTeacher } = await import('../../teacher/seqrec.js');
  const t = await loadSeqrecTeacher(run, ds, { layers });
  try {
    const r = await runTeacherCache(t.encoder, ds, {
      root: o.cacheRoot as string,
      usersPerShard: 128,
      hiddenDtype: 'F32',
      concurrency: 1,
      k: o.topK as number,
      temperature: o.temperature as number,
      head: { kind: 'teacher', layer: -1, epochs: 0, lr: 0, batchSize: 0, patience: 0, seed: o.seed as number },
      teacherOptions: t.options,
      teacherScores: t.scores,
      backend,
      log,
    });
    return r.cache;
  } finally {
    await t.encoder.dispose();
  }
}

async function llmTeacherCache(o: Opts, ds: PreparedDataset, backend: string, log: LogFn): Promise<string> {
  const llm = await import('../../teacher/llm/index.js');
  const { runTeacherCache } = await import('../../cache/run.js');
  const lo = llm.llmOptionsFromFlags(o as Parameters<typeof llm.llmOptionsFromFlags>[0]);
  const encoder = await llm.loadLlmTeacher({ ...lo, revision: o.revision as string | undefined, log }, ds);
  try {
    const r = await runTeacherCache(encoder, ds, {
      root: o.cacheRoot as string,
      usersPerShard: 128,
      hiddenDtype: 'F16',
      concurrency: 4,
      k: o.topK as number,
      temperature: o.temperature as number,
      // Same head training as teacher:cache's defaults, so an ablation cache equals a teacher:cache one.
      head: { ...HEAD_DEFAULTS, kind: 'linear', layer: -1, seed: o.seed as number },
      teacherOptions: { maxPromptTokens: lo.maxPromptTokens, truncate: lo.truncate, tapPattern: lo.tapPattern ?? null, batch: lo.batch },
      backend,
      log,
    });
    return r.cache;
  } finally {
    await encoder.dispose();
  }
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
    const o = opts as unknown as Opts;
    const backend = await initBackend(opts.backend as BackendName);
    const ds = await datasetFromFlags(opts);
    const out = opts.out ?? join('student', `ablate-${ds.name}-${opts.teacher}`);
    if (opts.seeds < 1) throw new RecdistillError('E_USAGE', `--seeds must be >= 1, got ${opts.seeds}.`);
    const lambdas = { cos: opts.lambdaCos, l2: opts.lambdaL2, ms: opts.lambdaMs, kd: opts.lambdaKd, emb: opts.lambdaEmb, rel: opts.lambdaRel };
    const suite = opts.suite === 'none' ? undefined : opts.suite;
    if (suite && opts.configs !== options.configs.default) {
      throw new RecdistillError('E_USAGE', `--suite ${suite} runs --configs ${SUITES[suite]}; give one of --suite and --configs, not both.`);
    }
    const plan = { configs: planConfigs(suite ? SUITES[suite] : opts.configs, lambdas), seeds: Array.from({ length: opts.seeds }, (_, i) => opts.seed + i) };
    const t0 = performance.now();
    const cache = opts.cache ?? (opts.teacher === 'seqrec' ? await seqrecTeacherCache(o, ds, out, backend, ctx.log) : await llmTeacherCache(o, ds, backend, ctx.log));
    const manifest = readManifest(cache);
    const teacherTest: Metrics | undefined = manifest.metrics?.test;
    ctx.log(`ablate: cache ${cache} (teacher test ndcg@10 ${teacherTest?.['ndcg@10']?.toFixed(4) ?? '?'}); ${plan.configs.length} configs x ${plan.seeds.length} seeds`);
    // A seqrec teacher's size: its run folder's model (the manifest records the folder).
    const teacherParams = manifest.teacher.kind === 'seqrec' ? runParams(opts.teacherRun ?? manifest.teacher.model) : undefined;
    const distillBase: Record<string, unknown> = { cache };
    for (const k of Object.keys(distillPassThrough)) distillBase[k] = o[k];

    const header = {
      title: `Ablation: ${ds.name}, ${opts.teacher} teacher`,
      lines: [
        `Student: SASRec D=${opts.dims}, ${opts.blocks} blocks, ${opts.untilConverged ? `trained to early stopping (patience ${opts.patience}, at most ${CONVERGED_EPOCHS} epochs)` : `${opts.epochs} epochs budget`}, lr ${opts.lr}, maxLen ${opts.maxLen}; seeds ${plan.seeds.join(', ')}; backend ${backend}.`,
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
      student: { dims: opts.dims, blocks: opts.blocks, epochs: opts.untilConverged ? `early stopping (patience ${opts.patience})` : opts.epochs, lr: opts.lr, maxLen: opts.maxLen },
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
        const so = studentOpts(o, { seed, out: join(out, 'runs', `${configSlug(cfg.name)}-seed${seed}`) });
        const hooks = distill ? await buildDistillHooks({ ...distill, seed }, ds, { dims: so.dims, blocks: so.blocks }) : undefined;
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
