import type { PreparedDataset } from '../../data/types.js';
import { splitUser } from '../../data/split.js';
import { shuffle, type Rng } from '../../util/rng.js';

/**
 * Training windows and batches. A user's training items t[0..n-1] give n-1 (input, next-item) steps:
 * input t[i] predicts t[i + 1]. A window is up to maxLen consecutive steps; 'last' keeps the most recent
 * window per user (SASRec), 'all' cuts the whole history into maxLen chunks from the end (every step is
 * trained, attention cost stays O(n * maxLen)); 'prefixes' makes one window per step, ending at that step and
 * trained at its last slot only (BSARec's, DuoRec's and ICLRec's training: every prefix of the history is one
 * sample whose most recent item sits in the last slot, as at serving time; about 8x the encoder work of 'last'
 * on Amazon Beauty, the same number of trained steps).
 */
export type WindowMode = 'last' | 'all' | 'prefixes';
export const WINDOW_MODES: readonly WindowMode[] = ['last', 'all', 'prefixes'];

export interface Window {
  user: number;
  /** Index into the user's full item sequence of the first input item. */
  start: number;
  /** Number of steps (<= maxLen). */
  length: number;
  /** Steps at the end of the window that carry a target (the rest are context only); absent = all of them. */
  trained?: number;
}

export function buildWindows(ds: PreparedDataset, maxLen: number, mode: WindowMode): Window[] {
  const out: Window[] = [];
  for (let u = 0; u < ds.users.length; u++) {
    const steps = splitUser(ds.users[u]!).train.length - 1;
    if (steps < 1) continue;
    if (mode === 'prefixes') {
      for (let end = 1; end <= steps; end++) {
        const start = Math.max(0, end - maxLen);
        out.push({ user: u, start, length: end - start, trained: 1 });
      }
      continue;
    }
    let end = steps; // exclusive end of the step range [start, end)
    do {
      const start = Math.max(0, end - maxLen);
      out.push({ user: u, start, length: end - start });
      end = start;
    } while (mode === 'all' && end > 0);
  }
  return out;
}

/** Trained steps (positions whose next item is a target) in a batch of windows. */
export const windowSteps = (b: Window[]) => b.reduce((s, w) => s + (w.trained ?? w.length), 0);

/** One padded batch: row-major [B, L], left-padded with 0. */
export interface Batch {
  B: number;
  L: number;
  users: Int32Array; // [B]
  inputs: Int32Array; // [B * L]
  targets: Int32Array; // [B * L], 0 at padding and at context-only steps
  positions: Int32Array; // [B * L], index in the user's full sequence of the input item; -1 at padding
}

export function makeBatch(ds: PreparedDataset, windows: Window[]): Batch {
  const B = windows.length;
  const L = windows.reduce((m, w) => Math.max(m, w.length), 1);
  const users = new Int32Array(B);
  const inputs = new Int32Array(B * L);
  const targets = new Int32Array(B * L);
  const positions = new Int32Array(B * L).fill(-1);
  windows.forEach((w, b) => {
    users[b] = w.user;
    const items = ds.users[w.user]!.items;
    const pad = L - w.length;
    const firstTrained = w.length - (w.trained ?? w.length);
    for (let j = 0; j < w.length; j++) {
      const k = b * L + pad + j;
      inputs[k] = items[w.start + j]!;
      if (j >= firstTrained) targets[k] = items[w.start + j + 1]!;
      positions[k] = w.start + j;
    }
  });
  return { B, L, users, inputs, targets, positions };
}

/**
 * Batches for one epoch. 'length': shuffle, then sort by length inside groups of 16 batches (so each batch
 * pads to a similar length and attention cost follows the real lengths), then shuffle the batch order.
 * 'random': shuffle and cut, so a batch is a random mix of lengths. The loss is a mean over a batch's
 * steps, so the two weight steps differently: with 'length' a batch of short windows weighs as much as a
 * batch of long ones; with 'random' every step weighs about the same.
 */
export function epochBatches(windows: Window[], batchSize: number, rng: Rng, batching: 'length' | 'random'): Window[][] {
  const order = windows.slice();
  shuffle(order, rng);
  if (batching === 'random') {
    const batches: Window[][] = [];
    for (let i = 0; i < order.length; i += batchSize) batches.push(order.slice(i, i + batchSize));
    return batches;
  }
  const group = batchSize * 16;
  const batches: Window[][] = [];
  for (let g = 0; g < order.length; g += group) {
    const chunk = order.slice(g, g + group).sort((a, b) => a.length - b.length);
    for (let i = 0; i < chunk.length; i += batchSize) batches.push(chunk.slice(i, i + batchSize));
  }
  shuffle(batches, rng);
  return batches;
}

/** Left-padded [B, L] input rows for inference over histories (each truncated to its last maxLen items). */
export function padHistories(histories: Int32Array[], maxLen: number): { items: Int32Array; B: number; L: number } {
  const B = histories.length;
  const L = Math.max(1, Math.min(maxLen, histories.reduce((m, h) => Math.max(m, h.length), 0)));
  const items = new Int32Array(B * L);
  histories.forEach((h, b) => {
    const n = Math.min(L, h.length);
    items.set(h.subarray(h.length - n), b * L + (L - n));
  });
  return { items, B, L };
}
