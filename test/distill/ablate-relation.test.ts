import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AblationReport } from '../../src/distill/ablate-stage.js';
import cmd from '../../src/cli/commands/ablate.js';
import { resolveOptions } from '../../src/config/options.js';

/** `ablate --suite relation` / `--suite emkd` on a tiny synthetic dataset (cpu). */
describe('ablate --suite relation (tiny synthetic, cpu)', () => {
  const flagsIn = (dir: string): Record<string, string> => ({
    dataset: 'synthetic', syntheticUsers: '40', syntheticItems: '30', syntheticMinLen: '5', syntheticMaxLen: '10',
    teacherDims: '8', teacherEpochs: '1', dims: '4', ffnDims: '4', maxLen: '10', epochs: '1', seeds: '1',
    topK: '5', backend: 'cpu', out: join(dir, 'out'), cacheRoot: join(dir, 'cache'),
  });

  it('runs ce, rel and all+rel; the summary carries ce, relation and gain (rel over ce, test NDCG@10)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ablate-rel-'));
    try {
      const opts = resolveOptions(cmd.options, { flags: { ...flagsIn(dir), suite: 'relation' } });
      const s = (await cmd.run(opts, { log: () => {}, json: true, verbose: false })) as Record<string, any>;
      expect(s.relation.name).toBe('rel');
      expect(s.relation.lambdas).toEqual({ rel: 1 });
      expect(typeof s.ce['ndcg@10.mean']).toBe('number');
      expect(s.gain).toBeCloseTo(s.relation['ndcg@10.mean'] / s.ce['ndcg@10.mean'] - 1, 9);
      expect(s.relation.runs).toBeUndefined(); // summaries without per-run detail, as ce
      const json = JSON.parse(readFileSync(s.report.json, 'utf8'));
      expect(json.configs.map((c: { name: string }) => c.name)).toEqual(['ce', 'rel', 'all+rel']);
      expect(json.configs[2].lambdas).toEqual({ cos: 1, l2: 0.1, ms: 0.5, kd: 1, emb: 0.5, rel: 1 });
      expect(json.relation.name).toBe('rel');
      // The rel run was distilled with the relational term only, its weights recorded in the run's provenance.
      const cfg = JSON.parse(readFileSync(join(dir, 'out', 'runs', 'rel-seed42', 'config.json'), 'utf8'));
      expect(cfg.distill).toMatchObject({ lambdas: { rel: 1 }, rel: { distance: 5, angle: 10 } });
      const hist = readFileSync(join(dir, 'out', 'runs', 'rel-seed42', 'history.jsonl'), 'utf8');
      expect(JSON.parse(hist.trim().split('\n')[0]!).loss.rel).toBeGreaterThan(0);
      expect(cmd.format!(s as AblationReport)).toMatch(/^relation  test ndcg@10 /m);
      // One seed has no spread: printed '-', never 'NaN'.
      expect(cmd.format!(s as AblationReport)).toMatch(/^ce        test ndcg@10 \d\.\d{4} ± - /m);
      expect(cmd.format!(s as AblationReport)).not.toMatch(/NaN/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--suite with --configs is a usage error; without --suite the default plan is unchanged', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ablate-rel-'));
    try {
      const opts = resolveOptions(cmd.options, { flags: { ...flagsIn(dir), suite: 'relation', configs: 'kd' } });
      await expect(cmd.run(opts, { log: () => {}, json: true, verbose: false })).rejects.toThrow(/--suite relation runs its own configurations; give one of --suite and --configs/);
      const d = resolveOptions(cmd.options, { flags: {} });
      expect(d.suite).toBe('none');
      expect(d.configs).toBe('cos,l2,ms,kd,emb,all');
      const { planConfigs } = await import('../../src/distill/ablate.js');
      const lambdas = { cos: d.lambdaCos, l2: d.lambdaL2, ms: d.lambdaMs, kd: d.lambdaKd, emb: d.lambdaEmb, rel: d.lambdaRel };
      expect(planConfigs(d.configs, lambdas).map((c) => c.name)).toEqual(['ce', 'cos', 'l2', 'ms', 'kd', 'emb', 'all']);
      expect(planConfigs(d.configs, lambdas).at(-1)!.lambdas).toEqual({ cos: 1, l2: 0.1, ms: 0.5, kd: 1, emb: 0.5 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--suite emkd: no teacher; single causal and bidirectional rows, both K = 3 variants, removals from the better; its summary keys', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ablate-emkd-'));
    try {
      const opts = resolveOptions(cmd.options, { flags: { ...flagsIn(dir), suite: 'emkd', latency: 'false' } });
      const logs: string[] = [];
      const s = (await cmd.run(opts, { log: (l: string) => void logs.push(l), json: true, verbose: false })) as Record<string, any>;
      const json = JSON.parse(readFileSync(s.report.json, 'utf8'));
      // The ensembles' validation figures, as each run logged them, decide which K = 3 row the removals start from.
      const logged = (row: string, split: 'valid' | 'test') => Number(logs.map((l) => new RegExp(`^ablate: ${row} seed 42: ensemble of 3 valid ndcg@10 ([0-9.]+) test ndcg@10 ([0-9.]+)`).exec(l)?.[split === 'valid' ? 1 : 2]).find(Boolean));
      const main = logged('emkd3-causal', 'valid') > logged('emkd3-reference', 'valid') ? 'emkd3-causal' : 'emkd3-reference';
      expect(json.configs.map((c: { name: string }) => c.name)).toEqual(['ce', 'cloze1', 'emkd3-reference', 'emkd3-causal', ...['attr', 'intra', 'inter', 'kl'].map((t) => `${main}-no-${t}`)]);
      expect(s.teacher).toBeUndefined(); // no cache was built
      expect(existsSync(join(dir, 'cache'))).toBe(false);
      const row = (n: string) => json.configs.find((c: { name: string }) => c.name === n);
      const single = main === 'emkd3-causal' ? 'ce' : 'cloze1';
      expect(s.single).toMatchObject({ config: single, 'ndcg@10.mean': row(single)['ndcg@10.mean'] });
      expect(s.member).toMatchObject({ config: main, 'ndcg@10.mean': row(main)['ndcg@10.mean'] });
      expect(s.ensemble.config).toBe(main);
      expect(s.ensemble['ndcg@10.mean']).toBeCloseTo(logged(main, 'test'), 4); // one seed: its value is the mean
      expect(s.ensembleGain).toBeCloseTo(s.ensemble['ndcg@10.mean'] / s.single['ndcg@10.mean'] - 1, 12);
      expect(s.memberGain).toBeCloseTo(s.member['ndcg@10.mean'] / s.single['ndcg@10.mean'] - 1, 12);
      expect(Object.keys(s.chosen)).toEqual(['config', 'valid.ndcg@10.mean', 'ensemble', 'member', 'ensembleGain']);
      // The reference rows are bidirectional networks trained by cloze; the causal ones are not.
      const cfgOf = (run: string) => JSON.parse(readFileSync(join(dir, 'out', 'runs', run, 'config.json'), 'utf8'));
      expect(cfgOf('emkd3-reference-seed42').model.attention).toBe('bidirectional');
      expect(cfgOf('cloze1-seed42').model.attention).toBe('bidirectional');
      expect(cfgOf('emkd3-causal-seed42').model.attention).toBeUndefined();
      expect(cfgOf('cloze1-seed42').distill.emkd.lambdas).toEqual({ ce: 0, emkd_cloze: 1 });
      expect(cfgOf('emkd3-reference-seed42').distill.emkd.selection).toBe('ensemble');
      // The emkd3 runs trained three networks: the checkpoint's members were exported beside the run.
      for (const n of [1, 2, 3]) expect(existsSync(join(dir, 'out', 'runs', 'emkd3-reference-seed42', `ensemble-${n}`, 'model.safetensors'))).toBe(true);
      // Removing the intra-network term trains without it; the main row keeps it at its default weight.
      expect(cfgOf('emkd3-causal-seed42').distill.emkd.lambdas.emkd_intra).toBe(0.01);
      expect(cfgOf(`${main}-no-intra-seed42`).distill.emkd.lambdas.emkd_intra ?? 0).toBe(0);
      expect(cfgOf(`${main}-no-intra-seed42`).distill.emkd.lambdas.emkd_inter).toBe(0.01);
      // Without --batch-size every row, CE included, trains at the suite's batch 64 (not the preset's 128).
      expect([cfgOf('ce-seed42').options.batchSize, cfgOf('emkd3-reference-seed42').options.batchSize]).toEqual([64, 64]);
      expect(logs.some((l) => /--suite emkd trains every row at batch 64/.test(l))).toBe(true);
      expect(cmd.format!(s as AblationReport)).toMatch(new RegExp(`^ensemble \\(${main}, K-network average\\) test ndcg@10 `, 'm'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 900_000);
});
