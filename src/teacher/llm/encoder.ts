/**
 * Per-prefix readout. One causal forward pass over a textified history gives, at the last token of
 * item t's text, a state that depends only on items 0..t: the teacher vector for the prefix ending at t.
 * Long histories are split into passes by planWindows (see src/prompt/window.ts).
 */
import type { PreparedDataset } from '../../data/types.js';
import type { HistoryStates } from '../types.js';
import { planWindows, type PromptCodec, type TruncateMode, type Window } from '../../prompt/index.js';
import { RecdistillError } from '../../errors.js';
import type { Runtime } from './runtime.js';

export interface ReadoutParts {
  rt: Runtime;
  codec: PromptCodec;
  maxPromptTokens: number;
  truncate: TruncateMode;
  numItems: number;
}

/**
 * Why the budget cannot hold the fixed prompt plus the widest item line of `ds` (undefined: it can). Checked when a
 * teacher loads and by --count-only, before anything is written.
 */
export function budgetError(codec: PromptCodec, maxPromptTokens: number, ds: Pick<PreparedDataset, 'items' | 'users'>): string | undefined {
  const longest = ds.users.reduce((m, u) => Math.max(m, u.items.length), 1);
  const widest = ds.items.slice(1).reduce((m, it) => Math.max(m, codec.lineTokens(it.id, longest)), 0);
  const fixed = codec.head.length + codec.tail.length;
  const room = maxPromptTokens - fixed;
  if (widest <= room) return undefined;
  return `--max-prompt-tokens ${maxPromptTokens} leaves ${room} tokens after the prompt's ${fixed} fixed tokens, but the widest item line needs ${widest}: raise --max-prompt-tokens to at least ${fixed + widest}.`;
}

/** The passes for one history: windows plus their token ids and item-end indices (no model needed). */
export function planHistory(p: Pick<ReadoutParts, 'codec' | 'maxPromptTokens' | 'truncate'>, items: Int32Array): { windows: Window[]; inputs: { ids: number[]; ends: number[] }[] } {
  if (!items.length) return { windows: [], inputs: [] };
  const budget = p.maxPromptTokens - p.codec.head.length - p.codec.tail.length;
  const lines = Array.from(items, (id) => p.codec.lineTokens(id, items.length));
  const widest = Math.max(...lines);
  if (widest > budget) {
    throw new RecdistillError(
      'E_USAGE',
      `max-prompt-tokens ${p.maxPromptTokens} leaves ${budget} tokens for the history after the prompt's ${p.codec.head.length + p.codec.tail.length} fixed tokens, but one item line needs ${widest}. Raise --max-prompt-tokens.`,
    );
  }
  const windows = planWindows(lines, budget, p.truncate);
  return { windows, inputs: windows.map((w) => p.codec.build(items, w)) };
}

export async function encodeHistory(p: ReadoutParts, items: Int32Array): Promise<HistoryStates> {
  const H = p.rt.hidden;
  const nL = p.rt.tapNames.length;
  for (const id of items) {
    if (!Number.isInteger(id) || id < 1 || id > p.numItems) throw new RecdistillError('E_INPUT', `encodeHistory: item id ${id} out of range 1..${p.numItems}.`);
  }
  const { windows, inputs } = planHistory(p, items);
  if (!windows.length) return { first: 0, count: 0, states: new Float32Array(0), tokens: 0 };
  const first = windows[0]!.assignFrom;
  const count = items.length - first;
  const states = new Float32Array(count * nL * H); // [count, layers, H]
  const outs = await Promise.all(inputs.map((inp) => p.rt.submit(inp.ids)));
  let tokens = 0;
  windows.forEach((w, k) => {
    const { ids, ends } = inputs[k]!;
    tokens += ids.length;
    const taps = outs[k]!; // per layer: [L, H]
    for (let t = w.assignFrom; t <= w.end; t++) {
      const at = ends[t - w.start]!;
      for (let l = 0; l < nL; l++) states.set(taps[l]!.subarray(at * H, (at + 1) * H), ((t - first) * nL + l) * H);
    }
  });
  return { first, count, states, tokens };
}

/**
 * Item text embeddings: each item's text alone through the model, mean over its tokens of the last
 * tapped layer (mean rather than last token: an item's text alone has no context to summarise into its
 * final token). Items are sorted by length and padded into batches. Row 0 stays zero.
 */
export async function embedItems(p: ReadoutParts, batchSize: number, onProgress?: (done: number, total: number) => void): Promise<Float32Array> {
  const H = p.rt.hidden;
  const last = p.rt.tapNames.length - 1;
  const out = new Float32Array((p.numItems + 1) * H);
  const toks = Array.from({ length: p.numItems }, (_, i) => ({ id: i + 1, ids: p.codec.itemOnlyTokens(i + 1) }));
  toks.sort((a, b) => a.ids.length - b.ids.length || a.id - b.id);
  let done = 0;
  const jobs: Promise<void>[] = [];
  for (let s = 0; s < toks.length; s += batchSize) {
    const group = toks.slice(s, s + batchSize);
    jobs.push(
      p.rt.forward(group.map((g) => (g.ids.length ? g.ids : p.codec.head.slice(-1)))).then(({ states, length }) => {
        const st = states[last]!; // [B, L, H]
        group.forEach((g, b) => {
          const n = Math.max(1, g.ids.length);
          const row = out.subarray(g.id * H, (g.id + 1) * H);
          for (let i = 0; i < n; i++) {
            const off = (b * length + i) * H;
            for (let h = 0; h < H; h++) row[h]! += st[off + h]! / n;
          }
        });
        done += group.length;
        onProgress?.(done, toks.length);
      }),
    );
  }
  await Promise.all(jobs);
  return out;
}

/**
 * Overhead check: the same passes as encodeHistory, as a plain sequential loop of session.run with
 * prebuilt feeds (no planning, batching, p-limit or copying). Compare its seconds with the pipeline's.
 */
export async function measurePlainLoop(p: ReadoutParts, histories: Int32Array[]): Promise<{ seconds: number; runs: number; tokens: number }> {
  const feeds = histories.flatMap((h) => planHistory(p, h).inputs.map((inp) => ({ f: p.rt.feeds([inp.ids]), n: inp.ids.length })));
  let tokens = 0;
  const t0 = performance.now();
  for (const { f, n } of feeds) {
    await p.rt.session.run(f, p.rt.tapNames);
    tokens += n;
  }
  return { seconds: (performance.now() - t0) / 1000, runs: feeds.length, tokens };
}

/**
 * Pipeline overhead, measured fairly on a busy machine: for each history, the plain session.run loop
 * over its prebuilt feeds and then encodeHistory on it, alternating, so load changes hit both alike.
 */
export async function measureOverhead(p: ReadoutParts, histories: Int32Array[]): Promise<{ plainSeconds: number; pipelineSeconds: number; overhead: number }> {
  let plain = 0;
  let pipe = 0;
  for (const h of histories) {
    const feeds = planHistory(p, h).inputs.map((inp) => p.rt.feeds([inp.ids]));
    let t0 = performance.now();
    for (const f of feeds) await p.rt.session.run(f, p.rt.tapNames);
    plain += performance.now() - t0;
    t0 = performance.now();
    await encodeHistory(p, h);
    pipe += performance.now() - t0;
  }
  return { plainSeconds: plain / 1000, pipelineSeconds: pipe / 1000, overhead: plain > 0 ? pipe / plain - 1 : 0 };
}
