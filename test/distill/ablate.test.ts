import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeAblationReport } from '../../src/distill/ablate-report.js';
import { chooseOnValidation, lambdaFlags, meanStd, planConfigs, runAblation, summarizeConfig, type AblationConfig } from '../../src/distill/ablate.js';

const base = { cos: 1, l2: 0.5, ms: 0, kd: 2, emb: 0.1 };

describe('ablation plan', () => {
  it('ce first, each term alone, all = every term with a positive lambda, + joins', () => {
    const p = planConfigs('cos,kd,all,kd+cos', base);
    expect(p.map((c) => c.name)).toEqual(['ce', 'cos', 'kd', 'all', 'kd+cos']);
    expect(p[3]!.lambdas).toEqual({ cos: 1, l2: 0.5, kd: 2, emb: 0.1 });
    expect(p[4]!.lambdas).toEqual({ kd: 2, cos: 1 });
  });
  it('unknown terms and zero lambdas are usage errors', () => {
    expect(() => planConfigs('kd,foo', base)).toThrow(/unknown term "foo"/);
    expect(() => planConfigs('ms', base)).toThrow(/--lambda-ms is 0/);
  });
  it('lambda flags zero the terms that are off', () => {
    expect(lambdaFlags({ kd: 2 })).toEqual({ lambdaCos: 0, lambdaL2: 0, lambdaMs: 0, lambdaKd: 2, lambdaEmb: 0, lambdaRel: 0 });
    expect(lambdaFlags({ rel: 1 })).toEqual({ lambdaCos: 0, lambdaL2: 0, lambdaMs: 0, lambdaKd: 0, lambdaEmb: 0, lambdaRel: 1 });
  });
});

describe('ablation protocol', () => {
  it('mean and sample std', () => {
    expect(meanStd([1, 2, 3])).toEqual({ mean: 2, std: 1 });
    expect(meanStd([0.5])).toEqual({ mean: 0.5, std: NaN });
  });

  it('chooses the distilled config on validation, not test, and reports the test gain over CE', async () => {
    // kd: best on test but worse on validation than cos; the chosen one must be cos.
    const table: Record<string, { v: number; t: number }> = { ce: { v: 0.1, t: 0.1 }, cos: { v: 0.13, t: 0.11 }, kd: { v: 0.12, t: 0.2 } };
    const seen: Array<[string, number, Record<string, unknown> | undefined]> = [];
    const r = await runAblation({ configs: planConfigs('cos,kd', base), seeds: [1, 2] }, { cache: '/c', kd: 'kl' }, {
      log: () => {},
      async train(cfg: AblationConfig, seed, distill) {
        seen.push([cfg.name, seed, distill]);
        const x = table[cfg.name]!;
        const jitter = seed === 1 ? -0.01 : 0.01;
        return { valid: { 'ndcg@10': x.v + jitter, 'hr@10': 2 * x.v }, test: { 'ndcg@10': x.t + jitter, 'hr@10': 2 * x.t }, seconds: 3 };
      },
    });
    expect(seen.map((s) => `${s[0]}:${s[1]}`)).toEqual(['ce:1', 'ce:2', 'cos:1', 'cos:2', 'kd:1', 'kd:2']);
    expect(seen[0]![2]).toBeUndefined();
    expect(seen[2]![2]).toEqual({ cache: '/c', kd: 'kl', lambdaCos: 1, lambdaL2: 0, lambdaMs: 0, lambdaKd: 0, lambdaEmb: 0, lambdaRel: 0 });
    expect(r.distilled!.name).toBe('cos');
    expect(chooseOnValidation(r.configs)!.name).toBe('cos');
    expect(r.ce['ndcg@10.mean']).toBeCloseTo(0.1, 9);
    expect(r.ce['ndcg@10.std']).toBeCloseTo(Math.SQRT2 * 0.01, 9);
    expect(r.gain).toBeCloseTo(0.1, 9); // 0.11 / 0.10 - 1
    const dir = mkdtempSync(join(tmpdir(), 'ablate-'));
    try {
      const files = writeAblationReport(dir, r, { gain: r.gain }, { title: 'Ablation', lines: ['x'] });
      const md = readFileSync(files.markdown, 'utf8');
      expect(md).toMatch(/\| cos \(chosen on valid\) \| cos=1 \| - \| 0\.1300 \| 0\.1100 ± 0\.0141 \|/);
      expect(md).toMatch(/gain over CE-only: \*\*10\.0%\*\*/);
      expect(JSON.parse(readFileSync(files.json, 'utf8')).configs).toHaveLength(3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('config variants', () => {
  it('term:variant=lambda sets the kd loss and its own weight', () => {
    const p = planConfigs('kd:ranking=0.5,kd:kl+cos', base);
    expect(p[1]).toEqual({ name: 'kd:ranking=0.5', lambdas: { kd: 0.5 }, overrides: { kd: 'ranking' } });
    expect(p[2]).toEqual({ name: 'kd:kl+cos', lambdas: { kd: 2, cos: 1 }, overrides: { kd: 'kl' } });
    expect(() => planConfigs('cos:ranking', base)).toThrow(/only kd has variants/);
    expect(() => planConfigs('kd=0', base)).toThrow(/its weight is 0/);
  });
});

describe('ablation configs with gradient balancing', () => {
  it('all@gradcos, kd+cos@pcgrad and all@unshare carry the balance override; anything else after @ is refused', () => {
    const lambdas = { cos: 1, l2: 0.1, ms: 0.5, kd: 1, emb: 0.5 };
    const cfgs = planConfigs('all,all@gradcos,kd+cos@pcgrad,all@unshare', lambdas);
    expect(cfgs.map((c) => [c.name, c.overrides?.balance])).toEqual([['ce', undefined], ['all', undefined], ['all@gradcos', 'gradcos'], ['kd+cos@pcgrad', 'pcgrad'], ['all@unshare', 'unshare']]);
    expect(cfgs[2]!.lambdas).toEqual(cfgs[1]!.lambdas);
    expect(cfgs[4]!.lambdas).toEqual(cfgs[1]!.lambdas);
    expect(() => planConfigs('all@fast', lambdas)).toThrow(/@gradcos, @pcgrad or @unshare/);
    expect(() => planConfigs('all@unshare@gradcos', lambdas)).toThrow(/nothing else/);
  });

  it('summaries carry params and the mean epoch of the kept weights', () => {
    const s = summarizeConfig({ name: 'kd', lambdas: { kd: 1 } }, [
      { seed: 1, valid: { 'ndcg@10': 0.1 }, test: { 'ndcg@10': 0.1 }, seconds: 1, bestEpoch: 10 },
      { seed: 2, valid: { 'ndcg@10': 0.1 }, test: { 'ndcg@10': 0.1 }, seconds: 1, bestEpoch: 21 },
    ], 1234);
    expect(s['epochs.mean']).toBe(15.5);
    expect(s.params).toBe(1234);
  });
});

describe('relational distillation in the ablation (rel)', () => {
  const withRel = { ...base, rel: 1 };

  it('rel is a term of its own, with its lambda, and joins others with +', () => {
    const p = planConfigs('rel,rel=0.25,kd+rel', withRel);
    expect(p.map((c) => [c.name, c.lambdas])).toEqual([['ce', {}], ['rel', { rel: 1 }], ['rel=0.25', { rel: 0.25 }], ['kd+rel', { kd: 2, rel: 1 }]]);
    expect(() => planConfigs('rel', base)).toThrow(/--lambda-rel is 0/);
    expect(() => planConfigs('rel:kl', withRel)).toThrow(/only kd has variants/);
  });

  it('all keeps its meaning (rel is opt-in, even with a positive lambda); all+rel adds it', () => {
    const p = planConfigs('all,all+rel,all+rel@gradcos', withRel);
    expect(p[1]!.lambdas).toEqual({ cos: 1, l2: 0.5, kd: 2, emb: 0.1 });
    expect(p[2]!.lambdas).toEqual({ cos: 1, l2: 0.5, kd: 2, emb: 0.1, rel: 1 });
    expect(p[3]).toMatchObject({ lambdas: p[2]!.lambdas, overrides: { balance: 'gradcos' } });
    // a lambda table without rel (callers before rel existed) still plans
    expect(planConfigs('all', base)[1]!.lambdas).toEqual({ cos: 1, l2: 0.5, kd: 2, emb: 0.1 });
  });
});
