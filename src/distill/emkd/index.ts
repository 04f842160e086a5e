/**
 * EMKD: ensemble modelling with contrastive knowledge distillation (Du et al., SIGIR 2023) for the student
 * trainer. student:train --emkd K builds the hooks through buildDistillHooks (src/distill/hooks.ts); the rest is
 * here: the hooks and their design (./hooks.ts), the loss terms (./losses.ts), masked views and attribute
 * classes (./views.ts), networks 2..K (./networks.ts), ensemble serving / evaluation (./ensemble.ts) and the
 * ablation rows (./plan.ts).
 * - Serving: `--serve member` (default: network 1, the run's model.safetensors) or `--serve ensemble` (the K
 *   networks' scores averaged, through the run's serve.json); metrics.json reports both (distill.emkd.serving).
 * - Memory: student:train's up-front estimate counts what EMKD keeps alive in a step (src/student/training/memory.ts
 *   estimateEmkd: networks 2..K, their passes on the batch and the masked views, their full-softmax CE and every
 *   pair's KL, which grows as K (K - 1) / 2) and refuses a run that cannot fit, naming --emkd and --batch-size.
 * - Cost: metrics.json's secondsPerEpoch and memory (peak RSS, wasm heap, estimate); `ablate --suite emkd` puts
 *   them on every row.
 */
export { buildEmkdHooks, checkEmkdFlags, EMKD_TERMS, type EmkdFlags, type EmkdTerm, type TeacherMember } from './hooks.js';
export { withEmkd } from './compose.js';
export { attributeCE, infoNCE, maskedItemCE, mutualKL, teacherKL } from './losses.js';
export { attributeTable, maskView, type AttributeTable, type MaskedView } from './views.js';
export { createNetworks, encodeWithRows, networkSeed, studentModelConfig, type EmkdNetworks } from './networks.js';
export { averageScores, ensembleScorer, evaluateEnsemble, exportEnsemble, memberDir, reportEnsemble, type EnsembleResult } from './ensemble.js';
export { betterMain, EMKD_DEFAULT_LAMBDAS, EMKD_MAIN_ROWS, EMKD_REMOVED, emkdSummary, planEmkdConfigs, planEmkdRemovals, SINGLE_OF, type EmkdCost, type EmkdLambdas, type EmkdPlanOptions, type EmkdSuiteSummary, type EnsembleFigures } from './plan.js';
export { buildClozeHooks, trainingSequences } from './cloze.js';
export { attributeBCE, clozeView, contrastive } from './reference-losses.js';
