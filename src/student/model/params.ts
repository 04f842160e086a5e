/**
 * SASRec's configuration and the parameters it implies (names, shapes, count), without tensors: shared by
 * model.ts (which builds the network) and init.ts (which draws initial weights for it).
 */
export interface ModelConfig {
  numItems: number;
  maxLen: number;
  dims: number;
  blocks: number;
  heads: number;
  /** Dropout on embeddings, attention output and feed-forward (training only). */
  dropout: number;
  /** Dropout on the attention probabilities (training only; costs one random draw per [B, H, L, L] entry). */
  attnDropout: number;
  /** Inner width of the point-wise feed-forward network. */
  ffnDims: number;
  /**
   * The fields below were added later: a config without them (a model file written before) means the
   * behaviour of that time, which is also their default: 'pre', 'default', true.
   */
  /** Sub-layer normalisation: 'pre' = x + f(LN(x)); 'post' = LN(x + f(x)). */
  norm?: 'pre' | 'post';
  /** Initial weights: 'default' = Glorot-uniform; 'xavier' = pmixer's Xavier-normal (see init.ts). */
  init?: 'default' | 'xavier';
  /** Multiply item embeddings by sqrt(dims) before adding positions. */
  embScale?: boolean;
  /** 'mask' = padding keys masked, padding rows zeroed; 'attend' = pmixer's: padded to maxLen, padding attended. */
  padKeys?: 'mask' | 'attend';
  /** Dropout on the attention sub-layer's output (the residual branch); pmixer has none there. */
  attnOutDropout?: boolean;
  /**
   * 'causal' = SASRec (a slot attends to itself and earlier slots); 'bidirectional' = BERT4Rec's cloze network
   * (every slot attends to every non-padding slot; a learned MASK row, id numItems + 1, is the `mask_emb`
   * parameter; scoring appends MASK to the history and reads its slot). Trained by cloze only (EMKD's reference).
   */
  attention?: 'causal' | 'bidirectional';
  /**
   * Share of each block's token mixing given to a causal low-pass filter of the sequence (BSARec's "beyond
   * self-attention" branch, Shin et al., AAAI 2024, made causal; see filter.ts); 0 or absent = attention only.
   */
  filterAlpha?: number;
  /** Frequencies the filter keeps, counted with the constant one (BSARec's c = 5 keeps 5 // 2 + 1 = 3). */
  filterBins?: number;
  /** 'window': the filter sees the whole window (BSARec's own; trained with prefix windows); absent = causal. */
  filterSpan?: 'window';
}

/** Whether a configuration has the frequency-filter branch. */
export const hasFilter = (c: Pick<ModelConfig, 'filterAlpha'>): boolean => (c.filterAlpha ?? 0) > 0;

/** The parameter names and shapes createSasrec would allocate for `config` (allocates nothing). Same order. */
export function paramShapes(config: ModelConfig): Map<string, number[]> {
  const { numItems: N, maxLen, dims: D, ffnDims: F } = config;
  const out = new Map<string, number[]>([['item_emb', [N + 1, D]], ['pos_emb', [maxLen, D]]]);
  for (let i = 0; i < config.blocks; i++) {
    const p = `block${i}.`;
    for (const [n, shape] of [
      ['ln1.g', [D]], ['ln1.b', [D]], ['attn.wqkv', [D, 3 * D]], ['attn.bqkv', [3 * D]], ['attn.wo', [D, D]], ['attn.bo', [D]],
      ['ln2.g', [D]], ['ln2.b', [D]], ['ffn.w1', [D, F]], ['ffn.b1', [F]], ['ffn.w2', [F, D]], ['ffn.b2', [D]],
    ] as Array<[string, number[]]>) out.set(p + n, shape);
  }
  out.set('final_ln.g', [D]);
  out.set('final_ln.b', [D]);
  // The cloze family's MASK row, last so a causal model's parameters (and its seeded initialisation) are unchanged.
  if (config.attention === 'bidirectional') out.set('mask_emb', [1, D]);
  // The filter branch's parameters, after every other one for the same reason.
  if (hasFilter(config)) {
    for (let i = 0; i < config.blocks; i++) {
      out.set(`block${i}.filter.beta`, [D]);
      if (config.norm === 'post') { out.set(`block${i}.filter.ln.g`, [D]); out.set(`block${i}.filter.ln.b`, [D]); }
    }
  }
  return out;
}

/** Parameter count of a configuration (the tensors createSasrec makes), without building it. */
export function sasrecParams(c: Pick<ModelConfig, 'numItems' | 'maxLen' | 'dims' | 'blocks' | 'ffnDims' | 'attention' | 'filterAlpha' | 'norm'>): number {
  const D = c.dims;
  const mask = (c.attention === 'bidirectional' ? D : 0) + (hasFilter(c) ? c.blocks * (c.norm === 'post' ? 3 : 1) * D : 0);
  const block = 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + 2 * D + (D * c.ffnDims + c.ffnDims) + (c.ffnDims * D + D);
  return (c.numItems + 1) * D + c.maxLen * D + c.blocks * block + 2 * D + mask;
}
