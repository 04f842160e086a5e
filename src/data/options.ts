import { defineOptions, type Resolved } from '../config/options.js';
import { prepareDataset, type PrepareOptions } from './prepare.js';
import type { PreparedDataset } from './types.js';

/** Dataset options shared by every command that reads a dataset (data:prepare, teacher:cache, student:train, ...). */
export const datasetOptions = defineOptions({
  dataset: { type: 'string', help: 'dataset name', default: 'synthetic' },
  source: { type: 'string', help: 'directory, file or URL with the raw data (empty: download / generate)' },
  minRating: { type: 'number', help: 'keep interactions with rating >= this (0 keeps all)', default: 0 },
  kCore: { type: 'int', help: 'iterated k-core on users and items (0 = off)', default: 0 },
  maxHistory: { type: 'int', help: 'keep at most this many most recent items per user (0 = all)', default: 0 },
  onBadRow: { type: 'string', help: 'malformed rows: fail, or skip and count', default: 'error', choices: ['error', 'skip'] },
});

export type DatasetFlags = Resolved<typeof datasetOptions>;

export function prepareOptionsFrom(o: DatasetFlags): PrepareOptions {
  return { dataset: o.dataset, source: o.source ?? '', minRating: o.minRating, kCore: o.kCore, maxHistory: o.maxHistory, onBadRow: o.onBadRow };
}

/** Prepare the dataset named by the shared flags. */
export async function datasetFromFlags(o: DatasetFlags): Promise<PreparedDataset & { skippedRows: number }> {
  return prepareDataset(prepareOptionsFrom(o));
}
