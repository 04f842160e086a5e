/**
 * The EMKD ablation rows (src/distill/emkd/plan.ts): what `npm run ablate -- --suite emkd` runs through
 * runAblation (the removal rows chosen from results), the flags each row's training receives, and the suite's
 * summary keys, worked out by hand from made-up results.
 */
import { describe, expect, it } from 'vitest';
import { runAblation, type AblationConfig, type ConfigSummary } from '../../src/distill/ablate.js';
import { EMKD_DEFAULT_LAMBDAS, betterMain, emkdSummary, planEmkdConfigs, planEmkdRemovals, type EnsembleFigures } from '../../src/distill/emkd/plan.js';
import { distillFlagsFrom } from '../../src/distill/hooks.js';

describe('planEmkdConfigs', () => {
  it('ce, cloze1 (bidirectional, cloze only), the reference and causal K = 3 rows; the teacher row only on request', () => {
    const rows = planEmkdConfigs();
    expect(rows.map((r) => r.name)).toEqual(['ce', 'cloze1', 'emkd3-reference', 'emkd3-causal']);
    expect(EMKD_DEFAULT_LAMBDAS).toEqual({ lambdaEmkdMask: 0, lambdaEmkdAttr: 1, lambdaEmkdIntra: 0.01, lambdaEmkdInter: 0.01, lambdaEmkdKl: 0.001 });
    const [, cloze1, ref, causal] = rows as [AblationConfig, AblationConfig, AblationConfig, AblationConfig];
    expect(cloze1.student).toEqual({ attention: 'bidirectional' });
    expect(cloze1.overrides).toMatchObject({ emkd: 1, serve: 'member', lambdaEmkdAttr: 0, lambdaEmkdIntra: 0, lambdaEmkdInter: 0, lambdaEmkdKl: 0 });
    expect(ref.student).toEqual({ attention: 'bidirectional' });
    expect(ref.overrides).toMatchObject({ emkd: 3, serve: 'ensemble', ...EMKD_DEFAULT_LAMBDAS });
    expect(causal.student).toBeUndefined();
    expect(causal.overrides).toMatchObject({ emkd: 3, serve: 'ensemble', ...EMKD_DEFAULT_LAMBDAS });
    for (const r of rows.slice(1)) expect('cache' in r.overrides! && r.overrides!.cache === undefined).toBe(true);
    const t = planEmkdConfigs({ teacherRow: true, lambdas: { lambdaEmkdKl: 0.01 }, flags: { emkdViews: 2 } });
    const last = t.at(-1)!;
    expect(last.name).toBe('emkd3-causal+teacher');
    expect('cache' in last.overrides!).toBe(false);
    expect(last.overrides).toMatchObject({ emkd: 3, lambdaEmkdKl: 0.01, emkdViews: 2 });
  });

  it('removal rows: each of attr, intra, inter, kl off in turn, the rest as the main row', () => {
    const rows = planEmkdRemovals('emkd3-reference');
    expect(rows.map((r) => r.name)).toEqual(['emkd3-reference-no-attr', 'emkd3-reference-no-intra', 'emkd3-reference-no-inter', 'emkd3-reference-no-kl']);
    expect(rows.every((r) => r.student?.attention === 'bidirectional')).toBe(true);
    expect(rows[2]!.overrides).toMatchObject({ emkd: 3, serve: 'ensemble', lambdaEmkdAttr: 1, lambdaEmkdIntra: 0.01, lambdaEmkdInter: 0, lambdaEmkdKl: 0.001 });
    expect(planEmkdRemovals('emkd3-causal')[0]!.student).toBeUndefined();
  });
});

/** Made-up test / validation NDCG@10 per row (both seeds the same), and each K = 3 row's ensemble figures. */
const MEMBER: Record<string, [number, number]> = { ce: [0.1, 0.11], cloze1: [0.12, 0.115], 'emkd3-reference': [0.125, 0.12], 'emkd3-causal': [0.105, 0.112] };

describe('the suite through runAblation, and its summary', () => {
  it('removals follow the K = 3 row whose ensemble validates better; the flags reach the hooks; the summary by hand', async () => {
    const ensemble: EnsembleFigures = { 'emkd3-reference': { valid: [0.14, 0.142], test: [0.13, 0.15] }, 'emkd3-causal': { valid: [0.13, 0.13], test: [0.12, 0.12] } };
    const seen: Array<[string, Record<string, unknown> | undefined, Record<string, unknown> | undefined]> = [];
    const result = await runAblation({ configs: planEmkdConfigs(), seeds: [1, 2], extend: (done) => planEmkdRemovals(betterMain(done, ensemble)!) }, { cache: '/some/cache', kd: 'kl' }, {
      log: () => {},
      async train(cfg: AblationConfig, seed, distill) {
        if (seed === 1) seen.push([cfg.name, distill, cfg.student]);
        const [t, v] = MEMBER[cfg.name] ?? [0.1, 0.1];
        if (cfg.name.includes('-no-')) ensemble[cfg.name] = { valid: [cfg.name.endsWith('-no-kl') ? 0.15 : 0.1, 0.15], test: [0.14, 0.14] };
        return { valid: { 'ndcg@10': v, 'hr@10': 2 * v }, test: { 'ndcg@10': t, 'hr@10': 2 * t }, seconds: seed };
      },
    });
    expect(result.configs.map((c) => c.name)).toEqual(['ce', 'cloze1', 'emkd3-reference', 'emkd3-causal', 'emkd3-reference-no-attr', 'emkd3-reference-no-intra', 'emkd3-reference-no-inter', 'emkd3-reference-no-kl']);
    expect(seen[0]).toEqual(['ce', undefined, undefined]);
    const noAttr = seen.find(([n]) => n === 'emkd3-reference-no-attr')!;
    expect(noAttr[1]!.cache).toBeUndefined();
    expect(noAttr[1]).toMatchObject({ emkd: 3, serve: 'ensemble', lambdaEmkdAttr: 0, lambdaEmkdIntra: 0.01, kd: 'kl', lambdaKd: 0 });
    expect(noAttr[2]).toEqual({ attention: 'bidirectional' });
    for (const [, d] of seen.slice(1)) {
      const f = distillFlagsFrom({ ...d });
      expect(f.cache).toBeUndefined();
      expect(f.emkd).toBeGreaterThan(0);
    }
    const s = emkdSummary(result.configs, ensemble)!;
    // main = emkd3-reference (ensemble valid 0.141 > 0.13); its family's single network is cloze1 (test 0.12).
    expect(s.single).toMatchObject({ config: 'cloze1', 'ndcg@10.mean': 0.12 });
    expect(s.ensemble.config).toBe('emkd3-reference');
    expect(s.ensemble['ndcg@10.mean']).toBeCloseTo(0.14, 12);
    expect(s.ensemble['ndcg@10.std']).toBeCloseTo(Math.SQRT2 * 0.01, 12); // sample std of 0.13, 0.15
    expect(s.ensembleGain).toBeCloseTo(0.14 / 0.12 - 1, 12);
    expect(s.member).toMatchObject({ config: 'emkd3-reference', 'ndcg@10.mean': 0.125 });
    expect(s.memberGain).toBeCloseTo(0.125 / 0.12 - 1, 12);
    // Best single of either family on validation: cloze1 (0.115) over ce (0.11).
    expect(s.bestSingle).toMatchObject({ config: 'cloze1', 'ndcg@10.mean': 0.12 });
    // chosen: -no-kl validates best (0.15, 0.15 -> 0.15); its ensemble test 0.14 over cloze1.
    expect(s.chosen).toEqual({ config: 'emkd3-reference-no-kl', 'valid.ndcg@10.mean': 0.15, ensemble: { 'ndcg@10.mean': 0.14, 'ndcg@10.std': 0 }, member: { 'ndcg@10.mean': 0.1, 'ndcg@10.std': 0 }, ensembleGain: 0.14 / 0.12 - 1 });
  });

  it('the causal row validating better measures against ce; no summary before a K = 3 ensemble exists', () => {
    const row = (name: string, test: number, valid: number) => ({ name, lambdas: {}, seeds: [1], 'ndcg@10.mean': test, 'ndcg@10.std': NaN, 'hr@10.mean': 0, 'hr@10.std': NaN, 'valid.ndcg@10.mean': valid, 'valid.hr@10.mean': 0, 'seconds.mean': 1, 'epochs.mean': 1, runs: [] }) as ConfigSummary;
    const configs = [row('ce', 0.1, 0.1), row('cloze1', 0.2, 0.2), row('emkd3-reference', 0.2, 0.2), row('emkd3-causal', 0.11, 0.1)];
    expect(emkdSummary(configs.slice(0, 2), {})).toBeUndefined();
    const s = emkdSummary(configs, { 'emkd3-reference': { valid: [0.1], test: [0.1] }, 'emkd3-causal': { valid: [0.12], test: [0.125] } })!;
    expect(s.single.config).toBe('ce');
    expect(s.ensembleGain).toBeCloseTo(0.25, 12);
    expect(s.memberGain).toBeCloseTo(0.1, 12);
    expect(s.bestSingle.config).toBe('cloze1');
  });
});
