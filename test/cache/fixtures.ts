import type { PreparedDataset, UserSequence } from '../../src/data/types.js';
import type { HistoryStates, TeacherEncoder } from '../../src/teacher/types.js';
import { mulberry32 as rng } from '../../src/util/rng.js';

/** Deterministic pseudo-random numbers (mulberry32) so fixtures never change. */
export { rng };

/**
 * A small prepared dataset with structure a teacher can learn: users walk the item ring mostly forward
 * (next item = current + 1 or + 2), so "predict the next item" has a real answer.
 */
export function tinyDataset(users = 40, items = 30, seed = 7, fingerprint = 'fp-tiny-' + seed): PreparedDataset {
  const r = rng(seed);
  const seqs: UserSequence[] = [];
  let total = 0;
  for (let u = 0; u < users; u++) {
    const n = u === 0 ? 1 : u === 1 ? 2 : 3 + Math.floor(r() * 10);
    const seq = new Int32Array(n);
    let cur = 1 + Math.floor(r() * items);
    const seen = new Set<number>();
    for (let i = 0; i < n; i++) {
      while (seen.has(cur)) cur = (cur % items) + 1;
      seq[i] = cur;
      seen.add(cur);
      cur = ((cur - 1 + 1 + (r() < 0.8 ? 0 : 1)) % items) + 1;
    }
    total += n;
    seqs.push({ rawId: String(u + 1), items: seq });
  }
  const itemInfo = [{ id: 0, rawId: '', title: '', genres: [] as string[] }];
  for (let i = 1; i <= items; i++) itemInfo.push({ id: i, rawId: String(i), title: `Item ${i}`, genres: [] });
  return {
    name: 'tiny',
    fingerprint,
    options: { seed },
    items: itemInfo,
    users: seqs,
    stats: { users, items, interactions: total, meanSeqLen: total / users, medianSeqLen: 0, density: total / (users * items) },
  };
}

/** Item "text embedding" of the fake teacher: a fixed function of the id. [H] */
export function fakeItemVector(item: number, H: number, layer = 0): Float32Array {
  const v = new Float32Array(H);
  for (let d = 0; d < H; d++) v[d] = Math.sin(item * (d + 1) * 0.37 + layer * 0.5) + 0.1 * Math.cos(item * 1.3 + d);
  return v;
}

/**
 * A deterministic, causal fake teacher: the state after item t at layer l is a decayed sum of the item
 * vectors of items 0..t. `delayMs` slows it down so a test can kill a run part-way.
 */
export function fakeEncoder(opts: { layers?: number[]; H?: number; numItems: number; delayMs?: number; budget?: number }): TeacherEncoder & { calls: number } {
  const layers = opts.layers ?? [1, 3];
  const H = opts.H ?? 8;
  const enc = {
    kind: 'llm' as const,
    model: 'fake/teacher',
    dtype: 'fp32',
    weightsHash: 'f'.repeat(64),
    layers,
    hiddenSize: H,
    pooling: 'last-token-of-item',
    prompt: { path: 'prompts/fake.md', sha256: '0'.repeat(64) },
    calls: 0,
    async encodeHistory(items: Int32Array): Promise<HistoryStates> {
      enc.calls++;
      if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
      // A budget keeps only the most recent `budget` items, like a prompt-token budget.
      const first = opts.budget ? Math.max(0, items.length - opts.budget) : 0;
      const count = items.length - first;
      const states = new Float32Array(count * layers.length * H);
      for (let li = 0; li < layers.length; li++) {
        const acc = new Float32Array(H);
        for (let t = first; t < items.length; t++) {
          const v = fakeItemVector(items[t]!, H, li);
          for (let d = 0; d < H; d++) acc[d] = 0.5 * acc[d]! + v[d]!;
          states.set(acc, ((t - first) * layers.length + li) * H);
        }
      }
      return { first, count, states, tokens: count * 5 };
    },
    async embedItems(onProgress?: (done: number, total: number) => void): Promise<Float32Array> {
      const out = new Float32Array((opts.numItems + 1) * H);
      for (let i = 1; i <= opts.numItems; i++) {
        out.set(fakeItemVector(i, H, layers.length - 1), i * H);
        onProgress?.(i, opts.numItems);
      }
      return out;
    },
    async dispose() {},
  };
  return enc;
}

/**
 * An independent minimal safetensors parser (does not import src/util/safetensors.ts): 8-byte LE header
 * length, JSON header, raw little-endian data.
 */
export function parseSafetensorsIndependently(buf: Uint8Array): Record<string, { dtype: string; shape: number[]; bytes: Uint8Array }> {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + n))) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out: Record<string, { dtype: string; shape: number[]; bytes: Uint8Array }> = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    out[name] = { dtype: t.dtype, shape: t.shape, bytes: buf.slice(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]) };
  }
  return out;
}
