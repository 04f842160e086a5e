import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import cmd from '../../src/cli/commands/ablate.js';
import { resolveOptions } from '../../src/config/options.js';

/** `ablate --suite relation` on a tiny synthetic dataset (cpu): CE vs the rel configuration only. */
describe('ablate --suite relation (tiny synthetic, cpu)', () => {
  const flagsIn = (dir: string) => ({
    dataset: 'synthetic', syntheticUsers: '40', syntheticItems: '30', syntheticMinLen: '5', syntheticMaxLen: '10',
    teacherDims: '8', teacherEpochs: '1', dims: '4', ffnDims: '4', maxLen: '10', epochs: '1', seeds: '1',
    topK: '5', backend: 'cpu', out: join(dir, 'out'), cacheRoot: join(dir, 'cache'),
  });

  it('runs ce and rel; the summary carries ce, relation and gain (relation over ce, test NDCG@10)', async () => {
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
      expect(json.configs.map((c: { name: string }) => c.name)).toEqual(['ce', 'rel']);
      expect(json.relation.name).toBe('rel');
      // The rel run was distilled with the relational term only, its weights recorded in the run's provenance.
      const cfg = JSON.parse(readFileSync(join(dir, 'out', 'runs', 'rel-seed42', 'config.json'), 'utf8'));
      expect(cfg.distill).toMatchObject({ lambdas: { rel: 1 }, rel: { distance: 5, angle: 10 } });
      const hist = readFileSync(join(dir, 'out', 'runs', 'rel-seed42', 'history.jsonl'), 'utf8');
      expect(JSON.parse(hist.trim().split('\n')[0]!).loss.rel).toBeGreaterThan(0);
      expect(cmd.format!(s)).toMatch(/^relation  test ndcg@10 /m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--suite with --configs is a usage error; without --suite the default plan is unchanged', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ablate-rel-'));
    try {
      const opts = resolveOptions(cmd.options, { flags: { ...flagsIn(dir), suite: 'relation', configs: 'kd' } });
      await expect(cmd.run(opts, { log: () => {}, json: true, verbose: false })).rejects.toThrow(/--suite relation runs --configs rel; give one of --suite and --configs/);
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
});
