import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadLlmTeacher, type LlmTeacherEncoder } from '../../src/teacher/llm/index.js';
import { itemText } from '../../src/prompt/item-text.js';
import { tinyDataset, tinyModelDir } from './fixtures.js';

const m = tinyModelDir({ layers: 2, hidden: 32, heads: 2 });
const ds = tinyDataset();
let enc: LlmTeacherEncoder;
beforeAll(async () => {
  enc = await loadLlmTeacher({ model: m.dir, dtype: 'fp32', layers: [0, -1], maxPromptTokens: 512, log: () => {} }, ds);
});
afterAll(async () => {
  await enc.dispose();
  m.cleanup();
});

function maxDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

describe('per-prefix readout', () => {
  it('reads each item at the last token of its text, inside the chat-formatted prompt', () => {
    const items = ds.users[1]!.items;
    const { inputs } = enc.planHistory(items);
    expect(inputs).toHaveLength(1);
    const { ids, ends } = inputs[0]!;
    expect(ends).toHaveLength(items.length);
    const text = enc.codec.decode(ids);
    expect(text.startsWith('<|im_start|>user\n')).toBe(true);
    ends.forEach((end, t) => {
      // Everything up to the item's last token ends with "k. <item text>".
      expect(enc.codec.decode(ids.slice(0, end + 1)).endsWith(`${t + 1}. ${itemText(ds.items[items[t]!]!)}`)).toBe(true);
    });
    expect(text).toContain('2. Amélie (2001) — Comedy, Romance\n');
  });

  it('one pass gives, at every position, the state of running that prefix alone (causality)', async () => {
    const items = ds.users[1]!.items; // 5 items
    const full = await enc.encodeHistory(items);
    const per = 2 * 32; // layers x hidden
    expect(full).toMatchObject({ first: 0, count: 5 });
    expect(full.states.length).toBe(5 * per);
    for (let t = 0; t < items.length; t++) {
      const prefix = await enc.encodeHistory(items.subarray(0, t + 1));
      expect(prefix.count).toBe(t + 1);
      const last = prefix.states.subarray(t * per, (t + 1) * per);
      expect(maxDiff(last, full.states.subarray(t * per, (t + 1) * per))).toBeLessThan(1e-5);
    }
    // Different positions and different layers really differ.
    expect(maxDiff(full.states.subarray(0, 32), full.states.subarray(per, per + 32))).toBeGreaterThan(1e-3);
    expect(maxDiff(full.states.subarray(0, 32), full.states.subarray(32, 64))).toBeGreaterThan(1e-3);
  });

  it('batched runs (padding) give the same states as single runs', async () => {
    const batched = await loadLlmTeacher({ model: m.dir, dtype: 'fp32', layers: [0, -1], maxPromptTokens: 512, batch: 3, concurrency: 2, log: () => {} }, ds);
    const single = await Promise.all(ds.users.map((u) => enc.encodeHistory(u.items)));
    const multi = await Promise.all(ds.users.map((u) => batched.encodeHistory(u.items)));
    expect(batched.stats().paddedTokens).toBeGreaterThan(batched.stats().tokens); // requests really shared a padded run
    single.forEach((s, i) => {
      expect(multi[i]!.count).toBe(s.count);
      expect(maxDiff(multi[i]!.states, s.states)).toBeLessThan(1e-4);
    });
    await batched.dispose();
  });
});

describe('KV-cache exports', () => {
  it('past_key_values.* inputs are fed an empty past; states equal the same weights without a cache', async () => {
    const kv = tinyModelDir({ layers: 2, hidden: 32, heads: 2, kvCache: true });
    try {
      const k = await loadLlmTeacher({ model: kv.dir, dtype: 'fp32', layers: [0, -1], maxPromptTokens: 512, log: () => {} }, ds);
      expect(k.session.inputNames).toContain('past_key_values.1.value');
      const items = ds.users[1]!.items;
      const [a, b] = [await k.encodeHistory(items), await enc.encodeHistory(items)];
      expect(a.count).toBe(5);
      expect(maxDiff(a.states, b.states)).toBeLessThan(1e-6);
      await k.dispose();
    } finally {
      kv.cleanup();
    }
  });
});

describe('token budget', () => {
  it('recent: keeps the most recent items that fit; their states equal encoding only those items', async () => {
    const items = ds.users[0]!.items; // 24 items
    const fixed = enc.codec.head.length + enc.codec.tail.length;
    const lines = Array.from(items, (id) => enc.codec.lineTokens(id, items.length));
    const budget = fixed + lines.slice(-6).reduce((a, b) => a + b, 0); // exactly the last 6 lines fit
    const recent = await loadLlmTeacher({ model: m.dir, dtype: 'fp32', layers: [0, -1], maxPromptTokens: budget, truncate: 'recent', log: () => {} }, ds);
    const r = await recent.encodeHistory(items);
    expect(r).toMatchObject({ first: 18, count: 6 });
    const alone = await enc.encodeHistory(items.subarray(18));
    expect(maxDiff(r.states, alone.states)).toBeLessThan(1e-5);
    // windows: every position gets a state; the most recent ones match the recent pass.
    const windows = await loadLlmTeacher({ model: m.dir, dtype: 'fp32', layers: [0, -1], maxPromptTokens: budget, truncate: 'windows', log: () => {} }, ds);
    const w = await windows.encodeHistory(items);
    expect(w).toMatchObject({ first: 0, count: 24 });
    const per = 64;
    const plan = windows.planHistory(items).windows;
    const lastWin = plan[plan.length - 1]!;
    expect(lastWin.end).toBe(23);
    expect(maxDiff(w.states.subarray(lastWin.assignFrom * per), r.states.subarray((lastWin.assignFrom - 18) * per))).toBeLessThan(1e-5);
    for (const win of plan) expect(win.end - win.start + 1).toBeLessThanOrEqual(6);
    await recent.dispose();
    await windows.dispose();
  });

  it('a budget smaller than one line is a usage error naming the flag, at load', async () => {
    await expect(loadLlmTeacher({ model: m.dir, dtype: 'fp32', layers: [-1], maxPromptTokens: 40, log: () => {} }, ds)).rejects.toThrow(/--max-prompt-tokens 40 leaves -?\d+ tokens .* raise --max-prompt-tokens to at least \d+/);
    await expect(enc.encodeHistory(Int32Array.of(1, 99))).rejects.toThrow(/item id 99 out of range 1\.\.12/);
    await expect(loadLlmTeacher({ model: m.dir, dtype: 'fp32', layers: [-1], maxPromptTokens: 4096, log: () => {} }, ds)).rejects.toThrow(/exceeds the model's max_position_embeddings \(512\)/);
    await expect(loadLlmTeacher({ model: m.dir, dtype: 'fp32', layers: [5], maxPromptTokens: 256, log: () => {} }, ds)).rejects.toThrow(/out of range for a model with 2 layers/);
  });
});

describe('overhead measurement', () => {
  it('the plain loop runs exactly the passes encodeHistory runs', async () => {
    const hs = ds.users.map((u) => u.items);
    const plain = await enc.measurePlainLoop(hs);
    const states = await Promise.all(hs.map((h) => enc.encodeHistory(h)));
    expect(plain.runs).toBe(hs.reduce((a, h) => a + enc.planHistory(h).windows.length, 0));
    expect(plain.tokens).toBe(states.reduce((a, s) => a + s.tokens, 0));
    const o = await enc.measureOverhead(hs);
    expect(o.overhead).toBeCloseTo(o.pipelineSeconds / o.plainSeconds - 1, 10);
  });
});

describe('item embeddings', () => {
  it('[numItems+1, H], row 0 zero; each row is the mean over the item text tokens (last tapped layer)', async () => {
    const emb = await enc.embedItems();
    expect(emb.length).toBe(13 * 32);
    expect(Array.from(emb.subarray(0, 32)).every((v) => v === 0)).toBe(true);
    // Recompute item 2 by hand: one run over its tokens, mean of the last tapped layer.
    const ids = enc.codec.itemOnlyTokens(2);
    expect(enc.codec.decode(ids)).toBe(itemText(ds.items[2]!));
    const t = (a: number[]) => new ort.Tensor('int64', BigInt64Array.from(a.map(BigInt)), [1, a.length]);
    const run = await enc.session.run({ input_ids: t(ids), attention_mask: t(ids.map(() => 1)), position_ids: t(ids.map((_, i) => i)) }, [enc.tapNames[1]!]);
    const h = run[enc.tapNames[1]!]!.data as Float32Array;
    const mean = new Float32Array(32);
    for (let i = 0; i < ids.length; i++) for (let d = 0; d < 32; d++) mean[d]! += h[i * 32 + d]! / ids.length;
    expect(maxDiff(emb.subarray(2 * 32, 3 * 32), mean)).toBeLessThan(1e-5);
  });
});
