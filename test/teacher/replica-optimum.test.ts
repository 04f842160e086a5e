/**
 * The Optimum-export replicas (src/teacher/replica/optimum.ts): every layout / dtype loads and runs in
 * onnxruntime-node with an empty past; the residual taps (blockOutputs) and logits of the fp32 export match
 * an independent JS forward; the fused layout gives the same numbers with the last sum not materialised;
 * q4 / fp16 stay close to fp32; files are byte-deterministic and external data (two chunks) loads.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import protobuf from 'protobufjs';
import { afterAll, describe, expect, it } from 'vitest';
import { valueInfo } from '../../src/util/onnx-graph.js';
import { DataType, writeOnnxModel } from '../../src/util/onnx-file.js';
import { buildOptimumGraph, type OptimumOptions } from '../../src/teacher/replica/optimum.js';
import { f16BitsToF32, Q4_BLOCK } from '../../src/teacher/replica/quant.js';
import { type DecoderSpec, headDim, weightTensor } from '../../src/teacher/replica/spec.js';
import { referenceForward, referenceHead } from './replica-reference.js';
import { cosine, maxAbsDiff as maxAbs } from '../helpers/compare.js';

const { onnx } = onnxProto;
const QWEN: DecoderSpec = { modelType: 'qwen2', vocabSize: 300, hidden: 32, layers: 3, heads: 4, kvHeads: 2, intermediate: 64, maxPositions: 512, ropeTheta: 1000000, rmsEps: 1e-6, tieEmbeddings: true, seed: 5 };
const LLAMA: DecoderSpec = { modelType: 'llama', vocabSize: 290, hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, maxPositions: 512, ropeTheta: 10000, rmsEps: 1e-5, tieEmbeddings: false, seed: 11 };
const IDS = [3, 17, 250, 42, 99, 7, 123, 64];

const root = mkdtempSync(join(tmpdir(), 'recdistill-optimum-replica-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let fileNo = 0;
/** Build, add the existing taps as extra outputs [batch, seq, hidden], write, open. */
async function open(spec: DecoderSpec, opts: OptimumOptions, write: Parameters<typeof writeOnnxModel>[2] = {}) {
  const { desc, blockOutputs } = buildOptimumGraph(spec, opts);
  const elem = opts.dtype === 'fp16' ? DataType.FLOAT16 : DataType.FLOAT;
  const taps = blockOutputs.filter((n): n is string => n !== undefined);
  desc.outputs = [...desc.outputs, ...taps.map((n) => valueInfo(n, elem, ['batch_size', 'sequence_length', spec.hidden]))];
  const path = join(root, `m${fileNo++}.onnx`);
  writeOnnxModel(path, desc, write);
  const session = await ort.InferenceSession.create(path);
  return { session, desc, blockOutputs, path };
}

/** Feeds for one or more rows, right-padded (mask 0), positions 0.., empty or given past. */
function feeds(spec: DecoderSpec, rows: number[][], past?: Record<string, ort.Tensor>, offset = 0): Record<string, ort.Tensor> {
  const B = rows.length;
  const S = Math.max(...rows.map((r) => r.length));
  const ids = new BigInt64Array(B * S);
  const pos = new BigInt64Array(B * S);
  const mask = new BigInt64Array(B * (S + offset)).fill(1n);
  rows.forEach((r, b) => {
    for (let t = 0; t < S; t++) {
      ids[b * S + t] = BigInt(r[t] ?? 0);
      pos[b * S + t] = BigInt(offset + t);
      if (t >= r.length) mask[b * (S + offset) + offset + t] = 0n;
    }
  });
  const f: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', ids, [B, S]),
    attention_mask: new ort.Tensor('int64', mask, [B, S + offset]),
    position_ids: new ort.Tensor('int64', pos, [B, S]),
  };
  for (let i = 0; i < spec.layers; i++)
    for (const kv of ['key', 'value'])
      f[`past_key_values.${i}.${kv}`] = past?.[`present.${i}.${kv}`] ?? new ort.Tensor('float32', new Float32Array(0), [B, spec.kvHeads, 0, headDim(spec)]);
  return f;
}

/** Initializers of every `graph` field: the writer streams one graph field per initializer, which protobuf
 *  merges but protobufjs' decode would replace (last one wins). */
function initializersOf(buf: Uint8Array) {
  const r = protobuf.Reader.create(buf);
  const out: onnxProto.onnx.ITensorProto[] = [];
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag >>> 3 === 7) out.push(...onnx.GraphProto.decode(r.bytes()).initializer);
    else r.skipType(tag & 7);
  }
  return out;
}

const asF32 = (t: ort.Tensor): Float32Array =>
  t.type === 'float16' ? Float32Array.from(t.data as Uint16Array, (h) => f16BitsToF32(h)) : (t.data as Float32Array);

async function forward(spec: DecoderSpec, opts: OptimumOptions) {
  const m = await open(spec, opts);
  const out = await m.session.run(feeds(spec, [IDS]));
  return { ...m, out, states: m.blockOutputs.map((n) => (n ? asF32(out[n]!) : undefined)), logits: asF32(out.logits!) };
}

describe('optimum replica, layout A (plain TorchScript export)', () => {
  for (const spec of [QWEN, LLAMA]) {
    it(`${spec.modelType}: exporter names and I/O; taps and logits match an independent JS forward`, async () => {
      const { desc, blockOutputs, states, logits, out } = await forward(spec, { dtype: 'fp32' });
      const names = new Set(desc.nodes.map((n) => n.name));
      for (const n of ['/model/embed_tokens/Gather', '/model/layers.0/input_layernorm/Pow', '/model/layers.0/input_layernorm/ReduceMean', '/model/layers.0/input_layernorm/Sqrt',
        '/model/layers.0/input_layernorm/Div', '/model/layers.0/input_layernorm/Mul_1', '/model/layers.0/self_attn/q_proj/MatMul', '/model/layers.0/mlp/act_fn/Sigmoid',
        '/model/layers.0/Add', '/model/layers.0/Add_1', '/model/norm/Mul_1', '/lm_head/MatMul', '/model/rotary_emb/Cos'])
        expect(names.has(n), n).toBe(true);
      expect(names.has('/model/layers.0/self_attn/q_proj/Add')).toBe(spec.modelType === 'qwen2');
      expect(desc.inputs.map((i) => i.name).slice(0, 5)).toEqual(['input_ids', 'attention_mask', 'position_ids', 'past_key_values.0.key', 'past_key_values.0.value']);
      expect(desc.outputs.map((o) => o.name).slice(0, 3)).toEqual(['logits', 'present.0.key', 'present.0.value']);
      expect(desc.initializers.some((t) => /^onnx::MatMul_\d+$/.test(t.name))).toBe(true);
      expect(blockOutputs).toEqual(Array.from({ length: spec.layers }, (_, i) => `/model/layers.${i}/Add_1_output_0`));
      expect(out['present.0.key']!.dims).toEqual([1, spec.kvHeads, IDS.length, headDim(spec)]);

      const ref = referenceForward(spec, IDS);
      states.forEach((s, i) => expect(maxAbs(s!, ref.blockStates[i]!)).toBeLessThan(1e-4));
      expect(maxAbs(logits, ref.logits)).toBeLessThan(1e-4);
      // logits[t] == lm_head(final RMSNorm(tapped last state))[t], in plain JS from the spec's weights.
      expect(maxAbs(logits, referenceHead(spec, states.at(-1)!, IDS.length))).toBeLessThan(1e-4);
    });
  }

  it('right padding and a non-empty past give the same numbers as the plain run', async () => {
    const { session } = await open(QWEN, { dtype: 'fp32' });
    const V = QWEN.vocabSize;
    const full = asF32((await session.run(feeds(QWEN, [IDS]))).logits!);
    const padded = await session.run(feeds(QWEN, [IDS.slice(0, 5), IDS]));
    expect(maxAbs(asF32(padded.logits!).slice(0, 5 * V), full.slice(0, 5 * V))).toBeLessThan(1e-5);
    const first = await session.run(feeds(QWEN, [IDS.slice(0, 6)]));
    const rest = await session.run(feeds(QWEN, [IDS.slice(6)], first, 6));
    expect(maxAbs(asF32(rest.logits!), full.slice(6 * V))).toBeLessThan(1e-5);
  });
});

describe('optimum replica, layout B (onnxruntime transformer optimizer fusion)', () => {
  it('SkipSimplifiedLayerNormalization with output 3 only where the sum is read again; same numbers as A', async () => {
    const a = await forward(QWEN, { dtype: 'fp32' });
    const b = await forward(QWEN, { dtype: 'fp32', fused: true });
    const N = QWEN.layers;
    const skips = b.desc.nodes.filter((n) => n.opType === 'SkipSimplifiedLayerNormalization');
    expect(skips.map((n) => n.name)).toEqual(Array.from({ length: 2 * N }, (_, k) => `SkipLayerNorm_${k}`));
    expect(skips.every((n) => n.domain === 'com.microsoft')).toBe(true);
    expect(skips.at(-1)!.output).toEqual(['/model/norm/Mul_1_output_0']);
    expect(skips[1]!.output).toEqual(['/model/layers.1/input_layernorm/Mul_1_output_0', '', '', '/model/layers.0/Add_1_output_0']);
    const sln = b.desc.nodes.filter((n) => n.opType === 'SimplifiedLayerNormalization');
    expect(sln.map((n) => [n.name, n.input[0]])).toEqual([['LayerNorm_0', '/model/embed_tokens/Gather_output_0']]);
    expect(b.desc.nodes.some((n) => n.opType === 'Pow')).toBe(false);
    expect(b.desc.opsets).toContainEqual({ domain: 'com.microsoft', version: 1 });
    expect(b.blockOutputs).toEqual([...a.blockOutputs.slice(0, N - 1), undefined]);
    for (let i = 0; i < N - 1; i++) expect(maxAbs(b.states[i]!, a.states[i]!)).toBeLessThan(1e-4);
    expect(maxAbs(b.logits, a.logits)).toBeLessThan(1e-4);
  });
});

describe('optimum replica, converted variants', () => {
  it('q4: MatMulNBits as MatMul4BitsQuantizer writes it, close to fp32', async () => {
    const a = await forward(QWEN, { dtype: 'fp32' });
    for (const fused of [false, true]) {
      const q = await forward(QWEN, { dtype: 'q4', fused });
      const mm = q.desc.nodes.filter((n) => n.opType === 'MatMulNBits');
      expect(mm.length).toBe(7 * QWEN.layers + 1);
      expect(q.desc.nodes.some((n) => n.opType === 'MatMul' && /proj|lm_head/.test(n.name))).toBe(false);
      const head = mm.find((n) => n.name === '/lm_head/MatMul_Q4')!;
      expect(head.domain).toBe('com.microsoft');
      expect(head.attribute.map((x) => [x.name, Number(x.i)])).toEqual([['K', QWEN.hidden], ['N', QWEN.vocabSize], ['bits', 4], ['block_size', Q4_BLOCK]]);
      expect(head.input).toHaveLength(3); // symmetric: no zero points
      const b = q.desc.initializers.find((t) => t.name === head.input[1])!;
      expect(b.name).toMatch(/^onnx::MatMul_\d+_Q4$/);
      expect([b.dims, b.dataType]).toEqual([[QWEN.vocabSize, QWEN.hidden / Q4_BLOCK, Q4_BLOCK / 2], DataType.UINT8]);
      expect(q.desc.initializers.find((t) => t.name === head.input[2])!.dims).toEqual([(QWEN.vocabSize * QWEN.hidden) / Q4_BLOCK]);
      expect(q.desc.nodes.find((n) => n.name === '/model/embed_tokens/Gather')!.input[0]).toBe('model.embed_tokens.weight');
      // Packing, read back without the quantizer: byte (n, blk, j) holds K-rows 2j (low nibble) and 2j+1 of
      // column n; (q - 8) * scale is within scale/2 of W[n, k], and scale = -(block's largest-|w| value) / 8.
      const cat = (t: typeof b) => Uint8Array.from([...t.chunks()].flatMap((c) => [...c]));
      const packed = cat(b);
      const scales = new Float32Array(cat(q.desc.initializers.find((t) => t.name === head.input[2])!).buffer);
      const W = weightTensor(QWEN, 'model.embed_tokens.weight').data;
      const K = QWEN.hidden;
      for (let n = 0; n < QWEN.vocabSize; n++) {
        for (let k = 0; k < K; k++) {
          const blk = Math.floor(k / Q4_BLOCK);
          const byte = packed[(n * K) / 2 + (k >> 1)]!;
          const qv = k % 2 ? byte >> 4 : byte & 15;
          const sc = scales[(n * K) / Q4_BLOCK + blk]!;
          // q = 15 may be clamped (the side opposite the block max reaches +8 * |scale|): error up to |scale|.
          const tol = (qv === 15 ? 1 : 0.5) * Math.abs(sc) + 1e-7;
          expect(Math.abs((qv - 8) * sc - W[n * K + k]!)).toBeLessThanOrEqual(tol);
        }
        for (let blk = 0; blk < K / Q4_BLOCK; blk++) {
          const ws = W.subarray(n * K + blk * Q4_BLOCK, n * K + (blk + 1) * Q4_BLOCK);
          const m = ws.reduce((a, v) => (Math.abs(v) > Math.abs(a) ? v : a), 0);
          expect(scales[(n * K) / Q4_BLOCK + blk]).toBe(Math.fround(-m / 8));
        }
      }
      // Measured over seeds 5-8: states cosine 0.9967-0.9994, logits 0.9937-0.9957.
      for (let i = 0; i < QWEN.layers; i++) if (q.states[i]) expect(cosine(q.states[i]!, a.states[i]!)).toBeGreaterThan(0.995);
      expect(cosine(q.logits, a.logits)).toBeGreaterThan(0.99);
    }
  });

  it('fp16: keep_io_types Casts at the boundary, fp16 residual stream inside, close to fp32', async () => {
    const a = await forward(QWEN, { dtype: 'fp32' });
    const h = await forward(QWEN, { dtype: 'fp16' });
    const names = new Set(h.desc.nodes.map((n) => n.name));
    expect(names.has('past_key_values.0.key_fp16')).toBe(true);
    expect(names.has('logits_fp16_input_cast0')).toBe(true);
    expect(names.has('/model/rotary_emb/Cast_output_cast0')).toBe(true);
    expect(h.desc.initializers.find((t) => t.name === 'model.embed_tokens.weight')!.dataType).toBe(DataType.FLOAT16);
    expect(h.out.logits!.type).toBe('float32');
    expect(h.out[h.blockOutputs[0]!]!.type).toBe('float16');
    // Measured over seeds 5-8: states and logits cosine >= 0.99996.
    for (let i = 0; i < QWEN.layers; i++) expect(cosine(h.states[i]!, a.states[i]!)).toBeGreaterThan(0.9999);
    expect(cosine(h.logits, a.logits)).toBeGreaterThan(0.9999);
  });
});

describe('optimum replica files', () => {
  const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

  it('same seed -> byte-identical file', async () => {
    const p1 = join(root, 'det1.onnx');
    const p2 = join(root, 'det2.onnx');
    writeOnnxModel(p1, buildOptimumGraph(QWEN, { dtype: 'q4', fused: true }).desc);
    writeOnnxModel(p2, buildOptimumGraph(QWEN, { dtype: 'q4', fused: true }).desc);
    expect(sha(p1)).toBe(sha(p2));
    const p3 = join(root, 'det3.onnx');
    writeOnnxModel(p3, buildOptimumGraph({ ...QWEN, seed: 6 }, { dtype: 'q4', fused: true }).desc);
    expect(sha(p3)).not.toBe(sha(p1));
  });

  it('external data in two chunks loads and gives the same logits as the single file', async () => {
    const single = await forward(QWEN, { dtype: 'fp32' });
    const ext = await open(QWEN, { dtype: 'fp32' }, { externalData: { file: 'model.onnx_data', chunks: 2 } });
    const logits = asF32((await ext.session.run(feeds(QWEN, [IDS]))).logits!);
    expect(maxAbs(logits, single.logits)).toBe(0);
    const inits = initializersOf(readFileSync(ext.path));
    const external = inits.filter((t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL);
    expect(external.every((t) => !t.rawData?.length && t.externalData!.map((e) => e.key).join() === 'location,offset,length')).toBe(true);
    expect(new Set(external.map((t) => t.externalData![0]!.value))).toEqual(new Set(['model.onnx_data', 'model.onnx_data_1']));
    // Tensors under 1024 bytes stay inline, as onnx.save_model's size_threshold does.
    expect(inits.find((t) => t.name === 'model.norm.weight')!.rawData!.length).toBe(QWEN.hidden * 4);
  });
});
