/**
 * The EMKD ablation rows (src/distill/emkd/plan.ts): what `npm run ablate -- --suite emkd` runs through
 * runAblation, the flags each row's training receives, and the suite's summary keys.
 */
import { describe, expect, it } from 'vitest';
import { runAblation, type AblationConfig } from '../../src/distill/ablate.js';
import { EMKD_DEFAULT_LAMBDAS, emkdSummary, planEmkdConfigs } from '../../src/distill/emkd/plan.js';
import { distillFlagsFrom } from '../../src/distill/hooks.js';

describe('planEmkdConfigs', () => {
  it('ce, K = 2 and 3, then each of L1..L5 removed from K = 3; the teacher row only on request', () => {
    const rows = planEmkdConfigs();
    expect(rows.map((r) => r.name)).toEqual(['ce', 'emkd2', 'emkd3', 'emkd3-L1', 'emkd3-L2', 'emkd3-L3', 'emkd3-L4', 'emkd3-L5']);
    expect(EMKD_DEFAULT_LAMBDAS).toEqual({ lambdaEmkdMask: 1, lambdaEmkdAttr: 1, lambdaEmkdIntra: 0.01, lambdaEmkdInter: 0.01, lambdaEmkdKl: 0.001 });
    const removed = { 'emkd3-L1': 'lambdaEmkdMask', 'emkd3-L2': 'lambdaEmkdAttr', 'emkd3-L3': 'lambdaEmkdIntra', 'emkd3-L4': 'lambdaEmkdInter', 'emkd3-L5': 'lambdaEmkdKl' } as Record<string, string>;
    for (const r of rows.slice(1)) {
      const o = r.overrides!;
      expect(o.emkd).toBe(r.name === 'emkd2' ? 2 : 3);
      expect('cache' in o && o.cache === undefined).toBe(true);
      for (const [k, v] of Object.entries(EMKD_DEFAULT_LAMBDAS)) expect(o[k], `${r.name} ${k}`).toBe(removed[r.name] === k ? 0 : v);
    }
    const t = planEmkdConfigs({ teacherRow: true, lambdas: { lambdaEmkdKl: 0.01 }, flags: { emkdViews: 2 } });
    const last = t.at(-1)!;
    expect(last.name).toBe('emkd3+teacher');
    expect('cache' in last.overrides!).toBe(false);
    expect(last.overrides).toMatchObject({ emkd: 3, lambdaEmkdKl: 0.01, emkdViews: 2 });
  });

  it('through runAblation each row trains with exactly its EMKD flags (no inherited cache), which the hooks accept', async () => {
    const seen: Array<[string, Record<string, unknown> | undefined]> = [];
    const result = await runAblation({ configs: planEmkdConfigs(), seeds: [1, 2] }, { cache: '/some/cache', kd: 'kl' }, {
      log: () => {},
      async train(cfg: AblationConfig, seed, distill) {
        if (seed === 1) seen.push([cfg.name, distill]);
        const base = { ce: 0.1, emkd2: 0.11, emkd3: 0.12 }[cfg.name] ?? 0.105;
        const v = base + seed * 0.001;
        return { valid: { 'ndcg@10': v, 'hr@10': 2 * v }, test: { 'ndcg@10': v, 'hr@10': 2 * v }, seconds: 1 };
      },
    });
    expect(seen[0]).toEqual(['ce', undefined]);
    const l2 = Object.fromEntries(seen)['emkd3-L2']!;
    expect(l2.cache).toBeUndefined();
    expect(l2).toMatchObject({ emkd: 3, lambdaEmkdAttr: 0, lambdaEmkdMask: 1, kd: 'kl', lambdaKd: 0 });
    for (const [, d] of seen.slice(1)) {
      const f = distillFlagsFrom({ ...d });
      expect(f.cache).toBeUndefined();
      expect(f.emkd).toBeGreaterThan(0);
    }
    const s = emkdSummary(result.configs, { emkd3: [0.13, 0.15] });
    expect(s.single['ndcg@10.mean']).toBeCloseTo(0.1015, 10);
    expect(s.member['ndcg@10.mean']).toBeCloseTo(0.1215, 10);
    expect(s.ensemble['ndcg@10.mean']).toBeCloseTo(0.14, 10);
    expect(s.ensemble['ndcg@10.std']).toBeCloseTo(Math.SQRT2 * 0.01, 10); // sample std of 0.13, 0.15
    expect(s.gain).toBeCloseTo(0.1215 / 0.1015 - 1, 10);
    // chosen: the K = 3 row with the best validation mean; here emkd3 itself (0.1215 against 0.1065 for the L rows).
    expect(s.chosen).toMatchObject({ config: 'emkd3', 'ndcg@10.mean': s.member['ndcg@10.mean'], gain: s.gain });
    // A removal row that validates better is the one chosen (its own test figure, ensemble and gain; emkd2 is not a K = 3 row).
    const configs = result.configs.map((c) => (c.name === 'emkd3-L1' ? { ...c, 'valid.ndcg@10.mean': 0.2, 'ndcg@10.mean': 0.125, 'ndcg@10.std': 0.002 } : c.name === 'emkd2' ? { ...c, 'valid.ndcg@10.mean': 0.3 } : c));
    const t = emkdSummary(configs, { emkd3: [0.13, 0.15], 'emkd3-L1': [0.12, 0.14] });
    expect(t.chosen).toEqual({ config: 'emkd3-L1', 'valid.ndcg@10.mean': 0.2, 'ndcg@10.mean': 0.125, 'ndcg@10.std': 0.002, ensemble: { 'ndcg@10.mean': 0.13, 'ndcg@10.std': t.chosen!.ensemble!['ndcg@10.std'] }, gain: 0.125 / 0.1015 - 1 });
    expect(t.chosen!.ensemble!['ndcg@10.std']).toBeCloseTo(Math.SQRT2 * 0.01, 10);
    expect(t.member['ndcg@10.mean']).toBeCloseTo(0.1215, 10); // member stays the all-terms row
  });
});
