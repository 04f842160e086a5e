import { camelToKebab, checkRanges, defineOptions, legacyValuesOf, resolveOptions, runKeysOf, type OptionSpecs, type Resolved } from '../../config/options.js';
import { RecdistillError } from '../../errors.js';
import { datasetOptions } from '../../data/options.js';
import { BACKEND_CHOICES } from '../../backend/index.js';
import { hasFilter } from '../model/params.js';

/**
 * student:train options: one typed defaults object, one line of help per key. Defaults < --config file < flags.
 * Defaults were chosen on ML-100K by VALIDATION NDCG@10 (never test); see the report in the run folder.
 */
export const modelOptions = defineOptions({
  maxLen: { type: 'int', help: 'maximum sequence length (most recent items kept)', default: 200, min: 1, max: 100_000, run: true },
  dims: { type: 'int', help: 'hidden size D of item/position embeddings and blocks', default: 64, min: 1, max: 65_536, run: true },
  blocks: { type: 'int', help: 'number of self-attention blocks', default: 2, min: 1, max: 1_000, run: true },
  heads: { type: 'int', help: 'attention heads (must divide dims)', default: 1, min: 1, max: 65_536, run: true },
  ffnDims: { type: 'int', help: 'inner width of the point-wise feed-forward network', default: 64, min: 1, max: 1_048_576, run: true },
  dropout: { type: 'number', help: 'dropout on embeddings, attention output and feed-forward', default: 0.3, min: 0, max: 1, exclusiveMax: true, run: true },
  attnDropout: { type: 'number', help: 'dropout on attention probabilities', default: 0.2, min: 0, max: 1, exclusiveMax: true, run: true },
  norm: { type: 'string', help: 'pre = x + f(LayerNorm(x)); post = LayerNorm(x + f(x)) (pmixer SASRec.pytorch without --norm_first; the final LayerNorm stays)', default: 'pre', choices: ['pre', 'post'], run: true, legacy: { value: 'pre', since: 1 } },
  init: { type: 'string', help: 'default = Glorot-uniform matrices and embeddings, zero biases; xavier = pmixer\'s Xavier-normal on every matrix and embedding (torch fans; fused QKV), torch default biases, zero padding row', default: 'default', choices: ['default', 'xavier'], run: true, legacy: { value: 'default', since: 2 } },
  embScale: { type: 'boolean', help: 'multiply item embeddings by sqrt(dims) before adding positions (--no-emb-scale adds them unscaled)', default: true, run: true, legacy: { value: true, since: 3 } },
  padKeys: { type: 'string', help: 'mask = padding keys masked, each batch padded to its longest sequence; attend = pmixer SASRec.pytorch: every sequence padded to maxLen and its padding attended (a learned attention sink; slower on short histories)', default: 'mask', choices: ['mask', 'attend'], run: true, legacy: { value: 'mask', since: 8 } },
  attnOutDropout: { type: 'boolean', help: 'dropout (--dropout) on the attention sub-layer output (--no-attn-out-dropout: none there, as in pmixer)', default: true, run: true, legacy: { value: true, since: 9 } },
  attention: { type: 'string', help: 'causal = SASRec (next-item training); bidirectional = BERT4Rec-style cloze network (every slot sees the whole sequence, a learned MASK token; trained by cloze, so it needs --emkd K: EMKD\'s reference networks; --emkd 1 is a single BERT4Rec-style network)', default: 'causal', choices: ['causal', 'bidirectional'], run: true, legacy: { value: 'causal', since: 14 } },
  filterAlpha: { type: 'number', help: 'share of each block\'s token mixing given to a causal low-pass filter of the sequence (BSARec\'s frequency branch, made causal: alpha * filter + (1 - alpha) * attention); 0 = attention only', default: 0, min: 0, max: 1, exclusiveMax: true, run: true, legacy: { value: 0, since: 15 } },
  filterSpan: { type: 'string', help: 'what the --filter-alpha filter sees: causal = the slot and earlier ones (trains with any --windows); window = the whole window (BSARec\'s FFT filter; needs --windows prefixes, where the window ends at the slot that is trained)', default: 'causal', choices: ['causal', 'window'], run: true, legacy: { value: 'causal', since: 17 } },
  filterBins: { type: 'int', help: 'frequencies the --filter-alpha filter keeps over a --max-len window, the constant one included (BSARec\'s c = 5 keeps 3)', default: 3, min: 1, max: 100_000, run: true, legacy: { value: 3, since: 16 } },
}, { group: 'Model' });

export const trainOptions = defineOptions({
  loss: { type: 'string', help: 'ce = full softmax; sampled = sampled softmax (logQ-corrected); bce = SASRec 1-negative BCE', default: 'ce', choices: ['ce', 'sampled', 'bce'], run: true },
  negatives: { type: 'int', help: 'negatives per batch for --loss sampled', default: 256, min: 1, max: 10_000_000, run: true },
  sampler: { type: 'string', help: 'negative sampler for --loss sampled', default: 'uniform', choices: ['uniform', 'popularity'], run: true },
  windows: { type: 'string', help: 'training windows per user: last = the most recent maxLen steps; all = every maxLen chunk of the history; prefixes = one window per step, ending there and trained at its last slot only (BSARec/ICLRec training: every prefix a sample, the newest item always in the last slot; several times the encoder work)', default: 'last', choices: ['last', 'all', 'prefixes'], run: true },
  batching: { type: 'string', help: 'length = shuffle, then sort by length inside groups of 16 batches (each batch pads to similar lengths: faster); random = plain shuffle (every batch a random mix of lengths, as in pmixer SASRec.pytorch)', default: 'random', choices: ['length', 'random'], run: true, legacy: { value: 'length', since: 12 } },
  stepWeight: { type: 'string', help: 'batch = a batch\'s loss is the mean over its steps (every batch weighs the same, so with --batching length the steps of short histories weigh more); token = that mean times the batch\'s steps over the epoch\'s mean steps per batch (every step weighs the same, as random batches do)', default: 'batch', choices: ['batch', 'token'], run: true, legacy: { value: 'batch', since: 13 } },
  epochs: { type: 'int', help: 'maximum number of epochs', default: 100, min: 1, max: 1_000_000 },
  batchSize: { type: 'int', help: 'sequences per training step', default: 32, min: 1, max: 10_000_000, run: true },
  lr: { type: 'number', help: 'Adam learning rate', default: 0.002, min: 0, exclusiveMin: true, run: true },
  beta1: { type: 'number', help: 'Adam beta1', default: 0.9, min: 0, max: 1, exclusiveMax: true, run: true, legacy: { value: 0.9, since: 4 } },
  beta2: { type: 'number', help: 'Adam beta2', default: 0.98, min: 0, max: 1, exclusiveMax: true, run: true },
  lrSchedule: { type: 'string', help: 'constant; warmup = linear from lr/warmupSteps to lr over --warmup-steps steps, then constant; cosine = that warm-up, then cosine decay to 0 at the end of --epochs', default: 'constant', choices: ['constant', 'warmup', 'cosine'], run: true, legacy: { value: 'constant', since: 5 } },
  warmupSteps: { type: 'int', help: 'optimiser steps of linear warm-up for --lr-schedule warmup/cosine', default: 0, min: 0, max: 1_000_000_000, run: true, legacy: { value: 0, since: 6 } },
  labelSmoothing: { type: 'number', help: 'label smoothing of the full-softmax CE (--loss ce only), spread over the real items (not padding)', default: 0, min: 0, max: 1, exclusiveMax: true, run: true, legacy: { value: 0, since: 7 } },
  weightDecay: { type: 'number', help: 'decoupled (AdamW) weight decay', default: 0, min: 0, run: true },
  ema: { type: 'number', help: 'exponential moving average of the weights, decay per step (0 = off; e.g. 0.99): validation, the best epoch and the saved model use the averaged weights', default: 0, min: 0, max: 1, exclusiveMax: true, run: true, legacy: { value: 0, since: 10 } },
  patience: { type: 'int', help: 'stop after this many validations without a better validation NDCG@10', default: 20, min: 0, max: 1_000_000 },
  evalEvery: { type: 'int', help: 'validate every N epochs', default: 1, min: 1, max: 1_000_000 },
  seed: { type: 'int', help: 'seed for initialisation, shuffling, dropout and negative sampling', default: 42, run: true },
  backend: { type: 'string', help: 'tfjs backend (auto = node > wasm > cpu)', default: 'auto', choices: BACKEND_CHOICES, group: 'Runtime' },
  threads: { type: 'int', help: 'wasm backend threads (0 = $RECDISTILL_THREADS, else the cores available; 1 = single-threaded; results are identical); runtime only, not part of a run', default: 0, group: 'Runtime', min: 0, max: 64 },
  out: { type: 'string', help: 'run folder (default: student/<dataset>-<hash of the config>)', group: 'Output' },
  resume: { type: 'boolean', help: 'resume from the run folder\'s checkpoint when there is one', default: true, group: 'Output' },
  excludeHistory: { type: 'boolean', help: 'evaluation: exclude the user\'s earlier items from the ranking', default: true, group: 'Evaluation' },
  evalBatch: { type: 'int', help: 'users scored per evaluation call (bounds memory on large catalogues)', default: 256, group: 'Evaluation', min: 1, max: 10_000_000 },
}, { group: 'Training' });

export const studentOptions = { ...datasetOptions, ...modelOptions, ...trainOptions };
export type StudentOptions = Resolved<typeof studentOptions>;

/**
 * The keys that define a run (resuming refuses a checkpoint whose values differ), from the specs' `run` flag: the
 * dataset flags, then the model's and the training's run keys in identity order (runKeysOf).
 */
export const RUN_KEYS: readonly string[] = [...Object.keys(datasetOptions), ...runKeysOf(modelOptions), ...runKeysOf(trainOptions)];

/**
 * The value every run had for each run key added after the first checkpoints were written (the specs' `legacy`;
 * NOT the current default, which may change), in the order the keys were added. A run identity leaves out such a
 * key when it holds this value, so an identity (and the default --out hash) written before the key existed still
 * matches, and a missing key always means this value.
 */
export const LEGACY_RUN_VALUES: Readonly<Record<string, unknown>> = Object.freeze(legacyValuesOf({ ...datasetOptions, ...modelOptions, ...trainOptions }));

/**
 * Check every student option's range (the specs' min/max), choice and type (and heads | dims); throws E_USAGE
 * naming the option. trainStudent calls it, so every caller (student:train, ablate, demo, tests) gets it: the
 * option parser checks what comes from flags and files, this what a library caller builds by hand.
 */
export function validateStudentOptions(o: Partial<StudentOptions>): void {
  const rec = o as Record<string, unknown>;
  const specs: OptionSpecs = { ...modelOptions, ...trainOptions };
  checkRanges(specs, rec);
  if (typeof o.dims === 'number' && typeof o.heads === 'number' && o.dims % o.heads !== 0) {
    throw new RecdistillError('E_USAGE', `--heads (${o.heads}) must divide --dims (${o.dims}).`);
  }
  for (const [key, spec] of Object.entries(specs)) {
    const v = rec[key];
    if (v === undefined) continue;
    if (spec.choices && !spec.choices.includes(v as string)) throw new RecdistillError('E_USAGE', `--${camelToKebab(key)} must be one of ${spec.choices.join(', ')}; got ${JSON.stringify(v)}.`);
    if (spec.type === 'boolean' && typeof v !== 'boolean') throw new RecdistillError('E_USAGE', `--${camelToKebab(key)} must be a boolean; got ${JSON.stringify(v)}.`);
  }
  if (o.attention === 'bidirectional' && o.padKeys === 'attend') throw new RecdistillError('E_USAGE', '--attention bidirectional masks padding keys: use --pad-keys mask (attend is the causal pmixer variant).');
  if (hasFilter(o) && (o.attention === 'bidirectional' || o.padKeys === 'attend')) {
    throw new RecdistillError('E_USAGE', `--filter-alpha is a causal branch over padding-masked sequences: it needs --attention causal and --pad-keys mask.`);
  }
  if (o.filterSpan === 'window' && hasFilter(o) && o.windows !== 'prefixes') {
    throw new RecdistillError('E_USAGE', `--filter-span window lets every slot see the later slots of its window, so it would see the targets of --windows ${o.windows ?? 'last'}: use --windows prefixes (each window trained at its last slot only) or --filter-span causal.`);
  }
  if ((o.labelSmoothing ?? 0) > 0 && (o.loss ?? 'ce') !== 'ce') {
    throw new RecdistillError('E_USAGE', `--label-smoothing is implemented for the full-softmax CE only (--loss ce), not for --loss ${o.loss}.`);
  }
  if ((o.warmupSteps ?? 0) > 0 && (o.lrSchedule ?? 'constant') === 'constant') {
    throw new RecdistillError('E_USAGE', `--warmup-steps ${o.warmupSteps} has no effect with --lr-schedule constant: use --lr-schedule warmup or cosine.`);
  }
  if (o.seed !== undefined && !Number.isSafeInteger(o.seed)) throw new RecdistillError('E_USAGE', `--seed must be an integer; got ${JSON.stringify(o.seed)}.`);
}

/** resolveOptions for the student options, plus the range checks of validateStudentOptions. */
export function resolveStudentOptions(sources: Parameters<typeof resolveOptions>[1]): StudentOptions {
  const o = resolveOptions(studentOptions, sources) as StudentOptions;
  validateStudentOptions(o);
  return o;
}
