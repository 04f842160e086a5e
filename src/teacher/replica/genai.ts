/**
 * Offline replica of a decoder exported by the onnxruntime-genai model builder
 * (microsoft/onnxruntime-genai src/python/py/models/builders/base.py `Model`, read at commit
 * a0c04eb1313b (2026-08-22, after v0.15.2); Qwen2 -> builders/qwen.py `QwenModel`, Llama ->
 * builders/llama.py `LlamaModel`, both plain `Model` for these configs), for `-e cpu` with
 * `-p fp32` or `-p int4` and default extra options. Followed functions, in graph order:
 *   make_inputs_and_outputs, make_attention_mask_reformatting_for_gqa, make_embedding,
 *   make_layer -> make_layernorm / make_attention (packed QKV: make_packed_matmul_float,
 *   make_packed_add, make_attention_qk_rope with use_rope_in_attn, make_group_query_attention,
 *   make_attention_output_proj) / make_mlp_proj (make_activation_with_mul 'Sigmoid'),
 *   final norm make_layernorm(location='final_norm'), make_lm_head, make_constant, make_genai_config;
 *   int4: to_nbits -> onnxruntime MatMulNBitsQuantizer / DefaultWeightOnlyQuantizer (genai-quant.ts).
 * CPU + fp32 io selects GroupQueryAttention with packed QKV (`use_packed_matmul` is true for every EP
 * but DML), so there is ONE `/model/layers.{i}/attn/qkv_proj/MatMul` per block (not q/k/v_proj), with
 * rotary inside GQA (do_rotary=1, cos_cache/sin_cache [max_pos, head_size/2]) and no position_ids.
 * Residuals live only inside SkipSimplifiedLayerNormalization (output_3 = input + skip).
 */
import onnxProto from 'onnx-proto';
import { type DecoderSpec, headDim, weightList, weightTensor, type WeightSpec } from './spec.js';
import { DataType, eagerTensor, type GraphDesc, type LazyTensor, type NodeProto, type ValueInfoProto } from '../../util/onnx-file.js';
import { Q4_BLOCK, plainTensor, q4Tensors, transposedTensor } from './genai-quant.js';

const { onnx } = onnxProto;

export interface GenaiOptions {
  /** 'fp32' = `-p fp32 -e cpu`; 'q4' = `-p int4 -e cpu` (MatMulNBits, block 32, symmetric, accuracy_level 4). */
  dtype: 'fp32' | 'q4';
}

/** A typed attribute: the builder passes python ints/bools (INT) and floats (FLOAT), which JS numbers cannot tell apart. */
type AttrValue = { i: number } | { f: number } | { t: InstanceType<typeof onnx.TensorProto> };

function attribute(name: string, v: AttrValue) {
  const A = onnx.AttributeProto.AttributeType;
  if ('i' in v) return onnx.AttributeProto.create({ name, type: A.INT, i: v.i });
  if ('f' in v) return onnx.AttributeProto.create({ name, type: A.FLOAT, f: v.f });
  return onnx.AttributeProto.create({ name, type: A.TENSOR, t: v.t });
}

function valueInfo(name: string, elemType: number, dims: (string | number)[]): ValueInfoProto {
  const dim = dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }));
  return onnx.ValueInfoProto.create({ name, type: { tensorType: { elemType, shape: { dim } } } });
}

/** `/model/constants/INT64/[1]` -> Constant node `/model/constant_nodes/INT64/[1]` (builder `make_constant`): a list gives a 1-D tensor, a bare number a scalar. */
function constantNode(name: string): NodeProto {
  const lit = name.split('/').at(-1)!;
  const values: number[] = JSON.parse(lit.startsWith('[') ? lit : `[${lit}]`);
  const t = onnx.TensorProto.create({
    name,
    dims: lit.startsWith('[') ? [values.length] : [],
    dataType: DataType.INT64,
    rawData: new Uint8Array(BigInt64Array.from(values, (v) => BigInt(v)).buffer),
  });
  return onnx.NodeProto.create({ name: name.replace('/constants/', '/constant_nodes/'), opType: 'Constant', output: [name], attribute: [attribute('value', { t })] });
}

export function buildGenaiGraph(spec: DecoderSpec, opts: GenaiOptions): { desc: GraphDesc; blockOutputs: (string | undefined)[] } {
  const N = spec.layers;
  const D = spec.hidden;
  const Dh = headDim(spec);
  const eps = spec.rmsEps;
  const q4 = opts.dtype === 'q4';
  const W = new Map(weightList(spec).map((w) => [w.name, w]));
  const w = (name: string): WeightSpec => W.get(name) ?? (() => { throw new Error(`no weight ${name}`); })();

  const nodes: NodeProto[] = [];
  const made = new Set<string>();
  const floatInits: LazyTensor[] = [];
  const q4Inits: LazyTensor[] = [];
  /** `make_node`: dedup by node name, emit any `/model/constants/...` input as a Constant node first. */
  const node = (opType: string, inputs: string[], outputs: string[], name: string, attrs: Record<string, AttrValue> = {}, domain = ''): void => {
    if (made.has(name)) return;
    for (const i of inputs) {
      if (!i.startsWith('/model/constants/')) continue;
      const c = constantNode(i);
      if (!made.has(c.name)) nodes.push(c), made.add(c.name);
    }
    const attribute_ = Object.entries(attrs).map(([k, v]) => attribute(k, v));
    nodes.push(onnx.NodeProto.create({ name, opType, domain, input: inputs, output: outputs, attribute: attribute_ }));
    made.add(name);
  };
  /**
   * A Linear as the builder emits it: fp32 -> MatMul `{basename}` with initializer `{basename[1:] with / -> .}.weight`
   * [in, out]; int4 -> what MatMulNBitsQuantizer turns that into: MatMulNBits `{basename}_Q4`, inputs
   * `{weight}_Q4` [N, K/32, 16] and `{weight}_scales` [N*K/32], attrs K, N, accuracy_level, block_size, bits
   * (onnx.helper.make_node sorts attributes by name). Returns the output tensor name.
   */
  const linear = (basename: string, input: string, ws: WeightSpec[], output = `${basename}/output_0`): string => {
    const weight = `${basename.slice(1).replaceAll('/', '.')}.weight`;
    if (!q4) {
      floatInits.push(transposedTensor(spec, weight, ws));
      node('MatMul', [input, weight], [output], basename);
      return output;
    }
    const t = q4Tensors(spec, weight, ws);
    q4Inits.push(t.weight, t.scales);
    const attrs = { K: { i: t.K }, N: { i: t.N }, accuracy_level: { i: 4 }, block_size: { i: Q4_BLOCK }, bits: { i: 4 } };
    node('MatMulNBits', [input, t.weight.name, t.scales.name], [output], `${basename}_Q4`, attrs, 'com.microsoft');
    return output;
  };
  const eager = (name: string, data: Float32Array, dims: number[]): string => {
    floatInits.push(eagerTensor(name, dims, DataType.FLOAT, data));
    return name;
  };

  // Graph inputs/outputs (make_inputs_and_outputs): dict order, so all keys come before all values.
  const kvDims = (seq: string) => ['batch_size', spec.kvHeads, seq, 'kv_cache_dim'];
  const inputs = [
    valueInfo('input_ids', DataType.INT64, ['batch_size', 'sequence_length']),
    valueInfo('attention_mask', DataType.INT64, ['batch_size', 'total_sequence_length']),
    ...['key', 'value'].flatMap((kv) => Array.from({ length: N }, (_, i) => valueInfo(`past_key_values.${i}.${kv}`, DataType.FLOAT, kvDims('past_sequence_length')))),
  ];
  const outputs = [
    valueInfo('logits', DataType.FLOAT, ['batch_size', 'sequence_length', spec.vocabSize]),
    ...['key', 'value'].flatMap((kv) => Array.from({ length: N }, (_, i) => valueInfo(`present.${i}.${kv}`, DataType.FLOAT, kvDims('total_sequence_length')))),
  ];

  // make_attention_mask_reformatting_for_gqa: seqlens_k = ReduceSum(mask, 1) - 1 as int32 [B];
  // total_sequence_length = Shape(mask)[1] as an int32 scalar.
  const m = '/model/attn_mask_reformat/attn_mask_subgraph';
  node('ReduceSum', ['attention_mask', '/model/constants/INT64/[1]'], [`${m}/ReduceSum/output_0`], `${m}/ReduceSum`, { keepdims: { i: 0 } });
  node('Sub', [`${m}/ReduceSum/output_0`, '/model/constants/INT64/[1]'], [`${m}/Sub/output_0`], `${m}/Sub`);
  node('Cast', [`${m}/Sub/output_0`], [`${m}/Sub/Cast/output_0`], `${m}/Sub/Cast`, { to: { i: DataType.INT32 } });
  node('Shape', ['attention_mask'], [`${m}/Shape/output_0`], `${m}/Shape`);
  node('Gather', [`${m}/Shape/output_0`, '/model/constants/INT64/1'], [`${m}/Gather/output_0`], `${m}/Gather`, { axis: { i: 0 } });
  node('Cast', [`${m}/Gather/output_0`], [`${m}/Gather/Cast/output_0`], `${m}/Gather/Cast`, { to: { i: DataType.INT32 } });
  const seqlensK = `${m}/Sub/Cast/output_0`;
  const totalSeqLen = `${m}/Gather/Cast/output_0`;

  // make_embedding: Gather over the untransposed [V, H] table -> [B, S, H].
  floatInits.push(plainTensor(spec, 'model.embed_tokens.weight', w('model.embed_tokens.weight')));
  node('Gather', ['model.embed_tokens.weight', 'input_ids'], ['/model/embed_tokens/Gather/output_0'], '/model/embed_tokens/Gather');
  let root = '/model/embed_tokens/Gather/output_0'; // layernorm_attrs.root_input: the residual stream so far
  let skip = root; // layernorm_attrs.skip_input: the last sublayer output not yet added

  /** make_layernorm (simple=True). Returns output_0; updates the residual stream to output_3 for skip norms that keep it. */
  const layerNorm = (layer: number, location: 'input' | 'post_attention' | 'final_norm', weight: Float32Array, withSkip: boolean, last = false): string => {
    const p = `/model/layers.${layer}/${location}_layernorm`;
    const wName = eager(`model.layers.${layer}.${location}_layernorm.weight`, weight, [D]);
    const out0 = `${p}/output_0`;
    if (!withSkip) {
      // Default domain: ORT registers SimplifiedLayerNormalization there (the builder passes domain=None).
      node('SimplifiedLayerNormalization', [root, wName], [out0], `${p}/LayerNorm`, { epsilon: { f: eps }, axis: { i: -1 }, stash_type: { i: 1 } });
      return out0;
    }
    const outs = last ? [out0] : [out0, '', '', `${p}/output_3`];
    node('SkipSimplifiedLayerNormalization', [root, skip, wName], outs, `${p}/SkipLayerNorm`, { epsilon: { f: eps } }, 'com.microsoft');
    if (!last) root = `${p}/output_3`;
    return out0;
  };

  const blockOutputs: (string | undefined)[] = [];
  let ropeMade = false;
  for (let i = 0; i < N; i++) {
    const hf = `model.layers.${i}`;
    const p = `/model/layers.${i}`;
    const x = layerNorm(i, 'input', weightTensor(spec, `${hf}.input_layernorm.weight`).data, i > 0);
    if (i > 0) blockOutputs.push(root); // `/model/layers.{i}/input_layernorm/output_3` = output of block i-1

    // Packed QKV: torch [q; k; v] rows -> one MatMul [H, (heads + 2 kvHeads) * Dh], one packed bias Add (qwen2).
    const projs = ['q_proj', 'k_proj', 'v_proj'].map((n) => `${hf}.self_attn.${n}`);
    let qkv = linear(`${p}/attn/qkv_proj/MatMul`, x, projs.map((n) => w(`${n}.weight`)));
    if (spec.modelType === 'qwen2') {
      const parts = projs.map((n) => weightTensor(spec, `${n}.bias`).data);
      const bias = new Float32Array(parts.reduce((a, b) => a + b.length, 0));
      parts.reduce((off, b) => (bias.set(b, off), off + b.length), 0);
      const add = `${p}/attn/qkv_proj/Add`;
      node('Add', [qkv, eager(`${add.slice(1).replaceAll('/', '.')}.bias`, bias, [bias.length])], [`${add}/output_0`], add);
      qkv = `${add}/output_0`;
    }
    if (!ropeMade) {
      const [cos, sin] = ropeCaches(spec);
      floatInits.push(cos, sin);
      ropeMade = true;
    }
    // GroupQueryAttention inputs (schema order): query (packed QKV), key, value, past_key, past_value,
    // seqlens_k, total_sequence_length, cos_cache, sin_cache, position_ids, attention_bias, head_sink.
    // Trailing optional slots stay as "" exactly as make_group_query_attention lists them.
    const gqa = `${p}/attn/GroupQueryAttention`;
    const gqaInputs = [qkv, '', '', `past_key_values.${i}.key`, `past_key_values.${i}.value`, seqlensK, totalSeqLen, 'cos_cache', 'sin_cache', '', '', ''];
    const gqaAttrs: Record<string, AttrValue> = {
      num_heads: { i: spec.heads },
      kv_num_heads: { i: spec.kvHeads },
      scale: { f: 1 / Math.sqrt(Dh) },
      // Llama configs have no sliding_window -> -1; Qwen2Config sets it to None when use_sliding_window is
      // false, and onnx_ir drops None-valued attributes, so Qwen2 exports omit it (kernel default -1).
      ...(spec.modelType === 'llama' ? { local_window_size: { i: -1 } } : {}),
      softcap: { f: 0 },
      do_rotary: { i: 1 },
      rotary_interleaved: { i: 0 },
    };
    node('GroupQueryAttention', gqaInputs, [`${gqa}/output_0`, `present.${i}.key`, `present.${i}.value`], gqa, gqaAttrs, 'com.microsoft');
    skip = linear(`${p}/attn/o_proj/MatMul`, `${gqa}/output_0`, [w(`${hf}.self_attn.o_proj.weight`)]);

    const h = layerNorm(i, 'post_attention', weightTensor(spec, `${hf}.post_attention_layernorm.weight`).data, true);
    const gate = linear(`${p}/mlp/gate_proj/MatMul`, h, [w(`${hf}.mlp.gate_proj.weight`)]);
    const up = linear(`${p}/mlp/up_proj/MatMul`, h, [w(`${hf}.mlp.up_proj.weight`)]);
    node('Sigmoid', [gate], [`${p}/mlp/act_fn/Sigmoid/output_0`], `${p}/mlp/act_fn/Sigmoid`);
    node('Mul', [gate, `${p}/mlp/act_fn/Sigmoid/output_0`], [`${p}/mlp/act_fn/Mul/output_0`], `${p}/mlp/act_fn/Mul`);
    node('Mul', [`${p}/mlp/act_fn/Mul/output_0`, up], [`${p}/mlp/Mul/output_0`], `${p}/mlp/Mul`);
    skip = linear(`${p}/mlp/down_proj/MatMul`, `${p}/mlp/Mul/output_0`, [w(`${hf}.mlp.down_proj.weight`)]);
  }
  blockOutputs.push(undefined); // the last block's sum only exists inside the final SkipLayerNorm

  const normed = layerNorm(N, 'final_norm', weightTensor(spec, 'model.norm.weight').data, true, true);
  // make_lm_head: the HF lm_head Linear (tied -> the embedding matrix) becomes `lm_head.MatMul.weight` [H, V].
  const head = spec.tieEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  linear('/lm_head/MatMul', normed, [w(head)], 'logits');

  const desc: GraphDesc = {
    graphName: 'main_graph',
    producerName: 'onnxruntime-genai',
    irVersion: 10,
    opsets: [
      { domain: '', version: 21 },
      { domain: 'com.microsoft', version: 1 },
    ],
    nodes,
    inputs,
    outputs,
    // MatMulNBitsQuantizer drops the float weights and appends (weight_Q4, weight_scales) per node, in node order.
    initializers: [...floatInits, ...q4Inits],
  };
  return { desc, blockOutputs };
}

/**
 * `make_rotary_embedding_caches_from_scratch` + `make_rotary_embedding_caches`: float32
 * inv_freq = 1 / theta^(2j/Dh), t = 0..context_length-1, cos/sin(t * inv_freq) sliced to the first
 * Dh/2 columns -> `cos_cache`, `sin_cache` [maxPositions, Dh/2].
 */
function ropeCaches(spec: DecoderSpec): [LazyTensor, LazyTensor] {
  const Dh = headDim(spec);
  const half = Dh / 2;
  const invFreq = Float32Array.from({ length: half }, (_, j) => 1 / Math.fround(spec.ropeTheta ** Math.fround((2 * j) / Dh)));
  const P = spec.maxPositions;
  const ROWS = 4096;
  const make = (name: string, f: (x: number) => number): LazyTensor => ({
    name,
    dims: [P, half],
    dataType: DataType.FLOAT,
    byteLength: P * half * 4,
    *chunks() {
      for (let t0 = 0; t0 < P; t0 += ROWS) {
        const rows = Math.min(ROWS, P - t0);
        const out = new Float32Array(rows * half);
        for (let r = 0; r < rows; r++) for (let j = 0; j < half; j++) out[r * half + j] = f(Math.fround((t0 + r) * invFreq[j]!));
        yield new Uint8Array(out.buffer);
      }
    },
  });
  return [make('cos_cache', Math.cos), make('sin_cache', Math.sin)];
}

/**
 * genai_config.json as `make_genai_config` writes it for these models on CPU (GQA ->
 * past_present_share_buffer true; no provider_options on CPU). Token ids come from the HF
 * config/generation_config, which the spec does not carry, so callers may pass them.
 */
export function genaiConfig(spec: DecoderSpec, ids: { bos?: number; eos?: number | number[]; pad?: number } = {}): Record<string, unknown> {
  const eos = ids.eos ?? null;
  return {
    model: {
      bos_token_id: ids.bos ?? 1,
      context_length: spec.maxPositions,
      decoder: {
        session_options: { log_id: 'onnxruntime-genai', provider_options: [] },
        filename: 'model.onnx',
        head_size: headDim(spec),
        hidden_size: spec.hidden,
        inputs: { input_ids: 'input_ids', attention_mask: 'attention_mask', past_key_names: 'past_key_values.%d.key', past_value_names: 'past_key_values.%d.value' },
        outputs: { logits: 'logits', present_key_names: 'present.%d.key', present_value_names: 'present.%d.value' },
        num_attention_heads: spec.heads,
        num_hidden_layers: spec.layers,
        num_key_value_heads: spec.kvHeads,
      },
      eos_token_id: eos,
      pad_token_id: ids.pad ?? (Array.isArray(eos) ? eos[0] : eos),
      type: spec.modelType,
      vocab_size: spec.vocabSize,
    },
    search: {
      diversity_penalty: 0.0,
      do_sample: false,
      early_stopping: true,
      length_penalty: 1.0,
      max_length: spec.maxPositions,
      min_length: 0,
      no_repeat_ngram_size: 0,
      num_beams: 1,
      num_return_sequences: 1,
      past_present_share_buffer: true,
      repetition_penalty: 1.0,
      temperature: 1.0,
      top_k: 50,
      top_p: 1.0,
    },
  };
}
