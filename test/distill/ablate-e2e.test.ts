import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import cmd from '../../src/cli/commands/ablate.js';
import { resolveOptions } from '../../src/config/options.js';

describe('ablate end to end (tiny synthetic, cpu)', () => {
  it('trains a seqrec teacher, caches it, runs CE and KD over one seed, writes the report', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ablate-e2e-'));
    try {
      const flags = {
        dataset: 'synthetic', syntheticUsers: '40', syntheticItems: '30', syntheticMinLen: '5', syntheticMaxLen: '10',
        teacherDims: '8', teacherEpochs: '1', dims: '4', ffnDims: '4', maxLen: '10', epochs: '1', seeds: '1',
        configs: 'kd', topK: '5', backend: 'cpu', out: join(dir, 'out'), cacheRoot: join(dir, 'cache'),
      };
      const opts = resolveOptions(cmd.options, { flags });
      const s = (await cmd.run(opts, { log: () => {}, json: true, verbose: false })) as Record<string, any>;
      expect(typeof s.ce['ndcg@10.mean']).toBe('number');
      expect(s.ce['ndcg@10.std']).toBeNaN(); // one seed: no sample std
      expect(s.distilled.name).toBe('kd');
      expect(s.gain).toBeCloseTo(s.distilled['ndcg@10.mean'] / s.ce['ndcg@10.mean'] - 1, 9);
      expect(typeof s.teacher.test['ndcg@10']).toBe('number');
      const json = JSON.parse(readFileSync(s.report.json, 'utf8'));
      expect(json.configs.map((c: { name: string }) => c.name)).toEqual(['ce', 'kd']);
      expect(json.partial).toBeUndefined();
      expect(readFileSync(s.report.markdown, 'utf8')).toMatch(/\| kd \(chosen on valid\) \| kd=1 \|/);
      // The distilled run records where its teacher came from.
      const cfg = JSON.parse(readFileSync(join(dir, 'out', 'runs', 'kd-seed42', 'config.json'), 'utf8'));
      expect(cfg.distill).toMatchObject({ cacheKey: s.teacher.key, lambdas: { kd: 1 } });
      expect(existsSync(join(dir, 'out', 'teacher', 'model.safetensors'))).toBe(true);
      // Latency: the teacher and each configuration measured; the table's column and the JSON carry the same figure.
      const md = readFileSync(s.report.markdown, 'utf8');
      const kdRow = md.split('\n').find((l) => l.startsWith('| kd '))!;
      expect(kdRow.trim().endsWith(`| ${json.configs[1]['p50.ms'].toFixed(3)} ms |`)).toBe(true);
      expect(md).toContain(`single-request p50 ${s.teacher['p50.ms'].toFixed(3)} ms`);
      // The chart: the teacher and both configurations, each labelled with its test NDCG@10 and parameter count.
      const svg = readFileSync(s.report.svg, 'utf8');
      expect(svg.startsWith('<svg')).toBe(true);
      expect(svg).toContain(`teacher: ${s.teacher.test['ndcg@10'].toFixed(4)} (`);
      expect(svg).toContain(`ce: ${s.ce['ndcg@10.mean'].toFixed(4)} (`);
      expect(svg).toContain(`kd: ${s.distilled['ndcg@10.mean'].toFixed(4)} (chosen on valid)`);
      expect((svg.match(/<circle /g) ?? []).length).toBe(4); // 2 student points + their 2 legend markers
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
