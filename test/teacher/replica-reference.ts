/**
 * Independent plain-JS forward of the replica decoder (src/teacher/replica/spec.ts), written from the
 * Hugging Face modeling code (transformers models/qwen2/modeling_qwen2.py and models/llama/modeling_llama.py:
 * RMSNorm, rotate_half RoPE, repeat_kv, causal softmax attention, SwiGLU MLP), in float64, from
 * weightTensor() alone, so it shares no code with any ONNX layout it is used to check (genai, optimum).
 * One unpadded sequence, no KV cache.
 */
import { type DecoderSpec, headDim, weightTensor } from '../../src/teacher/replica/spec.js';

export interface ReferenceOutput {
  /** Residual stream after each block, [L, H] row-major (blockStates[i] = output of decoder layer i). */
  blockStates: Float32Array[];
  /** lm_head(final_norm(last block state)), [L, V]. */
  logits: Float32Array;
}

type Linear = (name: string) => { W: Float32Array; out: number; inp: number; b?: Float32Array };

/** y[t] = W x[t] (+ b); W torch layout [out, in]. */
function linear(x: Float64Array, L: number, W: Float32Array, out: number, inp: number, b?: Float32Array): Float64Array {
  const y = new Float64Array(L * out);
  for (let t = 0; t < L; t++) {
    for (let o = 0; o < out; o++) {
      let s = b ? b[o]! : 0;
      const wo = o * inp;
      const xt = t * inp;
      for (let k = 0; k < inp; k++) s += W[wo + k]! * x[xt + k]!;
      y[t * out + o] = s;
    }
  }
  return y;
}

/** RMSNorm: x / sqrt(mean(x^2) + eps) * weight, per row. */
export function rmsNorm(x: Float64Array, L: number, D: number, weight: Float32Array, eps: number): Float64Array {
  const y = new Float64Array(L * D);
  for (let t = 0; t < L; t++) {
    let ss = 0;
    for (let d = 0; d < D; d++) ss += x[t * D + d]! ** 2;
    const r = 1 / Math.sqrt(ss / D + eps);
    for (let d = 0; d < D; d++) y[t * D + d] = x[t * D + d]! * r * weight[d]!;
  }
  return y;
}

/** HF apply_rotary_pos_emb with rotate_half: x*cos + rotate_half(x)*sin, cos/sin = cat(freqs, freqs). In place on [L, nHeads*Dh]. */
function rope(x: Float64Array, L: number, nHeads: number, Dh: number, theta: number): void {
  const half = Dh / 2;
  for (let t = 0; t < L; t++) {
    for (let h = 0; h < nHeads; h++) {
      const o = t * nHeads * Dh + h * Dh;
      for (let j = 0; j < half; j++) {
        const ang = t / theta ** ((2 * j) / Dh);
        const c = Math.cos(ang);
        const s = Math.sin(ang);
        const a = x[o + j]!;
        const b = x[o + j + half]!;
        x[o + j] = a * c - b * s;
        x[o + j + half] = b * c + a * s;
      }
    }
  }
}

export interface ReferenceOptions {
  /**
   * Replace the values of a weight used as a Linear (q/k/v/o/gate/up/down projections and the lm_head,
   * i.e. the embedding matrix when tied), torch layout [out, in]: e.g. int4-dequantised weights.
   */
  linearWeight?: (name: string) => Float32Array;
}

export function referenceForward(spec: DecoderSpec, ids: number[], opts: ReferenceOptions = {}): ReferenceOutput {
  const L = ids.length;
  const D = spec.hidden;
  const Dh = headDim(spec);
  const H = spec.heads;
  const KV = spec.kvHeads;
  const group = H / KV;
  const get = (n: string) => weightTensor(spec, n);
  const lin: Linear = (name) => {
    const t = get(`${name}.weight`);
    const hasBias = spec.modelType === 'qwen2' && /self_attn\.[qkv]_proj$/.test(name);
    const W = opts.linearWeight?.(`${name}.weight`) ?? t.data;
    return { W, out: t.dims[0]!, inp: t.dims[1]!, b: hasBias ? get(`${name}.bias`).data : undefined };
  };
  const apply = (x: Float64Array, name: string) => {
    const l = lin(name);
    return linear(x, L, l.W, l.out, l.inp, l.b);
  };

  const emb = get('model.embed_tokens.weight').data;
  let h = new Float64Array(L * D);
  ids.forEach((id, t) => {
    for (let d = 0; d < D; d++) h[t * D + d] = emb[id * D + d]!;
  });

  const blockStates: Float32Array[] = [];
  for (let i = 0; i < spec.layers; i++) {
    const p = `model.layers.${i}`;
    const x = rmsNorm(h, L, D, get(`${p}.input_layernorm.weight`).data, spec.rmsEps);
    const q = apply(x, `${p}.self_attn.q_proj`);
    const k = apply(x, `${p}.self_attn.k_proj`);
    const v = apply(x, `${p}.self_attn.v_proj`);
    rope(q, L, H, Dh, spec.ropeTheta);
    rope(k, L, KV, Dh, spec.ropeTheta);
    // Causal attention; query head hh reads kv head floor(hh / group) (repeat_kv).
    const attn = new Float64Array(L * H * Dh);
    const scale = 1 / Math.sqrt(Dh);
    for (let hh = 0; hh < H; hh++) {
      const kh = Math.floor(hh / group);
      for (let t = 0; t < L; t++) {
        const scores = new Float64Array(t + 1);
        let mx = -Infinity;
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let d = 0; d < Dh; d++) dot += q[t * H * Dh + hh * Dh + d]! * k[s * KV * Dh + kh * Dh + d]!;
          scores[s] = dot * scale;
          mx = Math.max(mx, scores[s]!);
        }
        let z = 0;
        for (let s = 0; s <= t; s++) z += scores[s] = Math.exp(scores[s]! - mx);
        for (let d = 0; d < Dh; d++) {
          let acc = 0;
          for (let s = 0; s <= t; s++) acc += (scores[s]! / z) * v[s * KV * Dh + kh * Dh + d]!;
          attn[t * H * Dh + hh * Dh + d] = acc;
        }
      }
    }
    const o = apply(attn, `${p}.self_attn.o_proj`);
    for (let j = 0; j < h.length; j++) h[j] = h[j]! + o[j]!;

    const y = rmsNorm(h, L, D, get(`${p}.post_attention_layernorm.weight`).data, spec.rmsEps);
    const gate = apply(y, `${p}.mlp.gate_proj`);
    const up = apply(y, `${p}.mlp.up_proj`);
    for (let j = 0; j < gate.length; j++) gate[j] = (gate[j]! / (1 + Math.exp(-gate[j]!))) * up[j]!; // SiLU(gate) * up
    const down = apply(gate, `${p}.mlp.down_proj`);
    for (let j = 0; j < h.length; j++) h[j] = h[j]! + down[j]!;
    blockStates.push(Float32Array.from(h));
  }

  return { blockStates, logits: Float32Array.from(referenceHead(spec, h, L, opts)) };
}

/** logits [L, V] = lm_head(final_norm(state)) for a block state [L, H]; lm_head = embed_tokens when tied. */
export function referenceHead(spec: DecoderSpec, state: Float64Array | Float32Array, L: number, opts: ReferenceOptions = {}): Float64Array {
  const D = spec.hidden;
  const normed = rmsNorm(Float64Array.from(state), L, D, weightTensor(spec, 'model.norm.weight').data, spec.rmsEps);
  const headName = spec.tieEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  const head = opts.linearWeight?.(headName) ?? weightTensor(spec, headName).data;
  return linear(normed, L, head, spec.vocabSize, D);
}
