import type { DistillFlags } from '../options.js';
import { embTerm } from './emb.js';
import { cosTerm, l2Term } from './hidden.js';
import { kdTerm } from './kd.js';
import { msTerm } from './ms.js';
import { relTerm } from './rel.js';
import type { TermModule, TermName } from './types.js';

export type { StepShared, TermInstance, TermModule, TermName, TermSetup } from './types.js';

/**
 * Every distillation term, registered once, in the order their lambdas were added: that order is the order of
 * config.json's `lambdas`, of the balancer's terms and of ablate's `all`. A new term is one module here: its
 * flag goes into distill/options.ts, ablate's configurations and lambda flags come from this list.
 */
export const TERMS: readonly TermModule[] = [cosTerm, l2Term, msTerm, kdTerm, embTerm, relTerm];

/**
 * The order the hooks hand the terms' values to the trainer, which sums them in that order and logs them in
 * history.jsonl in that order: kept as it always was (rel before emb), so runs stay byte-identical.
 */
export const LOSS_ORDER: readonly TermName[] = ['cos', 'l2', 'ms', 'kd', 'rel', 'emb'];

/** The loss-term names (keys of extraTerms / weights) and the flag holding each one's lambda. */
export const TERM_LAMBDAS = Object.fromEntries(TERMS.map((t) => [t.name, t.lambda])) as { [K in TermName]: TermModule['lambda'] };

export const TERM_NAMES: readonly TermName[] = TERMS.map((t) => t.name);

/**
 * Terms the ablation's `all` leaves out unless asked for (`all+rel`): `all` means the terms of the published
 * ablation (cos, l2, ms, kd, emb), so adding a term does not silently change what the default `npm run ablate`
 * measures.
 */
export const OPT_IN_TERMS: readonly TermName[] = TERMS.filter((t) => !t.inAll).map((t) => t.name);

/** Lambdas of the terms that are on (lambda > 0), in TERMS order. */
export function activeLambdas(o: Pick<DistillFlags, TermModule['lambda']>): Partial<Record<TermName, number>> {
  const out: Partial<Record<TermName, number>> = {};
  for (const t of TERMS) {
    const v = o[t.lambda];
    if (v > 0) out[t.name] = v;
  }
  return out;
}
