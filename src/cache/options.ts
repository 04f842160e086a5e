import { BACKEND_CHOICES } from '../backend/index.js';
import { defineOptions, type Resolved } from '../config/options.js';
import { HEAD_DEFAULTS } from '../teacher/head.js';
import { llmTeacherOptions } from '../teacher/llm/options.js';

/**
 * The cache stage's flags: teacher:cache and ablate spread this one table, so the same flags build the same cache
 * (same key). The teacher kind and where the teacher / cache come from are each command's own flags.
 */
export const cacheOptions = defineOptions({
  ...llmTeacherOptions,
  // One meaning of a layer number for both teacher kinds (-1 = the last block); only the default depends on the kind.
  layers: { type: 'string', help: 'tapped layers, comma-separated, negative counts from the end (-1 = last); auto = the last layer of an llm teacher, every block of a seqrec teacher', default: 'auto' },
  cacheRoot: { type: 'string', help: 'caches go to <root>/<dataset>/<teacher>/<key>/', default: 'teacher-cache' },
  usersPerShard: { type: 'int', help: 'users per shard file (contiguous user ranges)', default: 128, min: 1 },
  usersInFlight: { type: 'int', help: 'users encoded concurrently (p-limit)', default: 4, min: 1 },
  hiddenDtype: { type: 'string', help: 'stored precision of hidden states', default: 'f32', choices: ['f32', 'f16'] },
  topK: { type: 'int', help: 'soft labels: top-K items kept per position', default: 50, min: 1 },
  temperature: { type: 'number', help: 'soft labels: softmax temperature T', default: 1, min: 0, exclusiveMin: true },
  head: { type: 'string', help: 'soft-label head of an llm teacher: linear (fitted on cached features) or zeroshot (h . item embedding); a seqrec teacher\'s soft labels are its own scores', default: 'linear', choices: ['linear', 'zeroshot'] },
  headLayer: { type: 'int', help: 'llm: index into the tapped layers the head reads (-1 = last)', default: -1 },
  headEpochs: { type: 'int', help: 'linear head: max epochs (early stop on validation NDCG@10)', default: HEAD_DEFAULTS.epochs },
  headRowsPerEpoch: { type: 'int', help: 'linear head: training positions sampled per epoch (0 = all)', default: HEAD_DEFAULTS.rowsPerEpoch },
  headLr: { type: 'number', help: 'linear head: Adam learning rate', default: HEAD_DEFAULTS.lr },
  headBatch: { type: 'int', help: 'linear head: batch size', default: HEAD_DEFAULTS.batchSize },
  headPatience: { type: 'int', help: 'linear head: epochs without a better validation NDCG@10 before stopping', default: HEAD_DEFAULTS.patience },
  seed: { type: 'int', help: 'seed of the head training (shuffles)', default: 42 },
  backend: { type: 'string', help: 'tfjs backend for the head / seqrec teacher', default: 'auto', choices: BACKEND_CHOICES },
  overheadSample: { type: 'int', help: "llm teacher: after pass 1, re-run this many users twice as a plain session.run loop and twice through the pipeline to measure the tool's own overhead (0 = off; it adds minutes on a large model)", default: 0 },
}, { group: 'Teacher cache' });

export type CacheFlags = Resolved<typeof cacheOptions>;
