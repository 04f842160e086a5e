import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reportChart, reportMarkdown } from '../../src/bench/report.js';
import { openCache } from '../../src/cache/reader.js';
import { datasetFromFlags } from '../../src/data/options.js';
import { loadStudent } from '../../src/student/serving/serve.js';
import { buildTinySetup, runCmd, TINY_DATA } from './fixtures.js';

const FIGURES = ['p50Ms', 'p95Ms', 'throughput', 'params', 'bytes', 'rssMB', 'ndcg@10', 'hr@10'];

describe('bench end-to-end (tiny LM teacher vs one-epoch student, each in a child process)', () => {
  let root: string;
  let setup: { lm: string; cache: string; student: string };
  let summary: Record<string, unknown>;
  const logs: string[] = [];

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'rd-bench-'));
    setup = await buildTinySetup(root);
    summary = await runCmd(() => import('../../src/cli/commands/bench.js'), { student: setup.student, cache: setup.cache, requests: 20, teacherRequests: 4, warmup: 2, batch: 8, batchRounds: 2, teacherMicroBatch: 4 }, logs);
  }, 900_000);
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('prints the --json keys with finite, positive figures', () => {
    expect(Object.keys(summary)).toEqual(expect.arrayContaining(['teacher', 'student', 'speedup']));
    for (const who of ['teacher', 'student'] as const) {
      const f = summary[who] as Record<string, number>;
      for (const k of FIGURES) {
        expect(Number.isFinite(f[k]), `${who}.${k} = ${f[k]}`).toBe(true);
        // hr/ndcg can legitimately be 0 for a 1-epoch model (their values are checked against metrics.json and the
        // cache manifest below); every other figure is measured and must be positive.
        if (!k.includes('@')) expect(f[k], `${who}.${k}`).toBeGreaterThan(0);
      }
    }
    const t = summary.teacher as Record<string, number>;
    const s = summary.student as Record<string, number>;
    expect(summary.speedup).toBeCloseTo(t.p50Ms! / s.p50Ms!, 10);
    // the student's weights file is its only file; the teacher's include the ONNX model, tokenizer and head
    expect(s.bytes).toBe(readFileSync(join(setup.student, 'model.safetensors')).byteLength);
    expect(t.bytes).toBeGreaterThan(readFileSync(join(setup.lm, 'onnx', 'model.onnx')).byteLength);
  });

  it('writes report.json, report.md and an SVG chart with the measured points', () => {
    const dir = join(setup.student, 'bench');
    for (const f of ['report.json', 'report.md', 'latency-accuracy.svg']) expect(existsSync(join(dir, f)), f).toBe(true);
    const r = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8'));
    expect(r.teacher).toEqual(summary.teacher);
    expect(r.student).toEqual(summary.student);
    // The chart and the table are those of the figures in report.json (their formatting is tested with
    // hand-written values in stats.test.ts).
    const svg = readFileSync(join(dir, 'latency-accuracy.svg'), 'utf8');
    expect([...svg.matchAll(/<circle /g)]).toHaveLength(2);
    expect(svg).toBe(reportChart(r));
    const md = readFileSync(join(dir, 'report.md'), 'utf8');
    expect(md).toContain('| teacher |');
    expect(md).toBe(reportMarkdown(r));
  });

  it('accuracy comes from the same evaluation as training and teacher:cache', () => {
    const r = JSON.parse(readFileSync(join(setup.student, 'bench', 'report.json'), 'utf8'));
    const runTest = JSON.parse(readFileSync(join(setup.student, 'metrics.json'), 'utf8')).test;
    expect(r.student['ndcg@10']).toBe(runTest['ndcg@10']);
    expect(r.student['hr@10']).toBe(runTest['hr@10']);
    const manifest = JSON.parse(readFileSync(join(setup.cache, 'manifest.json'), 'utf8'));
    expect(r.teacher['ndcg@10']).toBe(manifest.metrics.test['ndcg@10']);
  });

  it('the child processes served the same models: first answers match in-process ones and the cached soft labels', async () => {
    const r = JSON.parse(readFileSync(join(setup.student, 'bench', 'report.json'), 'utf8'));
    const ds = await datasetFromFlags(TINY_DATA);
    const u = r.settings.requestUsers[0] as number;
    const items = ds.users[u]!.items;
    const history = items.subarray(0, items.length - 1); // train + validation item
    const s = await loadStudent(setup.student);
    try {
      expect(r.details.student.first).toEqual(s.recommend(history, 10).items);
    } finally {
      s.dispose();
    }
    // The teacher's answer = its cached soft labels at the last history position (same window, head and mask).
    const cache = openCache(setup.cache, { fingerprint: ds.fingerprint });
    try {
      const rows = cache.rowsForUser(u);
      const i = cache.rowIndex(rows, history.length - 1);
      expect(i).toBeGreaterThanOrEqual(0);
      const cached = Array.from(rows.topkIndex!.subarray(i * cache.k, i * cache.k + 10));
      expect(new Set(r.details.teacher.first)).toEqual(new Set(cached));
    } finally {
      cache.close();
    }
  });

  it('benchmarks a seqrec teacher cache too (served from its run folder like a student)', async () => {
    // The one-epoch student as its own seqrec teacher: both processes must then give the same first answer.
    const c = await runCmd(() => import('../../src/cli/commands/teacher-cache.js'), { ...TINY_DATA, teacher: 'seqrec', studentRun: setup.student, cacheRoot: join(root, 'cache'), topK: 10 });
    const out = join(root, 'bench-seqrec');
    await runCmd(() => import('../../src/cli/commands/bench.js'), { student: setup.student, cache: String(c.cache), out, requests: 10, teacherRequests: 10, warmup: 2, batch: 4, batchRounds: 1 });
    const rep = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    expect(rep.details.teacher.kind).toBe('seqrec');
    expect(rep.details.teacher.first).toEqual(rep.details.student.first);
    expect(rep.teacher.params).toBe(rep.student.params);
    expect(rep.teacher.bytes).toBe(rep.student.bytes);
  }, 900_000);
});
