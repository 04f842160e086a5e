import * as tf from '@tensorflow/tfjs-core';
import { makeRng, type Rng } from '../../util/rng.js';
import { normal, xavierWeights } from './init.js';
import { hasFilter, type ModelConfig } from './params.js';
import { filterBranch } from './filter.js';
import { attentionBias, bmm, causalBias, dropout, layerNorm, linear, paddingBias } from './layers.js';

// The configuration and parameter shapes live in params.ts (init.ts needs them without the network).
export { paramShapes, sasrecParams, type ModelConfig } from './params.js';

/**
 * SASRec: Self-Attentive Sequential Recommendation (Kang & McAuley, ICDM 2018).
 * Item embedding (row 0 = padding, shared with the output layer) scaled by sqrt(D) (unless embScale is false),
 * plus learned absolute positions; N blocks of causal multi-head self-attention and a point-wise feed-forward
 * network, each `x + Dropout(f(LayerNorm(x)))` (pre-LN, the default) or `LayerNorm(x + Dropout(f(x)))` (norm
 * 'post': pmixer/SASRec.pytorch without norm_first, which keeps the final LayerNorm too); a final LayerNorm. Padding rows are zeroed after every block
 * and padding keys are masked, so a sequence left-padded to any length L <= maxLen gives the same outputs
 * (positions are counted from the end: the last slot is always position maxLen - 1). That lets the trainer
 * pad each batch only to its longest sequence. padKeys 'attend' is pmixer's behaviour instead: every sequence
 * is left-padded to maxLen, padding keys are attended (their input is zero, so they act as learned
 * attention sinks) and padding rows are not zeroed between blocks (only in the returned states).
 * attnOutDropout false drops the dropout on the attention sub-layer's output (pmixer has none there).
 * attention 'bidirectional' is BERT4Rec's cloze network (Sun et al., CIKM 2019; the networks of EMKD, Du et al.,
 * SIGIR 2023): the same blocks with padding keys masked but no causal mask, and a learned MASK row (`mask_emb`,
 * id N + 1) appended to the item table for the input only; the output layer stays the [N + 1, D] item table. To
 * score a history it is followed by MASK (the oldest item dropped at maxLen) and MASK's state is read.
 * filterAlpha > 0 adds BSARec's frequency branch to each block, causal unless filterSpan is 'window' (filter.ts): the token mixing becomes
 * alpha * filter + (1 - alpha) * attention (pre: x + both branches of LN1(x); post: the two LayerNormed sums mixed).
 * This file only builds the network: losses, optimiser, schedule and checkpoints live elsewhere.
 */
export interface BlockParams {
  ln1g: tf.Variable; ln1b: tf.Variable; // [D]
  wqkv: tf.Variable; bqkv: tf.Variable; // [D, 3D], [3D]
  wo: tf.Variable; bo: tf.Variable; // [D, D], [D]
  ln2g: tf.Variable; ln2b: tf.Variable; // [D]
  w1: tf.Variable; b1: tf.Variable; // [D, F], [F]
  w2: tf.Variable; b2: tf.Variable; // [F, D], [D]
  /** The frequency-filter branch (filter.ts): beta [D]; post-norm blocks add its own LayerNorm. */
  filter?: { beta: tf.Variable; lng?: tf.Variable; lnb?: tf.Variable };
}

export interface Sasrec {
  config: ModelConfig;
  itemEmb: tf.Variable; // [N + 1, D]
  posEmb: tf.Variable; // [maxLen, D]
  blocks: BlockParams[];
  lnfg: tf.Variable; lnfb: tf.Variable; // [D]
  /** [1, D] the MASK row of a bidirectional (cloze) network; absent for a causal one. */
  maskEmb?: tf.Variable;
  /** Stable logical names -> variables (checkpoint keys). */
  params: Map<string, tf.Variable>;
}

function glorot(rng: Rng, rows: number, cols: number): Float32Array {
  const a = Math.sqrt(6 / (rows + cols));
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < out.length; i++) out[i] = (rng.next() * 2 - 1) * a;
  return out;
}

/**
 * Build a model with seeded initial weights: Glorot-uniform matrices and embeddings, LN gain 1, biases 0
 * (init 'default'), or pmixer's Xavier-normal initialisation (init 'xavier', init.ts).
 */
export function createSasrec(config: ModelConfig, seed: number): Sasrec {
  const { numItems: N, maxLen, dims: D, ffnDims: F } = config;
  if (D % config.heads !== 0) throw new Error(`dims (${D}) must be divisible by heads (${config.heads}).`);
  const rng = makeRng(seed);
  const xavier = config.init === 'xavier' ? xavierWeights(config, seed) : undefined;
  const params = new Map<string, tf.Variable>();
  const v = (name: string, shape: number[], init: 'glorot' | 'ones' | 'zeros' | 'normal'): tf.Variable => {
    const given = xavier?.get(name);
    const t = given ? tf.tensor(given, shape)
      : init === 'glorot' ? tf.tensor(glorot(rng, shape[0]!, shape[1]!), shape)
      : init === 'normal' ? tf.tensor(normal(rng, shape.reduce((a, b) => a * b, 1), 1), shape)
      : init === 'ones' ? tf.ones(shape) : tf.zeros(shape);
    const variable = tf.variable(t, true);
    t.dispose();
    params.set(name, variable);
    return variable;
  };
  const itemEmb = v('item_emb', [N + 1, D], 'glorot');
  // Row 0 is padding: keep it zero at init (its gradient is zero too, since padding is masked everywhere).
  const zeroPad = tf.tidy(() => tf.concat([tf.zeros([1, D]), tf.slice(itemEmb, [1, 0], [N, D])], 0));
  itemEmb.assign(zeroPad);
  zeroPad.dispose(); // the variable holds its own reference
  const posEmb = v('pos_emb', [maxLen, D], 'glorot');
  const blocks: BlockParams[] = [];
  for (let i = 0; i < config.blocks; i++) {
    const p = `block${i}.`;
    blocks.push({
      ln1g: v(p + 'ln1.g', [D], 'ones'), ln1b: v(p + 'ln1.b', [D], 'zeros'),
      wqkv: v(p + 'attn.wqkv', [D, 3 * D], 'glorot'), bqkv: v(p + 'attn.bqkv', [3 * D], 'zeros'),
      wo: v(p + 'attn.wo', [D, D], 'glorot'), bo: v(p + 'attn.bo', [D], 'zeros'),
      ln2g: v(p + 'ln2.g', [D], 'ones'), ln2b: v(p + 'ln2.b', [D], 'zeros'),
      w1: v(p + 'ffn.w1', [D, F], 'glorot'), b1: v(p + 'ffn.b1', [F], 'zeros'),
      w2: v(p + 'ffn.w2', [F, D], 'glorot'), b2: v(p + 'ffn.b2', [D], 'zeros'),
    });
  }
  const lnfg = v('final_ln.g', [D], 'ones');
  const lnfb = v('final_ln.b', [D], 'zeros');
  // Drawn after every other parameter: a causal model's initial weights do not depend on the cloze family existing.
  const maskEmb = config.attention === 'bidirectional' ? v('mask_emb', [1, D], 'glorot') : undefined;
  if (hasFilter(config)) {
    // BSARec draws sqrt_beta from N(0, 1); its LayerNorm starts at gain 1, bias 0.
    blocks.forEach((blk, i) => {
      const p = `block${i}.filter.`;
      blk.filter = { beta: v(p + 'beta', [D], 'normal') };
      if (config.norm === 'post') Object.assign(blk.filter, { lng: v(p + 'ln.g', [D], 'ones'), lnb: v(p + 'ln.b', [D], 'zeros') });
    });
  }
  return { config, itemEmb, posEmb, blocks, lnfg, lnfb, params, ...(maskEmb ? { maskEmb } : {}) };
}

export function modelVariables(m: Sasrec): tf.Variable[] {
  return [...m.params.values()];
}

export function disposeModel(m: Sasrec): void {
  for (const v of m.params.values()) v.dispose();
}

/** The MASK id of a bidirectional network (N + 1: the row after the item table). */
export const maskId = (config: ModelConfig): number => config.numItems + 1;

/**
 * A bidirectional network's scoring input: each left-padded row [B, L] followed by MASK, as [B, L'] with
 * L' = min(L + 1, maxLen) (at maxLen the oldest slot gives way).
 */
export function appendMask(items: Int32Array, B: number, L: number, config: ModelConfig): { items: Int32Array; L: number } {
  const L2 = Math.min(L + 1, config.maxLen);
  const out = new Int32Array(B * L2);
  const keep = L2 - 1;
  for (let b = 0; b < B; b++) {
    out.set(items.subarray(b * L + L - keep, (b + 1) * L), b * L2);
    out[b * L2 + keep] = maskId(config);
  }
  return { items: out, L: L2 };
}

export interface EncodeOptions {
  /** Dropout RNG; undefined = inference (no dropout). */
  rng?: Rng;
}

/**
 * Forward pass. `items`: row-major [B, L] dense ids, left-padded with 0, L <= maxLen.
 * Returns the output of every block [B, L, D]; the last entry has the final LayerNorm applied and is what
 * `scores` consumes. Padding rows are zero in every entry.
 */
export function encode(m: Sasrec, items: Int32Array, B: number, L: number, opts: EncodeOptions = {}): tf.Tensor3D[] {
  return run(m, items, B, L, opts, false) as tf.Tensor3D[];
}

/**
 * Inference shortcut: the final state at the last slot only, [B, D]. The last block still attends over every
 * key, but computes its query, attention row, feed-forward and final LayerNorm for one position instead of L
 * (the serving and evaluation path; equals encode(...)[last][:, L - 1]).
 */
export function encodeLast(m: Sasrec, items: Int32Array, B: number, L: number): tf.Tensor2D {
  if (m.config.attention === 'bidirectional') {
    // Cloze scoring: the state of a MASK after the history (its slot is the last one).
    const q = appendMask(items, B, L, m.config);
    return run(m, q.items, B, q.L, {}, true) as tf.Tensor2D;
  }
  return run(m, items, B, L, {}, true) as tf.Tensor2D;
}

function run(m: Sasrec, items: Int32Array, B: number, L: number, opts: EncodeOptions, lastOnly: boolean): tf.Tensor[] | tf.Tensor {
  const { dims: D, heads: H, maxLen, dropout: p, attnDropout } = m.config;
  const post = m.config.norm === 'post';
  const attend = m.config.padKeys === 'attend';
  const bidirectional = m.config.attention === 'bidirectional';
  if (bidirectional && attend) throw new Error('a bidirectional network masks padding keys (padKeys "mask"); padKeys "attend" is causal only.');
  if (L > maxLen) throw new Error(`sequence length ${L} exceeds maxLen ${maxLen}.`);
  if (attend && L < maxLen) {
    // Padding is part of the computation (pmixer): run at maxLen, hand back the last L slots.
    const padded = new Int32Array(B * maxLen);
    for (let b = 0; b < B; b++) padded.set(items.subarray(b * L, (b + 1) * L), b * maxLen + maxLen - L);
    const full = run(m, padded, B, maxLen, opts, lastOnly);
    if (lastOnly) return full;
    return (full as tf.Tensor[]).map((t) => tf.slice(t, [0, maxLen - L, 0], [B, L, D]));
  }
  const dh = D / H;
  const rng = opts.rng;
  const ids = tf.tensor2d(items, [B, L], 'int32');
  const keep = tf.expandDims(tf.cast(tf.notEqual(ids, 0), 'float32'), -1); // [B, L, 1]
  const bias = attend ? causalBias(L) : bidirectional ? paddingBias(items, B, L) : attentionBias(items, B, L); // [B or 1, 1, L or 1, L]
  const pos = tf.slice(m.posEmb, [maxLen - L, 0], [L, D]); // [L, D]
  // A cloze network's inputs may hold MASK (id N + 1): its row follows the item table for the input only.
  const table = bidirectional && m.maskEmb ? tf.concat([m.itemEmb, m.maskEmb], 0) : m.itemEmb;
  const emb = tf.reshape(tf.gather(table, tf.reshape(ids, [B * L])), [B, L, D]);
  let x = tf.add(m.config.embScale === false ? emb : tf.mul(emb, Math.sqrt(D)), pos);
  x = tf.mul(dropout(x, p, rng), keep); // [B, L, D]
  const out: tf.Tensor3D[] = [];
  for (let bi = 0; bi < m.blocks.length; bi++) {
    const blk = m.blocks[bi]!;
    const last = bi === m.blocks.length - 1;
    // Attention sub-layer: x + Dropout(MHA(LN(x))) (post: LN1(x + Dropout(MHA(x))))
    const h = tf.reshape(post ? x : layerNorm(x, blk.ln1g, blk.ln1b), [B * L, D]);
    const qkv = tf.reshape(linear(h, blk.wqkv, blk.bqkv), [B, L, 3, H, dh]);
    const heads = tf.transpose(qkv, [2, 0, 3, 1, 4]); // [3, B, H, L, dh]
    let [q, k, v] = tf.unstack(heads, 0) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
    let bb: tf.Tensor = bias;
    if (lastOnly && last) {
      q = tf.slice(q, [0, 0, L - 1, 0], [B, H, 1, dh]); // [B, H, 1, dh]
      // (a padding-only bias [B, 1, 1, L] is the same for every query)
      bb = bias.shape[2] === 1 ? bias : tf.slice(bias, [0, 0, L - 1, 0], [bias.shape[0], 1, 1, L]);
    }
    const Lq = q.shape[2]!;
    let att = tf.add(tf.mul(bmm(q, k, true), 1 / Math.sqrt(dh)), bb); // [B, H, Lq, L]
    att = dropout(tf.softmax(att), attnDropout, rng);
    const ctx = tf.reshape(tf.transpose(bmm(att as tf.Tensor4D, v, false), [0, 2, 1, 3]), [B * Lq, D]); // [B*Lq, D]
    const a = tf.reshape(linear(ctx, blk.wo, blk.bo), [B, Lq, D]);
    const xq = Lq === L ? x : tf.slice(x, [0, L - 1, 0], [B, 1, D]);
    const keepQ = Lq === L ? keep : tf.slice(keep, [0, L - 1, 0], [B, 1, 1]);
    const aOut = m.config.attnOutDropout === false ? a : dropout(a, p, rng);
    if (blk.filter) {
      // Token mixing = alpha * filter branch + (1 - alpha) * attention (BSARec's layer; filter.ts).
      const alpha = m.config.filterAlpha!;
      const hk = tf.mul(tf.reshape(h, [B, L, D]), keep) as tf.Tensor3D; // padding rows zero (LN of a zero row is its bias)
      let f: tf.Tensor = filterBranch(hk, blk.filter.beta, maxLen, m.config.filterBins ?? 3, m.config.filterSpan ?? 'causal');
      if (Lq !== L) f = tf.slice(f, [0, L - 1, 0], [B, 1, D]);
      f = dropout(f, p, rng);
      x = post
        ? tf.add(tf.mul(layerNorm(tf.add(xq, aOut), blk.ln1g, blk.ln1b), 1 - alpha), tf.mul(layerNorm(tf.add(xq, f), blk.filter.lng!, blk.filter.lnb!), alpha))
        : tf.add(xq, tf.add(tf.mul(aOut, 1 - alpha), tf.mul(f, alpha)));
    } else {
      x = tf.add(xq, aOut);
      if (post) x = layerNorm(x, blk.ln1g, blk.ln1b);
    }
    // Feed-forward sub-layer: x + Dropout(W2 Dropout(ReLU(W1 LN(x)))) (post: LN2(x + Dropout(W2 ...(W1 x))))
    const h2 = tf.reshape(post ? x : layerNorm(x, blk.ln2g, blk.ln2b), [B * Lq, D]);
    const f1 = dropout(linear(h2, blk.w1, blk.b1, true), p, rng);
    const f2 = tf.reshape(linear(f1, blk.w2, blk.b2), [B, Lq, D]);
    const res = tf.add(x, dropout(f2, p, rng));
    // Padding rows are zeroed (post: LN2 of a padding row is its bias; padding keys are masked, so it never
    // reaches a real row either way).
    if (attend) {
      // padKeys 'attend': padding rows stay in the stream (they are keys of the next block); only the
      // returned states have them zeroed.
      x = post ? layerNorm(res, blk.ln2g, blk.ln2b) : res;
      out.push(tf.mul(last ? layerNorm(x, m.lnfg, m.lnfb) : x, keepQ) as tf.Tensor3D);
      continue;
    }
    x = tf.mul(post ? layerNorm(res, blk.ln2g, blk.ln2b) : res, keepQ);
    out.push((last ? tf.mul(layerNorm(x, m.lnfg, m.lnfb), keepQ) : x) as tf.Tensor3D);
  }
  if (lastOnly) return tf.reshape(out[out.length - 1]!, [B, D]);
  return out;
}

/** Item scores for hidden states [..., D] -> [..., N + 1] (dot product with the shared item embeddings). */
export function scores(m: Sasrec, h: tf.Tensor): tf.Tensor {
  const D = m.config.dims;
  const flat = tf.reshape(h, [-1, D]);
  const s = tf.matMul(flat, tf.transpose(m.itemEmb)); // explicit transpose: fast 2-D path on wasm
  return tf.reshape(s, [...h.shape.slice(0, -1), m.config.numItems + 1]);
}
