import { describe, expect, it } from 'vitest';
import { ablateOptions } from '../../src/distill/ablate-options.js';
import { planConfigs } from '../../src/distill/ablate.js';
import { distillOptions } from '../../src/distill/options.js';
import { activeLambdas, LOSS_ORDER, OPT_IN_TERMS, TERM_LAMBDAS, TERM_NAMES, TERMS } from '../../src/distill/terms/index.js';

/** One registered list of distillation terms: the flags, ablate's lambdas and configurations all come from it. */
describe('distillation term registry', () => {
  it('holds the six terms, each with its own student:train lambda flag (off by default)', () => {
    expect(TERM_NAMES).toEqual(['cos', 'l2', 'ms', 'kd', 'emb', 'rel']);
    expect(TERM_LAMBDAS).toEqual({ cos: 'lambdaCos', l2: 'lambdaL2', ms: 'lambdaMs', kd: 'lambdaKd', emb: 'lambdaEmb', rel: 'lambdaRel' });
    for (const t of TERMS) expect(distillOptions[t.lambda]).toMatchObject({ type: 'number', default: 0, min: 0 });
    expect([...LOSS_ORDER].sort()).toEqual([...TERM_NAMES].sort());
    expect(OPT_IN_TERMS).toEqual(['rel']);
  });

  it('gives ablate its lambda flags and defaults (the published ablation\'s weights)', () => {
    const defaults = Object.fromEntries(TERMS.map((t) => [t.lambda, ablateOptions[t.lambda].default]));
    expect(defaults).toEqual({ lambdaCos: 1, lambdaL2: 0.1, lambdaMs: 0.5, lambdaKd: 1, lambdaEmb: 0.5, lambdaRel: 1 });
    expect(ablateOptions.lambdaRel.help).toBe('λrel when the term is on (not part of all: all+rel)');
  });

  it('ablate\'s `all` is every term in the registry but the opt-in ones', () => {
    const lambdas = { cos: 1, l2: 0.1, ms: 0.5, kd: 1, emb: 0.5, rel: 1 };
    const [all, allRel] = planConfigs('all,all+rel', lambdas).slice(1);
    expect(all!.lambdas).toEqual({ cos: 1, l2: 0.1, ms: 0.5, kd: 1, emb: 0.5 });
    expect(allRel!.lambdas).toEqual(lambdas);
  });

  it('activeLambdas keeps the terms with a positive weight, in registry order', () => {
    const flags = { lambdaCos: 0, lambdaL2: 0.1, lambdaMs: 0, lambdaKd: 2, lambdaEmb: 0, lambdaRel: 0.5 };
    expect(Object.entries(activeLambdas(flags))).toEqual([['l2', 0.1], ['kd', 2], ['rel', 0.5]]);
  });
});
