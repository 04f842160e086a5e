/**
 * EMKD: ensemble modelling with contrastive knowledge distillation (Du et al., SIGIR 2023) for the student
 * trainer. student:train --emkd K builds the hooks through buildDistillHooks (src/distill/hooks.ts); the rest is
 * here: the hooks and their design (./hooks.ts), the loss terms (./losses.ts), masked views and attribute
 * classes (./views.ts), networks 2..K (./networks.ts), ensemble serving / evaluation (./ensemble.ts) and the
 * ablation rows (./plan.ts).
 */
export { buildEmkdHooks, checkEmkdFlags, EMKD_TERMS, type EmkdFlags, type EmkdTerm, type TeacherMember } from './hooks.js';
export { withEmkd } from './compose.js';
export { attributeCE, infoNCE, maskedItemCE, mutualKL, teacherKL } from './losses.js';
export { attributeTable, maskView, type AttributeTable, type MaskedView } from './views.js';
export { createNetworks, encodeWithRows, networkSeed, studentModelConfig, type EmkdNetworks } from './networks.js';
export { averageScores, ensembleScorer, evaluateEnsemble, exportEnsemble, memberDir, type EnsembleResult } from './ensemble.js';
export { EMKD_DEFAULT_LAMBDAS, EMKD_REMOVED, emkdSummary, planEmkdConfigs, type EmkdLambdas, type EmkdPlanOptions, type EmkdSuiteSummary } from './plan.js';
