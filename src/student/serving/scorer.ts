import * as tf from '@tensorflow/tfjs-core';
import type { PreparedDataset } from '../../data/types.js';
import { historyFor, type ScoreBatch } from '../../eval/evaluate.js';
import { padHistories } from '../model/batches.js';
import { encodeLast, type Sasrec } from '../model/model.js';

/**
 * Scores of every item after each history: hidden state at the last slot (histories are left-padded, so the
 * last slot is the most recent item) times the item embeddings. histories -> [B, N + 1].
 */
export function scoreHistories(model: Sasrec, histories: Int32Array[]): Float32Array {
  const { items, B, L } = padHistories(histories, model.config.maxLen);
  const scores = tf.tidy(() => {
    const last = encodeLast(model, items, B, L); // [B, D]
    return tf.matMul(last, tf.transpose(model.itemEmb)); // [B, N + 1]
  });
  const data = scores.dataSync() as Float32Array;
  scores.dispose(); // tidy hands the result out: without this every evaluation batch leaked [B, N + 1]
  return data;
}

/** The evaluation contract (src/eval/evaluate.ts) for a student model. */
export function studentScorer(model: Sasrec, ds: PreparedDataset): ScoreBatch {
  return async (users, split) => scoreHistories(model, users.map((u) => historyFor(ds, u, split)));
}

/** Users sorted by history length, so evaluation batches pad little. */
export function usersByLength(ds: PreparedDataset, users: number[]): number[] {
  return users.slice().sort((a, b) => ds.users[a]!.items.length - ds.users[b]!.items.length);
}
