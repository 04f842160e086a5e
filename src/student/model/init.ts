import { makeRng, mixSeed, type Rng } from '../../util/rng.js';
import { paramShapes, type ModelConfig } from './params.js';

/**
 * `--init xavier`: the initialisation pmixer/SASRec.pytorch (main.py) effectively gives its model, mapped onto
 * this model's parameters. That code runs torch.nn.init.xavier_normal_ on every parameter and ignores the ones
 * it fails on (1-D tensors), then zeroes row 0 of the item and position embeddings. So:
 * - every matrix and embedding ~ N(0, 2 / (fan_in + fan_out)) with torch's fans (for a 2-D [a, b] tensor the
 *   sum is a + b, the same for either orientation; a Conv1d [out, in, 1] kernel counts in + out):
 *   - item_emb [N + 1, D]: N + 1 + D, then row 0 (padding) = 0;
 *   - pos_emb: torch's table has maxLen + 1 rows (row 0 = padding, zeroed); ours holds its rows 1..maxLen
 *     (no padding row), so the std uses maxLen + 1 + D;
 *   - attn.wqkv [D, 3D]: torch's fused in_proj_weight [3D, D], so 4D (not 2D per Q/K/V matrix);
 *   - attn.wo [D, D]: 2D; ffn.w1 [D, F] and ffn.w2 [F, D] (Conv1d kernels, kernel size 1): D + F;
 * - 1-D tensors keep torch's own initialisation, which xavier_normal_ did not replace:
 *   - MultiheadAttention's in_proj_bias and out_proj.bias: 0 (its _reset_parameters);
 *   - the Conv1d biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in_channels (D for w1's bias, F for w2's);
 *   - LayerNorm gains 1, biases 0.
 * Values are drawn from their own seeded stream (the default initialisation's stream is untouched).
 */
export function xavierWeights(config: ModelConfig, seed: number): Map<string, Float32Array> {
  const { numItems: N, maxLen, dims: D, ffnDims: F } = config;
  const rng = makeRng(mixSeed(seed, 0x7a71e5));
  const out = new Map<string, Float32Array>();
  for (const [name, shape] of paramShapes(config)) {
    const size = shape.reduce((a, b) => a * b, 1);
    const leaf = name.slice(name.indexOf('.') + 1); // 'attn.wqkv' for 'block0.attn.wqkv'
    let data: Float32Array;
    if (name === 'item_emb') {
      data = normal(rng, size, Math.sqrt(2 / (N + 1 + D)));
      data.fill(0, 0, D); // padding row
    } else if (name === 'mask_emb') data = normal(rng, size, Math.sqrt(2 / (N + 1 + D))); // an item row's scale
    else if (name === 'pos_emb') data = normal(rng, size, Math.sqrt(2 / (maxLen + 1 + D)));
    else if (leaf === 'attn.wqkv') data = normal(rng, size, Math.sqrt(2 / (4 * D)));
    else if (leaf === 'attn.wo') data = normal(rng, size, Math.sqrt(2 / (2 * D)));
    else if (leaf === 'ffn.w1' || leaf === 'ffn.w2') data = normal(rng, size, Math.sqrt(2 / (D + F)));
    else if (leaf === 'ffn.b1') data = uniform(rng, size, 1 / Math.sqrt(D));
    else if (leaf === 'ffn.b2') data = uniform(rng, size, 1 / Math.sqrt(F));
    else if (leaf === 'filter.beta') data = normal(rng, size, 1); // BSARec's sqrt_beta: torch.randn, not an xavier tensor
    else if (name.endsWith('.g')) data = new Float32Array(size).fill(1); // LayerNorm gains
    else if (name.endsWith('.b') || leaf === 'attn.bqkv' || leaf === 'attn.bo') data = new Float32Array(size); // LayerNorm and attention biases
    else throw new Error(`xavier init: no rule for parameter "${name}"`);
    out.set(name, data);
  }
  return out;
}

/** n draws of N(0, std^2) (Box-Muller, both outputs of each pair used). */
export function normal(rng: Rng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = 1 - rng.next(); // (0, 1]: log(u1) is finite
    const u2 = rng.next();
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

function uniform(rng: Rng, n: number, bound: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rng.next() * 2 - 1) * bound;
  return out;
}
