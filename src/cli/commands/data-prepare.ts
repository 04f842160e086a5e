import { defineOptions } from '../../config/options.js';
import { writePrepared } from '../../data/export.js';
import { datasetFromFlags, datasetOptions } from '../../data/options.js';
import { splitUser } from '../../data/split.js';
import { defineCommand } from '../command.js';

const options = defineOptions({
  ...datasetOptions,
  out: { type: 'string', help: 'also write the prepared dataset here (dataset.json, items.jsonl, users.jsonl; atomic)' },
});

export default defineCommand({
  description: 'load a raw dataset (downloading it when needed), filter, split leave-one-out; print counts and the fingerprint',
  options,
  async run(o, ctx) {
    const { out, ...flags } = o;
    const d = await datasetFromFlags(flags, ctx.log);
    // Users with >= 3 items have a validation and a test target (leave-one-out).
    const evalUsers = d.users.filter((u) => splitUser(u).test !== 0).length;
    if (out) {
      writePrepared(d, out, d.files);
      ctx.log(`wrote the prepared dataset to ${out}`);
    }
    return {
      dataset: d.name,
      ...d.stats,
      evalUsers,
      skippedRows: d.skippedRows,
      files: d.files,
      ...(out ? { out } : {}),
      fingerprint: d.fingerprint,
    };
  },
});
