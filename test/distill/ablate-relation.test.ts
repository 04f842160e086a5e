import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
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
      expect(cmd.format!(s)).toMatch(/^relation  test ndcg@10 /m);
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

  it('--suite emkd: no teacher; rows ce, emkd2, emkd3, emkd3-L1..L5; summary single/member/ensemble/gain from the runs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ablate-emkd-'));
    try {
      const opts = resolveOptions(cmd.options, { flags: { ...flagsIn(dir), suite: 'emkd', latency: 'false' } });
      const logs: string[] = [];
      const s = (await cmd.run(opts, { log: (l: string) => void logs.push(l), json: true, verbose: false })) as Record<string, any>;
      const json = JSON.parse(readFileSync(s.report.json, 'utf8'));
      expect(json.configs.map((c: { name: string }) => c.name)).toEqual(['ce', 'emkd2', 'emkd3', 'emkd3-L1', 'emkd3-L2', 'emkd3-L3', 'emkd3-L4', 'emkd3-L5']);
      expect(s.teacher).toBeUndefined(); // no cache was built
      expect(existsSync(join(dir, 'cache'))).toBe(false);
      const emkd3 = json.configs.find((c: { name: string }) => c.name === 'emkd3');
      expect(s.single['ndcg@10.mean']).toBe(s.ce['ndcg@10.mean']);
      expect(s.member['ndcg@10.mean']).toBe(emkd3['ndcg@10.mean']);
      expect(s.gain).toBeCloseTo(emkd3['ndcg@10.mean'] / s.ce['ndcg@10.mean'] - 1, 12);
      // The ensemble figure is the one evaluateEnsemble logged for that run (one seed: its value is the mean).
      const logged = logs.map((l) => /^ablate: emkd3 seed 42: ensemble of 3 test ndcg@10 ([0-9.]+)/.exec(l)?.[1]).find(Boolean);
      expect(s.ensemble['ndcg@10.mean']).toBeCloseTo(Number(logged), 4);
      // The emkd3 run trained three networks: the checkpoint's members were exported beside the run.
      for (const n of [1, 2, 3]) expect(existsSync(join(dir, 'out', 'runs', 'emkd3-seed42', `ensemble-${n}`, 'model.safetensors'))).toBe(true);
      // Removing L3 trains without the intra-network term; emkd3 keeps it at its default weight.
      const lambdasOf = (run: string) => JSON.parse(readFileSync(join(dir, 'out', 'runs', run, 'config.json'), 'utf8')).distill.emkd.lambdas;
      expect(lambdasOf('emkd3-seed42').emkd_intra).toBe(0.01);
      expect(lambdasOf('emkd3-L3-seed42').emkd_intra ?? 0).toBe(0);
      expect(lambdasOf('emkd3-L3-seed42').emkd_inter).toBe(0.01);
      // Without --batch-size every row, CE included, trains at the suite's batch 64 (not the preset's 128).
      const batchOf = (run: string) => JSON.parse(readFileSync(join(dir, 'out', 'runs', run, 'config.json'), 'utf8')).options.batchSize;
      expect([batchOf('ce-seed42'), batchOf('emkd3-seed42')]).toEqual([64, 64]);
      expect(logs.some((l) => /--suite emkd trains every row at batch 64/.test(l))).toBe(true);
      expect(cmd.format!(s)).toMatch(/^ensemble \(emkd3, K-network average\) test ndcg@10 /m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
