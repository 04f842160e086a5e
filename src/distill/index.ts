import type { HooksFactory } from '../student/hooks.js';
import { RecdistillError } from '../errors.js';

/**
 * Distillation hooks for the student trainer. Returns undefined when no cache is given.
 * (The distillation engineer replaces this body; the signature is the contract with student:train.)
 */
export const buildDistillHooks: HooksFactory = async (opts) => {
  if (!opts.cache) return undefined;
  throw new RecdistillError('E_INTERNAL', 'distillation is not built yet (--cache).');
};
