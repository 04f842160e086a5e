import type { SplitView, UserSequence } from './types.js';


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
