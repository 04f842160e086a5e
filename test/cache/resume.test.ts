import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { readManifest } from '../../src/cache/format.js';
import { mergeSlices } from '../../src/cache/merge.js';
import { runTeacherCache } from '../../src/cache/run.js';
import { runPass2 } from '../../src/cache/soft.js';
import { verifyCache } from '../../src/cache/verify.js';
import { main } from '../../src/cli/main.js';
import { fakeEncoder, tinyDataset } from './fixtures.js';
import { resumeRunOptions } from './fixtures/options.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-resume-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let backend = '';
beforeAll(async () => {
  backend = await initBackend('cpu');
});
const ds = tinyDataset(60, 30, 11);
// node itself with tsx as a loader: SIGKILL must hit the process doing the work (the tsx CLI would run it
// in a grandchild that outlives the kill).
const NODE = process.execPath;
const LOADER = ['--import', 'tsx'];
const CHILD = join(process.cwd(), 'test', 'cache', 'fixtures', 'run-fake.ts');
const shardFiles = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort();
const sameBytes = (a: string, b: string) => {
  const fa = shardFiles(a);
  expect(fa).toEqual(shardFiles(b));
  for (const f of fa) expect(readFileSync(join(a, f)).equals(readFileSync(join(b, f))), `${f} differs`).toBe(true);
  return fa;
};

describe('kill, resume, merge, verify', () => {
  const ref = join(tmp, 'reference');
  beforeAll(async () => {
    await runTeacherCache(fakeEncoder({ numItems: 30, H: 8 }), ds, resumeRunOptions(ref, backend));
  });

  it('a run killed with SIGKILL part-way resumes and writes the same bytes as an uninterrupted run', async () => {
    const dir = join(tmp, 'kill', 'killed'); // no sibling caches: nothing to reuse, everything to resume
    // 60 users x 120 ms / 2 concurrent ~ 3.6 s of encoding: kill once two shards are on disk.
    const child = spawn(NODE, [...LOADER, CHILD, dir, '120'], { stdio: 'ignore' });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const deadline = Date.now() + 400_000; // a safety net; the loop waits on the file
    while (Date.now() < deadline && !(existsSync(join(dir, 'hidden-00001.safetensors')))) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGKILL');
    expect(await exited).toBe(null); // killed, not finished
    expect(existsSync(join(dir, 'hidden-00007.safetensors')), 'killed too late: pass 1 had finished').toBe(false);
    expect(readManifest(dir).complete).toBe(false);
    const again = spawnSync(NODE, [...LOADER, CHILD, dir, '0'], { encoding: 'utf8' });
    expect(again.status, again.stderr).toBe(0);
    const m = readManifest(dir);
    expect(m.complete).toBe(true);
    expect(m.timings.resumedShards).toBeGreaterThanOrEqual(2);
    expect(m.timings.encodedUsers).toBeLessThan(60);
    const files = sameBytes(ref, dir);
    expect(files.filter((f) => f.startsWith('hidden-')).length).toBe(8);
    expect(files.filter((f) => f.startsWith('soft-')).length).toBe(8);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('a soft-label pass stopped after the head and 3 soft shards resumes (head reloaded) to the same bytes', async () => {
    const dir = join(tmp, 'pass2');
    cpSync(ref, dir, { recursive: true });
    const m = readManifest(dir);
    for (const s of m.shards) {
      if (s.index >= 3) rmSync(join(dir, s.soft!.file));
      delete s.soft;
    }
    delete m.metrics;
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ ...m, complete: false, stage: 'hidden' }));
    const headBytes = readFileSync(join(dir, 'head.safetensors'));
    await runPass2(dir, ds, { log: () => {}, backend });
    expect(readFileSync(join(dir, 'head.safetensors')).equals(headBytes)).toBe(true);
    expect(readManifest(dir).complete).toBe(true);
    sameBytes(ref, dir);
    expect(readManifest(dir).metrics).toEqual(readManifest(ref).metrics);
  });

  it('merging slices 0/3, 1/3, 2/3 then the soft-label pass equals a single full run', async () => {
    const dirs = [0, 1, 2].map((i) => join(tmp, `slice-${i}`));
    for (let i = 0; i < 3; i++) {
      const s = await runTeacherCache(fakeEncoder({ numItems: 30, H: 8 }), ds, { ...resumeRunOptions(dirs[i]!, backend), slice: { index: i, count: 3 } });
      expect(s.complete).toBe(false);
    }
    expect(readManifest(dirs[1]!).shards.map((s) => s.index)).toEqual([2, 3, 4]);
    expect(() => mergeSlices(join(tmp, 'bad'), [dirs[0]!, dirs[2]!], () => {})).toThrow(/leave shard\(s\) 2, 3, 4 uncovered/);
    expect(() => mergeSlices(join(tmp, 'bad'), [dirs[0]!, dirs[0]!], () => {})).toThrow(/in both/);
    const out = join(tmp, 'merged');
    mergeSlices(out, dirs, () => {});
    expect(readManifest(out).stage).toBe('hidden');
    await runPass2(out, ds, { log: () => {}, backend });
    expect(readManifest(out).complete).toBe(true);
    const files = sameBytes(ref, out);
    expect(files).toContain('soft-00007.safetensors');
    expect(readManifest(out).metrics).toEqual(readManifest(ref).metrics);
  });

  it('merge refuses slices of another cache key', async () => {
    const other = join(tmp, 'other-slice');
    await runTeacherCache(fakeEncoder({ numItems: 30, H: 8 }), ds, { ...resumeRunOptions(other, backend), k: 3, slice: { index: 1, count: 3 } });
    expect(() => mergeSlices(join(tmp, 'bad2'), [join(tmp, 'slice-0'), other], () => {})).toThrow(/different caches/);
  });

  it('teacher:verify passes a good cache and fails naming a shard with one flipped byte', async () => {
    expect(verifyCache(ref).problems).toEqual([]);
    const bad = join(tmp, 'flipped');
    mergeSlices(bad, [0, 1, 2].map((i) => join(tmp, `slice-${i}`)), () => {});
    expect(await main(['teacher:verify', '--cache', bad, '--json'])).toBe(0);
    const f = join(bad, 'hidden-00005.safetensors');
    const buf = readFileSync(f);
    buf[buf.length - 3] = buf[buf.length - 3]! ^ 0x01;
    writeFileSync(f, buf);
    const r = verifyCache(bad);
    expect(r.problems.map((p) => p.file)).toEqual(['hidden-00005.safetensors']);
    expect(r.problems[0]!.problem).toMatch(/sha256/);
    expect(await main(['teacher:verify', '--cache', bad])).toBe(1);
  });
});
