import { defineCommand } from '../command.js';
import { datasetFromFlags, datasetOptions } from '../../data/options.js';

export default defineCommand({
  description: 'load a raw dataset, filter, split leave-one-out; print counts and the fingerprint',
  options: datasetOptions,
  async run(o) {
    const d = await datasetFromFlags(o);
    return { dataset: d.name, ...d.stats, skippedRows: d.skippedRows, fingerprint: d.fingerprint };
  },
});
