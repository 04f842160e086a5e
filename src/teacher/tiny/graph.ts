/**
 * The tiny decoder-only LM as an ONNX graph (opset 17), built with onnx-proto (protobufjs).
 * GPT-2-style pre-norm transformer (Radford et al. 2019, "Language Models are Unsupervised Multitask
 * Learners"): token + learned position embeddings, N blocks of causal multi-head self-attention and a
 * SiLU MLP with residuals and LayerNorm, a final norm and an untied lm_head.
 *
 * Interface like an optimum/onnx-community export: inputs input_ids, attention_mask, position_ids (int64
 * [batch, seq]); output logits [batch, seq, vocab]. Intermediate tensor names follow optimum's naming
 * of Llama/Qwen2 exports, so the same tap patterns find the residual stream in both: the block-i output is
 * `/model/layers.{i}/Add_1_output_0`.
 */
import onnxProto from 'onnx-proto';
import { mulberry32 as rng } from '../../util/rng.js';

const { onnx } = onnxProto;
type NodeProto = InstanceType<typeof onnx.NodeProto>;
type TensorProto = InstanceType<typeof onnx.TensorProto>;

export interface TinyConfig {
  vocabSize: number;
  hidden: number;
  layers: number;
  heads: number;
  maxPositions: number;
  seed: number;
  /**
   * Mirror a KV-cache export's interface: past_key_values.{i}.key/value inputs [B, H, past, Dh] and
   * present.{i}.key/value outputs. Only an empty past (past = 0) is supported: the masks are built
   * for the current tokens alone, which is all the teacher ever feeds.
   */
  kvCache?: boolean;
}


function normalSampler(seed: number): () => number {
  const u = rng(seed);
  return () => Math.sqrt(-2 * Math.log(u() + 1e-12)) * Math.cos(2 * Math.PI * u()); // Box-Muller
}

function floatTensor(name: string, dims: number[], values: Float32Array): TensorProto {
  // raw_data is little-endian float32; Float32Array is little-endian on every platform Node runs on.
  return onnx.TensorProto.create({ name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: new Uint8Array(values.buffer.slice(0)) });
}

function int64Tensor(name: string, dims: number[], values: number[]): TensorProto {
  const b = new BigInt64Array(values.map((v) => BigInt(v)));
  return onnx.TensorProto.create({ name, dims, dataType: onnx.TensorProto.DataType.INT64, rawData: new Uint8Array(b.buffer) });
}

type Attr = { name: string; i?: number; f?: number; ints?: number[]; t?: TensorProto };

function attr(a: Attr) {
  const A = onnx.AttributeProto.AttributeType;
  if (a.t) return onnx.AttributeProto.create({ name: a.name, type: A.TENSOR, t: a.t });
  if (a.ints) return onnx.AttributeProto.create({ name: a.name, type: A.INTS, ints: a.ints });
  if (a.f !== undefined) return onnx.AttributeProto.create({ name: a.name, type: A.FLOAT, f: a.f });
  return onnx.AttributeProto.create({ name: a.name, type: A.INT, i: a.i ?? 0 });
}

/** Builds nodes with optimum-style names: `/scope/Op` producing `/scope/Op_output_0` (`_1`, `_2` when repeated). */
function builder() {
  const nodes: NodeProto[] = [];
  const inits: TensorProto[] = [];
  const counts = new Map<string, number>();
  const op = (scope: string, opType: string, inputs: string[], attrs: Attr[] = [], outName?: string): string => {
    const key = `${scope}/${opType}`;
    const n = counts.get(key) ?? 0;
    counts.set(key, n + 1);
    const name = n === 0 ? key : `${key}_${n}`;
    const out = outName ?? `${name}_output_0`;
    nodes.push(onnx.NodeProto.create({ name, opType, input: inputs, output: [out], attribute: attrs.map(attr) }));
    return out;
  };
  const init = (t: TensorProto): string => {
    inits.push(t);
    return t.name;
  };
  return { nodes, inits, op, init };
}

/** The whole model. Weights ~ N(0, 0.02) (GPT-2 init), norms at identity, biases zero. */
export function buildTinyModel(cfg: TinyConfig): Uint8Array {
  const { vocabSize: V, hidden: D, layers: N, heads: H, maxPositions: P } = cfg;
  if (D % H !== 0) throw new Error(`hidden (${D}) must be divisible by heads (${H})`);
  const Dh = D / H;
  const normal = normalSampler(cfg.seed);
  const randn = (n: number, std = 0.02) => Float32Array.from({ length: n }, () => normal() * std);
  const { nodes, inits, op, init } = builder();
  const w = (name: string, dims: number[], std?: number) => init(floatTensor(name, dims, randn(dims.reduce((a, b) => a * b, 1), std)));
  const fill = (name: string, dims: number[], v: number) => init(floatTensor(name, dims, new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(v)));
  const ints = (name: string, values: number[]) => init(int64Tensor(name, [values.length], values));
  const scalar = (name: string, v: number) => init(floatTensor(name, [], Float32Array.of(v)));

  // Embeddings: [B, L, D]; position embeddings larger than GPT-2's 0.01 so positions matter in tests.
  const wte = w('model.embed_tokens.weight', [V, D]);
  const wpe = w('model.embed_positions.weight', [P, D], 0.1);
  const tok = op('/model/embed_tokens', 'Gather', [wte, 'input_ids'], [{ name: 'axis', i: 0 }]);
  const pos = op('/model/embed_positions', 'Gather', [wpe, 'position_ids'], [{ name: 'axis', i: 0 }]);
  let x = op('/model', 'Add', [tok, pos]);

  // Attention bias [B, 1, L, L]: -1e9 above the diagonal (causal) and on padded keys. Finite, so a row
  // with every key masked gives a uniform softmax instead of NaN.
  const one = scalar('const.one', 1);
  const neg = scalar('const.neg_inf', -1e9);
  const maskF = op('/model/mask', 'Cast', ['attention_mask'], [{ name: 'to', i: onnx.TensorProto.DataType.FLOAT }]);
  const padBias = op('/model/mask', 'Mul', [op('/model/mask', 'Sub', [one, maskF]), neg]); // [B, L]
  const padBias4 = op('/model/mask', 'Unsqueeze', [padBias, ints('const.axes_1_2', [1, 2])]); // [B, 1, 1, L]
  const shape = op('/model/mask', 'Shape', ['input_ids']); // [2] = (B, L)
  const lenV = op('/model/mask', 'Slice', [shape, ints('const.start_1', [1]), ints('const.end_2', [2])]); // [1]
  const square = op('/model/mask', 'Concat', [lenV, lenV], [{ name: 'axis', i: 0 }]); // [2] = (L, L)
  const ones = op('/model/mask', 'ConstantOfShape', [square], [{ name: 'value', t: floatTensor('v', [1], Float32Array.of(1)) }]);
  const lower = op('/model/mask', 'Trilu', [ones], [{ name: 'upper', i: 0 }]); // 1 on and below the diagonal
  const causalBias = op('/model/mask', 'Mul', [op('/model/mask', 'Sub', [one, lower]), neg]); // [L, L]
  const bias = op('/model/mask', 'Add', [padBias4, causalBias]); // [B, 1, L, L]

  const pastIo: number[] = [];
  const splitHeads = ints('const.split_heads', [0, 0, H, Dh]);
  const mergeHeads = ints('const.merge_heads', [0, 0, D]);
  const scale = scalar('const.attn_scale', 1 / Math.sqrt(Dh));
  for (let i = 0; i < N; i++) {
    const s = `/model/layers.${i}`;
    const p = `model.layers.${i}`;
    const ln = (name: string, input: string) =>
      op(`${s}/${name}`, 'LayerNormalization', [input, fill(`${p}.${name}.weight`, [D], 1), fill(`${p}.${name}.bias`, [D], 0)], [
        { name: 'axis', i: -1 },
        { name: 'epsilon', f: 1e-5 },
      ]);
    const linear = (name: string, input: string, din: number, dout: number) =>
      op(`${s}/${name}`, 'Add', [op(`${s}/${name}`, 'MatMul', [input, w(`${p}.${name}.weight`, [din, dout])]), fill(`${p}.${name}.bias`, [dout], 0)]);
    const h1 = ln('input_layernorm', x); // [B, L, D]
    const q = op(`${s}/self_attn`, 'Transpose', [op(`${s}/self_attn`, 'Reshape', [linear('self_attn.q_proj', h1, D, D), splitHeads])], [{ name: 'perm', ints: [0, 2, 1, 3] }]); // [B, H, L, Dh]
    let k = op(`${s}/self_attn`, 'Transpose', [op(`${s}/self_attn`, 'Reshape', [linear('self_attn.k_proj', h1, D, D), splitHeads])], [{ name: 'perm', ints: [0, 2, 3, 1] }]); // [B, H, Dh, L]
    let v = op(`${s}/self_attn`, 'Transpose', [op(`${s}/self_attn`, 'Reshape', [linear('self_attn.v_proj', h1, D, D), splitHeads])], [{ name: 'perm', ints: [0, 2, 1, 3] }]); // [B, H, L, Dh]
    if (cfg.kvCache) {
      // present = concat(past, current) on the sequence axis, as exports do: [B, H, past + L, Dh].
      const kSeq = op(`${s}/self_attn`, 'Transpose', [k], [{ name: 'perm', ints: [0, 1, 3, 2] }]); // [B, H, L, Dh]
      const present = (kind: string, cur: string) =>
        op(`${s}/self_attn`, 'Concat', [`past_key_values.${i}.${kind}`, cur], [{ name: 'axis', i: 2 }], `present.${i}.${kind}`);
      k = op(`${s}/self_attn`, 'Transpose', [present('key', kSeq)], [{ name: 'perm', ints: [0, 1, 3, 2] }]); // [B, H, Dh, past + L]
      v = present('value', v);
      pastIo.push(i);
    }
    const scores = op(`${s}/self_attn`, 'Add', [op(`${s}/self_attn`, 'Mul', [op(`${s}/self_attn`, 'MatMul', [q, k]), scale]), bias]); // [B, H, L, L]
    const probs = op(`${s}/self_attn`, 'Softmax', [scores], [{ name: 'axis', i: -1 }]);
    const ctx = op(`${s}/self_attn`, 'Transpose', [op(`${s}/self_attn`, 'MatMul', [probs, v])], [{ name: 'perm', ints: [0, 2, 1, 3] }]); // [B, L, H, Dh]
    const attnOut = linear('self_attn.o_proj', op(`${s}/self_attn`, 'Reshape', [ctx, mergeHeads]), D, D);
    x = op(s, 'Add', [x, attnOut]); // `${s}/Add_output_0`: residual after attention
    const h2 = ln('post_attention_layernorm', x);
    const up = linear('mlp.up_proj', h2, D, 4 * D); // [B, L, 4D]
    const act = op(`${s}/mlp/act_fn`, 'Mul', [up, op(`${s}/mlp/act_fn`, 'Sigmoid', [up])]); // SiLU
    x = op(s, 'Add', [x, linear('mlp.down_proj', act, 4 * D, D)]); // `${s}/Add_1_output_0`: block output [B, L, D]
  }
  const normed = op('/model/norm', 'LayerNormalization', [x, fill('model.norm.weight', [D], 1), fill('model.norm.bias', [D], 0)], [
    { name: 'axis', i: -1 },
    { name: 'epsilon', f: 1e-5 },
  ]);
  op('/lm_head', 'MatMul', [normed, w('lm_head.weight', [D, V])], [], 'logits'); // [B, L, V]

  const T = onnx.TensorProto.DataType;
  const io = (name: string, elemType: number, dims: string[]) =>
    onnx.ValueInfoProto.create({
      name,
      type: { tensorType: { elemType, shape: { dim: dims.map((d) => (d.startsWith('#') ? { dimValue: Number(d.slice(1)) } : { dimParam: d })) } } },
    });
  const graph = onnx.GraphProto.create({
    name: 'recdistill-tiny',
    node: nodes,
    initializer: inits,
    input: [
      io('input_ids', T.INT64, ['batch_size', 'sequence_length']),
      io('attention_mask', T.INT64, ['batch_size', 'total_sequence_length']),
      io('position_ids', T.INT64, ['batch_size', 'sequence_length']),
      ...pastIo.flatMap((i) => ['key', 'value'].map((kind) => io(`past_key_values.${i}.${kind}`, T.FLOAT, ['batch_size', `#${H}`, 'past_sequence_length', `#${Dh}`]))),
    ],
    output: [
      io('logits', T.FLOAT, ['batch_size', 'sequence_length', `#${V}`]),
      ...pastIo.flatMap((i) => ['key', 'value'].map((kind) => io(`present.${i}.${kind}`, T.FLOAT, ['batch_size', `#${H}`, 'total_sequence_length', `#${Dh}`]))),
    ],
  });
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'recdistill model:tiny',
    opsetImport: [{ domain: '', version: 17 }],
    graph,
  });
  return onnx.ModelProto.encode(model).finish();
}
