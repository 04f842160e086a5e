import type { PreparedDataset } from '../../data/types.js';
import type { Rng } from '../../util/rng.js';

/**
 * EMKD's inputs besides the batch itself: masked views of the input sequences and the items' attribute classes.
 */

export interface MaskedView {
  /** [B * L] row-major input ids with the masked slots replaced by `maskId` (padding untouched). */
  items: Int32Array;
  /** Ascending indices into [B * L] of the masked slots. */
  slots: Int32Array;
  /** The original item id at each masked slot (the L1 targets). */
  originals: Int32Array;
}

/**
 * A masked view of a left-padded batch: in each row with n > 0 non-padding items, exactly
 * max(1, round(ratio * n)) of them (never more than n), drawn uniformly without replacement from `rng`, become
 * `maskId`. Padding (id 0) is never masked and never counted. The draw depends only on the batch and `rng`
 * (the caller seeds it from the run seed and the step), so a recomputed or resumed step masks the same slots.
 */
export function maskView(inputs: Int32Array, B: number, L: number, ratio: number, rng: Rng, maskId: number): MaskedView {
  if (inputs.length !== B * L) throw new Error(`maskView: ${inputs.length} ids for a [${B}, ${L}] batch`);
  const items = Int32Array.from(inputs);
  const slots: number[] = [];
  for (let b = 0; b < B; b++) {
    const real: number[] = [];
    for (let l = 0; l < L; l++) if (inputs[b * L + l] !== 0) real.push(b * L + l);
    const n = real.length;
    if (n === 0) continue;
    const m = Math.min(n, Math.max(1, Math.round(ratio * n)));
    for (let i = 0; i < m; i++) {
      // partial Fisher-Yates: real[0..m) is a uniform m-subset
      const j = i + rng.int(n - i);
      const t = real[i]!;
      real[i] = real[j]!;
      real[j] = t;
    }
    for (const s of real.slice(0, m)) slots.push(s);
  }
  slots.sort((a, b) => a - b);
  const originals = Int32Array.from(slots, (s) => inputs[s]!);
  for (const s of slots) items[s] = maskId;
  return { items, slots: Int32Array.from(slots), originals };
}

export interface AttributeTable {
  /** Class names, sorted (genre / category strings). */
  names: string[];
  /**
   * [N + 1, A] row-major target distribution of each item: uniform over the item's classes (an item with g
   * genres puts 1/g on each), all zero for an item without any (and for padding).
   */
  targets: Float32Array;
  /** [N + 1]: 1 when the item has at least one class. */
  has: Uint8Array;
}

/** The attribute classes of the dataset's items (ItemInfo.genres), or undefined when no item has any. */
export function attributeTable(ds: PreparedDataset): AttributeTable | undefined {
  const set = new Set<string>();
  for (let i = 1; i < ds.items.length; i++) for (const g of ds.items[i]!.genres) set.add(g);
  if (set.size === 0) return undefined;
  const names = [...set].sort();
  const index = new Map(names.map((n, i) => [n, i]));
  const A = names.length;
  const targets = new Float32Array(ds.items.length * A);
  const has = new Uint8Array(ds.items.length);
  for (let i = 1; i < ds.items.length; i++) {
    const gs = [...new Set(ds.items[i]!.genres)];
    if (gs.length === 0) continue;
    has[i] = 1;
    for (const g of gs) targets[i * A + index.get(g)!] = 1 / gs.length;
  }
  return { names, targets, has };
}
