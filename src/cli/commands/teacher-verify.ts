import { defineOptions } from '../../config/options.js';
import { verifyCache } from '../../cache/verify.js';
import { RecdistillError } from '../../errors.js';
import { defineCommand } from '../command.js';

const options = defineOptions({
  cache: { type: 'string', help: 'teacher cache directory (holds manifest.json)', required: true },
  against: { type: 'string', help: 'another cache of the same dataset and layers (e.g. the same model in another exporter layout or dtype): report how far its hidden states are from this one\'s' },
});

export default defineCommand({
  description: 'check a teacher cache: manifest structure and key, then every file against it (size, sha256, dtypes and shapes, users / positions in range, finite values, soft-label item ids 0..N); fails naming the bad file',
  options,
  async run(opts, ctx) {
    const r = verifyCache(opts.cache);
    if (r.problems.length) {
      for (const p of r.problems) ctx.log(`teacher:verify: ${p.file}: ${p.problem}`);
      const list = r.problems.map((p) => `${p.file} (${p.problem})`).join('; ');
      throw new RecdistillError('E_CHECKSUM', `teacher cache ${opts.cache}: ${r.problems.length} bad file(s): ${list}.`);
    }
    ctx.log(`teacher:verify: ${r.files} file(s), ${r.rows} rows OK${r.complete ? '' : ' (cache not complete yet)'}`);
    const summary = { cache: r.dir, key: r.key, ok: true, complete: r.complete, files: r.files, rows: r.rows };
    if (!opts.against) return summary;
    const { compareCaches } = await import('../../cache/compare.js');
    const c = compareCaches(opts.cache, opts.against);
    for (const l of c.layers) ctx.log(`teacher:verify: layer ${l.layer}: max |difference| ${l.maxAbsDiff.toExponential(2)} (values up to ${l.maxAbs.toFixed(3)}), cosine mean ${l.meanCosine.toFixed(6)} min ${l.minCosine.toFixed(6)} over ${c.rows} rows`);
    ctx.log(`teacher:verify: item embeddings: max |difference| ${c.items.maxAbsDiff.toExponential(2)} (values up to ${c.items.maxAbs.toFixed(3)})`);
    return { ...summary, against: c };
  },
});
