/**
 * One small (or real-size) Qwen2/Llama-style decoder, described once, so every exporter layout
 * (`optimum`, `optimum-fused`, `genai`, `merged`) is written from the *same* weights and can be compared
 * tensor for tensor. Weights are named like the Hugging Face checkpoint (`model.layers.0.self_attn.q_proj.weight`,
 * torch Linear layout [out, in]) and generated lazily per tensor from (seed, name), so a 0.5B model is
 * written streaming, one tensor (or one row block) at a time, without holding the model in memory.
 */
import { mixSeed, mulberry32 } from '../../util/rng.js';

export interface DecoderSpec {
  /** HF model_type written to config.json: 'qwen2' (q/k/v bias) or 'llama' (no bias). */
  modelType: 'qwen2' | 'llama';
  vocabSize: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  maxPositions: number;
  ropeTheta: number;
  rmsEps: number;
  tieEmbeddings: boolean;
  seed: number;
}

export const PRESETS = {
  /** Qwen2.5-0.5B(-Instruct): the default teacher's real dimensions. */
  'qwen2.5-0.5b': { modelType: 'qwen2', vocabSize: 151936, hidden: 896, layers: 24, heads: 14, kvHeads: 2, intermediate: 4864, maxPositions: 32768, ropeTheta: 1000000, rmsEps: 1e-6, tieEmbeddings: true },
  /** SmolLM2-135M(-Instruct): Llama architecture. */
  'smollm2-135m': { modelType: 'llama', vocabSize: 49152, hidden: 576, layers: 30, heads: 9, kvHeads: 3, intermediate: 1536, maxPositions: 8192, ropeTheta: 100000, rmsEps: 1e-5, tieEmbeddings: true },
} as const satisfies Record<string, Omit<DecoderSpec, 'seed'>>;
export type PresetName = keyof typeof PRESETS;

export const headDim = (s: DecoderSpec): number => s.hidden / s.heads;

export interface WeightSpec {
  /** HF checkpoint name. */
  name: string;
  /** torch layout: Linear weights [out, in], embeddings [vocab, hidden], norms [hidden], biases [out]. */
  dims: number[];
  kind: 'embedding' | 'linear' | 'bias' | 'norm';
}

/** Every weight of the checkpoint, in checkpoint order. lm_head.weight only when embeddings are untied. */
export function weightList(s: DecoderSpec): WeightSpec[] {
  const D = s.hidden;
  const Dh = headDim(s);
  const out: WeightSpec[] = [{ name: 'model.embed_tokens.weight', dims: [s.vocabSize, D], kind: 'embedding' }];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}`;
    out.push({ name: `${p}.input_layernorm.weight`, dims: [D], kind: 'norm' });
    for (const [proj, rows] of [['q_proj', s.heads * Dh], ['k_proj', s.kvHeads * Dh], ['v_proj', s.kvHeads * Dh]] as const) {
      out.push({ name: `${p}.self_attn.${proj}.weight`, dims: [rows, D], kind: 'linear' });
      if (s.modelType === 'qwen2') out.push({ name: `${p}.self_attn.${proj}.bias`, dims: [rows], kind: 'bias' });
    }
    out.push({ name: `${p}.self_attn.o_proj.weight`, dims: [D, s.heads * Dh], kind: 'linear' });
    out.push({ name: `${p}.post_attention_layernorm.weight`, dims: [D], kind: 'norm' });
    out.push({ name: `${p}.mlp.gate_proj.weight`, dims: [s.intermediate, D], kind: 'linear' });
    out.push({ name: `${p}.mlp.up_proj.weight`, dims: [s.intermediate, D], kind: 'linear' });
    out.push({ name: `${p}.mlp.down_proj.weight`, dims: [D, s.intermediate], kind: 'linear' });
  }
  out.push({ name: 'model.norm.weight', dims: [D], kind: 'norm' });
  if (!s.tieEmbeddings) out.push({ name: 'lm_head.weight', dims: [s.vocabSize, D], kind: 'linear' });
  return out;
}

/** Standard deviation per kind: N(0, 0.02) like HF init; norms 1 + N(0, 0.1) and biases N(0, 0.02) so they matter in tests. */
function stdOf(w: WeightSpec): number {
  return w.kind === 'norm' ? 0.1 : 0.02;
}

/**
 * Values of `w` from index `start` (row-major over torch dims), `count` of them. Deterministic in
 * (seed, name, index): row blocks of a large tensor can be generated independently and in any order.
 * Each block of 4096 values has its own stream, so a slice starting mid-tensor costs no skipped draws
 * beyond its first block.
 */
export function weightValues(s: DecoderSpec, w: WeightSpec, start: number, count: number): Float32Array {
  const out = new Float32Array(count);
  const std = stdOf(w);
  const base = w.kind === 'norm' ? 1 : 0;
  const nameSeed = mixSeed(s.seed, ...Array.from(w.name, (c) => c.charCodeAt(0)));
  const BLOCK = 4096;
  let i = 0;
  while (i < count) {
    const idx = start + i;
    const block = Math.floor(idx / BLOCK);
    const u = mulberry32(mixSeed(nameSeed, block));
    const skip = idx - block * BLOCK;
    for (let k = 0; k < 4 * skip; k++) u(); // 4 draws per value
    const n = Math.min(count - i, BLOCK - skip);
    for (let k = 0; k < n; k++) {
      // Irwin-Hall(4) approximation of a normal: cheap, deterministic, bounded (|z| <= 3.46).
      const z = (u() + u() + u() + u() - 2) * 1.7320508;
      out[i + k] = base + std * z;
    }
    i += n;
  }
  return out;
}

/** The whole tensor (small models and tests only). */
export function weightTensor(s: DecoderSpec, name: string): { dims: number[]; data: Float32Array } {
  const w = weightList(s).find((x) => x.name === name);
  if (!w) throw new Error(`no weight ${name} in this spec`);
  const n = w.dims.reduce((a, b) => a * b, 1);
  return { dims: w.dims, data: weightValues(s, w, 0, n) };
}

/** HF config.json for the spec (what transformers.js and our loader read). */
export function hfConfig(s: DecoderSpec, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const arch = s.modelType === 'qwen2' ? 'Qwen2ForCausalLM' : 'LlamaForCausalLM';
  return {
    architectures: [arch],
    model_type: s.modelType,
    vocab_size: s.vocabSize,
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    head_dim: headDim(s),
    hidden_act: 'silu',
    max_position_embeddings: s.maxPositions,
    rms_norm_eps: s.rmsEps,
    rope_theta: s.ropeTheta,
    tie_word_embeddings: s.tieEmbeddings,
    attention_bias: s.modelType === 'qwen2',
    use_cache: true,
    torch_dtype: 'float32',
    ...extra,
  };
}
