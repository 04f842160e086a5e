import type { PreparedDataset } from '../data/types.js';
import { splitUser } from '../data/split.js';
import { RecdistillError } from '../errors.js';
import { makeRng, mixSeed } from '../util/rng.js';
import { rankAmong, rankOf, summarizeRanks } from './metrics.js';

/**
 * Leave-one-out ranking evaluation shared by every stage (student, teacher soft-label head, bench).
 * - split 'valid': the scorer sees the training items (splitUser(..).train) and must rank the validation item;
 *   split 'test': it sees train + the validation item and must rank the test item.
 * - protocol 'full' ranks the target among all items 1..N, minus the user's history when excludeHistory
 *   (the target itself is never excluded, even if it also occurs in the history);
 *   'sampled100' ranks it against 100 seeded random items the user never interacted with (papers' protocol).
 * - Ties are pessimistic (see metrics.ts): equal scores count as ranked above the target.
 * Users are scored `batchSize` at a time so memory stays bounded: [batchSize, N + 1] floats per call.
 */
export type ScoreBatch = (users: number[], split: 'valid' | 'test') => Promise<Float32Array>; // [users.length, numItems+1], column 0 ignored

export interface RankingOptions {
  split: 'valid' | 'test';
  ks?: number[];
  excludeHistory?: boolean;
  batchSize?: number;
  protocol?: 'full' | 'sampled100';
  seed?: number;
  /** Restrict to these dense user ids (default: every user with a target). */
  users?: number[];
}

export type RankingMetrics = Record<string, number>; // keys 'hr@5','ndcg@5','hr@10','ndcg@10','hr@20','ndcg@20','mrr','users'

export const DEFAULT_KS = [5, 10, 20];

/** The items a scorer may use for `split` (train for valid; train + valid item for test). */
export function historyFor(ds: PreparedDataset, user: number, split: 'valid' | 'test'): Int32Array {
  const seq = ds.users[user];
  if (!seq) throw new RecdistillError('E_INPUT', `user index ${user} is out of range (dataset has ${ds.users.length} users).`);
  const n = seq.items.length;
  if (n < 3) return seq.items;
  return seq.items.subarray(0, split === 'valid' ? n - 2 : n - 1);
}

/** The target for `split`, or 0 when the user has fewer than 3 items. */
function targetFor(ds: PreparedDataset, user: number, split: 'valid' | 'test'): number {
  const s = splitUser(ds.users[user]!);
  return split === 'valid' ? s.valid : s.test;
}

/** Dense ids of users that have a target (>= 3 items). */
export function evaluableUsers(ds: PreparedDataset): number[] {
  const out: number[] = [];
  for (let u = 0; u < ds.users.length; u++) if (ds.users[u]!.items.length >= 3) out.push(u);
  return out;
}

/** The evaluable users, or E_EMPTY saying why there are none (leave-one-out needs 3 interactions a user). */
export function requireEvaluableUsers(ds: PreparedDataset, purpose: string): number[] {
  const users = evaluableUsers(ds);
  if (users.length === 0) {
    throw new RecdistillError('E_EMPTY', `${ds.name}: no user has a validation item (every one of the ${ds.users.length} users has at most 2 interactions; leave-one-out needs 3: training, validation, test), so there is nothing to ${purpose}. Use more data or lower the dataset's minimum-interaction filter.`);
  }
  return users;
}

/** 100 (or fewer, if the catalogue is small) distinct items the user never interacted with, seeded per user. */
export function sampleNegatives(ds: PreparedDataset, user: number, count: number, seed: number, seen: Uint8Array): Int32Array {
  const N = ds.items.length - 1;
  const items = ds.users[user]!.items;
  for (let i = 0; i < items.length; i++) seen[items[i]!] = 1;
  let unseen = 0;
  for (let j = 1; j <= N; j++) if (!seen[j]) unseen++;
  const want = Math.min(count, unseen);
  const out = new Int32Array(want);
  const rng = makeRng(mixSeed(seed, user));
  const taken = new Set<number>();
  let k = 0;
  if (want > unseen / 2) {
    // Dense case: list the unseen items and take a seeded partial shuffle.
    const pool: number[] = [];
    for (let j = 1; j <= N; j++) if (!seen[j]) pool.push(j);
    for (let i = 0; i < want; i++) {
      const r = i + rng.int(pool.length - i);
      const t = pool[i]!;
      pool[i] = pool[r]!;
      pool[r] = t;
      out[k++] = pool[i]!;
    }
  } else {
    while (k < want) {
      const j = 1 + rng.int(N);
      if (seen[j] || taken.has(j)) continue;
      taken.add(j);
      out[k++] = j;
    }
  }
  for (let i = 0; i < items.length; i++) seen[items[i]!] = 0;
  return out;
}

export async function evaluateRanking(ds: PreparedDataset, score: ScoreBatch, opts: RankingOptions): Promise<RankingMetrics> {
  const { ranks } = await rankUsers(ds, score, opts);
  return summarizeRanks(ranks, opts.ks ?? DEFAULT_KS);
}

/** Per-user pessimistic ranks (for significance tests and per-user analysis). */
export async function rankUsers(ds: PreparedDataset, score: ScoreBatch, opts: RankingOptions): Promise<{ users: number[]; ranks: Int32Array }> {
  const split = opts.split;
  if (split !== 'valid' && split !== 'test') throw new RecdistillError('E_USAGE', `split must be 'valid' or 'test', got ${JSON.stringify(split)}.`);
  const protocol = opts.protocol ?? 'full';
  const exclude = opts.excludeHistory ?? true;
  const batchSize = Math.max(1, opts.batchSize ?? 256);
  const seed = opts.seed ?? 42;
  const N = ds.items.length - 1;
  const users = (opts.users ?? evaluableUsers(ds)).filter((u) => targetFor(ds, u, split) > 0);
  const ranks = new Int32Array(users.length);
  const mask = new Uint8Array(N + 1);
  for (let start = 0; start < users.length; start += batchSize) {
    const batch = users.slice(start, start + batchSize);
    const scores = await score(batch, split);
    if (scores.length !== batch.length * (N + 1)) {
      throw new RecdistillError('E_INTERNAL', `scorer returned ${scores.length} scores for ${batch.length} users; expected ${batch.length} x ${N + 1} (numItems + 1).`);
    }
    for (let b = 0; b < batch.length; b++) {
      const u = batch[b]!;
      const target = targetFor(ds, u, split);
      const off = b * (N + 1);
      if (protocol === 'sampled100') {
        const negs = sampleNegatives(ds, u, 100, seed, mask);
        ranks[start + b] = rankAmong(scores, off, target, negs);
        continue;
      }
      const hist = historyFor(ds, u, split);
      if (exclude) for (let i = 0; i < hist.length; i++) mask[hist[i]!] = 1;
      ranks[start + b] = rankOf(scores, off, N, target, exclude ? mask : undefined);
      if (exclude) for (let i = 0; i < hist.length; i++) mask[hist[i]!] = 0;
    }
  }
  return { users, ranks };
}

/**
 * Popularity baseline under the same protocol: an item's score is how often it occurs in the histories
 * visible for the split (training items for 'valid'; training + validation items for 'test'), so no target leaks.
 */
export function popularityScorer(ds: PreparedDataset): ScoreBatch {
  const N = ds.items.length - 1;
  const counts = { valid: new Float32Array(N + 1), test: new Float32Array(N + 1) };
  for (let u = 0; u < ds.users.length; u++) {
    for (const split of ['valid', 'test'] as const) {
      const h = historyFor(ds, u, split);
      for (let i = 0; i < h.length; i++) counts[split][h[i]!]! += 1;
    }
  }
  return async (users, split) => {
    const out = new Float32Array(users.length * (N + 1));
    for (let b = 0; b < users.length; b++) out.set(counts[split], b * (N + 1));
    return out;
  };
}
