import { defineOptions } from '../../config/options.js';
import { defineCommand } from '../command.js';
import { TINY_DEFAULTS, writeTinyModel } from '../../teacher/tiny/index.js';

const options = defineOptions({
  out: { type: 'string', help: 'output folder (transformers.js layout: config.json, tokenizer*.json, onnx/model.onnx)', required: true },
  layers: { type: 'int', help: 'transformer blocks', default: TINY_DEFAULTS.layers },
  hidden: { type: 'int', help: 'hidden size', default: TINY_DEFAULTS.hidden },
  heads: { type: 'int', help: 'attention heads (must divide --hidden)', default: TINY_DEFAULTS.heads },
  seed: { type: 'int', help: 'weight seed: same seed, same bytes', default: TINY_DEFAULTS.seed },
  merges: { type: 'int', help: 'BPE merges learned for the tokenizer', default: TINY_DEFAULTS.merges },
  maxPositions: { type: 'int', help: 'longest sequence the model accepts', default: TINY_DEFAULTS.maxPositions },
  corpus: { type: 'string', help: 'extra text file for the BPE corpus (optional)' },
  kvCache: { type: 'boolean', help: 'add past_key_values.* inputs / present.* outputs like a KV-cache export', default: false },
});

export default defineCommand({
  description: 'write a tiny random decoder-only ONNX LM + a real byte-level BPE tokenizer (tests, demo)',
  options,
  async run(o, ctx) {
    const s = writeTinyModel(o);
    ctx.log(`model:tiny: wrote ${s.files.length} files to ${s.out} (model ${(s.modelBytes / 1e6).toFixed(2)} MB, vocab ${s.vocabSize})`);
    return { ...s };
  },
});
