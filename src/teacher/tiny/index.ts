/**
 * `model:tiny`: a small random decoder-only ONNX LM + a real byte-level BPE tokenizer, in the
 * transformers.js folder layout (config.json, tokenizer.json, tokenizer_config.json, onnx/model.onnx),
 * so tests and the demo load it through exactly the path a downloaded model takes.
 * Same options -> same bytes.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RecdistillError } from '../../errors.js';
import { writeFileAtomic, writeJsonAtomic } from '../../util/atomic.js';
import { sha256 } from '../../util/hash.js';
import { buildTokenizerFiles, builtinCorpus, learnMerges } from './bpe.js';
import { buildTinyModel } from './graph.js';

export interface TinyModelOptions {
  out: string;
  layers: number;
  hidden: number;
  heads: number;
  seed: number;
  /** Number of BPE merges learned from the corpus. */
  merges: number;
  /** Longest sequence (learned position embeddings). */
  maxPositions: number;
  /** Optional text file whose words add to the BPE corpus (e.g. item titles). */
  corpus?: string;
  /** Add past_key_values.* inputs / present.* outputs like a KV-cache export (fed empty). */
  kvCache?: boolean;
}

export const TINY_DEFAULTS = { layers: 4, hidden: 64, heads: 4, seed: 1, merges: 1500, maxPositions: 2048 } as const;

export interface TinyModelSummary {
  out: string;
  files: string[];
  vocabSize: number;
  layers: number;
  hidden: number;
  heads: number;
  modelBytes: number;
  modelSha256: string;
}

export function writeTinyModel(o: TinyModelOptions): TinyModelSummary {
  for (const [k, v] of Object.entries({ layers: o.layers, hidden: o.hidden, heads: o.heads, merges: o.merges, maxPositions: o.maxPositions })) {
    if (!Number.isInteger(v) || v < (k === 'merges' ? 0 : 1)) throw new RecdistillError('E_USAGE', `model:tiny: --${k} must be a positive integer, got ${v}.`);
  }
  if (o.hidden % o.heads !== 0) throw new RecdistillError('E_USAGE', `model:tiny: --hidden (${o.hidden}) must be divisible by --heads (${o.heads}).`);
  let corpus = builtinCorpus();
  if (o.corpus) {
    try {
      corpus += '\n' + readFileSync(o.corpus, 'utf8');
    } catch {
      throw new RecdistillError('E_NOT_FOUND', `model:tiny: corpus file ${o.corpus} not found or not readable.`);
    }
  }
  const tok = buildTokenizerFiles(learnMerges(corpus, o.merges), o.maxPositions);
  const model = buildTinyModel({ vocabSize: tok.vocabSize, hidden: o.hidden, layers: o.layers, heads: o.heads, maxPositions: o.maxPositions, seed: o.seed, kvCache: o.kvCache });
  const config = {
    model_type: 'recdistill_tiny',
    architectures: ['RecdistillTinyForCausalLM'],
    vocab_size: tok.vocabSize,
    hidden_size: o.hidden,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.heads,
    intermediate_size: 4 * o.hidden,
    max_position_embeddings: o.maxPositions,
    hidden_act: 'silu',
    layer_norm_eps: 1e-5,
    tie_word_embeddings: false,
    use_cache: !!o.kvCache,
    eos_token_id: tok.vocabSize - 1,
    pad_token_id: tok.vocabSize - 3,
    torch_dtype: 'float32',
    recdistill: { generator: 'model:tiny', seed: o.seed, merges: o.merges },
  };
  const files = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model.onnx'];
  writeJsonAtomic(join(o.out, 'config.json'), config);
  writeJsonAtomic(join(o.out, 'tokenizer.json'), tok.tokenizerJson);
  writeJsonAtomic(join(o.out, 'tokenizer_config.json'), tok.tokenizerConfig);
  writeFileAtomic(join(o.out, 'onnx', 'model.onnx'), model);
  return {
    out: o.out,
    files,
    vocabSize: tok.vocabSize,
    layers: o.layers,
    hidden: o.hidden,
    heads: o.heads,
    modelBytes: model.byteLength,
    modelSha256: sha256(model),
  };
}
