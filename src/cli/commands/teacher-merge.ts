import { initBackend, BACKEND_CHOICES } from '../../backend/index.js';
import { mergeSlices } from '../../cache/merge.js';
import { summarize } from '../../cache/run.js';
import { runPass2 } from '../../cache/soft.js';
import { defineOptions, type Resolved } from '../../config/options.js';
import { lockCacheDir } from '../../cache/lock.js';
import type { LogFn } from '../../util/progress.js';
import { datasetFromFlags, datasetOptions } from '../../data/options.js';
import { RecdistillError } from '../../errors.js';
import { defineCommand } from '../command.js';

const options = defineOptions({
  out: { type: 'string', help: 'directory of the joined cache', required: true },
  from: { type: 'string', help: 'comma-separated slice directories written by teacher:cache --shard i/N', required: true },
  soft: { type: 'boolean', help: 'after joining, run the soft-label pass (head, soft labels, teacher metrics; needs the dataset flags)', default: true },
  backend: { type: 'string', help: 'tfjs backend for the soft-label head', default: 'auto', choices: BACKEND_CHOICES },
  ...datasetOptions,
});

export default defineCommand({
  description: 'join --shard i/N slices of a teacher cache, then fit the soft-label head and write soft labels',
  options,
  async run(opts, ctx) {
    const t0 = performance.now();
    const from = opts.from.split(',').map((s) => s.trim()).filter(Boolean);
    const unlock = lockCacheDir(opts.out);
    try {
      return await mergeAndLabel(opts, from, ctx.log, t0);
    } finally {
      unlock();
    }
  },
});

async function mergeAndLabel(opts: Resolved<typeof options>, from: string[], log: LogFn, t0: number) {
  {
    let manifest = mergeSlices(opts.out, from, log);
    if (opts.soft && !manifest.complete) {
      const ds = await datasetFromFlags(opts);
      if (ds.fingerprint !== manifest.dataset.fingerprint) {
        throw new RecdistillError('E_MISMATCH', `the slices were built for dataset fingerprint ${manifest.dataset.fingerprint}, the dataset flags give ${ds.fingerprint}; pass the same --dataset/--source/filters as teacher:cache.`);
      }
      const backend = await initBackend(opts.backend);
      manifest = await runPass2(opts.out, ds, { log, backend });
    }
    return summarize(opts.out, manifest, (performance.now() - t0) / 1000);
  }
}
