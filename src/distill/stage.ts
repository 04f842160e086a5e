import { join } from 'node:path';
import { initBackend, type BackendName } from '../backend/index.js';
import { defineOptions, resolveOptions, type Resolved } from '../config/options.js';
import { datasetFromFlags } from '../data/options.js';
import type { PreparedDataset } from '../data/types.js';
import { autoPreset, presetOption, presetStudentOptions, resolveStudentPreset } from '../student/training/presets.js';
import { checkRunConfig, readJsonFile, runToContinue, type RunConfig } from '../student/model/run-folder.js';
import { RecdistillError } from '../errors.js';
import { alignFromZero } from './align.js';
import { runIdentity, trainStudent } from '../student/training/train.js';
import type { TrainResult } from '../student/training/finish.js';
import { sha256, stableStringify } from '../util/hash.js';
import type { LogFn } from '../util/progress.js';
import { buildDistillHooks } from './hooks.js';
import { distillOptions, distillRecord } from './options.js';

/**
 * The student stage: one typed config (student:train's options: the student's, --preset, the distillation flags
 * and --verify) in, a trained run folder out. student:train, ablate and the demo all train through it:
 *   preset -> distillation flags -> hooks (the teacher cache, EMKD) -> run identity and folder -> trainStudent.
 * It lives in distill/ because it composes the student (below) with the distillation hooks (here).
 */
export const studentStageOptions = defineOptions({
  ...presetStudentOptions(),
  preset: presetOption('auto'),
  ...distillOptions,
  verify: { type: 'boolean', help: 'check each teacher-cache file against its manifest sha256 when first loaded (--no-verify skips it; sizes, ranges and finite values are always checked)', default: true },
});

export type StudentStageConfig = Resolved<typeof studentStageOptions>;

/** The stage's config from options given by name (other keys are ignored; values checked as flags are). */
export function studentStageConfig(given: Record<string, unknown>, where = 'student stage'): StudentStageConfig {
  const picked: Record<string, unknown> = {};
  for (const k of Object.keys(studentStageOptions)) if (given[k] !== undefined) picked[k] = given[k];
  return resolveOptions(studentStageOptions, { flags: picked, filePath: where });
}

/** What the stage runs in: runtime pieces that are not options of the run (never part of its identity). */
export interface StudentStageEnv {
  log: LogFn;
  /** Training progress (epoch lines); default `log`. */
  trainLog?: LogFn;
  /** An initialised tfjs backend; default: initBackend(config.backend, config.threads). */
  backend?: string;
  /** The prepared dataset; default: read from the config's dataset flags. */
  dataset?: PreparedDataset;
  /** The --config file the options came from: a run's own config.json continues that run (defaultRunFolder). */
  configFile?: string;
  /** false: config.json records no distillation flags (ablate's seqrec teacher never distils; default true). */
  recordDistill?: boolean;
  /** Test hook: called after each finished epoch. */
  onEpoch?(epoch: number): void;
}

/** Train one student run as `config` says; a finished run is reported again, a half one resumes. */
export async function runStudentStage(config: StudentStageConfig, env: StudentStageEnv): Promise<TrainResult> {
  const log = env.log;
  // defaults < --preset < --config file < flags; ranges checked before the dataset or the backend load.
  // --preset auto is checked as `none` first, then resolved against the dataset.
  let o = resolveStudentPreset(config.preset, config);
  if (config.cache && !config.verify) log(`student:train: --no-verify: the files of teacher cache ${config.cache} are NOT checked against their manifest sha256 (sizes, ranges and finite values still are)`);
  const backend = env.backend ?? (await initBackend(o.backend as BackendName, { threads: o.threads || undefined }));
  const ds = env.dataset ?? (await datasetFromFlags(o));
  if (config.preset === 'auto') {
    const auto = autoPreset(ds);
    log(`student:train: --preset auto: ${auto.reason}`);
    o = resolveStudentPreset(auto.preset, config);
  }
  if (env.configFile) checkLegacyAlign(env.configFile, config.align);
  // The hooks read the distillation flags and the resolved student options (EMKD builds networks like the student).
  const hooks = await buildDistillHooks({ ...config, ...o }, ds, { dims: o.dims, blocks: o.blocks }, { verify: config.verify });
  try {
    const outDir = o.out ?? defaultRunFolder(runIdentity(ds, o, hooks), ds.name, env.configFile, log, hooks?.upgradeProvenance);
    const recordOptions = env.recordDistill === false ? undefined : distillRecord(config);
    return await trainStudent({ ds, opts: o, outDir, backend, hooks, log: env.trainLog ?? log, recordOptions, onEpoch: env.onEpoch });
  } finally {
    hooks?.dispose?.();
  }
}

/**
 * Without --out: `--config RUN/config.json` continues RUN itself when the options resolve to the same run (a
 * finished run is reported again, more --epochs continue it); any change makes a new run, named by its identity.
 */
function defaultRunFolder(identity: Record<string, unknown>, dataset: string, configFile: string | undefined, log: LogFn, upgrade?: (stored: unknown) => unknown): string {
  const fresh = join('student', `${dataset}-${sha256(stableStringify(identity)).slice(0, 10)}`);
  if (!configFile) return fresh;
  const { dir, differs } = runToContinue(configFile, identity, upgrade);
  if (dir) {
    log(`student:train: --config ${configFile} is that run's own config.json and nothing differs: continuing ${dir} (--out elsewhere trains a new copy)`);
    return dir;
  }
  if (differs) log(`student:train: ${differs} differ from the run of --config ${configFile}: training a new run in ${fresh}`);
  return fresh;
}

/**
 * A run's config.json written when --align counted student blocks from 1 (its provenance has no `alignFrom`) would
 * align other blocks today: refused, with the same alignment written as blocks count now.
 */
function checkLegacyAlign(configFile: string, align: string): void {
  let cfg: RunConfig;
  try {
    cfg = checkRunConfig(readJsonFile(configFile, 'student run config'), configFile);
  } catch {
    return; // a plain options file
  }
  const stored = cfg.distill;
  if (!stored || stored.alignFrom !== undefined || !align.trim() || cfg.train?.align !== align) return;
  const now = alignFromZero(align);
  throw new RecdistillError('E_USAGE', `${configFile} was written when --align counted student blocks from 1: its "align" ${JSON.stringify(align)} is ${JSON.stringify(now)} now that blocks count from 0 (as --layers and checkpoints do). Change "train.align" in that file to ${JSON.stringify(now)}, or give --align ${now}.`);
}
