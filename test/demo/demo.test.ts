import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { demoThreads, type DemoSummary } from '../../src/cli/demo-run.js';
import { runCmd } from '../bench/fixtures.js';

describe('demo --quick', () => {
  const root = mkdtempSync(join(tmpdir(), 'rd-demo-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('runs the whole pipeline offline and every artifact it names exists', async () => {
    const logs: string[] = [];
    const s = (await runCmd(() => import('../../src/cli/commands/demo.js'), { root, quick: true, requests: 15 }, logs)) as DemoSummary;
    expect(Object.keys(s.stages)).toEqual(['model:tiny', 'teacher:cache', 'student:train (CE only)', 'student:train (distilled)', 'eval', 'bench']);
    for (const [name, path] of Object.entries(s.artifacts)) expect(existsSync(resolve(path)), `${name}: ${path}`).toBe(true);
    expect(s.artifacts['bench report']).toMatch(/bench[/\\]report\.md$/);
    // The accuracy table reports what the stages wrote: each run's metrics.json, the cache manifest, eval.json.
    const json = (p: string) => JSON.parse(readFileSync(resolve(p), 'utf8'));
    const pick = (m: Record<string, number>) => ({ 'ndcg@10': m['ndcg@10'], 'hr@10': m['hr@10'] });
    expect(s.accuracy['student (CE only)']).toEqual(pick(json(join(s.artifacts['student (CE only)']!, 'metrics.json')).test));
    expect(s.accuracy['student (distilled)']).toEqual(pick(json(join(s.artifacts['student (distilled)']!, 'metrics.json')).test));
    expect(s.accuracy.teacher).toEqual(pick(json(s.artifacts['teacher cache manifest']!).metrics.test));
    expect(s.accuracy.popularity).toEqual(pick(json(s.artifacts['eval report']!).popularity));
    // ... and the bench figures are the bench report's, speedup = teacher p50 / student p50.
    const bench = json(s.artifacts['bench JSON']!);
    expect(s.bench.speedup).toBe(bench.speedup);
    expect(s.bench.speedup).toBeCloseTo(bench.teacher.p50Ms / bench.student.p50Ms, 10);
    expect(logs.some((l) => l.startsWith('\ndemo [6/6] bench'))).toBe(true);
    // The quick preset trains long enough for both students to beat the popularity baseline (1 epoch did not).
    for (const st of ['student (CE only)', 'student (distilled)']) expect(s.accuracy[st]!['ndcg@10'], st).toBeGreaterThan(s.accuracy.popularity!['ndcg@10']);
  }, 900_000); // a safety net for a loaded machine (the demo took 345 s beside other jobs and two busy loops)

  it('threads: every core when idle, one when the load average shows the cores busy', () => {
    expect(demoThreads(0.3, 2).threads).toBe(2);
    expect(demoThreads(1.4, 2).threads).toBe(2);
    expect(demoThreads(1.5, 2).threads).toBe(1);
    expect(demoThreads(7.2, 2)).toEqual({ threads: 1, why: 'load average 7.2 on 2 cores: 1 wasm thread (faster than 2 on busy cores)' });
    expect(demoThreads(3, 8).threads).toBe(8);
  });
});
