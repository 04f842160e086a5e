/** Distillation: loss terms, loss balancing, the student:train hooks, and the ablation runner. */
export { buildDistillHooks, buildWithReader, distillFlagsFrom } from './hooks.js';
export { distillOptions, activeLambdas, TERM_NAMES, type DistillFlags, type TermName } from './options.js';
export { parseAlign, type AlignPair } from './align.js';
export { createBalancer, type BalanceMode, type Balancer } from './balance.js';
export * as losses from './losses.js';
