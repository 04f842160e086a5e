import { compareRawIds } from './split.js';
import type { RawColumns, RawDataset, RawInteraction } from './types.js';

export interface ColumnsBuilder {
  push(user: string, item: string, time: number, rating?: number): void;
  readonly length: number;
  finish(): RawColumns;
}

/** Growable columns (capacity doubles); ids are interned into codes as rows arrive. */
export function columnsBuilder(capacity = 1024): ColumnsBuilder {
  const userCode = new Map<string, number>();
  const itemCode = new Map<string, number>();
  const userIds: string[] = [];
  const itemIds: string[] = [];
  let cap = Math.max(16, capacity);
  let user = new Int32Array(cap);
  let item = new Int32Array(cap);
  let time = new Float64Array(cap);
  let rating = new Float64Array(cap);
  let n = 0;
  const code = (m: Map<string, number>, ids: string[], s: string) => {
    let c = m.get(s);
    if (c === undefined) {
      c = ids.length;
      m.set(s, c);
      ids.push(s);
    }
    return c;
  };
  const grow = () => {
    cap *= 2;
    const u = new Int32Array(cap); u.set(user); user = u;
    const i = new Int32Array(cap); i.set(item); item = i;
    const t = new Float64Array(cap); t.set(time); time = t;
    const r = new Float64Array(cap); r.set(rating); rating = r;
  };
  return {
    push(u, i, t, r) {
      if (n === cap) grow();
      user[n] = code(userCode, userIds, u);
      item[n] = code(itemCode, itemIds, i);
      time[n] = t;
      rating[n] = r ?? NaN;
      n++;
    },
    get length() {
      return n;
    },
    finish() {
      return { userIds, itemIds, user: user.slice(0, n), item: item.slice(0, n), time: time.slice(0, n), rating: rating.slice(0, n), length: n };
    },
  };
}

/**
 * Rows whose (user, item, time) repeats an earlier row are dropped (the first is kept, file order
 * preserved). O(n): rows are grouped by user with a counting sort and only items a user has more than
 * once are compared by time.
 */
export function dropDuplicateRows(c: RawColumns): { columns: RawColumns; dropped: number } {
  const U = c.userIds.length;
  const start = new Int32Array(U + 1);
  for (let i = 0; i < c.length; i++) start[c.user[i]! + 1] = start[c.user[i]! + 1]! + 1;
  for (let u = 0; u < U; u++) start[u + 1] = start[u + 1]! + start[u]!;
  const rows = new Int32Array(c.length);
  const fill = start.slice(0, U);
  for (let i = 0; i < c.length; i++) {
    const u = c.user[i]!;
    rows[fill[u]!] = i;
    fill[u] = fill[u]! + 1;
  }
  const seenBy = new Int32Array(c.itemIds.length).fill(-1); // item -> last user that had it
  const firstRow = new Int32Array(c.itemIds.length); // item -> that user's first row with it
  let drop: Uint8Array | undefined;
  let dropped = 0;
  for (let u = 0; u < U; u++) {
    let times: Map<number, Set<number>> | undefined; // item -> times seen, only for repeated items
    for (let k = start[u]!; k < start[u + 1]!; k++) {
      const r = rows[k]!;
      const it = c.item[r]!;
      if (seenBy[it] !== u) {
        seenBy[it] = u;
        firstRow[it] = r;
        continue;
      }
      times ??= new Map();
      let ts = times.get(it);
      if (!ts) times.set(it, (ts = new Set([c.time[firstRow[it]!]!])));
      const t = c.time[r]!;
      if (ts.has(t)) {
        drop ??= new Uint8Array(c.length);
        drop[r] = 1;
        dropped++;
      } else ts.add(t);
    }
  }
  if (!drop) return { columns: c, dropped: 0 };
  const keep = (_: number, i: number) => drop![i] === 0;
  return {
    columns: { userIds: c.userIds, itemIds: c.itemIds, user: c.user.filter(keep), item: c.item.filter(keep), time: c.time.filter(keep), rating: c.rating.filter(keep), length: c.length - dropped },
    dropped,
  };
}

/** Object rows -> columns, in `order` (file order). */
function columnsFromInteractions(xs: RawInteraction[]): RawColumns {
  const sorted = xs.every((x, i) => i === 0 || xs[i - 1]!.order <= x.order) ? xs : [...xs].sort((a, b) => a.order - b.order);
  const b = columnsBuilder(sorted.length);
  for (const x of sorted) b.push(x.user, x.item, x.time, x.rating);
  return b.finish();
}

/** The raw data's columns, whichever form the loader produced. */
export function rawColumns(raw: RawDataset): RawColumns {
  return raw.columns ?? columnsFromInteractions(raw.interactions);
}

/** Rows with rating >= min (rows without a rating are kept). mask[i] = 1 keeps row i. */
export function ratingMask(c: RawColumns, minRating: number): Uint8Array {
  const mask = new Uint8Array(c.length).fill(1);
  if (minRating > 0) for (let i = 0; i < c.length; i++) if (c.rating[i]! < minRating) mask[i] = 0;
  return mask;
}

/** Iterated k-core in place on `mask`: drop rows whose user or item has < k kept rows, until stable. */
export function kCoreMask(c: RawColumns, mask: Uint8Array, k: number): number {
  let rounds = 0;
  if (k <= 1) return rounds;
  const uc = new Int32Array(c.userIds.length);
  const ic = new Int32Array(c.itemIds.length);
  for (;;) {
    uc.fill(0);
    ic.fill(0);
    for (let i = 0; i < c.length; i++) {
      if (!mask[i]) continue;
      const u = c.user[i]!;
      const it = c.item[i]!;
      uc[u] = uc[u]! + 1;
      ic[it] = ic[it]! + 1;
    }
    let dropped = 0;
    for (let i = 0; i < c.length; i++) {
      if (mask[i] && (uc[c.user[i]!]! < k || ic[c.item[i]!]! < k)) {
        mask[i] = 0;
        dropped++;
      }
    }
    if (dropped === 0) return rounds;
    rounds++;
  }
}

export interface Grouped {
  /** Raw user ids in compareRawIds order (users with at least one kept row). */
  userIds: string[];
  /** Per user, item codes in time order (stable: file order on ties), truncated to maxHistory. */
  sequences: Int32Array[];
}

/**
 * Kept rows grouped by user (counting sort keeps file order), each sorted by time; same-time rows stay in file
 * order (tieOrder 'file') or go by raw item id (tieOrder 'item'), then file order.
 */
export function groupColumns(c: RawColumns, mask: Uint8Array, maxHistory: number, tieOrder: 'file' | 'item' = 'file'): Grouped {
  const U = c.userIds.length;
  const count = new Int32Array(U + 1);
  for (let i = 0; i < c.length; i++) {
    if (!mask[i]) continue;
    const u = c.user[i]! + 1;
    count[u] = count[u]! + 1;
  }
  for (let u = 0; u < U; u++) count[u + 1] = count[u + 1]! + count[u]!;
  const rows = new Int32Array(count[U]!); // [kept] row indices grouped by user, file order inside
  const fill = count.slice(0, U);
  for (let i = 0; i < c.length; i++) {
    if (!mask[i]) continue;
    const u = c.user[i]!;
    rows[fill[u]!] = i;
    fill[u] = fill[u]! + 1;
  }
  const codes: number[] = [];
  for (let u = 0; u < U; u++) if (count[u + 1]! > count[u]!) codes.push(u);
  codes.sort((a, b) => compareRawIds(c.userIds[a]!, c.userIds[b]!));
  const sequences = codes.map((u) => {
    const seg = rows.subarray(count[u]!, count[u + 1]!);
    seg.sort(tieOrder === 'item'
      ? (a, b) => c.time[a]! - c.time[b]! || compareRawIds(c.itemIds[c.item[a]!]!, c.itemIds[c.item[b]!]!) || a - b
      : (a, b) => c.time[a]! - c.time[b]! || a - b);
    const kept = maxHistory > 0 && seg.length > maxHistory ? seg.subarray(seg.length - maxHistory) : seg;
    return Int32Array.from(kept, (r) => c.item[r]!);
  });
  return { userIds: codes.map((u) => c.userIds[u]!), sequences };
}
