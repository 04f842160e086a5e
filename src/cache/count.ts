/**
 * `teacher:cache --count-only`: the prompt tokens pass 1 would encode, counted with the teacher's own tokenizer,
 * prompt template and budget, without loading the ONNX session or running a forward pass. The same planning as
 * the real run (planHistory over each history without its test item), so `tokens` equals the manifest's
 * `timings.tokens` for the same users. The cost model (docs/teacher-cost.md) is built from these figures.
 */
import type { PreparedDataset } from '../data/types.js';
import { RecdistillError } from '../errors.js';
import { percentile } from '../util/stats.js';
import { createPromptCodec, loadPromptTemplate, type PromptCodec, type TruncateMode } from '../prompt/index.js';
import { budgetError, planHistory } from '../teacher/llm/encoder.js';
import { loadTokenizer, readModelConfig, resolveDtype, resolveModelFiles } from '../teacher/llm/load.js';
import type { LogFn } from '../util/progress.js';
import { requireItemText } from './config.js';
import { sliceUsers } from './format.js';

export interface CountOptions {
  model: string;
  dtype: string;
  revision?: string;
  offline: boolean;
  prompt?: string;
  maxPromptTokens: number;
  truncate: TruncateMode;
  usersPerShard: number;
  slice?: { index: number; count: number };
  log: LogFn;
}

/** Mean, median, p90 (numpy's linear interpolation) and max of a list. */
export interface Spread {
  mean: number;
  median: number;
  p90: number;
  max: number;
}

export interface PromptTokenCount {
  countOnly: true;
  model: string;
  /** Tokens in the tokenizer (vocabulary + added tokens). */
  tokenizerSize: number;
  chatTemplate: boolean;
  prompt: string;
  maxPromptTokens: number;
  truncate: TruncateMode;
  /** Users of the dataset (or of the slice) and those with at least one encoded position. */
  users: number;
  encodedUsers: number;
  /** Positions that get a state: every item of each history but the test item. */
  encodedItems: number;
  /** Forward passes (windows) and prompt tokens over them: the manifest's timings.tokens. */
  passes: number;
  tokens: number;
  /** Tokens of the prompt before the history (chat template start + instruction), sent in every pass. */
  headTokens: number;
  /** Tokens after the history (rest of the instruction, generation prompt): reserved in the budget, never sent. */
  tailTokens: number;
  tokensPerUser: Spread;
  passesPerUser: number;
  tokensPerEncodedItem: number;
  /** One "k. <item text>\n" line of an encoded position, as the teacher tokenises it (pieces apart). */
  lineTokens: number;
  /** An item's text alone ("Toy Story (1995) — Animation, …"), over all items of the dataset. */
  itemTextTokens: Spread;
  /** Tokens per encoded item for users with < 50, 50-199 and >= 200 items. */
  tokensPerItemByHistory: Record<string, number | null>;
  /**
   * The same prompt texts re-encoded as whole strings. The teacher tokenises the pieces of a prompt apart (so an
   * item's last token is exact); a tokenizer reading the whole text merges across the seams (")\n" is one Qwen token).
   */
  wholeTextTokens: number;
  /** Full runs: the largest of N equal-user slices' share of the tokens, for N = 2, 4, 8 (--users-per-shard). */
  largestSliceShare?: Record<string, number>;
  seconds: number;
}

function spread(xs: number[]): Spread {
  const s = [...xs].sort((a, b) => a - b);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : 0;
  return { mean, median: s.length ? percentile(s, 50) : 0, p90: s.length ? percentile(s, 90) : 0, max: s.length ? s[s.length - 1]! : 0 };
}

/** The largest slice's share of the tokens when the users are split into N slices of whole shards. */
function largestShare(perUser: number[], usersPerShard: number, total: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of [2, 4, 8]) {
    let max = 0;
    for (let i = 0; i < n; i++) {
      const [a, b] = sliceUsers(perUser.length, usersPerShard, { index: i, count: n });
      max = Math.max(max, perUser.slice(a, b).reduce((x, y) => x + y, 0));
    }
    out[String(n)] = total > 0 ? max / total : 0;
  }
  return out;
}

/** Tokens in the tokenizer: transformers.js's get_vocab() (vocabulary and added tokens). */
function tokenizerSize(tok: { get_vocab(): unknown }): number {
  const v = tok.get_vocab();
  return v instanceof Map ? v.size : Object.keys(v ?? {}).length;
}

export async function countPromptTokens(ds: PreparedDataset, o: CountOptions): Promise<PromptTokenCount> {
  const t0 = performance.now();
  requireItemText(ds); // a prompt of item ids only is not what the teacher reads (same check as a real run)
  if (!Number.isInteger(o.maxPromptTokens) || o.maxPromptTokens < 1) throw new RecdistillError('E_USAGE', `--max-prompt-tokens must be a positive integer; got ${o.maxPromptTokens}.`);
  // The folder the teacher would load (a hub id is resolved and downloaded the same way), its tokenizer and prompt.
  const files = await resolveModelFiles(o.model, resolveDtype(o.model, o.dtype), o.offline, o.log, { revision: o.revision });
  const maxPos = readModelConfig(files.dir).raw.max_position_embeddings;
  if (typeof maxPos === 'number' && o.maxPromptTokens > maxPos) throw new RecdistillError('E_USAGE', `max-prompt-tokens ${o.maxPromptTokens} exceeds the model's max_position_embeddings (${maxPos}) in ${files.dir}/config.json.`);
  const tok = await loadTokenizer(files.dir);
  const template = loadPromptTemplate(o.prompt);
  const codec = createPromptCodec(tok, template, ds.items);
  const tooWide = budgetError(codec, o.maxPromptTokens, ds);
  if (tooWide) throw new RecdistillError('E_USAGE', tooWide);
  const parts = { codec, maxPromptTokens: o.maxPromptTokens, truncate: o.truncate };
  const [u0, u1] = sliceUsers(ds.users.length, o.usersPerShard, o.slice);
  const perUser: number[] = [];
  const c = { passes: 0, items: 0, lineTokens: 0, whole: 0, encodedUsers: 0 };
  const buckets = { '<50': [0, 0], '50-199': [0, 0], '>=200': [0, 0] } as Record<string, [number, number]>;
  for (let u = u0; u < u1; u++) {
    const items = ds.users[u]!.items;
    const input = items.subarray(0, Math.max(0, items.length - 1)); // pass 1 never sees the test item
    const { windows, inputs } = planHistory(parts, input);
    const tokens = inputs.reduce((a, x) => a + x.ids.length, 0);
    perUser.push(tokens);
    if (!windows.length) continue;
    c.encodedUsers++;
    c.passes += windows.length;
    const encoded = input.length - windows[0]!.assignFrom;
    c.items += encoded;
    for (let t = windows[0]!.assignFrom; t < input.length; t++) c.lineTokens += lineOf(codec, input, windows, t);
    for (const x of inputs) c.whole += tok.encode(codec.decode(x.ids), { add_special_tokens: false }).length;
    const b = buckets[items.length < 50 ? '<50' : items.length < 200 ? '50-199' : '>=200']!;
    b[0] += tokens;
    b[1] += encoded;
  }
  const total = perUser.reduce((a, b) => a + b, 0);
  const itemText = ds.items.slice(1).map((it) => codec.itemOnlyTokens(it.id).length);
  return {
    countOnly: true,
    model: o.model,
    tokenizerSize: tokenizerSize(tok),
    chatTemplate: codec.chat,
    prompt: template.path,
    maxPromptTokens: o.maxPromptTokens,
    truncate: o.truncate,
    users: u1 - u0,
    encodedUsers: c.encodedUsers,
    encodedItems: c.items,
    passes: c.passes,
    tokens: total,
    headTokens: codec.head.length,
    tailTokens: codec.tail.length,
    tokensPerUser: spread(perUser),
    passesPerUser: c.encodedUsers ? c.passes / c.encodedUsers : 0,
    tokensPerEncodedItem: c.items ? total / c.items : 0,
    lineTokens: c.items ? c.lineTokens / c.items : 0,
    itemTextTokens: spread(itemText),
    tokensPerItemByHistory: Object.fromEntries(Object.entries(buckets).map(([k, [t, n]]) => [k, n ? t / n : null])),
    wholeTextTokens: c.whole,
    ...(o.slice ? {} : { largestSliceShare: largestShare(perUser, o.usersPerShard, total) }),
    seconds: (performance.now() - t0) / 1000,
  };
}

/** Tokens of the line that gives position t its state: its number, its text and the newline, in its own pass. */
function lineOf(codec: PromptCodec, input: Int32Array, windows: { start: number; end: number; assignFrom: number }[], t: number): number {
  const w = windows.find((x) => t >= x.assignFrom && t <= x.end)!;
  const k = t - w.start + 1;
  return codec.numberTokens(k).length + codec.itemTokens(input[t]!).length + codec.newline.length;
}
