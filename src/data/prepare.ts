import { RecdistillError } from '../errors.js';
import { sha256, stableStringify } from '../util/hash.js';
import { loadMl100k, type BadRowPolicy, type LoadContext } from './formats/movielens.js';
import { compareRawIds, groupByUser } from './split.js';
import type { DatasetStats, ItemInfo, PreparedDataset, RawDataset, RawInteraction, UserSequence } from './types.js';

export interface PrepareOptions {
  /** Dataset name (selects the loader). */
  dataset: string;
  /** Directory or file with the raw data. */
  source: string;
  /** Keep interactions with rating >= minRating (0 keeps all). */
  minRating: number;
  /** Iterated k-core: drop users and items with fewer than k interactions until stable (0 = off). */
  kCore: number;
  /** Keep at most this many most recent items per user (0 = all). */
  maxHistory: number;
  /** What to do with a malformed row. */
  onBadRow: BadRowPolicy;
}

export const PREPARE_DEFAULTS: Omit<PrepareOptions, 'dataset' | 'source'> = {
  minRating: 0,
  kCore: 0,
  maxHistory: 0,
  onBadRow: 'error',
};

export function loadRaw(opts: PrepareOptions, ctx: LoadContext): RawDataset {
  switch (opts.dataset) {
    case 'ml-100k':
      return loadMl100k(opts.source, ctx);
    default:
      throw new RecdistillError('E_USAGE', `unknown dataset "${opts.dataset}". Valid: ml-100k.`);
  }
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
export function buildPrepared(name: string, raw: RawDataset, opts: Omit<PrepareOptions, 'dataset' | 'source'>, source: string): PreparedDataset {
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
    throw new RecdistillError('E_EMPTY', `no interactions left in ${source} after filtering (min-rating ${opts.minRating}, k-core ${opts.kCore}); loosen the filters.`);
  }
  const itemIds = [...itemRaw].sort(compareRawIds);
  const dense = new Map<string, number>(itemIds.map((r, i) => [r, i + 1]));
  const items: ItemInfo[] = [{ id: 0, rawId: '', title: '<pad>', genres: [] }];
  for (const r of itemIds) {
    const t = raw.items.get(r);
    items.push({ id: dense.get(r)!, rawId: r, title: t?.title || r, year: t?.year, genres: t?.genres ?? [] });
  }
  const users: UserSequence[] = [...byUser.keys()].sort(compareRawIds).map((u) => ({
    rawId: u,
    items: Int32Array.from(byUser.get(u)!, (x) => dense.get(x.item)!),
  }));
  const options = { ...opts };
  const fingerprint = sha256(stableStringify({ name, rawHash: raw.rawHash, options: { ...options, onBadRow: undefined } }));
  return { name, fingerprint, options, items, users, stats: computeStats(users, items.length - 1) };
}

/** Load and prepare a dataset. Pure in-memory; nothing is written. */
export function prepareDataset(opts: PrepareOptions): PreparedDataset & { skippedRows: number } {
  const ctx: LoadContext = { onBadRow: opts.onBadRow, skipped: { count: 0 } };
  const raw = loadRaw(opts, ctx);
  const { dataset, source, ...rest } = opts;
  return { ...buildPrepared(dataset, raw, rest, source), skippedRows: ctx.skipped.count };
}
