import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { DemoSummary } from '../../src/cli/demo-run.js';
import { runCmd } from '../bench/fixtures.js';

describe('demo --quick', () => {
  const root = mkdtempSync(join(tmpdir(), 'rd-demo-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('runs the whole pipeline offline and every artifact it names exists', async () => {
    const logs: string[] = [];
    const s = (await runCmd(() => import('../../src/cli/commands/demo.js'), { root, quick: true, users: 40, items: 30, requests: 15 }, logs)) as DemoSummary;
    expect(Object.keys(s.stages)).toEqual(['model:tiny', 'teacher:cache', 'student:train (CE only)', 'student:train (distilled)', 'eval', 'bench']);
    for (const [name, path] of Object.entries(s.artifacts)) expect(existsSync(resolve(path)), `${name}: ${path}`).toBe(true);
    expect(s.artifacts['bench report']).toMatch(/bench[/\\]report\.md$/);
    for (const who of ['popularity', 'teacher', 'student (CE only)', 'student (distilled)']) {
      const m = s.accuracy[who]!;
      expect(m['ndcg@10'], who).toBeGreaterThanOrEqual(0);
      expect(m['hr@10'], who).toBeGreaterThanOrEqual(m['ndcg@10']); // NDCG@10 <= HR@10 for one target
    }
    expect(s.bench.speedup).toBeGreaterThan(0);
    expect(logs.some((l) => l.startsWith('\ndemo [6/6] bench'))).toBe(true);
  }, 240_000);
});
