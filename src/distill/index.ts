/** Distillation: loss terms, loss balancing, the student:train hooks, and the ablation runner. */
export { buildDistillHooks, buildWithReader, distillFlagsFrom } from './hooks.js';
export { distillOptions, type DistillFlags } from './options.js';
export { activeLambdas, TERMS, TERM_NAMES, type TermModule, type TermName } from './terms/index.js';
export { parseAlign, type AlignPair } from './align.js';
export { createBalancer, type BalanceMode, type Balancer } from './balance.js';
export * as losses from './losses.js';
