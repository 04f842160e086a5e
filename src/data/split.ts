import type { RawInteraction, SplitView, UserSequence } from './types.js';

/**
 * Group interactions by user and order each user's items by time. The sort is stable: equal
 * timestamps keep file order (MovieLens 100K has many ties, so this decides the test set).
 */
export function groupByUser(interactions: RawInteraction[]): Map<string, RawInteraction[]> {
  const byUser = new Map<string, RawInteraction[]>();
  for (const it of interactions) {
    let list = byUser.get(it.user);
    if (!list) byUser.set(it.user, (list = []));
    list.push(it);
  }
  for (const list of byUser.values()) list.sort((a, b) => a.time - b.time || a.order - b.order);
  return byUser;
}

/**
 * Leave-one-out: last = test, second-to-last = validation, the rest = training.
 * Users with fewer than 3 items keep everything for training and have no targets (0).
 */
export function splitUser(seq: UserSequence | Int32Array): SplitView {
  const items = seq instanceof Int32Array ? seq : seq.items;
  const n = items.length;
  if (n < 3) return { train: items, valid: 0, test: 0 };
  return { train: items.subarray(0, n - 2), valid: items[n - 2]!, test: items[n - 1]! };
}

/** Compare raw ids numerically when both are integers, else as strings (stable, deterministic order). */
export function compareRawIds(a: string, b: string): number {
  const na = /^-?\d+$/.test(a) ? Number(a) : NaN;
  const nb = /^-?\d+$/.test(b) ? Number(b) : NaN;
  if (!Number.isNaN(na) && !Number.isNaN(nb)) return na - nb;
  return a < b ? -1 : a > b ? 1 : 0;
}
