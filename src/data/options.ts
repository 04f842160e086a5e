import { defineOptions, type Resolved } from '../config/options.js';
import type { LogFn } from '../util/progress.js';
import { GENERIC_DEFAULTS } from './formats/generic.js';
import { prepareDataset, type PrepareOptions } from './prepare.js';
import { fetchSources } from './source.js';
import { absPath } from '../util/paths.js';
import { SYNTHETIC_DEFAULTS } from './synthetic.js';
import type { PreparedDataset } from './types.js';

/** Dataset options shared by every command that reads a dataset (data:prepare, teacher:cache, student:train, ...). */
export const datasetOptions = defineOptions({
  dataset: { type: 'string', help: 'dataset: synthetic, ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-32m, ml-latest, ml-latest-small, amazon-beauty, amazon-toys (S3Rec 5-core files), amazon-2018, amazon-2023, sequences ("user item item ..." lines), pairs ("user item" lines), generic, prepared (a data:prepare --out dir)', default: 'synthetic' },
  source: { type: 'string', help: 'directory, file or URL with the raw data (empty: download the official archive / generate)' },
  itemsFile: { type: 'string', help: 'item texts file: Amazon meta JSON lines, or a CSV/TSV for generic (path or URL)' },
  sha256: { type: 'string', help: 'expected sha256 of the downloaded archive (overrides the built-in one; pins ml-10m/ml-32m/ml-latest)' },
  minRating: { type: 'number', help: 'keep interactions with rating >= this (0 keeps all)', default: 0 },
  kCore: { type: 'int', help: 'iterated k-core on users and items (0 = off)', default: 0 },
  maxHistory: { type: 'int', help: 'keep at most this many most recent items per user (0 = all)', default: 0 },
  tieOrder: { type: 'string', help: 'order of one user\'s interactions with the same timestamp: file = as read (stable sort); item = by raw item id (what some preprocessing scripts produce; ML-100K has half its consecutive ratings in the same second)', default: 'file', choices: ['file', 'item'], legacy: { value: 'file', since: 11 } },
  onBadRow: { type: 'string', help: 'malformed rows: fail, or skip and count', default: 'error', choices: ['error', 'skip'] },
  delimiter: { type: 'string', help: 'generic: field delimiter: auto, ",", tab, ";", "|"', default: GENERIC_DEFAULTS.delimiter },
  header: { type: 'boolean', help: 'generic: the first row names the columns (--no-header: columns are 0-based numbers)', default: GENERIC_DEFAULTS.header },
  userCol: { type: 'string', help: 'generic: user column (name or 0-based number)', default: GENERIC_DEFAULTS.userCol },
  itemCol: { type: 'string', help: 'generic: item column', default: GENERIC_DEFAULTS.itemCol },
  timeCol: { type: 'string', help: 'generic: time column, numbers or ISO dates ("" = file order)', default: GENERIC_DEFAULTS.timeCol },
  ratingCol: { type: 'string', help: 'generic: rating column ("" = none)', default: GENERIC_DEFAULTS.ratingCol },
  itemIdCol: { type: 'string', help: 'generic: id column of the items file ("" = same as --item-col)', default: GENERIC_DEFAULTS.itemIdCol },
  titleCol: { type: 'string', help: 'generic: title column of the items file', default: GENERIC_DEFAULTS.titleCol },
  genreCol: { type: 'string', help: 'generic: "|"-separated genres/categories column of the items file ("" = none)', default: GENERIC_DEFAULTS.genreCol },
  textCols: { type: 'string', help: 'generic: comma-separated extra text columns of the items file', default: GENERIC_DEFAULTS.textCols },
  syntheticUsers: { type: 'int', help: 'synthetic: number of users', default: SYNTHETIC_DEFAULTS.users },
  syntheticItems: { type: 'int', help: 'synthetic: number of items', default: SYNTHETIC_DEFAULTS.items },
  syntheticSeed: { type: 'int', help: 'synthetic: generator seed', default: SYNTHETIC_DEFAULTS.seed },
  syntheticMinLen: { type: 'int', help: 'synthetic: shortest user sequence', default: SYNTHETIC_DEFAULTS.minLen },
  syntheticMaxLen: { type: 'int', help: 'synthetic: longest user sequence', default: SYNTHETIC_DEFAULTS.maxLen },
}, { group: 'Dataset' });

export type DatasetFlags = Resolved<typeof datasetOptions>;

/**
 * Flags -> PrepareOptions. Keys missing from `o` fall back to the defaults, so callers that build a
 * partial flags object by hand (tests, other stages) keep working.
 */
export function prepareOptionsFrom(o: Partial<DatasetFlags> & Pick<DatasetFlags, 'dataset'>): PrepareOptions {
  const g = GENERIC_DEFAULTS;
  const s = SYNTHETIC_DEFAULTS;
  return {
    dataset: o.dataset,
    source: o.source ?? '',
    minRating: o.minRating ?? 0,
    kCore: o.kCore ?? 0,
    maxHistory: o.maxHistory ?? 0,
    tieOrder: (o.tieOrder ?? 'file') as 'file' | 'item',
    onBadRow: o.onBadRow ?? 'error',
    itemsFile: o.itemsFile || undefined,
    sha256: o.sha256 || undefined,
    generic: {
      delimiter: o.delimiter ?? g.delimiter,
      header: o.header ?? g.header,
      userCol: o.userCol ?? g.userCol,
      itemCol: o.itemCol ?? g.itemCol,
      timeCol: o.timeCol ?? g.timeCol,
      ratingCol: o.ratingCol ?? g.ratingCol,
      itemIdCol: o.itemIdCol ?? g.itemIdCol,
      titleCol: o.titleCol ?? g.titleCol,
      genreCol: o.genreCol ?? g.genreCol,
      textCols: o.textCols ?? g.textCols,
    },
    synthetic: {
      users: o.syntheticUsers ?? s.users,
      items: o.syntheticItems ?? s.items,
      seed: o.syntheticSeed ?? s.seed,
      minLen: o.syntheticMinLen ?? s.minLen,
      maxLen: o.syntheticMaxLen ?? s.maxLen,
    },
  };
}

/**
 * Load and prepare a dataset, downloading first when needed (a known name with no --source, or a
 * URL). Already-downloaded archives are reused. Nothing is written except the download cache.
 */
export async function loadDataset(opts: PrepareOptions, log?: LogFn): Promise<PreparedDataset & { skippedRows: number; files: string[] }> {
  const local = await fetchSources(opts.dataset, opts.source, opts.itemsFile, { sha256: opts.sha256, log });
  return prepareDataset({ ...opts, source: local.source, itemsFile: local.itemsFile }, log);
}

/** Prepare the dataset named by the shared flags. */
export async function datasetFromFlags(
  o: Partial<DatasetFlags> & Pick<DatasetFlags, 'dataset'>,
  log?: LogFn,
): Promise<PreparedDataset & { skippedRows: number; files: string[] }> {
  const ds = await loadDataset(prepareOptionsFrom(o), log);
  const flags: Record<string, unknown> = {};
  for (const k of Object.keys(datasetOptions)) if (o[k as keyof DatasetFlags] !== undefined) flags[k] = o[k as keyof DatasetFlags];
  for (const k of ['source', 'itemsFile'] as const) if (k in flags) flags[k] = absPath(flags[k]);
  return { ...ds, flags };
}
