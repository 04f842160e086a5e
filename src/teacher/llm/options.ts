import { defineOptions, type Resolved } from '../../config/options.js';
import { TRUNCATE_MODES } from '../../prompt/window.js';
import { AUTO_DTYPE_ORDER, DEFAULT_DTYPE, DEFAULT_MODEL, DTYPES } from './load.js';

/** LLM-teacher flags; teacher:cache spreads these into its own option table. */
export const llmTeacherOptions = defineOptions({
  model: { type: 'string', help: 'hub id (onnx-community/...) or local folder in the transformers.js layout', default: DEFAULT_MODEL },
  dtype: { type: 'string', help: `weights file variant (transformers.js suffixes); auto = ${DEFAULT_DTYPE} for a hub id, else the first of ${AUTO_DTYPE_ORDER.join(', ')} on disk`, default: 'auto', choices: ['auto', ...DTYPES] },
  layers: { type: 'string', help: 'tapped layers, comma-separated; negative counts from the end', default: '-1' },
  tapPattern: { type: 'string', help: 'name the tapped tensors by hand ("{i}" = block index), for graphs whose residual stream the structural search cannot follow' },
  prune: { type: 'boolean', help: 'leave out the graph nodes no tapped layer needs (final norm, lm_head logits for every position, KV outputs); --no-prune runs the whole graph', default: true },
  prompt: { type: 'string', help: 'prompt template (.md with {{history}}); default prompts/history.md' },
  maxPromptTokens: { type: 'int', help: 'token budget of one prompt; longer histories are split or truncated', default: 1024 },
  truncate: { type: 'string', help: 'over-budget histories: windows (every position gets a state) or recent (only the most recent items)', default: 'windows', choices: TRUNCATE_MODES },
  threads: { type: 'int', help: 'onnxruntime intra-op threads (0 = onnxruntime default: all cores)', default: 0 },
  concurrency: { type: 'int', help: 'session.run calls queued at once (onnxruntime-node runs them one at a time on the JS thread; threads parallelise)', default: 1 },
  batch: { type: 'int', help: 'sequences padded into one run (1 = no padding)', default: 1 },
  revision: { type: 'string', help: 'hub ids: branch, tag or commit sha to download (default main); recorded with its commit sha in the cache manifest' },
  device: { type: 'string', help: 'onnxruntime execution provider: cpu, cuda, tensorrt, dml, coreml, webgpu, qnn (what this onnxruntime-node build has; not in the cache key); default RECDISTILL_DEVICE, else cpu' },
  offline: { type: 'boolean', help: 'never touch the network: hub ids come from the Hugging Face cache (RECDISTILL_OFFLINE=1 or HF_HUB_OFFLINE=1 also set it)', default: false },
}, { group: 'LLM teacher' });

export type LlmTeacherFlags = Resolved<typeof llmTeacherOptions>;
