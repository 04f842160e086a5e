import type { CacheReader } from '../cache/reader.js';

/**
 * Teacher rows for one training batch, looked up by (user, position) from the cache reader. The reader keeps
 * a few decoded shards (LRU), so memory stays bounded whatever the cache size; a batch touches only the
 * shards of its users.
 */
export interface TeacherBatch {
  /** [M] indices into the flattened [B * L] slots that have a teacher row (and are not padding). */
  slots: Int32Array;
  /** Per requested tapped layer: [M, H] teacher states (standardised when stats are given). */
  hidden: Float32Array[];
  /** [M, K] top-K item ids and [M, K] probabilities; undefined when not requested. */
  topkIndex?: Int32Array;
  topkProb?: Float32Array;
}

export interface LookupOptions {
  /** Tapped-layer indices (into reader.layers) whose states are needed. */
  tapped: number[];
  /** First K of the cached top-K to return (0 = none). */
  k: number;
  /** Per-dimension mean/std [layers, H] to standardise with. */
  stats?: { mean: Float32Array; std: Float32Array };
}

/**
 * users: [B] dense user ids; positions: [B * L] index of the input item in the user's sequence (-1 = padding);
 * valid: optional [B * L] extra mask (e.g. target != 0). Slots whose (user, position) the cache does not hold
 * (positions before a prompt budget's first row) are skipped: every loss then sees only rows that exist.
 */
export function lookupTeacherBatch(reader: CacheReader, users: Int32Array, positions: Int32Array, o: LookupOptions, valid?: Uint8Array): TeacherBatch {
  const B = users.length;
  const L = positions.length / B;
  const H = reader.hiddenSize;
  const nl = reader.layers.length;
  const cachedK = reader.k;
  const slots: number[] = [];
  const rowRefs: { rows: ReturnType<CacheReader['rowsForUser']>; i: number }[] = [];
  for (let b = 0; b < B; b++) {
    let rows: ReturnType<CacheReader['rowsForUser']> | undefined;
    for (let l = 0; l < L; l++) {
      const s = b * L + l;
      const p = positions[s]!;
      if (p < 0 || (valid && !valid[s])) continue;
      rows ??= reader.rowsForUser(users[b]!);
      const i = reader.rowIndex(rows, p);
      if (i < 0) continue;
      if (o.k > 0 && !rows.topkIndex) continue;
      slots.push(s);
      rowRefs.push({ rows, i });
    }
  }
  const M = slots.length;
  const hidden = o.tapped.map(() => new Float32Array(M * H));
  const topkIndex = o.k > 0 ? new Int32Array(M * o.k) : undefined;
  const topkProb = o.k > 0 ? new Float32Array(M * o.k) : undefined;
  for (let m = 0; m < M; m++) {
    const { rows, i } = rowRefs[m]!;
    o.tapped.forEach((t, j) => {
      const src = rows.hidden.subarray((i * nl + t) * H, (i * nl + t + 1) * H);
      const dst = hidden[j]!.subarray(m * H, (m + 1) * H);
      if (!o.stats) dst.set(src);
      else {
        const mean = o.stats.mean.subarray(t * H, (t + 1) * H);
        const std = o.stats.std.subarray(t * H, (t + 1) * H);
        for (let d = 0; d < H; d++) dst[d] = (src[d]! - mean[d]!) / Math.max(std[d]!, 1e-6);
      }
    });
    if (topkIndex && topkProb) {
      topkIndex.set(rows.topkIndex!.subarray(i * cachedK, i * cachedK + o.k), m * o.k);
      topkProb.set(rows.topkProb!.subarray(i * cachedK, i * cachedK + o.k), m * o.k);
    }
  }
  return { slots: Int32Array.from(slots), hidden, topkIndex, topkProb };
}

/**
 * Per-dimension mean/std over every cached row, [layers, H] each, streamed user by user (two running sums in
 * float64; the reader's LRU bounds memory). Used when the cache has no stats file.
 */
export function computeStats(reader: CacheReader, users: number): { mean: Float32Array; std: Float32Array } {
  const n = reader.layers.length * reader.hiddenSize;
  const sum = new Float64Array(n);
  const sq = new Float64Array(n);
  let count = 0;
  for (let u = 0; u < users; u++) {
    const rows = reader.rowsForUser(u);
    const P = rows.positions.length;
    for (let r = 0; r < P; r++) {
      for (let j = 0; j < n; j++) {
        const v = rows.hidden[r * n + j]!;
        sum[j]! += v;
        sq[j]! += v * v;
      }
    }
    count += P;
  }
  const mean = new Float32Array(n);
  const std = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    const m = count ? sum[j]! / count : 0;
    mean[j] = m;
    std[j] = Math.sqrt(Math.max(0, (count ? sq[j]! / count : 0) - m * m));
  }
  return { mean, std };
}
