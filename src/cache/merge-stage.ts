import { initBackend, BACKEND_CHOICES } from '../backend/index.js';
import { mergeSlices } from './merge.js';
import { summarize } from './run.js';
import { runPass2 } from './soft.js';
import { camelToKebab, defineOptions, type OptionSpecs, type Resolved } from '../config/options.js';
import { lockCacheDir } from '../util/lock.js';
import type { LogFn } from '../util/progress.js';
import { datasetFromFlags, datasetOptions } from '../data/options.js';
import { RecdistillError } from '../errors.js';
import { datasetDifference } from '../data/differ.js';

/** teacher:merge's options: the joined cache, its slices, and the soft-label pass. */
export const mergeOptions = defineOptions({
  out: { type: 'string', help: 'directory of the joined cache', required: true },
  from: { type: 'string', help: 'comma-separated slice directories written by teacher:cache --shard i/N', required: true },
  soft: { type: 'boolean', help: 'after joining, run the soft-label pass (head, soft labels, teacher metrics) on the dataset the slices record', default: true },
  backend: { type: 'string', help: 'tfjs backend for the soft-label head', default: 'auto', choices: BACKEND_CHOICES },
  // Slices record the dataset flags they were built with; these are read only for slices that do not (older
  // versions), except --source, which says where the data is now if it moved.
  ...datasetOptions,
});

export type MergeConfig = Resolved<typeof mergeOptions>;

/**
 * The merge stage: join `--shard i/N` slices into one cache (under the cache's lock), then run the soft-label pass
 * on the dataset the slices record.
 */
export async function runMergeStage(opts: MergeConfig, env: { log: LogFn }) {
  const t0 = performance.now();
  const from = opts.from.split(',').map((s) => s.trim()).filter(Boolean);
  const unlock = lockCacheDir(opts.out);
  try {
    return await mergeAndLabel(opts, from, env.log, t0);
  } finally {
    unlock();
  }
}

async function mergeAndLabel(opts: MergeConfig, from: string[], log: LogFn, t0: number) {
  {
    let manifest = mergeSlices(opts.out, from, log);
    if (opts.soft && !manifest.complete) {
      const recorded = manifest.dataset.flags;
      if (recorded) log(`teacher:merge: dataset ${manifest.dataset.name} with the flags the slices record${opts.source ? `, read from --source ${opts.source}` : ''}`);
      if (recorded) checkGivenFlags(opts, recorded);
      const flags = recorded ? { ...recorded, ...(opts.source ? { source: opts.source } : {}) } : opts;
      const ds = await datasetFromFlags(flags as typeof opts, log);
      if (ds.fingerprint !== manifest.dataset.fingerprint) {
        const why = datasetDifference(manifest.dataset, ds, 'their cache', 'these flags give');
        throw new RecdistillError('E_MISMATCH', `the slices were built for dataset fingerprint ${manifest.dataset.fingerprint}, the dataset flags give ${ds.fingerprint}: ${why}; ${recorded ? 'the data changed since (--source names where the same data is now)' : 'pass the same --dataset/--source/filters as teacher:cache'}.`);
      }
      const backend = await initBackend(opts.backend);
      manifest = await runPass2(opts.out, ds, { log, backend });
    }
    return summarize(opts.out, manifest, (performance.now() - t0) / 1000);
  }
}

/** A dataset flag given on the command line (not its default) that contradicts what the slices record is refused. */
function checkGivenFlags(opts: Record<string, unknown>, recorded: Record<string, unknown>): void {
  for (const [k, spec] of Object.entries(datasetOptions as OptionSpecs)) {
    if (k === 'source' || opts[k] === undefined || opts[k] === spec.default || opts[k] === recorded[k]) continue;
    const flag = `--${camelToKebab(k)}`;
    throw new RecdistillError('E_USAGE', `the slices record ${flag} ${recorded[k] === undefined ? '(not given)' : String(recorded[k])}, the command line gives ${flag} ${String(opts[k])}: teacher:merge reads the dataset flags from the slices, so leave them out (--source alone says where the data is now).`);
  }
}
