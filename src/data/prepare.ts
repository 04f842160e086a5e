import { join } from 'node:path';
import { RecdistillError } from '../errors.js';
import { sha256, stableStringify } from '../util/hash.js';
import type { LogFn } from '../util/progress.js';
import type { BadRowPolicy, LoadContext } from './formats/common.js';
import { GENERIC_DEFAULTS, type GenericOptions } from './formats/generic.js';
import { readPrepared } from './export.js';
import { datasetSpec, type DatasetSpec, type LoaderInput } from './registry.js';
import { resolveLocalSource } from './source.js';
import { groupColumns, kCoreMask, rawColumns, ratingMask } from './columns.js';
import { compareRawIds } from './split.js';
import type { SyntheticOptions } from './synthetic.js';
import type { DatasetStats, ItemInfo, PreparedDataset, RawDataset, UserSequence } from './types.js';

export interface PrepareOptions {
  /** Dataset name (selects the loader): ml-100k ... ml-latest-small, amazon-2018, amazon-2023, generic, synthetic. */
  dataset: string;
  /** Directory or file with the raw data ('' = the downloaded copy in the cache, or generated for synthetic). */
  source: string;
  /** Keep interactions with rating >= minRating (0 keeps all; rows without a rating are kept). */
  minRating: number;
  /** Iterated k-core: drop users and items with fewer than k interactions until stable (0 = off). */
  kCore: number;
  /** Keep at most this many most recent items per user (0 = all). */
  maxHistory: number;
  /** Order of one user's interactions with the same timestamp: 'file' (default) = as read; 'item' = by raw item id. */
  tieOrder?: 'file' | 'item';
  /** What to do with a malformed row. */
  onBadRow: BadRowPolicy;
  /** Item texts file (amazon meta, generic items table). */
  itemsFile?: string;
  /** Expected sha256 of the downloaded archive (overrides the built-in value). */
  sha256?: string;
  /** Column choices etc. for the generic loader. */
  generic?: Partial<GenericOptions>;
  /** Size and seed of the synthetic dataset. */
  synthetic?: Partial<SyntheticOptions>;
}

export const PREPARE_DEFAULTS: Omit<PrepareOptions, 'dataset' | 'source'> = {
  minRating: 0,
  kCore: 0,
  maxHistory: 0,
  onBadRow: 'error',
};

function loaderInput(opts: PrepareOptions, source: string): LoaderInput {
  return {
    source,
    itemsFile: opts.itemsFile || undefined,
    generic: { ...GENERIC_DEFAULTS, ...opts.generic },
    synthetic: { ...opts.synthetic },
  };
}



export function computeStats(users: UserSequence[], numItems: number): DatasetStats {
  const lens = users.map((u) => u.items.length).sort((a, b) => a - b);
  const interactions = lens.reduce((a, b) => a + b, 0);
  const mid = lens.length >> 1;
  const median = lens.length === 0 ? 0 : lens.length % 2 ? lens[mid]! : (lens[mid - 1]! + lens[mid]!) / 2;
  return {
    users: users.length,
    items: numItems,
    interactions,
    meanSeqLen: users.length ? interactions / users.length : 0,
    medianSeqLen: median,
    density: users.length && numItems ? interactions / (users.length * numItems) : 0,
  };
}

/** Raw data -> prepared dataset (filter, k-core, stable time order, truncation, dense ids). */
export function buildPrepared(
  name: string,
  raw: RawDataset,
  opts: Omit<PrepareOptions, 'dataset' | 'source'>,
  source: string,
  format?: Record<string, unknown>,
): PreparedDataset {
  if (raw.interactions.length === 0 && (raw.columns?.length ?? 0) === 0) {
    throw new RecdistillError('E_EMPTY', `no interactions found in ${raw.files.join(', ') || source}: the file has no data rows.`);
  }
  const c = rawColumns(raw);
  const mask = ratingMask(c, opts.minRating);
  kCoreMask(c, mask, opts.kCore);
  const g = groupColumns(c, mask, opts.maxHistory, opts.tieOrder ?? 'file');
  // Dense item ids 1..N over the items that survived, in raw-id order.
  const present = new Uint8Array(c.itemIds.length);
  for (const seq of g.sequences) for (const code of seq) present[code] = 1;
  const itemCodes: number[] = [];
  present.forEach((p, code) => p && itemCodes.push(code));
  if (g.userIds.length === 0 || itemCodes.length === 0) {
    throw new RecdistillError(
      'E_EMPTY',
      `no interactions left in ${source || name} after filtering (${c.length} read; min-rating ${opts.minRating}, k-core ${opts.kCore}); loosen the filters.`,
    );
  }
  itemCodes.sort((x, y) => compareRawIds(c.itemIds[x]!, c.itemIds[y]!));
  const dense = new Int32Array(c.itemIds.length); // item code -> dense id
  itemCodes.forEach((code, i) => (dense[code] = i + 1));
  const itemIds = itemCodes.map((code) => c.itemIds[code]!);
  const items: ItemInfo[] = [{ id: 0, rawId: '', title: '<pad>', genres: [] }];
  for (const r of itemIds) {
    const t = raw.items.get(r);
    const info: ItemInfo = { id: items.length, rawId: r, title: t?.title || r, year: t?.year, genres: t?.genres ?? [] };
    if (t?.extra && Object.keys(t.extra).length) info.extra = t.extra;
    items.push(info);
  }
  const users: UserSequence[] = g.userIds.map((u, i) => ({ rawId: u, items: g.sequences[i]!.map((code) => dense[code]!) }));
  // tieOrder is recorded only when it is not the file order, so every dataset prepared before it keeps its fingerprint.
  const options = { minRating: opts.minRating, kCore: opts.kCore, maxHistory: opts.maxHistory, onBadRow: opts.onBadRow, ...(opts.tieOrder === 'item' ? { tieOrder: 'item' } : {}), ...(format ? { format } : {}) };
  // onBadRow is left out: a run that succeeds with 'error' read no bad row, so 'skip' gives the same data.
  const fingerprint = sha256(stableStringify({ name, rawHash: raw.rawHash, options: { ...options, onBadRow: undefined } }));
  return { name, fingerprint, options, items, users, stats: computeStats(users, items.length - 1) };
}

/** Load and prepare a dataset. Pure in-memory; nothing is written. Needs a local (or already downloaded) source. */
export function prepareDataset(opts: PrepareOptions, log?: LogFn): PreparedDataset & { skippedRows: number; files: string[] } {
  const t0 = performance.now();
  const ctx: LoadContext = { onBadRow: opts.onBadRow, skipped: { count: 0 }, log };
  const spec = datasetSpec(opts.dataset);
  if (spec.prepared) return loadExport(opts, spec, log);
  const input = loaderInput(opts, resolveLocalSource(spec, opts.source, opts.itemsFile));
  const raw = spec.load(input, ctx);
  log?.(`${opts.dataset}: read ${raw.columns?.length ?? raw.interactions.length} interactions from ${raw.files.join(', ')} in ${((performance.now() - t0) / 1000).toFixed(1)}s${ctx.skipped.count ? ` (${ctx.skipped.count} bad rows skipped)` : ''}${raw.duplicateRows ? ` (${raw.duplicateRows} duplicate (user, item, timestamp) rows dropped, the first of each kept)` : ''}`);
  const rest = { minRating: opts.minRating, kCore: opts.kCore, maxHistory: opts.maxHistory, onBadRow: opts.onBadRow, tieOrder: opts.tieOrder };
  const d = buildPrepared(opts.dataset, raw, rest, input.source, spec.fingerprintOptions?.(input));
  return { ...d, skippedRows: ctx.skipped.count, files: raw.files };
}

/**
 * --dataset prepared --source DIR: a data:prepare --out export, read as is (same name and fingerprint
 * as the run that wrote it), so big datasets are parsed and filtered once.
 */
function loadExport(opts: PrepareOptions, spec: DatasetSpec, log?: LogFn): PreparedDataset & { skippedRows: number; files: string[] } {
  const dir = resolveLocalSource(spec, opts.source, opts.itemsFile);
  if (opts.minRating !== 0 || opts.kCore !== 0 || opts.maxHistory !== 0 || (opts.tieOrder ?? 'file') !== 'file') {
    throw new RecdistillError('E_USAGE', `--dataset prepared reads ${dir} as exported; its filters are fixed (see dataset.json "options"), so --min-rating/--k-core/--max-history must stay 0 and --tie-order file.`);
  }
  const d = readPrepared(dir);
  log?.(`prepared: read ${d.name} (${d.stats.interactions} interactions, fingerprint ${d.fingerprint.slice(0, 12)}) from ${dir}`);
  return { ...d, skippedRows: 0, files: [join(dir, 'dataset.json')] };
}
