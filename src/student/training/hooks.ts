import type * as tf from '@tensorflow/tfjs-core';
import type { PreparedDataset } from '../../data/types.js';
import type { LogFn } from '../../util/progress.js';
import type { ScoreBatch } from '../../eval/evaluate.js';
import type { Sasrec } from '../model/model.js';

/**
 * Extension point of the student training step (used by distillation, src/distill).
 * A step computes named scalar loss terms: `ce` (next item) plus `hooks.extraTerms(ctx)`, and minimises
 * sum_k weights[k] * term[k]. Terms are returned UNWEIGHTED; weights come from `hooks.weights(step)`.
 * How the trainer (src/student/training/train.ts, step.ts) uses it:
 * - `extraTerms` runs inside the gradient tape and inside a tf.tidy: create tensors freely, they are freed
 *   after the step. It may be called more than once per step (gradient balancing recomputes the forward
 *   pass per term with the same dropout masks), so it must not have side effects that depend on call count.
 * - Term names must not be `ce`. Every term's mean over the epoch goes to history.jsonl as loss.<name>.
 * - A NaN/Inf total loss stops training (E_NUMERIC) before any weight is updated.
 * - `variables()` is called once at start; they are optimised by the same Adam and saved in the checkpoint
 *   (as hook.<i>, in the order returned), so a resumed run restores them too.
 */
export interface StepContext {
  /** [B] dense user indices of the batch rows. */
  users: Int32Array;
  /** [B * L] row-major: index in the user's full item sequence of the INPUT item at each slot; -1 = padding. */
  positions: Int32Array;
  /** [B, L] next-item targets (0 = padding). */
  targets: tf.Tensor2D;
  /** Per block output [B, L, D]; the last entry is the final state that `scores` uses. */
  hidden: tf.Tensor3D[];
  /** [numItems + 1, D] item embeddings (shared with the output layer). */
  itemEmbeddings: tf.Variable;
  /** Global step index. */
  step: number;
  /** The student's scores for arbitrary hidden states [..., D] -> [..., numItems + 1]. */
  scores(h: tf.Tensor): tf.Tensor;
  /** [B * L] row-major input item ids of the batch (0 = padding). Optional: contexts built by hand may omit it. */
  inputs?: Int32Array;
  /**
   * The student's own encoder run again, in training mode, on other input ids [B * L'] (same B, any L' <= maxLen; e.g. a masked
   * view): per block [B, L, D] as `hidden`. Dropout continues this step's stream (after the main forward and the
   * loss's negatives), so every recomputation of the step draws the same masks. `extraRows` [R, D] are appended
   * to the item table for this pass only, as ids numItems + 1 .. numItems + R (e.g. a learned mask token); the
   * scores and the saved model keep the [numItems + 1, D] table. Optional, like `inputs`.
   */
  encode?(items: Int32Array, extraRows?: tf.Tensor): tf.Tensor3D[];
}

/** What TrainHooks.report gets: the finished run and the student's own metrics (its model.safetensors). */
export interface RunReportContext {
  outDir: string;
  ds: PreparedDataset;
  excludeHistory: boolean;
  evalBatch: number;
  /** The student's full-ranking metrics, as in metrics.json's valid / test. */
  student: { valid: Record<string, number>; test: Record<string, number> };
  log: LogFn;
}

export interface TrainHooks {
  /** Extra trainable variables (projections, adapters) optimised with the student's. */
  variables(): tf.Variable[];
  /** Unweighted extra loss terms for this batch (called inside the gradient tape). */
  extraTerms(ctx: StepContext): Record<string, tf.Scalar>;
  /** Weight of each term at this step (`ce` defaults to 1 when absent). */
  weights(step: number): Record<string, number>;
  /**
   * Optional gradient balancing: every `every` steps the trainer computes each term's gradient on the shared
   * variables (item embeddings + encoder) and passes them here, keyed by term name, same variable order.
   */
  balance?: {
    every: number;
    /**
     * The terms balanced against ce (known without an extra forward pass). Read at every measurement: a balancer
     * may stop measuring a term (--balance unshare: an unshared term's gradient on these variables is zero).
     */
    terms: string[];
    update(grads: Record<string, tf.Tensor[]>, step: number): void;
  };
  /**
   * The hooks run every forward pass they need through `ctx.encode` and set `ce`'s weight to 0: the trainer then
   * skips its own forward pass and next-item loss (ctx.hidden is empty). EMKD's cloze networks.
   */
  ownForward?: boolean;
  /**
   * Keep the hook variables of the best validated epoch too (checkpoint tensors best/hook.<i>), e.g. EMKD's
   * networks 2..K, so what is served beside the student comes from the same epoch as its weights.
   */
  keepBest?: boolean;
  /**
   * The scorer validation selects the best epoch on, when it is not the student alone (EMKD serving its ensemble:
   * the K networks' scores, so the kept epoch is the served model's best). Built once, given the student model.
   */
  selectionScorer?(model: Sasrec, ds: PreparedDataset): ScoreBatch;
  /** State that must survive a resume (e.g. the balancer's weights and moving averages): JSON in the checkpoint. */
  saveState?(): Record<string, unknown>;
  restoreState?(state: Record<string, unknown>): void;
  /** Extra per-epoch info for history.jsonl (e.g. balance weights). */
  epochInfo?(): Record<string, unknown>;
  /** Provenance recorded in the run folder (cache dir, cache key, lambdas). */
  provenance?(): Record<string, unknown>;
  /**
   * A provenance an older version stored (a checkpoint's or config.json's identity), as this version writes it for
   * the same run (e.g. student blocks renumbered from 0), so such a run still resumes; identity when absent.
   */
  upgradeProvenance?(stored: unknown): unknown;
  /**
   * Called once the run's model.safetensors and last checkpoint are written (src/student/training/finish.ts): evaluate or
   * export what the hooks trained besides the student (EMKD: its K-network ensemble). The record is merged into
   * metrics.json's `distill` key by key (`{ emkd: {...} }` joins the provenance's `emkd`); not part of the run's
   * identity.
   */
  report?(run: RunReportContext): Promise<Record<string, unknown>>;
  dispose?(): void;
}

/** How hooks reach their inputs: runtime settings that are not options of the run (never part of its identity). */
export interface HooksRuntime {
  /** Check each teacher-cache file's sha256 against its manifest when first loaded (default true; --no-verify). */
  verify?: boolean;
}

/** Builds hooks from resolved options (e.g. distillation flags); undefined = plain training. */
export type HooksFactory = (opts: Record<string, unknown>, dataset: PreparedDataset, model: { dims: number; blocks: number }, runtime?: HooksRuntime) => Promise<TrainHooks | undefined>;

/**
 * The loss the run trains, as the training header prints it: the student's own loss, then each extra term with
 * its weight at the first step (e.g. "ce + 1 kd + 0.5 cos"), so a distilled run never reads as plain CE.
 */
export function lossLine(base: string, hooks?: TrainHooks): string {
  const w = hooks?.weights(0) ?? {};
  const terms = Object.entries(w).filter(([k, v]) => k !== 'ce' && v > 0).map(([k, v]) => ` + ${Number(v.toPrecision(4))} ${k}`);
  const ce = w.ce !== undefined && w.ce !== 1 ? `${Number(w.ce.toPrecision(4))} ` : '';
  return `${ce}${base}${terms.join('')}`;
}
