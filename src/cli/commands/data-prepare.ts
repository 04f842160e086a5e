import { defineCommand } from '../command.js';
import { datasetFromFlags, datasetOptions } from '../../data/options.js';
import { splitUser } from '../../data/split.js';

export default defineCommand({
  description: 'load a raw dataset (downloading it when needed), filter, split leave-one-out; print counts and the fingerprint',
  options: datasetOptions,
  async run(o, ctx) {
    const d = await datasetFromFlags(o, ctx.log);
    // Users with >= 3 items have a validation and a test target (leave-one-out).
    const evalUsers = d.users.filter((u) => splitUser(u).test !== 0).length;
    return {
      dataset: d.name,
      ...d.stats,
      evalUsers,
      skippedRows: d.skippedRows,
      files: d.files,
      fingerprint: d.fingerprint,
    };
  },
});
