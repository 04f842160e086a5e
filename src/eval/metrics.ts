/**
 * Pure ranking metrics. A "rank" is 0-based: 0 means the target is the top-scored candidate.
 *
 * Tie rule (pessimistic): rank = #{other candidates j : score_j >= score_target}. Every item that ties
 * with the target is counted as ranked above it, so a model that scores everything equally gets the
 * worst possible rank instead of a lucky one; a NaN target score also gets the worst rank, and NaN
 * scores of other items never beat the target.
 */

/** Pessimistic 0-based rank of `target` among items 1..n of one score row (row = scores[off .. off+n]). */
export function rankOf(scores: ArrayLike<number>, offset: number, numItems: number, target: number, excluded?: Uint8Array): number {
  const t = scores[offset + target]!;
  let rank = 0;
  if (Number.isNaN(t)) {
    for (let j = 1; j <= numItems; j++) if (j !== target && !(excluded && excluded[j])) rank++;
    return rank;
  }
  for (let j = 1; j <= numItems; j++) {
    if (j === target) continue;
    if (excluded && excluded[j]) continue;
    if (scores[offset + j]! >= t) rank++;
  }
  return rank;
}

/** Pessimistic 0-based rank of the target among an explicit candidate list (the sampled protocol). */
export function rankAmong(scores: ArrayLike<number>, offset: number, target: number, candidates: ArrayLike<number>): number {
  const t = scores[offset + target]!;
  let rank = 0;
  for (let i = 0; i < candidates.length; i++) {
    const j = candidates[i]!;
    if (j === target) continue;
    if (Number.isNaN(t) || scores[offset + j]! >= t) rank++;
  }
  return rank;
}

/** HR@K: 1 if the target is in the top K. */
export function hitAt(rank: number, k: number): number {
  return rank < k ? 1 : 0;
}

/** NDCG@K with one relevant item: 1 / log2(rank + 2) inside the top K, else 0 (ideal DCG is 1). */
export function ndcgAt(rank: number, k: number): number {
  return rank < k ? 1 / Math.log2(rank + 2) : 0;
}

/** Reciprocal rank without cut-off. */
export function reciprocalRank(rank: number): number {
  return 1 / (rank + 1);
}

/** Means over users: 'hr@K', 'ndcg@K' for each K, 'mrr', and 'users' (the count). */
export function summarizeRanks(ranks: ArrayLike<number>, ks: number[]): Record<string, number> {
  const out: Record<string, number> = {};
  const n = ranks.length;
  for (const k of ks) {
    let hr = 0;
    let nd = 0;
    for (let i = 0; i < n; i++) {
      hr += hitAt(ranks[i]!, k);
      nd += ndcgAt(ranks[i]!, k);
    }
    out[`hr@${k}`] = n ? hr / n : 0;
    out[`ndcg@${k}`] = n ? nd / n : 0;
  }
  let rr = 0;
  for (let i = 0; i < n; i++) rr += reciprocalRank(ranks[i]!);
  out.mrr = n ? rr / n : 0;
  out.users = n;
  return out;
}
