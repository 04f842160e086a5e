/**
 * The teacher cache against hostile or corrupted files: each reproduction of the hardening brief as a test.
 * A small synthetic dataset (the same one `--dataset synthetic --synthetic-users 60 --synthetic-items 40`
 * gives the CLI) and a fake teacher build the caches in-process; the memory reproductions run the CLI in a
 * child process under a 256 MB heap so a regression fails fast instead of allocating gigabytes.
 */
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { runPass1 } from '../../src/cache/build.js';
import { readManifest } from '../../src/cache/format.js';
import { mergeSlices } from '../../src/cache/merge.js';
import { openCache } from '../../src/cache/reader.js';
import { runTeacherCache, type CacheRunOptions } from '../../src/cache/run.js';
import { runPass2 } from '../../src/cache/soft.js';
import { verifyCache } from '../../src/cache/verify.js';
import { datasetFromFlags } from '../../src/data/options.js';
import type { PreparedDataset } from '../../src/data/types.js';
import { RecdistillError } from '../../src/errors.js';
import { sha256 } from '../../src/util/hash.js';
import { decodeSafetensors, encodeSafetensors } from '../../src/util/safetensors.js';
import { fakeEncoder } from '../cache/fixtures.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-hostile-cache-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const USERS = 60;
const ITEMS = 40;
const DS_FLAGS = ['--dataset', 'synthetic', '--synthetic-users', String(USERS), '--synthetic-items', String(ITEMS)];
const TRAIN_FLAGS = ['--max-len', '10', '--dims', '8', '--ffn-dims', '8', '--lambda-cos', '1', '--epochs', '1', '--backend', 'cpu'];
// node itself with tsx as a loader (as test/cache/resume.test.ts does), so --max-old-space-size reaches the process doing the work.
const NODE = process.execPath;
const MAIN = join(process.cwd(), 'src', 'cli', 'main.ts');

let ds: PreparedDataset;
let backend = '';
const base = join(tmp, 'base');
const opts = (out: string, extra: Partial<CacheRunOptions> = {}): CacheRunOptions => ({
  root: tmp,
  out,
  usersPerShard: 16,
  hiddenDtype: 'F32',
  concurrency: 2,
  k: 5,
  temperature: 1,
  head: { kind: 'linear', layer: -1, epochs: 2, lr: 0.05, batchSize: 32, patience: 1, seed: 3 },
  teacherOptions: {},
  backend,
  log: () => {},
  ...extra,
});
const encoder = () => fakeEncoder({ numItems: ITEMS, H: 8, layers: [1, 3] });

beforeAll(async () => {
  backend = await initBackend('cpu');
  ds = await datasetFromFlags({ dataset: 'synthetic', syntheticUsers: USERS, syntheticItems: ITEMS });
  await runTeacherCache(encoder(), ds, opts(base));
});

/** A fresh copy of the complete cache. */
const copy = (name: string): string => {
  const dir = join(tmp, name);
  rmSync(dir, { recursive: true, force: true });
  cpSync(base, dir, { recursive: true });
  return dir;
};
const editManifest = (dir: string, edit: (m: Record<string, any>) => void) => {
  const path = join(dir, 'manifest.json');
  const m = JSON.parse(readFileSync(path, 'utf8'));
  edit(m);
  writeFileSync(path, JSON.stringify(m));
};
/** Rewrite one tensor of a cache file and record the new sha256 in the manifest (a consistent, lying writer). */
const rewriteTensor = (dir: string, file: string, name: string, edit: (data: any) => void) => {
  const path = join(dir, file);
  const { tensors } = decodeSafetensors(readFileSync(path), path);
  edit(tensors[name]!.data);
  const bytes = encodeSafetensors(tensors);
  writeFileSync(path, bytes);
  const sha = sha256(bytes);
  editManifest(dir, (m) => {
    for (const s of m.shards) {
      if (s.file === file) s.sha256 = sha;
      if (s.soft?.file === file) s.soft.sha256 = sha;
    }
  });
};
/** The error a call throws (fails the test if it does not throw a RecdistillError). */
const errorOf = (fn: () => unknown): RecdistillError => {
  try {
    fn();
  } catch (e) {
    expect(e, String(e)).toBeInstanceOf(RecdistillError);
    return e as RecdistillError;
  }
  throw new Error('expected an error, none was thrown');
};
const read = (dir: string, opts: { verify?: boolean } = {}) => {
  const r = openCache(dir, { fingerprint: ds.fingerprint, ...opts });
  for (let u = 0; u < USERS; u++) r.rowsForUser(u);
  r.itemEmbeddings();
  r.stats();
  return r;
};

/** The CLI in a child process with a 256 MB V8 heap; resolves with exit code, stderr and wall time. */
// timeoutMs: a safety net against a hang, generous for a machine under heavy load (20 s was exceeded there).
function cli(args: string[], timeoutMs = 400_000): Promise<{ code: number | null; stderr: string; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(NODE, ['--max-old-space-size=256', '--import', 'tsx', MAIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, ms: Date.now() - t0 });
    });
  });
}

describe('1. a corrupted cache does not train silently', () => {
  /** Flip the lowest mantissa bit of 64 floats inside the `hidden` tensor of hidden-00001 (values stay finite). */
  const flipMantissa = (dir: string) => {
    const path = join(dir, 'hidden-00001.safetensors');
    const buf = readFileSync(path);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
    const start = 8 + n + header.hidden.data_offsets[0];
    for (let i = 0; i < 64; i++) buf[start + 4 * i]! ^= 1;
    writeFileSync(path, buf);
  };

  it('the reader checks sha256 on first load by default, naming the shard; verify: false reads it', () => {
    const dir = copy('flip');
    flipMantissa(dir);
    const e = errorOf(() => read(dir));
    expect(e.code).toBe('E_CHECKSUM');
    expect(e.message).toMatch(/hidden-00001\.safetensors: sha256 .* does not match the manifest/);
    expect(() => read(dir, { verify: false })).not.toThrow();
  });

  it('student:train exits non-zero naming the shard; --no-verify trains on it and says so', async () => {
    const dir = copy('flip-cli');
    flipMantissa(dir);
    const [bad, skip] = await Promise.all([
      cli(['student:train', ...DS_FLAGS, ...TRAIN_FLAGS, '--cache', dir, '--out', join(tmp, 'run-flip')]),
      cli(['student:train', ...DS_FLAGS, ...TRAIN_FLAGS, '--cache', dir, '--out', join(tmp, 'run-noverify'), '--no-verify']),
    ]);
    expect(bad.code, bad.stderr).not.toBe(0);
    expect(bad.stderr).toMatch(/E_CHECKSUM.*hidden-00001\.safetensors: sha256/);
    expect(skip.code, skip.stderr).toBe(0);
    expect(skip.stderr).toMatch(/--no-verify: .* NOT checked against their manifest sha256/);
  }, 900_000);

  it('non-finite hidden states and probabilities are refused naming the shard, even with verify off', () => {
    const h = copy('nan-hidden');
    rewriteTensor(h, 'hidden-00002.safetensors', 'hidden', (d) => (d[17] = NaN));
    const e = errorOf(() => read(h, { verify: false }));
    expect(e.message).toMatch(/hidden-00002\.safetensors: hidden state not finite \(NaN\) at row 1 \(user 32, position 1\)/);
    const p = copy('inf-prob');
    rewriteTensor(p, 'soft-00003.safetensors', 'topk_prob', (d) => (d[3] = Infinity));
    expect(errorOf(() => read(p)).message).toMatch(/soft-00003\.safetensors: topk_prob Infinity at row 0 .* not a probability/);
    expect(verifyCache(h).problems).toEqual([{ file: 'hidden-00002.safetensors', problem: expect.stringMatching(/not finite/) }]);
  });

  it('resume re-checks shards on disk: a corrupted listed shard and a bad unlisted one are recomputed, with a log line', async () => {
    const dir = join(tmp, 'alone', 'resume'); // no sibling caches: pass 1 would hard-link their shards
    const ref = await runPass1(encoder(), ds, { ...opts(dir), softLabels: { k: 5, temperature: 1 } });
    const m = ref.manifest;
    const good1 = readFileSync(join(dir, 'hidden-00001.safetensors'));
    const good3 = readFileSync(join(dir, 'hidden-00003.safetensors'));
    flipMantissa(dir); // listed shard 1: sha256 no longer matches
    // Shard 3 on disk but not in the manifest (run killed before the manifest write), and damaged.
    editManifest(dir, (j) => (j.shards = j.shards.filter((s: { index: number }) => s.index !== 3)));
    writeFileSync(join(dir, 'hidden-00003.safetensors'), good3.subarray(0, good3.length - 100));
    const lines: string[] = [];
    const again = await runPass1(encoder(), ds, { ...opts(dir), softLabels: { k: 5, temperature: 1 }, log: (l) => lines.push(l) });
    expect(lines.join('\n')).toMatch(/hidden-00001\.safetensors: sha256 .* does not match the manifest's .*; recomputing shard 1/);
    expect(lines.join('\n')).toMatch(/hidden-00003\.safetensors: .*; recomputing shard 3/);
    expect(again.encodedUsers).toBe(16 + 12); // shards 1 (users 16..31) and 3 (users 48..59)
    expect(readFileSync(join(dir, 'hidden-00001.safetensors')).equals(good1)).toBe(true);
    expect(readFileSync(join(dir, 'hidden-00003.safetensors')).equals(good3)).toBe(true);
    expect(readManifest(dir).shards.map((s) => s.sha256)).toEqual(m.shards.map((s) => s.sha256));
  });

  it('the soft-label pass re-checks a listed soft shard and the head before keeping them', async () => {
    const dir = copy('pass2');
    const goodSoft = readFileSync(join(dir, 'soft-00002.safetensors'));
    const goodHead = readFileSync(join(dir, 'head.safetensors'));
    const bytes = Buffer.from(goodSoft);
    bytes[bytes.length - 5]! ^= 0x40;
    writeFileSync(join(dir, 'soft-00002.safetensors'), bytes);
    writeFileSync(join(dir, 'head.safetensors'), goodHead.subarray(0, goodHead.length - 8));
    editManifest(dir, (j) => {
      j.complete = false;
      j.stage = 'hidden';
      delete j.metrics;
    });
    const lines: string[] = [];
    await runPass2(dir, ds, { log: (l) => lines.push(l), backend });
    expect(lines.join('\n')).toMatch(/soft-00002\.safetensors: sha256 .*; recomputing soft labels of shard 2/);
    expect(lines.join('\n')).toMatch(/head\.safetensors: .*; fitting the head again/);
    expect(readFileSync(join(dir, 'soft-00002.safetensors')).equals(goodSoft)).toBe(true);
    expect(readFileSync(join(dir, 'head.safetensors')).equals(goodHead)).toBe(true);
    expect(verifyCache(dir).problems).toEqual([]);
  });
});

describe('2. a lying manifest is refused before anything is allocated', () => {
  it('shards[0].userEnd = 9e8: student:train under a 256 MB heap exits non-zero naming the field', async () => {
    const dir = copy('userend');
    editManifest(dir, (m) => (m.shards[0].userEnd = 9e8));
    const r = await cli(['student:train', ...DS_FLAGS, ...TRAIN_FLAGS, '--cache', dir, '--out', join(tmp, 'run-userend')]);
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.stderr).toMatch(/E_INPUT.*manifest\.json: field "shards\[0\]\.userEnd" is 900000000, expected 16/);
    // Refused before allocating: the 256 MB heap would have run out otherwise (no wall-clock bound: the machine may be busy).
    expect(r.stderr).not.toMatch(/heap out of memory/);
  }, 900_000);

  it('layout.numShards = 3e8: teacher:verify under a 256 MB heap exits non-zero naming the field', async () => {
    const dir = copy('numshards');
    editManifest(dir, (m) => (m.layout.numShards = 3e8));
    const r = await cli(['teacher:verify', '--cache', dir]);
    expect(r.code, r.stderr).not.toBe(0);
    expect(r.stderr).toMatch(/E_INPUT.*manifest\.json: field "layout\.numShards" is 300000000, expected 4/);
    expect(r.stderr).not.toMatch(/heap out of memory/);
  }, 900_000);

  it('wrong JSON types and missing fields name manifest.json and the field, never a TypeError', () => {
    const cases: Array<[(m: Record<string, any>) => void, RegExp]> = [
      [(m) => (m.shards = 'oops'), /field "shards" is "oops", expected an array/],
      [(m) => delete m.teacher.hiddenSize, /field "teacher\.hiddenSize" is missing, expected an integer/],
      [(m) => (m.teacher.layers = 'x'), /field "teacher\.layers" is "x", expected an array/],
      [(m) => (m.shards[1] = null), /field "shards\[1\]" is null, expected an object/],
      [(m) => (m.shards[2].rows = -1), /field "shards\[2\]\.rows" is -1/],
      [(m) => (m.shards[2].rows = 1e9), /field "shards\[2\]\.rows" is 1000000000/],
      [(m) => (m.dataset.users = '60'), /field "dataset\.users" is "60", expected an integer/],
      [(m) => (m.softLabels.k = ITEMS + 1), /field "softLabels\.k" is 41, expected an integer in \[1, 40\]/],
      [(m) => (m.teacher.hiddenSize = 1e9), /field "teacher\.hiddenSize" is 1000000000/],
      [(m) => (m.shards = [m.shards[1], m.shards[0]]), /field "shards\[1\]\.index" is 0, expected > 1/],
      [(m) => (m.shards[0].sha256 = 'abc'), /field "shards\[0\]\.sha256" is "abc", expected a sha256/],
      [(m) => (m.items.shape = [ITEMS, 8]), /field "items\.shape" is \[40,8\], expected \[41, 8\]/],
      [() => {}, /^$/],
    ];
    for (const [i, [edit, want]] of cases.entries()) {
      const dir = copy(`types-${i}`);
      editManifest(dir, edit);
      if (want.source === '^$') {
        expect(() => readManifest(dir)).not.toThrow();
        continue;
      }
      const e = errorOf(() => readManifest(dir));
      expect(e.code).toBe('E_INPUT');
      expect(e.message).toContain(join(dir, 'manifest.json'));
      expect(e.message).toMatch(want);
    }
    writeFileSync(join(tmp, 'types-0', 'manifest.json'), '[1, 2]');
    expect(errorOf(() => readManifest(join(tmp, 'types-0'))).message).toMatch(/manifest\.json: field "format" is missing/);
  });

  it('a shard file far larger than its rows need is refused by size, before it is read', () => {
    const dir = copy('huge');
    truncateSync(join(dir, 'hidden-00000.safetensors'), 3 * 1024 ** 3); // sparse: no disk, no memory
    const e = errorOf(() => read(dir));
    expect(e.message).toMatch(/hidden-00000\.safetensors: 3221225472 bytes on disk, but the manifest's shapes need/);
    expect(verifyCache(dir).problems[0]).toEqual({ file: 'hidden-00000.safetensors', problem: expect.stringMatching(/3221225472 bytes on disk/) });
  });
});

describe('3. manifest file names stay inside the cache folder', () => {
  it('readers refuse "../../../../etc/hostname", an absolute path, and a separator', () => {
    for (const [i, file] of ['../../../../etc/hostname', '/etc/hostname', 'sub/hidden-00000.safetensors', '..'].entries()) {
      const dir = copy(`path-${i}`);
      editManifest(dir, (m) => (m.shards[1].file = file));
      const e = errorOf(() => openCache(dir, { fingerprint: ds.fingerprint }));
      expect(e.message).toMatch(/manifest\.json: field "shards\[1\]\.file" is .*, expected a plain file name inside the cache folder/);
      expect(verifyCache.bind(null, dir)).toThrow(/shards\[1\]\.file/);
    }
    const dir = copy('path-items');
    editManifest(dir, (m) => (m.items.file = '../base/items.safetensors'));
    expect(errorOf(() => openCache(dir, { fingerprint: ds.fingerprint })).message).toMatch(/field "items\.file"/);
  });

  it('teacher:merge does not write outside --out through a crafted slice manifest', async () => {
    const s0 = join(tmp, 'slices', 'slice-0');
    const s1 = join(tmp, 'slices', 'slice-1');
    await runTeacherCache(encoder(), ds, opts(s0, { slice: { index: 0, count: 2 } }));
    await runTeacherCache(encoder(), ds, opts(s1, { slice: { index: 1, count: 2 } }));
    editManifest(s1, (m) => (m.shards[0].file = '../../escaped.safetensors'));
    const out = join(tmp, 'merge', 'out');
    const e = errorOf(() => mergeSlices(out, [s0, s1], () => {}));
    expect(e.message).toMatch(/slice-1\/manifest\.json: field "shards\[0\]\.file" is "\.\.\/\.\.\/escaped\.safetensors"/);
    expect(existsSync(join(tmp, 'escaped.safetensors'))).toBe(false);
    expect(existsSync(join(out, 'manifest.json'))).toBe(false);
  });
});

describe('4. the dataset fingerprint cannot be swapped without the key', () => {
  it('an edited dataset.fingerprint is refused: the key no longer matches the manifest inputs', () => {
    const dir = copy('fingerprint');
    const other = '0'.repeat(64);
    editManifest(dir, (m) => (m.dataset.fingerprint = other));
    const e = errorOf(() => openCache(dir, { fingerprint: other }));
    expect(e.code).toBe('E_MISMATCH');
    expect(e.message).toMatch(/manifest\.json: field "key" is [0-9a-f]{12}, but the manifest's own inputs .* give key [0-9a-f]{12}/);
    expect(() => verifyCache(dir)).toThrow(/field "key"/);
    // Other keyed inputs alike: K, the teacher's weights.
    const k = copy('fingerprint-k');
    editManifest(k, (m) => (m.softLabels.k = 4));
    expect(() => readManifest(k)).toThrow(/field "key"/);
  });
});

describe('5. soft-label item ids are checked against the catalogue', () => {
  it('teacher:verify and the training reader refuse topk_index outside 0..items, naming the shard', async () => {
    const dir = copy('topk');
    rewriteTensor(dir, 'soft-00001.safetensors', 'topk_index', (d) => (d[7] = 100_000));
    expect(verifyCache(dir).problems).toEqual([
      { file: 'soft-00001.safetensors', problem: expect.stringMatching(/topk_index 100000 at row 1 .* outside the item ids 0\.\.40/) },
    ]);
    const e = errorOf(() => read(dir));
    expect(e.message).toMatch(/soft-00001\.safetensors: topk_index 100000 at row 1/);
    const neg = copy('topk-neg');
    rewriteTensor(neg, 'soft-00000.safetensors', 'topk_index', (d) => (d[0] = -1));
    expect(verifyCache(neg).problems[0]!.problem).toMatch(/topk_index -1 at row 0/);
    const r = await cli(['teacher:verify', '--cache', dir]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/soft-00001\.safetensors \(topk_index 100000/);
  }, 900_000);

  it('users, positions and dtypes of a consistent but lying shard are checked too', () => {
    const u = copy('users');
    rewriteTensor(u, 'hidden-00001.safetensors', 'user', (d) => (d[3] = 59));
    expect(errorOf(() => read(u)).message).toMatch(/hidden-00001\.safetensors: row 3 has user 59, outside the shard's users \[16, 32\)/);
    const p = copy('positions');
    rewriteTensor(p, 'hidden-00001.safetensors', 'position', (d) => (d[1] = d[0]));
    expect(errorOf(() => read(p)).message).toMatch(/hidden-00001\.safetensors: row 1 .* positions are not increasing/);
    const a = copy('align');
    rewriteTensor(a, 'soft-00001.safetensors', 'position', (d) => (d[2] += 1));
    expect(errorOf(() => read(a)).message).toMatch(/soft-00001\.safetensors: row 2 is .* rows not aligned/);
  });
});

it('a clean cache still reads and verifies', () => {
  expect(verifyCache(base).problems).toEqual([]);
  const r = read(base);
  expect(r.cachedShards()).toBe(readManifest(base).shards.length); // read() touched every user; all shards fit the default budget
  expect(readManifest(base).key).toMatch(/^[0-9a-f]{12}$/);
});
