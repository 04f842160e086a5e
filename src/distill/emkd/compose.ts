import type * as tf from '@tensorflow/tfjs-core';
import type { TrainHooks } from '../../student/training/hooks.js';

/**
 * The distillation hooks (teacher-cache terms, balancing) and the EMKD hooks as one TrainHooks:
 * - variables: the distillation's first, then EMKD's (the checkpoint's hook.<i>); EMKD's provenance records
 *   where its own start (`firstHookVariable`), which is how src/distill/emkd/ensemble.ts finds networks 2..K;
 * - terms and weights: both records (names must not collide); balancing, saved state and the per-epoch info stay
 *   the distillation's (EMKD has no state besides its variables and is not balanced);
 * - without distillation hooks (no --cache), EMKD alone, with the same provenance shape ({ emkd: ... }).
 */
export function withEmkd(distill: TrainHooks | undefined, emkd: TrainHooks): TrainHooks {
  let vars: { a: tf.Variable[]; b: tf.Variable[] } | undefined;
  const variables = () => (vars ??= { a: distill?.variables() ?? [], b: emkd.variables() });
  return {
    variables: () => [...variables().a, ...variables().b],
    extraTerms(ctx) {
      const a = distill?.extraTerms(ctx) ?? {};
      const b = emkd.extraTerms(ctx);
      for (const k of Object.keys(b)) if (k in a) throw new Error(`EMKD and distillation hooks both return a term named "${k}".`);
      return { ...a, ...b };
    },
    weights: (step) => ({ ...(distill?.weights(step) ?? {}), ...emkd.weights(step) }),
    balance: distill?.balance,
    // Networks 2..K are served (ensemble) from the epoch network 1 is: the trainer keeps their best-epoch copies.
    keepBest: true,
    // Only without distillation hooks (they read the trainer's forward pass).
    ownForward: !distill && emkd.ownForward,
    // Validation follows what is served (the ensemble with --serve ensemble).
    selectionScorer: emkd.selectionScorer,
    saveState: distill?.saveState ? () => distill.saveState!() : undefined,
    restoreState: distill?.restoreState ? (s) => distill.restoreState!(s) : undefined,
    epochInfo: distill?.epochInfo ? () => distill.epochInfo!() : undefined,
    report: async (run) => ({ ...(await distill?.report?.(run)), ...(await emkd.report?.(run)) }),
    provenance: () => ({ ...(distill?.provenance?.() ?? {}), emkd: { ...(emkd.provenance?.() ?? {}), firstHookVariable: variables().a.length } }),
    upgradeProvenance: distill?.upgradeProvenance,
    dispose() {
      emkd.dispose?.();
      distill?.dispose?.();
    },
  };
}
