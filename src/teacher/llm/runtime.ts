/**
 * Forward passes: feeds like transformers.js builds them for a decoder export (input_ids, attention_mask,
 * position_ids, empty past_key_values.* when the export has a KV cache), fetching only the tapped tensors.
 * Runs go through p-limit (bounded concurrency) and an optional micro-batcher that pads requests
 * arriving together into one run (right padding: causal attention keeps real tokens unaffected).
 */
import { field } from '../../util/fields.js';
import pLimit from 'p-limit';
import * as ort from 'onnxruntime-node';
import { RecdistillError } from '../../errors.js';
import { fromHalf as halfToFloat } from '../../util/f16.js';
import type { ModelConfig } from './load.js';

export interface RunStats {
  runs: number;
  /** Real tokens (no padding). */
  tokens: number;
  /** Tokens including padding. */
  paddedTokens: number;
  /** Wall seconds inside session.run. */
  runSeconds: number;
}

export interface Runtime {
  session: ort.InferenceSession;
  tapNames: string[];
  hidden: number;
  /** One padded run over `batch` sequences: per tap, [B, Lmax, H] as Float32Array. */
  forward(batch: number[][]): Promise<{ states: Float32Array[]; length: number }>;
  /** One sequence, batched with other concurrent requests when batch > 1: per tap, [L, H]. */
  submit(ids: number[]): Promise<Float32Array[]>;
  /** Feeds for one unbatched sequence (for the plain-loop measurement). */
  feeds(batch: number[][]): Record<string, ort.Tensor>;
  stats: RunStats;
}

/** IEEE half bits -> float (src/util/f16.ts). */
export { fromHalf as halfToFloat } from '../../util/f16.js';

/** bfloat16 bits -> float: the top half of a float32. */
function bfloat16ToFloat(h: number): number {
  const b = new DataView(new ArrayBuffer(4));
  b.setUint32(0, (h & 0xffff) << 16);
  return b.getFloat32(0);
}

/**
 * A tapped tensor as float32. float16 / bfloat16 arrive as raw bits (Uint16Array) from onnxruntime-node,
 * but on Node versions with `globalThis.Float16Array` onnxruntime-common hands back decoded Float16Array
 * values: convert by value then, never by bit pattern.
 */
export function toFloat32(t: { type: string; data: unknown }, name = 'tensor'): Float32Array {
  const d = t.data;
  if (t.type === 'float32') return d as Float32Array;
  if (t.type === 'float16' || t.type === 'bfloat16') {
    if (d instanceof Uint16Array) return Float32Array.from(d, t.type === 'float16' ? halfToFloat : bfloat16ToFloat);
    // Node with globalThis.Float16Array: onnxruntime-common hands over decoded Float16Array values (numbers).
    if (ArrayBuffer.isView(d) && !(d instanceof DataView) && !(d instanceof BigInt64Array) && !(d instanceof BigUint64Array) && Symbol.iterator in d) return Float32Array.from(d as Iterable<number>);
  }
  throw new RecdistillError('E_INPUT', `tapped tensor ${name} has type ${t.type}; expected float32, float16 or bfloat16.`);
}

interface InputMeta {
  name: string;
  type?: string;
  shape?: (number | string)[];
}

export function createRuntime(session: ort.InferenceSession, tapNames: string[], cfg: ModelConfig, opts: { concurrency: number; batch: number }): Runtime {
  const given = field(session, 'inputMetadata');
  const meta = (Array.isArray(given) ? given : []) as InputMeta[];
  const metaOf = new Map(meta.map((m) => [m.name, m]));
  const known = /^(input_ids|attention_mask|position_ids|past_key_values\..*|use_cache_branch|num_logits_to_keep|logits_to_keep)$/;
  const unknown = session.inputNames.filter((n) => !known.test(n));
  if (unknown.length) throw new RecdistillError('E_INPUT', `the ONNX model has inputs this loader does not know how to feed: ${unknown.join(', ')} (known: input_ids, attention_mask, position_ids, past_key_values.*, use_cache_branch, num_logits_to_keep).`);
  const stats: RunStats = { runs: 0, tokens: 0, paddedTokens: 0, runSeconds: 0 };
  const limit = pLimit(Math.max(1, opts.concurrency));
  const H = cfg.hiddenSize;

  const feeds = (batch: number[][]): Record<string, ort.Tensor> => {
    const B = batch.length;
    const L = Math.max(...batch.map((s) => s.length));
    const ids = new BigInt64Array(B * L);
    const mask = new BigInt64Array(B * L);
    const pos = new BigInt64Array(B * L);
    batch.forEach((seq, b) => {
      for (let i = 0; i < L; i++) {
        ids[b * L + i] = BigInt(i < seq.length ? seq[i]! : 0);
        mask[b * L + i] = i < seq.length ? 1n : 0n;
        pos[b * L + i] = BigInt(Math.min(i, Math.max(seq.length - 1, 0)));
      }
    });
    const f: Record<string, ort.Tensor> = { input_ids: new ort.Tensor('int64', ids, [B, L]) };
    for (const name of session.inputNames) {
      if (name === 'attention_mask') f[name] = new ort.Tensor('int64', mask, [B, L]);
      else if (name === 'position_ids') f[name] = new ort.Tensor('int64', pos, [B, L]);
      else if (name === 'use_cache_branch') f[name] = new ort.Tensor('bool', new Uint8Array([0]), [1]);
      // Logits are not read (states are tapped), so ask for the fewest the export allows.
      else if (name === 'num_logits_to_keep' || name === 'logits_to_keep') f[name] = new ort.Tensor('int64', BigInt64Array.of(1n), []);
      else if (name.startsWith('past_key_values.')) {
        // [batch, kv_heads, past_len = 0, head_dim]: an empty cache, as transformers.js feeds on the first step.
        const shape = metaOf.get(name)?.shape ?? ['batch_size', cfg.numKvHeads, 'past_sequence_length', cfg.headDim];
        const dims = shape.map((d, i) => (i === 0 ? B : i === 2 ? 0 : typeof d === 'number' ? d : i === 1 ? cfg.numKvHeads : cfg.headDim));
        const half = metaOf.get(name)?.type === 'float16';
        f[name] = half ? new ort.Tensor('float16', new Uint16Array(0), dims) : new ort.Tensor('float32', new Float32Array(0), dims);
      }
    }
    return f;
  };

  const forward = (batch: number[][]) =>
    limit(async () => {
      const f = feeds(batch);
      const t0 = performance.now();
      const out = await session.run(f, tapNames);
      stats.runSeconds += (performance.now() - t0) / 1000;
      stats.runs++;
      const L = f.input_ids!.dims[1]!;
      stats.tokens += batch.reduce((a, s) => a + s.length, 0);
      stats.paddedTokens += batch.length * L;
      const states = tapNames.map((n) => {
        const t = out[n];
        if (!t) throw new RecdistillError('E_INTERNAL', `session.run did not return tapped tensor ${n}.`);
        const want = [batch.length, L, H];
        if (t.dims.length !== 3 || t.dims.some((d, i) => d !== want[i])) {
          throw new RecdistillError('E_INPUT', `tapped tensor ${n} has shape [${t.dims.join(', ')}]; expected [batch ${want[0]}, tokens ${want[1]}, hidden_size ${H}] ([B, L, H]).`);
        }
        return toFloat32(t, n);
      });
      return { states, length: L };
    });

  // Micro-batcher: requests made in the same tick share a run, up to `batch` sequences.
  let queue: { ids: number[]; resolve: (v: Float32Array[]) => void; reject: (e: unknown) => void }[] = [];
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    while (queue.length) {
      const group = queue.splice(0, opts.batch);
      forward(group.map((g) => g.ids)).then(
        ({ states, length }) =>
          group.forEach((g, b) => g.resolve(states.map((s) => s.slice(b * length * H, (b * length + g.ids.length) * H)))),
        (e) => group.forEach((g) => g.reject(e)),
      );
    }
  };
  const submit = (ids: number[]): Promise<Float32Array[]> => {
    if (opts.batch <= 1) return forward([ids]).then(({ states }) => states);
    return new Promise((resolve, reject) => {
      queue.push({ ids, resolve, reject });
      if (queue.length >= opts.batch) flush();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    });
  };
  return { session, tapNames, hidden: H, forward, submit, feeds, stats };
}
