import { resolveCacheConfig, type CacheConfig } from '../cache/config.js';
import { cacheOptions } from '../cache/options.js';
import { defineOptions, type Resolved } from '../config/options.js';
import { datasetOptions } from '../data/options.js';
import type { PreparedDataset } from '../data/types.js';
import type { StudentOptions } from '../student/training/config.js';
import { presetOption, presetStudentOptions, resolveStudentPreset } from '../student/training/presets.js';
import { distillOptions } from './options.js';
import { TERMS, type TermModule } from './terms/index.js';
import { studentStageConfig, type StudentStageConfig } from './stage.js';

/**
 * ablate's options and the configs of the runs it trains: each student run and the seqrec teacher are runs of the
 * student stage (src/distill/stage.ts), resolved from the same flags as `student:train` would resolve them.
 */
type LambdaFlag = TermModule['lambda'];

// Distillation flags other than the cache and the lambdas pass through to every distilled run (not --serve: the EMKD
// rows report both the member and the ensemble).
const NOT_PASSED = new Set<string>(['cache', 'serve', ...TERMS.map((t) => t.lambda)]);
export const distillPassThrough = Object.fromEntries(Object.entries(distillOptions).filter(([k]) => !NOT_PASSED.has(k))) as Omit<typeof distillOptions, 'cache' | 'serve' | LambdaFlag>;

/** Each term's λ when a configuration turns it on: the term modules' own values (src/distill/terms). */
const lambdaOptions = Object.fromEntries(TERMS.map((t) => [t.lambda, {
  type: 'number',
  help: `λ${t.name} when the term is on${t.inAll ? '' : ` (not part of all: all+${t.name})`}`,
  default: t.ablateLambda,
}])) as { [K in LambdaFlag]: { type: 'number'; help: string; default: number } };

// Every student:train option reaches every student run; `out` is the ablation's folder here, `epochs` its budget.
const { out: _o, epochs: _ep, ...studentRunOptions } = presetStudentOptions();

/**
 * --suite: a named set of configurations with its own summary keys. relation: rel alone and with the other
 * distillation terms; emkd: the EMKD rows of src/distill/emkd/plan.ts (no teacher needed; with --cache one more
 * row where the teacher's soft labels join the causal ensemble's KL).
 */
const SUITES = ['relation', 'emkd'] as const;
export const RELATION_CONFIGS = 'rel,all+rel';
/**
 * --suite emkd's batch size when --batch-size is not given: K = 3 networks at the small preset's 128 do not fit
 * the wasm 4 GiB heap on ML-100K (the memory estimate refuses them), and every row, CE included, must share one.
 */
export const EMKD_SUITE_BATCH = 64;

export const ablateOptions = defineOptions({
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
  seeds: { type: 'int', help: 'seeds per configuration (seed, seed+1, ...)', default: 3, min: 1 },
  seed: { type: 'int', help: 'first seed (also the seed of the teacher trained here and of the cache head)', default: 42 },
  configs: { type: 'string', help: 'configurations besides CE-only: terms alone (cos,l2,ms,kd,emb,rel), all (every term but rel; all+rel adds it), or +-joined sets', default: 'cos,l2,ms,kd,emb,all' },
  suite: { type: 'string', help: `relation: CE vs relational distillation (--configs ${RELATION_CONFIGS}), summary keys ce, relation, gain; emkd: one causal and one bidirectional network, EMKD K = 3 with the reference's cloze networks and with causal ones, then each term removed from the better (plus the teacher as a member with --cache), summary keys single, ensemble, ensembleGain, member, memberGain, chosen`, default: 'none', choices: ['none', ...SUITES] },
  latency: { type: 'boolean', help: 'measure each configuration\'s single-request p50 latency (onnxruntime-node) beside the teacher\'s at the end', default: true },
  ...lambdaOptions,
  ...distillPassThrough,
  out: { type: 'string', help: 'output folder (default: student/ablate-<dataset>-<teacher>)' },
});

export type AblateOptions = Resolved<typeof ablateOptions>;

/** Upper bound on epochs with --until-converged: early stopping ends every run long before. */
export const CONVERGED_EPOCHS = 500;

const STUDENT_KEYS = Object.keys(presetStudentOptions());

/**
 * The student stage config of one run: what `student:train --preset <preset>` resolves from the same flags
 * (defaults < preset < --config file < flags), with this run's seed and folder, --until-converged's epoch bound,
 * a configuration's own student options (`student`, e.g. the EMKD suite's network family) and its distillation
 * flags (`distill`; none: CE only, config.json then records the distillation defaults).
 */
export function ablateStudentConfig(o: AblateOptions, seed: number, out: string, row: { student?: Record<string, unknown>; distill?: Record<string, unknown> } = {}): StudentStageConfig {
  const given: Record<string, unknown> = {};
  for (const k of STUDENT_KEYS) given[k] = (row.student as Record<string, unknown> | undefined)?.[k] ?? o[k as keyof AblateOptions];
  return studentStageConfig({ ...given, ...row.distill, preset: o.preset, seed, out, epochs: o.untilConverged ? CONVERGED_EPOCHS : o.epochs }, 'ablate');
}

/** The student options of one run (ablateStudentConfig resolved as the student stage resolves it). */
export function ablateStudentOptions(o: AblateOptions, seed: number, out: string, ds?: Pick<PreparedDataset, 'stats' | 'name'>): StudentOptions {
  const c = ablateStudentConfig(o, seed, out);
  return resolveStudentPreset(c.preset, c, ds);
}

/**
 * The seqrec teacher trained when no --teacher-run is given: what `student:train` (no preset) resolves from the
 * same dataset flags and seed, with --teacher-dims/-blocks/-epochs/-lr on top when given.
 */
export function ablateTeacherConfig(o: AblateOptions, out: string): StudentStageConfig {
  const dataset: Record<string, unknown> = {};
  for (const k of Object.keys(datasetOptions)) dataset[k] = o[k as keyof AblateOptions];
  return studentStageConfig({ ...dataset, preset: 'auto', seed: o.seed, out, dims: o.teacherDims, ffnDims: o.teacherDims, blocks: o.teacherBlocks, epochs: o.teacherEpochs, lr: o.teacherLr }, 'ablate');
}

/** The teacher's student options (ablateTeacherConfig resolved as the student stage resolves it). */
export function ablateTeacherOptions(o: AblateOptions, out: string, ds?: Pick<PreparedDataset, 'stats' | 'name'>): StudentOptions {
  const c = ablateTeacherConfig(o, out);
  return resolveStudentPreset(c.preset, c, ds);
}

/** The cache the ablation builds: teacher:cache's resolution of the same cache flags (teacherRun = --student-run). */
export function ablateCacheConfig(o: AblateOptions, teacherRun: string | undefined): CacheConfig {
  return resolveCacheConfig({ ...o, teacher: o.teacher, run: teacherRun });
}

