import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { lastJsonLine } from '../../src/util/process.js';
import { latencyByLength, pickRequests, runBench } from '../../src/bench/run.js';
import { runDatasetFlags } from '../../src/student/model/run-folder.js';
import { tinyDataset } from '../cache/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'rd-bench-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('bench plumbing', () => {
  it('takes the worker result from the last JSON line, ignoring library log lines', () => {
    expect(lastJsonLine('hello\n{"a":1}\nsome log {not json\n{"b":2}\n')).toEqual({ b: 2 });
    expect(lastJsonLine('{"a":1}\n{broken\n')).toEqual({ a: 1 });
    expect(lastJsonLine('no json here')).toBeUndefined();
  });

  it('picks requests spread evenly over the evaluable users; history = all but the test item', () => {
    const ds = tinyDataset(40, 30); // users 0 and 1 have < 3 items: not evaluable
    const r = pickRequests(ds, 4);
    expect(r.users).toEqual([2, 11, 21, 30]); // floor(i * 38 / 4) over users 2..39
    for (const [i, u] of r.users.entries()) {
      const items = Array.from(ds.users[u]!.items);
      expect(r.histories[i]).toEqual(items.slice(0, -1));
    }
    expect(pickRequests(ds, 1000).users).toHaveLength(38);
  });

  it('buckets latencies by history length (median per bucket, empty buckets left out)', () => {
    const hs = [3, 30, 40, 10, 250].map((n) => Array.from({ length: n }, (_, i) => i + 1));
    const ms = [1, 4, 6, 3, 20];
    expect(latencyByLength(hs, ms)).toEqual([
      { lengths: '1-25', n: 2, p50Ms: 2 },
      { lengths: '26-50', n: 2, p50Ms: 5 },
      { lengths: '>200', n: 1, p50Ms: 20 },
    ]);
  });

  it('reads the dataset flags a run was trained with; clear errors otherwise', () => {
    const run = join(dir, 'run');
    mkdirSync(run);
    expect(() => runDatasetFlags(run)).toThrow(/config\.json not found.*--dataset/);
    writeFileSync(join(run, 'config.json'), JSON.stringify({ options: { dataset: 'ml-100k', source: '/x', minRating: 4, maxLen: 50 } }));
    expect(runDatasetFlags(run)).toEqual({ dataset: 'ml-100k', source: '/x', minRating: 4 });
  });

  it('refuses a student folder without weights and a missing cache', async () => {
    const base = { cache: join(dir, 'nocache'), requests: 5, teacherRequests: 5, warmup: 1, batch: 4, batchRounds: 1, k: 10, backend: 'auto' as const, threads: 0, teacherMicroBatch: 2, log: () => {} };
    await expect(runBench({ ...base, student: join(dir, 'run') })).rejects.toThrow(/model\.safetensors not found/);
    writeFileSync(join(dir, 'run', 'model.safetensors'), '');
    await expect(runBench({ ...base, student: join(dir, 'run') })).rejects.toThrow(/no teacher cache at .*nocache/);
    await expect(runBench({ ...base, student: join(dir, 'run'), requests: 0 })).rejects.toThrow(/--requests must be a positive integer/);
  });
});

describe('teacher model path recorded in a cache manifest', () => {
  it('resolves a relative path from the cwd, then from the folders above the cache; hub ids pass through', async () => {
    const { localModelPath } = await import('../../src/bench/servers.js');
    const project = join(dir, 'project');
    const cache = join(project, 'teacher-cache', 'ds', 'llm-lm', 'key1');
    mkdirSync(cache, { recursive: true });
    mkdirSync(join(project, '.recdistill', 'lm'), { recursive: true });
    expect(localModelPath('.recdistill/lm', cache)).toBe(join(project, '.recdistill', 'lm'));
    expect(localModelPath('onnx-community/Qwen2.5-0.5B-Instruct', cache)).toBe('onnx-community/Qwen2.5-0.5B-Instruct');
    expect(localModelPath('/abs/model', cache)).toBe('/abs/model');
    expect(() => localModelPath('./missing-lm', cache)).toThrow(/missing-lm .*--teacher-model/);
    mkdirSync(join(project, 'student', 'teacher-run'), { recursive: true });
    expect(localModelPath('student/teacher-run', cache, true)).toBe(join(project, 'student', 'teacher-run'));
  });
});
