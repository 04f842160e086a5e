import type * as tf from '@tensorflow/tfjs-core';
import type { CacheReader } from '../../cache/reader.js';
import type { PreparedDataset } from '../../data/types.js';
import type { StepContext } from '../../student/training/hooks.js';
import type { AlignPair } from '../align.js';
import type { DistillFlags } from '../options.js';
import type { TeacherBatch } from '../teacher-batch.js';

/** The distillation terms, in the order their lambdas were added (config.json's `lambdas`, the balancer). */
export type TermName = 'cos' | 'l2' | 'ms' | 'kd' | 'emb' | 'rel';

/** What every term reads when it is set up: the flags, the opened cache, the student's shape, the alignment. */
export interface TermSetup {
  f: DistillFlags;
  reader: CacheReader;
  dataset: PreparedDataset;
  /** Student hidden size D, blocks; teacher hidden size H; soft labels used K. */
  D: number;
  H: number;
  K: number;
  blocks: number;
  seed: number;
  /** Aligned (student block, tapped layer) pairs; the intermediate ones (ms); the last block's (rel). */
  pairs: AlignPair[];
  msPairs: AlignPair[];
  relPair?: AlignPair;
  /** Per-dimension teacher statistics when --standardise is on. */
  stats?: { mean: Float32Array; std: Float32Array };
  on(t: TermName): boolean;
  /** A trainable variable named distill<id>/<name> (the variable list keeps creation order). */
  variable(name: string, init: tf.Tensor): tf.Variable;
}

/** What one training step gives every term (built once per step by the hooks). */
export interface StepShared {
  ctx: StepContext;
  /** Batch rows B*L: targets, and which slots are real (position >= 0 and a target). */
  targets: Int32Array;
  valid: Uint8Array;
  /** The teacher rows of the batch's slots that have one (undefined when no active term reads the teacher). */
  tb?: TeacherBatch;
  slotsT?: tf.Tensor1D;
  /** Tapped layers looked up, in TeacherBatch.hidden order. */
  lookupTapped: number[];
  /** --balance unshare: is term t cut from the shared layers at this step. */
  cut(t: TermName): boolean;
  /** Block `block`'s states flattened to [B*L, D] (through a gradient stop when t is cut). */
  flatFor(t: TermName, block: number): tf.Tensor2D;
  /** The item embeddings [N+1, D] (stopped when t is cut). */
  embFor(t: TermName): tf.Tensor2D;
  /** The student's full scores h . E^T through embFor(t). */
  scoresFor(t: TermName, h: tf.Tensor2D): tf.Tensor2D;
  /** h through t's own residual adapter under --balance unshare when t is cut, else h. */
  adapted(t: TermName, h: tf.Tensor2D): tf.Tensor2D;
}

/** One term's state for a run: its variables were created by `create`; `compute` gives its unweighted value. */
export interface TermInstance {
  compute(s: StepShared): tf.Scalar | undefined;
  /** The term's own record in config.json's distillation provenance (under its name), if any. */
  provenance?(): Record<string, unknown> | undefined;
}

/**
 * A distillation term: its name, the flag that holds its weight, what it distils (and from which paper), what it
 * reads from the cache, and how it is built and computed. Registered once in terms/index.ts TERMS.
 */
export interface TermModule {
  name: TermName;
  /** The student:train flag holding its weight λ (0 = off). */
  lambda: 'lambdaCos' | 'lambdaL2' | 'lambdaMs' | 'lambdaKd' | 'lambdaEmb' | 'lambdaRel';
  /** ablate's λ when the configuration turns the term on. */
  ablateLambda: number;
  /** Part of ablate's `all` (an opt-in term joins only as all+<name>). */
  inAll: boolean;
  /** What it distils, one line (and the paper). */
  what: string;
  /** Reads the teacher's rows of the batch (hidden states or soft labels). */
  readsTeacher: boolean;
  /** Under --balance unshare, routed through an own residual adapter D -> D on the last block (kd, rel). */
  ownAdapter: boolean;
  /** Refuse a configuration the term cannot train (before any variable exists). */
  check?(s: TermSetup): void;
  /** Create the term's variables (in a fixed order) and return its per-step computation. */
  create(s: TermSetup): TermInstance;
}
