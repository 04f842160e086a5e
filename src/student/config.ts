import { defineOptions, resolveOptions, type Resolved } from '../config/options.js';
import { RecdistillError } from '../errors.js';
import { datasetOptions } from '../data/options.js';
import { BACKEND_CHOICES } from '../backend/index.js';

/**
 * student:train options: one typed defaults object, one line of help per key. Defaults < --config file < flags.
 * Defaults were chosen on ML-100K by VALIDATION NDCG@10 (never test); see the report in the run folder.
 */
export const modelOptions = defineOptions({
  maxLen: { type: 'int', help: 'maximum sequence length (most recent items kept)', default: 200 },
  dims: { type: 'int', help: 'hidden size D of item/position embeddings and blocks', default: 64 },
  blocks: { type: 'int', help: 'number of self-attention blocks', default: 2 },
  heads: { type: 'int', help: 'attention heads (must divide dims)', default: 1 },
  ffnDims: { type: 'int', help: 'inner width of the point-wise feed-forward network', default: 64 },
  dropout: { type: 'number', help: 'dropout on embeddings, attention output and feed-forward', default: 0.3 },
  attnDropout: { type: 'number', help: 'dropout on attention probabilities', default: 0.2 },
  norm: { type: 'string', help: 'pre = x + f(LayerNorm(x)); post = LayerNorm(x + f(x)) (pmixer SASRec.pytorch without --norm_first; the final LayerNorm stays)', default: 'pre', choices: ['pre', 'post'] },
  init: { type: 'string', help: 'default = Glorot-uniform matrices and embeddings, zero biases; xavier = pmixer\'s Xavier-normal on every matrix and embedding (torch fans; fused QKV), torch default biases, zero padding row', default: 'default', choices: ['default', 'xavier'] },
  embScale: { type: 'boolean', help: 'multiply item embeddings by sqrt(dims) before adding positions (--no-emb-scale adds them unscaled)', default: true },
  padKeys: { type: 'string', help: 'mask = padding keys masked, each batch padded to its longest sequence; attend = pmixer SASRec.pytorch: every sequence padded to maxLen and its padding attended (a learned attention sink; slower on short histories)', default: 'mask', choices: ['mask', 'attend'] },
  attnOutDropout: { type: 'boolean', help: 'dropout (--dropout) on the attention sub-layer output (--no-attn-out-dropout: none there, as in pmixer)', default: true },
  attention: { type: 'string', help: 'causal = SASRec (next-item training); bidirectional = BERT4Rec-style cloze network (every slot sees the whole sequence, a learned MASK token; trained by cloze, so it needs --emkd K: EMKD\'s reference networks; --emkd 1 is a single BERT4Rec-style network)', default: 'causal', choices: ['causal', 'bidirectional'] },
  filterAlpha: { type: 'number', help: 'share of each block\'s token mixing given to a causal low-pass filter of the sequence (BSARec\'s frequency branch, made causal: alpha * filter + (1 - alpha) * attention); 0 = attention only', default: 0 },
  filterBins: { type: 'int', help: 'frequencies the --filter-alpha filter keeps over a --max-len window, the constant one included (BSARec\'s c = 5 keeps 3)', default: 3 },
}, { group: 'Model' });

export const trainOptions = defineOptions({
  loss: { type: 'string', help: 'ce = full softmax; sampled = sampled softmax (logQ-corrected); bce = SASRec 1-negative BCE', default: 'ce', choices: ['ce', 'sampled', 'bce'] },
  negatives: { type: 'int', help: 'negatives per batch for --loss sampled', default: 256 },
  sampler: { type: 'string', help: 'negative sampler for --loss sampled', default: 'uniform', choices: ['uniform', 'popularity'] },
  windows: { type: 'string', help: 'training windows per user: last = the most recent maxLen steps; all = every maxLen chunk of the history', default: 'last', choices: ['last', 'all'] },
  batching: { type: 'string', help: 'length = shuffle, then sort by length inside groups of 16 batches (each batch pads to similar lengths: faster); random = plain shuffle (every batch a random mix of lengths, as in pmixer SASRec.pytorch)', default: 'random', choices: ['length', 'random'] },
  stepWeight: { type: 'string', help: 'batch = a batch\'s loss is the mean over its steps (every batch weighs the same, so with --batching length the steps of short histories weigh more); token = that mean times the batch\'s steps over the epoch\'s mean steps per batch (every step weighs the same, as random batches do)', default: 'batch', choices: ['batch', 'token'] },
  epochs: { type: 'int', help: 'maximum number of epochs', default: 100 },
  batchSize: { type: 'int', help: 'sequences per training step', default: 32 },
  lr: { type: 'number', help: 'Adam learning rate', default: 0.002 },
  beta1: { type: 'number', help: 'Adam beta1', default: 0.9 },
  beta2: { type: 'number', help: 'Adam beta2', default: 0.98 },
  lrSchedule: { type: 'string', help: 'constant; warmup = linear from lr/warmupSteps to lr over --warmup-steps steps, then constant; cosine = that warm-up, then cosine decay to 0 at the end of --epochs', default: 'constant', choices: ['constant', 'warmup', 'cosine'] },
  warmupSteps: { type: 'int', help: 'optimiser steps of linear warm-up for --lr-schedule warmup/cosine', default: 0 },
  labelSmoothing: { type: 'number', help: 'label smoothing of the full-softmax CE (--loss ce only), spread over the real items (not padding)', default: 0 },
  weightDecay: { type: 'number', help: 'decoupled (AdamW) weight decay', default: 0 },
  ema: { type: 'number', help: 'exponential moving average of the weights, decay per step (0 = off; e.g. 0.99): validation, the best epoch and the saved model use the averaged weights', default: 0 },
  patience: { type: 'int', help: 'stop after this many validations without a better validation NDCG@10', default: 20 },
  evalEvery: { type: 'int', help: 'validate every N epochs', default: 1 },
  seed: { type: 'int', help: 'seed for initialisation, shuffling, dropout and negative sampling', default: 42 },
  backend: { type: 'string', help: 'tfjs backend (auto = node > wasm > cpu)', default: 'auto', choices: BACKEND_CHOICES, group: 'Runtime' },
  threads: { type: 'int', help: 'wasm backend threads (0 = $RECDISTILL_THREADS, else the cores available; 1 = single-threaded; results are identical); runtime only, not part of a run', default: 0, group: 'Runtime' },
  out: { type: 'string', help: 'run folder (default: student/<dataset>-<hash of the config>)', group: 'Output' },
  resume: { type: 'boolean', help: 'resume from the run folder\'s checkpoint when there is one', default: true, group: 'Output' },
  excludeHistory: { type: 'boolean', help: 'evaluation: exclude the user\'s earlier items from the ranking', default: true, group: 'Evaluation' },
  evalBatch: { type: 'int', help: 'users scored per evaluation call (bounds memory on large catalogues)', default: 256, group: 'Evaluation' },
}, { group: 'Training' });

export const studentOptions = { ...datasetOptions, ...modelOptions, ...trainOptions };
export type StudentOptions = Resolved<typeof studentOptions>;

/** The keys that define a run: resuming refuses a checkpoint whose values differ. */
export const RUN_KEYS = [
  ...Object.keys(datasetOptions), ...Object.keys(modelOptions),
  'loss', 'negatives', 'sampler', 'windows', 'batchSize', 'lr', 'beta2', 'weightDecay', 'seed',
  'beta1', 'lrSchedule', 'warmupSteps', 'labelSmoothing', 'ema', 'batching', 'stepWeight',
] as const;

/**
 * The value every run had for each run key added after the first checkpoints were written (the behaviour
 * before the option existed; NOT the current default, which may change). A run identity leaves out such a key
 * when it holds this value, so an identity (and the default --out hash) written before the key existed still
 * matches, and a missing key always means this value.
 */
export const LEGACY_RUN_VALUES: Readonly<Record<string, unknown>> = Object.freeze({
  norm: 'pre', init: 'default', embScale: true, beta1: 0.9, lrSchedule: 'constant', warmupSteps: 0, labelSmoothing: 0,
  padKeys: 'mask', attnOutDropout: true, ema: 0, tieOrder: 'file', batching: 'length', stepWeight: 'batch', attention: 'causal',
  filterAlpha: 0, filterBins: 3,
});

/**
 * Ranges of the numeric options, checked before anything is allocated or written (the option parser only
 * checks types): a batch size of 0 would loop forever, a negative one grows until the heap gives up.
 * [min, max] inclusive unless `exclusiveMax`/`exclusiveMin`; the upper bounds are sanity limits far above any
 * real configuration (memory is checked separately, against the dataset, by student/memory.ts).
 */
const RANGES: Record<string, { min: number; max: number; exclusiveMin?: boolean; exclusiveMax?: boolean; what?: string }> = {
  maxLen: { min: 1, max: 100_000 },
  dims: { min: 1, max: 65_536 },
  blocks: { min: 1, max: 1_000 },
  heads: { min: 1, max: 65_536 },
  ffnDims: { min: 1, max: 1_048_576 },
  dropout: { min: 0, max: 1, exclusiveMax: true },
  attnDropout: { min: 0, max: 1, exclusiveMax: true },
  filterAlpha: { min: 0, max: 1, exclusiveMax: true },
  filterBins: { min: 1, max: 100_000 },
  negatives: { min: 1, max: 10_000_000 },
  epochs: { min: 1, max: 1_000_000 },
  batchSize: { min: 1, max: 10_000_000 },
  lr: { min: 0, max: Number.MAX_VALUE, exclusiveMin: true },
  beta1: { min: 0, max: 1, exclusiveMax: true },
  beta2: { min: 0, max: 1, exclusiveMax: true },
  warmupSteps: { min: 0, max: 1_000_000_000 },
  labelSmoothing: { min: 0, max: 1, exclusiveMax: true },
  weightDecay: { min: 0, max: Number.MAX_VALUE },
  ema: { min: 0, max: 1, exclusiveMax: true },
  patience: { min: 0, max: 1_000_000 },
  evalEvery: { min: 1, max: 1_000_000 },
  evalBatch: { min: 1, max: 10_000_000 },
  threads: { min: 0, max: 64 },
};

function kebab(k: string): string {
  return k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

/**
 * Check every numeric student option's range (and heads | dims); throws E_USAGE naming the option.
 * trainStudent calls it, so every caller (student:train, ablate, demo, tests) gets it.
 */
export function validateStudentOptions(o: Partial<StudentOptions>): void {
  const rec = o as Record<string, unknown>;
  for (const [key, r] of Object.entries(RANGES)) {
    const v = rec[key];
    if (v === undefined) continue;
    const lo = r.exclusiveMin ? `> ${r.min}` : `>= ${r.min}`;
    const hi = r.max >= Number.MAX_VALUE ? '' : r.exclusiveMax ? ` and < ${r.max}` : ` and <= ${r.max}`;
    const isInt = (modelOptions as Record<string, { type: string }>)[key]?.type === 'int' || (trainOptions as Record<string, { type: string }>)[key]?.type === 'int';
    const ok = typeof v === 'number' && Number.isFinite(v) && (!isInt || Number.isInteger(v))
      && (r.exclusiveMin ? v > r.min : v >= r.min) && (r.exclusiveMax ? v < r.max : v <= r.max);
    if (!ok) throw new RecdistillError('E_USAGE', `--${kebab(key)} must be ${isInt ? 'an integer' : 'a number'} ${lo}${hi}; got ${JSON.stringify(v)}.`);
  }
  if (typeof o.dims === 'number' && typeof o.heads === 'number' && o.dims % o.heads !== 0) {
    throw new RecdistillError('E_USAGE', `--heads (${o.heads}) must divide --dims (${o.dims}).`);
  }
  for (const key of ['norm', 'init', 'padKeys', 'attention', 'lrSchedule', 'loss', 'batching', 'stepWeight'] as const) {
    const choices = ((modelOptions as Record<string, { choices?: readonly string[] }>)[key] ?? (trainOptions as Record<string, { choices?: readonly string[] }>)[key])!.choices!;
    const v = rec[key];
    if (v !== undefined && !choices.includes(v as string)) throw new RecdistillError('E_USAGE', `--${kebab(key)} must be one of ${choices.join(', ')}; got ${JSON.stringify(v)}.`);
  }
  if (o.embScale !== undefined && typeof o.embScale !== 'boolean') throw new RecdistillError('E_USAGE', `--emb-scale must be a boolean; got ${JSON.stringify(o.embScale)}.`);
  if (o.attnOutDropout !== undefined && typeof o.attnOutDropout !== 'boolean') throw new RecdistillError('E_USAGE', `--attn-out-dropout must be a boolean; got ${JSON.stringify(o.attnOutDropout)}.`);
  if (o.attention === 'bidirectional' && o.padKeys === 'attend') throw new RecdistillError('E_USAGE', '--attention bidirectional masks padding keys: use --pad-keys mask (attend is the causal pmixer variant).');
  if ((o.filterAlpha ?? 0) > 0 && (o.attention === 'bidirectional' || o.padKeys === 'attend')) {
    throw new RecdistillError('E_USAGE', `--filter-alpha is a causal branch over padding-masked sequences: it needs --attention causal and --pad-keys mask.`);
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
