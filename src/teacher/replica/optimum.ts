/**
 * Replica of an Optimum ONNX export (`optimum-cli export onnx --task text-generation-with-past`, TorchScript
 * exporter, opset 14) of Qwen2ForCausalLM / LlamaForCausalLM, plus the variants made from it:
 *   - q4:   transformers.js scripts/quantize.py -> onnxruntime MatMul4BitsQuantizer (block 32, symmetric)
 *   - fp16: transformers.js scripts/float16.py convert_float_to_float16(keep_io_types=True)
 *   - fused: onnxruntime transformers optimizer (SimplifiedLayerNormalization + SkipSimplifiedLayerNormalization)
 * The passes live in optimum-passes.ts. Graph followed from transformers models/qwen2/modeling_qwen2.py
 * (Qwen2RMSNorm, Qwen2RotaryEmbedding, apply_rotary_pos_emb / rotate_half, repeat_kv, sdpa_attention_forward,
 * Qwen2MLP, Qwen2DecoderLayer) and torch/onnx/symbolic_opset9/14 (linear -> MatMul(x, W^T) + Add(bias, .),
 * rsqrt -> Div(1, Sqrt), silu -> Sigmoid + Mul, scaled_dot_product_attention -> Mul(q, sqrt(scale)),
 * Transpose(k), Mul, MatMul, Add(mask), Softmax, MatMul). I/O names and dynamic axes from optimum
 * exporters/onnx/config.py (TextDecoderWithPositionIdsOnnxConfig). Not replicated (documented, unverifiable
 * offline): the Shape/Gather/Concat chains torch emits to build Reshape/Expand shapes (constants with 0/-1
 * are used instead, so op indices such as `Reshape_3` can differ from a real file), the exact numeric ids of
 * `onnx::MatMul_<id>` initializers, and onnxslim's clean-up after fp16 conversion.
 */
import { DataType, type GraphDesc } from '../../util/onnx-file.js';
import { GraphBuilder, valueInfo } from '../../util/onnx-graph.js';
import { type DecoderSpec, headDim, weightList } from './spec.js';
import { rowTensor, transposedTensor } from './quant.js';
import { applyFp16, applyQ4, fuseSkipSimplifiedLayerNorm } from './optimum-passes.js';

export interface OptimumOptions {
  dtype: 'fp32' | 'fp16' | 'q4';
  fused?: boolean;
}

export interface OptimumGraph {
  desc: GraphDesc;
  /** Residual stream after block i (the tap's ground truth); undefined where the layout never materialises it. */
  blockOutputs: (string | undefined)[];
}

const MIN_F32 = -3.4028234663852886e38;
/** torch exports an open slice end `x[..., a:]` as INT64_MAX. */
const INT64_MAX = 9223372036854775807n;

export function buildOptimumGraph(spec: DecoderSpec, opts: OptimumOptions): OptimumGraph {
  const g = new GraphBuilder();
  const H = spec.heads;
  const KV = spec.kvHeads;
  const Dh = headDim(spec);
  const weights = new Map(weightList(spec).map((w) => [w.name, w]));
  const W = (name: string) => {
    const w = weights.get(name);
    if (!w) throw new Error(`no weight ${name}`);
    return w;
  };

  // Graph inputs, dynamic axes as Optimum names them.
  const inputs = [
    valueInfo('input_ids', DataType.INT64, ['batch_size', 'sequence_length']),
    valueInfo('attention_mask', DataType.INT64, ['batch_size', 'past_sequence_length + sequence_length']),
    valueInfo('position_ids', DataType.INT64, ['batch_size', 'sequence_length']),
  ];
  for (let i = 0; i < spec.layers; i++)
    for (const kv of ['key', 'value']) inputs.push(valueInfo(`past_key_values.${i}.${kv}`, DataType.FLOAT, ['batch_size', KV, 'past_sequence_length', Dh]));
  for (const vi of inputs) g.types.set(vi.name, vi.type!.tensorType!.elemType!);

  // Parameters keep their HF names (state_dict order); folded Linear weights W^T come after, in node order,
  // as `onnx::MatMul_<id>` (ids assigned once the graph is complete).
  const named = new Set<string>();
  const param = (name: string) => {
    named.add(name);
    g.types.set(name, DataType.FLOAT);
    return name;
  };
  const matmulWeights: { node: number; source: string }[] = [];

  const linear = (scope: string, x: string, wName: string, bias?: string): string => {
    const mm = g.op(scope, 'MatMul', [x, '']);
    matmulWeights.push({ node: g.nodes.length - 1, source: wName });
    return bias ? g.op(scope, 'Add', [param(bias), mm]) : mm;
  };

  // Qwen2RMSNorm: variance = x.pow(2).mean(-1, keepdim); x * rsqrt(variance + eps); weight * x.
  const rmsNorm = (scope: string, x: string, wName: string): string => {
    const pow = g.op(scope, 'Pow', [x, g.constF(scope, 2)]);
    const mean = g.op(scope, 'ReduceMean', [pow], { axes: { ints: [-1] }, keepdims: { i: 1 } });
    const add = g.op(scope, 'Add', [mean, g.constF(scope, spec.rmsEps)]);
    const sqrt = g.op(scope, 'Sqrt', [add]);
    const inv = g.op(scope, 'Div', [g.constF(scope, 1), sqrt]);
    const mul = g.op(scope, 'Mul', [x, inv]);
    return g.op(scope, 'Mul', [param(wName), mul]);
  };

  // model.embed_tokens: Gather(weight [V, D], input_ids) -> [B, S, D]
  let h = g.op('/model/embed_tokens', 'Gather', [param('model.embed_tokens.weight'), 'input_ids']);

  // Qwen2RotaryEmbedding (once per model): freqs = inv_freq[None, :, None] @ position_ids[:, None, :].float()
  // -> [B, Dh/2, S], transpose -> [B, S, Dh/2], emb = cat(freqs, freqs) -> [B, S, Dh], cos/sin * attention_scaling.
  const R = '/model/rotary_emb';
  const invFreq = Array.from({ length: Dh / 2 }, (_, k) => Math.fround(1 / Math.fround(spec.ropeTheta ** Math.fround((2 * k) / Dh))));
  const invF = g.constF(R, invFreq, [1, Dh / 2, 1]);
  const posU = g.op(R, 'Unsqueeze', ['position_ids', g.constI(R, [1])]);
  const posF = g.op(R, 'Cast', [posU], { to: { i: DataType.FLOAT } }, { type: DataType.FLOAT });
  const freqs = g.op(R, 'Transpose', [g.op(R, 'MatMul', [invF, posF])], { perm: { ints: [0, 2, 1] } });
  const emb = g.op(R, 'Concat', [freqs, freqs], { axis: { i: -1 } });
  const cos = g.op(R, 'Mul', [g.op(R, 'Cos', [emb]), g.constF(R, 1)]);
  const sin = g.op(R, 'Mul', [g.op(R, 'Sin', [emb]), g.constF(R, 1)]);

  // 4-D additive mask [B, 1, S, T]: key j is hidden from query i (absolute position past + i) when j > past + i
  // or attention_mask[b, j] == 0; hidden entries get finfo(float32).min as transformers' masks do.
  const M = '/model';
  const T = g.op(M, 'Gather', [g.op(M, 'Shape', ['attention_mask'], {}, { type: DataType.INT64 }), g.constI(M, 1)]);
  const S = g.op(M, 'Gather', [g.op(M, 'Shape', ['input_ids'], {}, { type: DataType.INT64 }), g.constI(M, 1)]);
  const past = g.op(M, 'Sub', [T, S]);
  const kPos = g.op(M, 'Range', [g.constI(M, 0), T, g.constI(M, 1)]);
  const qPos = g.op(M, 'Unsqueeze', [g.op(M, 'Range', [past, T, g.constI(M, 1)]), g.constI(M, [1])]);
  const causal = g.op(M, 'Greater', [kPos, qPos], {}, { type: DataType.BOOL });
  const pad = g.op(M, 'Equal', ['attention_mask', g.constI(M, 0)], {}, { type: DataType.BOOL });
  const hidden = g.op(M, 'Or', [causal, g.op(M, 'Unsqueeze', [pad, g.constI(M, [1, 2])])]);
  const mask = g.op(M, 'Where', [hidden, g.constF(M, MIN_F32), g.constF(M, 0)], {}, { type: DataType.FLOAT });

  const blockOutputs: string[] = [];
  for (let i = 0; i < spec.layers; i++) {
    const L = `/model/layers.${i}`;
    const P = `model.layers.${i}`;
    const A = `${L}/self_attn`;
    const bias = (p: string) => (spec.modelType === 'qwen2' ? `${P}.self_attn.${p}.bias` : undefined);
    const x = rmsNorm(`${L}/input_layernorm`, h, `${P}.input_layernorm.weight`);
    // q/k/v: Linear -> view(B, S, -1, Dh) -> transpose(1, 2): [B, heads, S, Dh]
    const heads = (t: string, n: number) =>
      g.op(A, 'Transpose', [g.op(A, 'Reshape', [t, g.constI(A, [0, 0, n, Dh])])], { perm: { ints: [0, 2, 1, 3] } });
    const q = heads(linear(`${A}/q_proj`, x, `${P}.self_attn.q_proj.weight`, bias('q_proj')), H);
    const k = heads(linear(`${A}/k_proj`, x, `${P}.self_attn.k_proj.weight`, bias('k_proj')), KV);
    const v = heads(linear(`${A}/v_proj`, x, `${P}.self_attn.v_proj.weight`, bias('v_proj')), KV);
    // apply_rotary_pos_emb: cos/sin.unsqueeze(1); x * cos + rotate_half(x) * sin, rotate_half = cat(-x2, x1)
    const cosU = g.op(A, 'Unsqueeze', [cos, g.constI(A, [1])]);
    const sinU = g.op(A, 'Unsqueeze', [sin, g.constI(A, [1])]);
    const rope = (t: string) => {
      const x1 = g.op(A, 'Slice', [t, g.constI(A, [0]), g.constI(A, [Dh / 2]), g.constI(A, [3]), g.constI(A, [1])]);
      const x2 = g.op(A, 'Slice', [t, g.constI(A, [Dh / 2]), g.constI(A, [INT64_MAX]), g.constI(A, [3]), g.constI(A, [1])]);
      const rot = g.op(A, 'Concat', [g.op(A, 'Neg', [x2]), x1], { axis: { i: -1 } });
      return g.op(A, 'Add', [g.op(A, 'Mul', [t, cosU]), g.op(A, 'Mul', [rot, sinU])]);
    };
    const qr = rope(q);
    const kr = rope(k);
    // DynamicCache.update: cat(past, new) on the sequence axis -> present.{i}.key/value [B, KV, past + S, Dh]
    const kAll = g.op(A, 'Concat', [`past_key_values.${i}.key`, kr], { axis: { i: -2 } }, { out: [`present.${i}.key`] });
    const vAll = g.op(A, 'Concat', [`past_key_values.${i}.value`, v], { axis: { i: -2 } }, { out: [`present.${i}.value`] });
    // repeat_kv: [B, KV, T, Dh] -> [:, :, None] -> expand n_rep -> reshape [B, H, T, Dh]
    const repeat = (t: string) => {
      const u = g.op(A, 'Unsqueeze', [t, g.constI(A, [2])]);
      const e = g.op(A, 'Expand', [u, g.constI(A, [1, 1, H / KV, 1, 1])]);
      return g.op(A, 'Reshape', [e, g.constI(A, [0, H, -1, Dh])]);
    };
    const kRep = repeat(kAll);
    const vRep = repeat(vAll);
    // scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=Dh^-0.5), symbolic_opset14 decomposition.
    const sq = g.op(A, 'Sqrt', [g.constF(A, Math.fround(1 / Math.sqrt(Dh)))]);
    const qs = g.op(A, 'Mul', [qr, sq]);
    const ks = g.op(A, 'Mul', [g.op(A, 'Transpose', [kRep], { perm: { ints: [0, 1, 3, 2] } }), sq]);
    const scores = g.op(A, 'Add', [g.op(A, 'MatMul', [qs, ks]), mask]);
    const ctx = g.op(A, 'MatMul', [g.op(A, 'Softmax', [scores], { axis: { i: -1 } }), vRep]);
    // transpose(1, 2).reshape(B, S, -1) -> o_proj
    const merged = g.op(A, 'Reshape', [g.op(A, 'Transpose', [ctx], { perm: { ints: [0, 2, 1, 3] } }), g.constI(A, [0, 0, -1])]);
    const attn = linear(`${A}/o_proj`, merged, `${P}.self_attn.o_proj.weight`);
    const h1 = g.op(L, 'Add', [h, attn]); // residual + attention -> /model/layers.i/Add
    const y = rmsNorm(`${L}/post_attention_layernorm`, h1, `${P}.post_attention_layernorm.weight`);
    // Qwen2MLP: down(silu(gate(y)) * up(y)); nn.SiLU exports as Sigmoid + Mul in its own scope.
    const gate = linear(`${L}/mlp/gate_proj`, y, `${P}.mlp.gate_proj.weight`);
    const act = g.op(`${L}/mlp/act_fn`, 'Mul', [gate, g.op(`${L}/mlp/act_fn`, 'Sigmoid', [gate])]);
    const up = linear(`${L}/mlp/up_proj`, y, `${P}.mlp.up_proj.weight`);
    const mlp = linear(`${L}/mlp/down_proj`, g.op(`${L}/mlp`, 'Mul', [act, up]), `${P}.mlp.down_proj.weight`);
    h = g.op(L, 'Add', [h1, mlp]); // -> /model/layers.i/Add_1, the residual stream after block i
    blockOutputs.push(h);
  }
  const normed = rmsNorm('/model/norm', h, 'model.norm.weight');
  // Tied embeddings: lm_head.weight is embed_tokens.weight; the export still folds its transpose into its own
  // initializer. logits: [B, S, V]
  const lmSource = spec.tieEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  g.op('/lm_head', 'MatMul', [normed, ''], {}, { out: ['logits'] });
  matmulWeights.push({ node: g.nodes.length - 1, source: lmSource });

  // Initializers: HF-named parameters in checkpoint order, then the folded W^T in node order.
  for (const w of weightList(spec)) if (named.has(w.name)) g.addInit(rowTensor(spec, w, w.name, 'fp32'), { source: w.name, transposed: false });
  const firstId = g.nodes.length + inputs.length;
  matmulWeights.forEach((m, k) => {
    const name = `onnx::MatMul_${firstId + k}`;
    g.nodes[m.node]!.input[1] = name;
    g.addInit(transposedTensor(spec, W(m.source), name, 'fp32'), { source: m.source, transposed: true });
  });

  const outputs = [valueInfo('logits', DataType.FLOAT, ['batch_size', 'sequence_length', spec.vocabSize])];
  for (let i = 0; i < spec.layers; i++)
    for (const kv of ['key', 'value'])
      outputs.push(valueInfo(`present.${i}.${kv}`, DataType.FLOAT, ['batch_size', KV, 'past_sequence_length + sequence_length', Dh]));

  let desc: GraphDesc = {
    graphName: 'main_graph',
    producerName: 'pytorch',
    producerVersion: '2.5.1',
    irVersion: 8,
    opsets: [{ domain: '', version: 14 }],
    nodes: g.nodes,
    inputs,
    outputs,
    initializers: g.initializers,
  };
  let taps: (string | undefined)[] = blockOutputs;
  // Real pipeline order: export -> (optimizer) -> (quantize.py q4 | fp16).
  if (opts.fused) ({ desc, blockOutputs: taps } = fuseSkipSimplifiedLayerNorm(desc, taps));
  if (opts.dtype === 'q4') desc = applyQ4(desc, spec, g.initMeta);
  if (opts.dtype === 'fp16') desc = applyFp16(desc, spec, g.initMeta, g.types);
  return { desc, blockOutputs: taps };
}
