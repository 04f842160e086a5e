import { defineOptions } from '../../config/options.js';
import { verifyCache } from '../../cache/verify.js';
import { RecdistillError } from '../../errors.js';
import { defineCommand } from '../command.js';

const options = defineOptions({
  cache: { type: 'string', help: 'teacher cache directory (holds manifest.json)', required: true },
});

export default defineCommand({
  description: 'check every file of a teacher cache against its manifest: sha256 and tensor shapes; fails naming the bad shard',
  options,
  async run(opts, ctx) {
    const r = verifyCache(opts.cache);
    if (r.problems.length) {
      for (const p of r.problems) ctx.log(`teacher:verify: ${p.file}: ${p.problem}`);
      const list = r.problems.map((p) => `${p.file} (${p.problem})`).join('; ');
      throw new RecdistillError('E_CHECKSUM', `teacher cache ${opts.cache}: ${r.problems.length} bad file(s): ${list}.`);
    }
    ctx.log(`teacher:verify: ${r.files} file(s), ${r.rows} rows OK${r.complete ? '' : ' (cache not complete yet)'}`);
    return { cache: r.dir, key: r.key, ok: true, complete: r.complete, files: r.files, rows: r.rows };
  },
});
