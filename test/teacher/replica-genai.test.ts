/**
 * The onnxruntime-genai-builder replica (src/teacher/replica/genai.ts) has the builder's structure and
 * runs in onnxruntime-node on CPU with an empty past, and its residual-stream taps
 * (`/model/layers.{i+1}/input_layernorm/output_3`) and logits match an independent JS forward.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { buildGenaiGraph, genaiConfig } from '../../src/teacher/replica/genai.js';
import { DataType, type GraphDesc, writeOnnxModel } from '../../src/util/onnx-file.js';
import { dequantizeRowQ4, q4Tensors, transposedTensor } from '../../src/teacher/replica/genai-quant.js';
import { Q4_BLOCK, quantizeColumnQ4 } from '../../src/teacher/replica/quant.js';
import { type DecoderSpec, headDim, PRESETS, weightList, weightTensor } from '../../src/teacher/replica/spec.js';
import { referenceForward, referenceHead } from './replica-reference.js';
import { cosine, maxAbsDiff } from '../helpers/compare.js';

const { onnx } = onnxProto;

// GroupQueryAttention (CPU) requires head_size % 16 == 0, so the tiny specs use head_dim 16.
const QWEN: DecoderSpec = { modelType: 'qwen2', vocabSize: 300, hidden: 64, layers: 3, heads: 4, kvHeads: 2, intermediate: 128, maxPositions: 512, ropeTheta: 1000000, rmsEps: 1e-6, tieEmbeddings: true, seed: 7 };
const LLAMA: DecoderSpec = { modelType: 'llama', vocabSize: 290, hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, maxPositions: 512, ropeTheta: 10000, rmsEps: 1e-5, tieEmbeddings: false, seed: 11 };

const root = mkdtempSync(join(tmpdir(), 'recdistill-genai-replica-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Write the replica with every residual tap added as an extra graph output, and open it. */
async function open(spec: DecoderSpec, dtype: 'fp32' | 'q4') {
  const { desc, blockOutputs } = buildGenaiGraph(spec, { dtype });
  const taps = blockOutputs.filter((n): n is string => n !== undefined);
  const tapped: GraphDesc = {
    ...desc,
    outputs: [...desc.outputs, ...taps.map((name) => onnx.ValueInfoProto.create({ name, type: { tensorType: { elemType: DataType.FLOAT } } }))],
  };
  const path = join(root, `${spec.modelType}-${dtype}.onnx`);
  writeOnnxModel(path, tapped);
  return { session: await ort.InferenceSession.create(path, { executionProviders: ['cpu'], graphOptimizationLevel: 'disabled' }), taps, desc };
}

/** Feeds for right-padded rows (pad id 0, mask 0) and an empty past. */
function feeds(spec: DecoderSpec, rows: number[][]): Record<string, ort.Tensor> {
  const B = rows.length;
  const S = Math.max(...rows.map((r) => r.length));
  const ids = new BigInt64Array(B * S);
  const mask = new BigInt64Array(B * S);
  rows.forEach((r, b) => r.forEach((id, t) => ((ids[b * S + t] = BigInt(id)), (mask[b * S + t] = 1n))));
  const f: Record<string, ort.Tensor> = { input_ids: new ort.Tensor('int64', ids, [B, S]), attention_mask: new ort.Tensor('int64', mask, [B, S]) };
  for (let i = 0; i < spec.layers; i++) {
    for (const kv of ['key', 'value']) f[`past_key_values.${i}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [B, spec.kvHeads, 0, headDim(spec)]);
  }
  return f;
}

/** Rows [t0, t0+L) of batch b of a [B, S, C] tensor. */
const rowsOf = (t: ort.Tensor, b: number, L: number): Float32Array => {
  const [, S, C] = t.dims as number[];
  return (t.data as Float32Array).slice(b * S! * C!, (b * S! + L) * C!);
};

/** Torch weight `name` [out, in] after the builder's int4 round trip (per output row, blocks of 32 along in). */
function dequantized(spec: DecoderSpec, name: string): Float32Array {
  const { dims, data } = weightTensor(spec, name);
  const [out, K] = dims as [number, number];
  const res = new Float32Array(out * K);
  const nb = Math.ceil(K / Q4_BLOCK);
  for (let n = 0; n < out; n++) {
    const packed = new Uint8Array(nb * 16);
    const scales = new Float32Array(nb);
    quantizeColumnQ4(data.subarray(n * K, (n + 1) * K), packed, 0, scales, 0);
    res.set(dequantizeRowQ4(packed, 0, scales, 0, K), n * K);
  }
  return res;
}
const logDiff = (what: string, maxAbs: number, cos: number) => console.log(`${what}: max |diff| ${maxAbs.toExponential(2)}, cosine ${cos.toFixed(5)}`);

const SEQS = [
  [5, 17, 42, 99, 3, 250, 7, 11, 64],
  [1, 2, 3, 200, 150],
];

describe('genai builder replica: structure', () => {
  it.each([QWEN, LLAMA])('has the builder node names, ops, I/O and initializers ($modelType)', (spec) => {
    const { desc, blockOutputs } = buildGenaiGraph(spec, { dtype: 'fp32' });
    const N = spec.layers;
    const byName = new Map(desc.nodes.map((n) => [n.name, n]));
    const op = (name: string) => byName.get(name)?.opType;
    expect(desc.producerName).toBe('onnxruntime-genai');
    expect(desc.opsets).toEqual([{ domain: '', version: 21 }, { domain: 'com.microsoft', version: 1 }]);
    expect(desc.inputs.map((v) => v.name)).toEqual(['input_ids', 'attention_mask', ...[0, 1, 2].slice(0, N).map((i) => `past_key_values.${i}.key`), ...[0, 1, 2].slice(0, N).map((i) => `past_key_values.${i}.value`)]);
    const past = desc.inputs[2]!.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue));
    expect(past).toEqual(['batch_size', spec.kvHeads, 'past_sequence_length', 'kv_cache_dim']);
    expect(desc.outputs[0]!.name).toBe('logits');
    expect(desc.nodes.filter((n) => n.opType === 'Add').map((n) => n.name)).toEqual(spec.modelType === 'qwen2' ? Array.from({ length: N }, (_, i) => `/model/layers.${i}/attn/qkv_proj/Add`) : []);
    expect(op('/model/embed_tokens/Gather')).toBe('Gather');
    expect(op('/model/layers.0/input_layernorm/LayerNorm')).toBe('SimplifiedLayerNormalization');
    for (let i = 0; i < N; i++) {
      if (i > 0) expect(op(`/model/layers.${i}/input_layernorm/SkipLayerNorm`)).toBe('SkipSimplifiedLayerNormalization');
      expect(byName.get(`/model/layers.${i}/post_attention_layernorm/SkipLayerNorm`)?.output).toEqual([`/model/layers.${i}/post_attention_layernorm/output_0`, '', '', `/model/layers.${i}/post_attention_layernorm/output_3`]);
      const gqa = byName.get(`/model/layers.${i}/attn/GroupQueryAttention`)!;
      expect(gqa.domain).toBe('com.microsoft');
      expect(gqa.input.slice(5, 9)).toEqual(['/model/attn_mask_reformat/attn_mask_subgraph/Sub/Cast/output_0', '/model/attn_mask_reformat/attn_mask_subgraph/Gather/Cast/output_0', 'cos_cache', 'sin_cache']);
      expect(gqa.attribute.find((a) => a.name === 'do_rotary')?.i).toBe(1);
      for (const n of ['attn/qkv_proj/MatMul', 'attn/o_proj/MatMul', 'mlp/gate_proj/MatMul', 'mlp/up_proj/MatMul', 'mlp/down_proj/MatMul']) expect(op(`/model/layers.${i}/${n}`)).toBe('MatMul');
      expect(op(`/model/layers.${i}/mlp/act_fn/Sigmoid`)).toBe('Sigmoid');
    }
    expect(byName.get(`/model/layers.${N}/final_norm_layernorm/SkipLayerNorm`)?.output).toEqual([`/model/layers.${N}/final_norm_layernorm/output_0`]);
    expect(byName.get('/lm_head/MatMul')?.output).toEqual(['logits']);
    expect(blockOutputs).toEqual([...Array.from({ length: N - 1 }, (_, i) => `/model/layers.${i + 1}/input_layernorm/output_3`), undefined]);
    const inits = desc.initializers.map((t) => t.name);
    expect(inits.slice(0, 3)).toEqual(['model.embed_tokens.weight', 'model.layers.0.input_layernorm.weight', 'model.layers.0.attn.qkv_proj.MatMul.weight']);
    expect(inits).toContain('cos_cache');
    expect(inits.at(-1)).toBe('lm_head.MatMul.weight');
    const qkv = desc.initializers.find((t) => t.name === 'model.layers.0.attn.qkv_proj.MatMul.weight')!;
    expect(qkv.dims).toEqual([spec.hidden, (spec.heads + 2 * spec.kvHeads) * headDim(spec)]);
    expect(desc.initializers.find((t) => t.name === 'cos_cache')!.dims).toEqual([spec.maxPositions, headDim(spec) / 2]);
    expect(genaiConfig(spec)).toMatchObject({ model: { type: spec.modelType, decoder: { head_size: headDim(spec), num_key_value_heads: spec.kvHeads } }, search: { past_present_share_buffer: true } });
  });

  it('q4: every MatMul becomes MatMulNBits {name}_Q4 with _Q4/_scales initializers', () => {
    const { desc } = buildGenaiGraph(QWEN, { dtype: 'q4' });
    expect(desc.nodes.filter((n) => n.opType === 'MatMul')).toEqual([]);
    const head = desc.nodes.find((n) => n.name === '/lm_head/MatMul_Q4')!;
    expect(head.opType).toBe('MatMulNBits');
    expect(head.input).toEqual(['/model/layers.3/final_norm_layernorm/output_0', 'lm_head.MatMul.weight_Q4', 'lm_head.MatMul.weight_scales']);
    expect(Object.fromEntries(head.attribute.map((a) => [a.name, Number(a.i)]))).toEqual({ K: 64, N: 300, accuracy_level: 4, block_size: 32, bits: 4 });
    const w = desc.initializers.find((t) => t.name === 'model.layers.0.mlp.down_proj.MatMul.weight_Q4')!;
    expect(w.dims).toEqual([64, 4, 16]);
    expect(desc.initializers.map((t) => t.name)).toContain('model.embed_tokens.weight');
  });
});

describe('genai builder replica: lazy initializers', () => {
  const concat = (it: Iterable<Uint8Array>) => Buffer.concat([...it]);
  it('band-streamed tensors equal the one-shot tensors (packed QKV, transposed; q4)', () => {
    const ws = ['q_proj', 'k_proj', 'v_proj'].map((p) => weightList(QWEN).find((w) => w.name === `model.layers.1.self_attn.${p}.weight`)!);
    const one = transposedTensor(QWEN, 'x', ws);
    const banded = transposedTensor(QWEN, 'x', ws, 3 * 128 * 4); // 3 input rows per band
    const got = new Float32Array(concat(banded.chunks()).buffer.slice(0));
    expect(Buffer.compare(concat(one.chunks()), Buffer.from(got.buffer))).toBe(0);
    // Element check against the canonical tensors: W^T[k][n] of [q; k; v].
    const full = ws.map((w) => weightTensor(QWEN, w.name).data);
    expect(got[5 * 128 + 70]).toBe(full[1]![(70 - 64) * 64 + 5]); // k_proj row 6, column 5
    const q = q4Tensors(QWEN, 'x', ws);
    const qb = q4Tensors(QWEN, 'x', ws, 7 * 64 * 4); // 7 rows per batch
    expect(Buffer.compare(concat(q.weight.chunks()), concat(qb.weight.chunks()))).toBe(0);
    expect(Buffer.compare(concat(q.scales.chunks()), concat(qb.scales.chunks()))).toBe(0);
  });

  it('a real-size preset is described without generating any weights', () => {
    const t0 = performance.now();
    const { desc } = buildGenaiGraph({ ...PRESETS['qwen2.5-0.5b'], seed: 1 }, { dtype: 'q4' });
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(desc.nodes.filter((n) => n.opType === 'GroupQueryAttention')).toHaveLength(24);
    const head = desc.initializers.find((t) => t.name === 'lm_head.MatMul.weight_Q4')!;
    expect(head.dims).toEqual([151936, 28, 16]);
  });
});

describe('genai builder replica: runs and matches the reference forward', () => {
  it.each([QWEN, LLAMA])('fp32 states and logits, batch 1 and right-padded batch 2 ($modelType)', async (spec) => {
    const { session, taps } = await open(spec, 'fp32');
    const refs = SEQS.map((s) => referenceForward(spec, s));
    for (const rows of [[SEQS[0]!], SEQS]) {
      const out = await session.run(feeds(spec, rows));
      expect(out.logits!.dims).toEqual([rows.length, rows[0]!.length, spec.vocabSize]);
      expect(out[`present.0.key`]!.dims).toEqual([rows.length, spec.kvHeads, rows[0]!.length, headDim(spec)]);
      rows.forEach((r, b) => {
        const ref = refs[b]!;
        taps.forEach((name, i) => {
          expect(out[name]!.dims).toEqual([rows.length, rows[0]!.length, spec.hidden]);
          expect(maxAbsDiff(rowsOf(out[name]!, b, r.length), ref.blockStates[i]!)).toBeLessThan(1e-4);
        });
        expect(maxAbsDiff(rowsOf(out.logits!, b, r.length), ref.logits)).toBeLessThan(1e-4);
        // The last block's state is never materialised; logits are its lm_head(final_norm(.)).
        expect(maxAbsDiff(ref.logits, referenceHead(spec, ref.blockStates.at(-1)!, r.length))).toBeLessThan(1e-5);
      });
    }
    await session.release();
  });

  it.each([QWEN, LLAMA])('q4 (MatMulNBits int4): matches a forward with dequantised weights; close to fp32 ($modelType)', async (spec) => {
    const fp = await open(spec, 'fp32');
    const q = await open(spec, 'q4');
    const f = feeds(spec, SEQS);
    const [a, b] = [await fp.session.run(f), await q.session.run(f)];
    SEQS.forEach((r, i) => {
      const lq = rowsOf(b.logits!, i, r.length);
      // Packing/layout check: the same weights int4-rounded on the JS side. What remains is MatMulNBits'
      // accuracy_level 4 (int8-quantised activations) on CPU.
      const deq = referenceForward(spec, r, { linearWeight: (n) => dequantized(spec, n) });
      logDiff(`${spec.modelType} q4 vs dequantised reference`, maxAbsDiff(lq, deq.logits), cosine(lq, deq.logits));
      expect(cosine(lq, deq.logits)).toBeGreaterThan(0.9995);
      // Quantisation error itself, measured on these N(0, 0.02) random weights.
      const c = cosine(rowsOf(a.logits!, i, r.length), lq);
      logDiff(`${spec.modelType} q4 vs fp32`, maxAbsDiff(rowsOf(a.logits!, i, r.length), lq), c);
      expect(c).toBeGreaterThan(0.97);
    });
    // Without accuracy_level (fp32 activations) the kernel must reproduce the dequantised weights exactly.
    const { desc } = buildGenaiGraph(spec, { dtype: 'q4' });
    for (const n of desc.nodes) n.attribute = n.attribute.filter((a) => a.name !== 'accuracy_level');
    const exactPath = join(root, `${spec.modelType}-q4-acc0.onnx`);
    writeOnnxModel(exactPath, desc);
    const exact = await ort.InferenceSession.create(exactPath);
    const lq = rowsOf((await exact.run(feeds(spec, [SEQS[0]!]))).logits!, 0, SEQS[0]!.length);
    const deq = referenceForward(spec, SEQS[0]!, { linearWeight: (n) => dequantized(spec, n) });
    expect(maxAbsDiff(lq, deq.logits)).toBeLessThan(1e-5);
    await exact.release();
    await fp.session.release();
    await q.session.release();
  });
});
