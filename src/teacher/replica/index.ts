/**
 * `model:tiny --layout …`: one decoder (spec.ts) written as a model folder in the transformers.js layout
 * (config.json, tokenizer.json, tokenizer_config.json, onnx/model<suffix>.onnx), laid out the way a real
 * exporter lays it out:
 *   optimum        Optimum TorchScript export, as the transformers.js conversion script runs it
 *   optimum-fused  the same after onnxruntime's transformer optimiser (SkipSimplifiedLayerNormalization)
 *   genai          the onnxruntime-genai model builder (GroupQueryAttention, no Add nodes, no position_ids)
 *   merged         a legacy merged decoder (blocks inside the branches of an If on use_cache_branch)
 * Same seed and sizes -> the same weights in every layout (and the same bytes for the same layout), so
 * the tapped states can be compared across layouts. `--preset` gives real dimensions with random
 * weights, written streaming (bounded memory): its accuracy means nothing, its cost is real.
 */
import { join } from 'node:path';
import { RecdistillError } from '../../errors.js';
import { writeJsonAtomic } from '../../util/atomic.js';
import { replicaTokenizer, type ReplicaTokenizer } from '../tiny/tokenizer.js';
import { buildGenaiGraph, genaiConfig } from './genai.js';
import { buildMergedGraph } from './merged.js';
import { writeOnnxModel, type GraphDesc } from '../../util/onnx-file.js';
import { buildOptimumGraph } from './optimum.js';
import { hfConfig, PRESETS, type DecoderSpec, type PresetName } from './spec.js';

export const LAYOUTS = ['optimum', 'optimum-fused', 'genai', 'merged'] as const;
export type Layout = (typeof LAYOUTS)[number];
export const REPLICA_DTYPES = ['fp32', 'fp16', 'q4'] as const;
export type ReplicaDtype = (typeof REPLICA_DTYPES)[number];
const SUFFIX: Record<ReplicaDtype, string> = { fp32: '', fp16: '_fp16', q4: '_q4' };

export interface ReplicaOptions {
  out: string;
  layout: Layout;
  dtype: ReplicaDtype;
  seed: number;
  /** Real dimensions (random weights); otherwise the small sizes below. */
  preset?: PresetName;
  layers: number;
  hidden: number;
  heads: number;
  /** Grouped-query attention: key/value heads (must divide heads). */
  kvHeads: number;
  merges: number;
  maxPositions: number;
  /** bpe, qwen2.5 or a folder with tokenizer.json (src/teacher/tiny/tokenizer.ts); default defaultTokenizer(preset). */
  tokenizer?: string;
  /** Write weights to onnx/model<suffix>.onnx_data (in this many files: Optimum writes _data, _data_1, …). 0 = inline. */
  externalDataChunks: number;
}

export interface ReplicaSummary {
  out: string;
  layout: Layout;
  dtype: ReplicaDtype;
  files: string[];
  onnxBytes: number;
  vocabSize: number;
  /** The tokenizer written (bpe, qwen2.5, folder) and where it came from. */
  tokenizer: Pick<ReplicaTokenizer, 'kind' | 'source'>;
  spec: DecoderSpec;
  /** Ground truth: the tensor holding the residual stream after block i (undefined: not materialised). */
  blockOutputs: (string | undefined)[];
}

function checkSizes(o: ReplicaOptions): void {
  for (const [k, v] of Object.entries({ layers: o.layers, hidden: o.hidden, heads: o.heads, kvHeads: o.kvHeads, maxPositions: o.maxPositions })) {
    if (!Number.isInteger(v) || v < 1) throw new RecdistillError('E_USAGE', `model:tiny: --${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} must be a positive integer, got ${v}.`);
  }
  if (o.hidden % o.heads) throw new RecdistillError('E_USAGE', `model:tiny: --hidden (${o.hidden}) must be divisible by --heads (${o.heads}).`);
  if (o.heads % o.kvHeads) throw new RecdistillError('E_USAGE', `model:tiny: --heads (${o.heads}) must be divisible by --kv-heads (${o.kvHeads}).`);
  if ((o.hidden / o.heads) % 2) throw new RecdistillError('E_USAGE', `model:tiny: the head size (hidden / heads = ${o.hidden / o.heads}) must be even for rotary embeddings.`);
  if (o.layout === 'genai' && (o.hidden / o.heads) % 16) throw new RecdistillError('E_USAGE', `model:tiny: the genai layout's GroupQueryAttention needs a head size (hidden / heads = ${o.hidden / o.heads}) that is a multiple of 16 on onnxruntime's CPU provider.`);
  if (o.layout === 'genai' && o.dtype === 'fp16') throw new RecdistillError('E_USAGE', 'model:tiny: the genai layout is written as fp32 or q4 (int4), as the model builder does for the CPU provider.');
  if (o.layout === 'merged' && o.dtype !== 'fp32') throw new RecdistillError('E_USAGE', 'model:tiny: the merged layout is written as fp32 only.');
}

function graphFor(spec: DecoderSpec, o: ReplicaOptions): { desc: GraphDesc; blockOutputs: (string | undefined)[] } {
  switch (o.layout) {
    case 'optimum':
      return buildOptimumGraph(spec, { dtype: o.dtype, fused: false });
    case 'optimum-fused':
      return buildOptimumGraph(spec, { dtype: o.dtype, fused: true });
    case 'genai':
      return buildGenaiGraph(spec, { dtype: o.dtype as 'fp32' | 'q4' });
    case 'merged':
      return buildMergedGraph(spec);
  }
}

/** The Qwen2.5 preset gets Qwen2.5's real tokenizer (its token counts are the cost model's); the rest the small BPE. */
export function defaultTokenizer(preset: PresetName | undefined): string {
  return preset === 'qwen2.5-0.5b' ? 'qwen2.5' : 'bpe';
}

export function writeReplicaModel(o: ReplicaOptions): ReplicaSummary {
  if (!LAYOUTS.includes(o.layout)) throw new RecdistillError('E_USAGE', `model:tiny: --layout must be one of ${LAYOUTS.join(', ')}, gpt2; got "${o.layout}".`);
  if (!REPLICA_DTYPES.includes(o.dtype)) throw new RecdistillError('E_USAGE', `model:tiny: --dtype must be one of ${REPLICA_DTYPES.join(', ')}; got "${o.dtype}".`);
  const preset = o.preset ? PRESETS[o.preset] : undefined;
  if (o.preset && !preset) throw new RecdistillError('E_USAGE', `model:tiny: --preset must be one of ${Object.keys(PRESETS).join(', ')}; got "${o.preset}".`);
  if (!preset) checkSizes(o);
  else if (o.layout === 'merged') throw new RecdistillError('E_USAGE', 'model:tiny: --preset writes the optimum, optimum-fused or genai layout.');
  const tok = replicaTokenizer(o.tokenizer ?? defaultTokenizer(o.preset), { merges: o.merges, maxLength: preset?.maxPositions ?? o.maxPositions });
  const spec: DecoderSpec = preset
    ? { ...preset, seed: o.seed }
    : {
        modelType: 'qwen2',
        vocabSize: tok.vocabSize,
        hidden: o.hidden,
        layers: o.layers,
        heads: o.heads,
        kvHeads: o.kvHeads,
        intermediate: 4 * o.hidden,
        maxPositions: o.maxPositions,
        ropeTheta: 10000,
        rmsEps: 1e-6,
        tieEmbeddings: true,
        seed: o.seed,
      };
  if (tok.vocabSize > spec.vocabSize) throw new RecdistillError('E_USAGE', `model:tiny: the ${tok.kind} tokenizer has ${tok.vocabSize} tokens, more than the model's vocabulary ${spec.vocabSize}${tok.kind === 'bpe' ? '; lower --merges' : `; the ${o.preset} preset needs a tokenizer of at most ${spec.vocabSize} tokens`}.`);
  const { desc, blockOutputs } = graphFor(spec, o);
  const onnxFile = `onnx/model${SUFFIX[o.dtype]}.onnx`;
  const ids = tok.ids;
  const provenance = { generator: 'model:tiny', layout: o.layout, dtype: o.dtype, seed: o.seed, preset: o.preset ?? null, ...(tok.kind === 'bpe' ? {} : { tokenizer: tok.kind }) };
  const config = hfConfig(spec, { ...ids, recdistill: provenance });
  const files = ['config.json', 'tokenizer.json', 'tokenizer_config.json', onnxFile];
  writeJsonAtomic(join(o.out, 'config.json'), config);
  writeJsonAtomic(join(o.out, 'tokenizer.json'), tok.tokenizerJson);
  writeJsonAtomic(join(o.out, 'tokenizer_config.json'), tok.tokenizerConfig);
  if (o.layout === 'genai') {
    writeJsonAtomic(join(o.out, 'genai_config.json'), genaiConfig(spec, { bos: ids.bos_token_id, eos: ids.eos_token_id, pad: ids.pad_token_id }));
    files.push('genai_config.json');
  }
  const external = o.externalDataChunks > 0 ? { file: `model${SUFFIX[o.dtype]}.onnx_data`, chunks: o.externalDataChunks } : undefined;
  const onnxBytes = writeOnnxModel(join(o.out, onnxFile), desc, external ? { externalData: external } : {});
  return { out: o.out, layout: o.layout, dtype: o.dtype, files, onnxBytes, vocabSize: tok.vocabSize, tokenizer: { kind: tok.kind, source: tok.source }, spec, blockOutputs };
}
