import { RecdistillError } from '../errors.js';
import { sha256, stableStringify } from '../util/hash.js';
import type { LogFn } from '../util/progress.js';
import type { BadRowPolicy, LoadContext } from './formats/common.js';
import { GENERIC_DEFAULTS, type GenericOptions } from './formats/generic.js';
import { datasetSpec, type LoaderInput } from './registry.js';
import { resolveLocalSource } from './source.js';
import { compareRawIds, groupByUser } from './split.js';
import type { SyntheticOptions } from './synthetic.js';
import type { DatasetStats, ItemInfo, PreparedDataset, RawDataset, RawInteraction, UserSequence } from './types.js';

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

/** Load the raw data for `opts` (synchronous: the source must be local or already downloaded). */
export function loadRaw(opts: PrepareOptions, ctx: LoadContext): RawDataset {
  const spec = datasetSpec(opts.dataset);
  return spec.load(loaderInput(opts, resolveLocalSource(spec, opts.source)), ctx);
}

/** Iterated k-core over (user, item): repeat until every user and item has >= k interactions. */
export function kCoreFilter(interactions: RawInteraction[], k: number): RawInteraction[] {
  if (k <= 1) return interactions;
  let cur = interactions;
  for (;;) {
    const uc = new Map<string, number>();
    const ic = new Map<string, number>();
    for (const x of cur) {
      uc.set(x.user, (uc.get(x.user) ?? 0) + 1);
      ic.set(x.item, (ic.get(x.item) ?? 0) + 1);
    }
    const next = cur.filter((x) => uc.get(x.user)! >= k && ic.get(x.item)! >= k);
    if (next.length === cur.length) return next;
    cur = next;
  }
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
  if (raw.interactions.length === 0) {
    throw new RecdistillError('E_EMPTY', `no interactions found in ${raw.files.join(', ') || source}: the file has no data rows.`);
  }
  let xs = raw.interactions;
  if (opts.minRating > 0) xs = xs.filter((x) => (x.rating ?? Infinity) >= opts.minRating);
  xs = kCoreFilter(xs, opts.kCore);
  const byUser = groupByUser(xs);
  if (opts.maxHistory > 0) {
    for (const [u, list] of byUser) if (list.length > opts.maxHistory) byUser.set(u, list.slice(list.length - opts.maxHistory));
  }
  const itemRaw = new Set<string>();
  for (const list of byUser.values()) for (const x of list) itemRaw.add(x.item);
  if (byUser.size === 0 || itemRaw.size === 0) {
    throw new RecdistillError(
      'E_EMPTY',
      `no interactions left in ${source || name} after filtering (${raw.interactions.length} read; min-rating ${opts.minRating}, k-core ${opts.kCore}); loosen the filters.`,
    );
  }
  const itemIds = [...itemRaw].sort(compareRawIds);
  const dense = new Map<string, number>(itemIds.map((r, i) => [r, i + 1]));
  const items: ItemInfo[] = [{ id: 0, rawId: '', title: '<pad>', genres: [] }];
  for (const r of itemIds) {
    const t = raw.items.get(r);
    const info: ItemInfo = { id: dense.get(r)!, rawId: r, title: t?.title || r, year: t?.year, genres: t?.genres ?? [] };
    if (t?.extra && Object.keys(t.extra).length) info.extra = t.extra;
    items.push(info);
  }
  const users: UserSequence[] = [...byUser.keys()].sort(compareRawIds).map((u) => ({
    rawId: u,
    items: Int32Array.from(byUser.get(u)!, (x) => dense.get(x.item)!),
  }));
  const options = { minRating: opts.minRating, kCore: opts.kCore, maxHistory: opts.maxHistory, onBadRow: opts.onBadRow, ...(format ? { format } : {}) };
  // onBadRow is left out: a run that succeeds with 'error' read no bad row, so 'skip' gives the same data.
  const fingerprint = sha256(stableStringify({ name, rawHash: raw.rawHash, options: { ...options, onBadRow: undefined } }));
  return { name, fingerprint, options, items, users, stats: computeStats(users, items.length - 1) };
}

/** Load and prepare a dataset. Pure in-memory; nothing is written. Needs a local (or already downloaded) source. */
export function prepareDataset(opts: PrepareOptions, log?: LogFn): PreparedDataset & { skippedRows: number; files: string[] } {
  const t0 = performance.now();
  const ctx: LoadContext = { onBadRow: opts.onBadRow, skipped: { count: 0 }, log };
  const spec = datasetSpec(opts.dataset);
  const input = loaderInput(opts, resolveLocalSource(spec, opts.source));
  const raw = spec.load(input, ctx);
  log?.(`${opts.dataset}: read ${raw.interactions.length} interactions from ${raw.files.join(', ')} in ${((performance.now() - t0) / 1000).toFixed(1)}s${ctx.skipped.count ? ` (${ctx.skipped.count} bad rows skipped)` : ''}`);
  const rest = { minRating: opts.minRating, kCore: opts.kCore, maxHistory: opts.maxHistory, onBadRow: opts.onBadRow };
  const d = buildPrepared(opts.dataset, raw, rest, input.source, spec.fingerprintOptions?.(input));
  return { ...d, skippedRows: ctx.skipped.count, files: raw.files };
}
