import { join } from 'node:path';
import { initBackend, type BackendName } from '../../backend/index.js';
import { datasetFromFlags } from '../../data/options.js';
import { buildDistillHooks } from '../../distill/index.js';
import { distillOptions, distillRecord } from '../../distill/options.js';
import { autoPreset, presetOption, presetStudentOptions, resolveStudentPreset } from '../../student/presets.js';
import { trainStudent, runIdentity } from '../../student/train.js';
import { runToContinue } from '../../student/run-folder.js';
import type { LogFn } from '../../util/progress.js';
import { sha256, stableStringify } from '../../util/hash.js';
import { setCacheVerifyDefault } from '../../cache/reader.js';
import { defineCommand } from '../command.js';

export default defineCommand({
  description: 'train the SASRec student (full-softmax CE by default; optionally distilled from a teacher cache)',
  options: {
    ...presetStudentOptions(),
    preset: presetOption('auto'),
    ...distillOptions,
    verify: { type: 'boolean', help: 'check each teacher-cache file against its manifest sha256 when first loaded (--no-verify skips it; sizes, ranges and finite values are always checked)', default: true },
  },
  async run(opts, ctx) {
    // defaults < --preset < --config file < flags; ranges checked before the dataset or the backend load.
    // --preset auto is checked as `none` first, then resolved against the dataset.
    let o = resolveStudentPreset(opts.preset, opts);
    if (opts.cache && !opts.verify) ctx.log(`student:train: --no-verify: the files of teacher cache ${opts.cache} are NOT checked against their manifest sha256 (sizes, ranges and finite values still are)`);
    // The distillation hooks open the cache; the flag reaches them as the reader's default (restored after).
    const prevVerify = setCacheVerifyDefault(opts.verify);
    try {
      const backend = await initBackend(o.backend as BackendName, { threads: o.threads || undefined });
      const ds = await datasetFromFlags(o);
      if (opts.preset === 'auto') {
        const auto = autoPreset(ds);
        ctx.log(`student:train: --preset auto: ${auto.reason}`);
        o = resolveStudentPreset(auto.preset, opts);
      }
      // The hooks read the distillation flags and the resolved student options (EMKD builds networks like the student).
      const hooks = await buildDistillHooks({ ...opts, ...o }, ds, { dims: o.dims, blocks: o.blocks });
      const outDir = o.out ?? defaultRunFolder(runIdentity(ds, o, hooks), ds.name, ctx.configFile, ctx.log);
      const t0 = performance.now();
      try {
        const r = await trainStudent({ ds, opts: o, outDir, backend, hooks, log: ctx.log, recordOptions: distillRecord(opts) });
        ctx.log(`student:train: wall clock ${((performance.now() - t0) / 1000).toFixed(1)}s (backend ${backend})`);
        return { ...r };
      } finally {
        hooks?.dispose?.();
      }
    } finally {
      setCacheVerifyDefault(prevVerify);
    }
  },
});

/**
 * Without --out: `--config RUN/config.json` continues RUN itself when the options resolve to the same run (a
 * finished run is reported again, more --epochs continue it); any change makes a new run, named by its identity.
 */
function defaultRunFolder(identity: Record<string, unknown>, dataset: string, configFile: string | undefined, log: LogFn): string {
  const fresh = join('student', `${dataset}-${sha256(stableStringify(identity)).slice(0, 10)}`);
  if (!configFile) return fresh;
  const { dir, differs } = runToContinue(configFile, identity);
  if (dir) {
    log(`student:train: --config ${configFile} is that run's own config.json and nothing differs: continuing ${dir} (--out elsewhere trains a new copy)`);
    return dir;
  }
  if (differs) log(`student:train: ${differs} differ from the run of --config ${configFile}: training a new run in ${fresh}`);
  return fresh;
}
