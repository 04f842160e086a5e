import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { readManifest } from '../../src/cache/format.js';
import { openCache } from '../../src/cache/reader.js';
import { verifyCache } from '../../src/cache/verify.js';
import { main } from '../../src/cli/main.js';
import { datasetFromFlags, datasetOptions } from '../../src/data/options.js';
import { resolveOptions } from '../../src/config/options.js';
import { tensorsOf, writeTensors } from '../../src/student/model/checkpoint.js';
import { createSasrec, disposeModel } from '../../src/student/model/model.js';
import { writeTinyModel, TINY_DEFAULTS } from '../../src/teacher/tiny/index.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-cachecli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const DATA = ['--dataset', 'synthetic', '--synthetic-users', '30', '--synthetic-items', '40', '--synthetic-min-len', '4', '--synthetic-max-len', '9'];

/** Run the CLI in-process; return the exit code and the JSON summary (last stdout line). */
async function cli(args: string[]): Promise<{ code: number; summary: Record<string, unknown>; stderr: string }> {
  const out: string[] = [];
  const errs: string[] = [];
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => (out.push(String(s)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => (errs.push(String(s)), true));
  try {
    const code = await main([...args, '--json']);
    const last = out.join('').trim().split('\n').pop() ?? '{}';
    return { code, summary: code === 0 ? (JSON.parse(last) as Record<string, unknown>) : {}, stderr: errs.join('') };
  } finally {
    spy.mockRestore();
    err.mockRestore();
  }
}

describe('teacher:cache command, end to end (offline)', () => {
  it('llm teacher: the tiny ONNX model through the real loader; summary keys; verify passes', async () => {
    const model = join(tmp, 'tiny');
    writeTinyModel({ ...TINY_DEFAULTS, out: model, layers: 2, hidden: 32, heads: 2, merges: 200 });
    const dir = join(tmp, 'llm-cache');
    const { code, summary } = await cli(['teacher:cache', ...DATA, '--model', model, '--dtype', 'fp32', '--layers', '0,-1', '--max-prompt-tokens', '512', '--out', dir, '--top-k', '5', '--head-epochs', '2', '--users-per-shard', '16', '--backend', 'cpu', '--overhead-sample', '4']);
    expect(code).toBe(0);
    for (const k of ['cache', 'rows', 'shards', 'seconds', 'promptsPerSec', 'tokensPerSec', 'valid', 'test']) expect(summary, k).toHaveProperty(k);
    expect(summary.shards).toBe(2);
    // The rates are the manifest's counts over its seconds; every cached row is at least one prompt token.
    const timings = readManifest(dir).timings;
    expect(timings.tokens).toBeGreaterThan(summary.rows as number);
    expect(summary.tokensPerSec).toBeCloseTo(timings.tokens! / timings.hiddenSeconds!, 6);
    // `tokens` is what the run sent: the same number --count-only counts without running the model.
    const counted = await cli(['teacher:cache', ...DATA, '--model', model, '--dtype', 'fp32', '--layers', '0,-1', '--max-prompt-tokens', '512', '--users-per-shard', '16', '--count-only']);
    expect(counted.code).toBe(0);
    expect(summary.tokens).toBe(counted.summary.tokens);
    expect(summary.tokens).toBe(timings.tokens);
    // --overhead-sample 4 measured the plain loop (absent with --overhead-sample 0: see the slice test below):
    // overhead = pipeline seconds / plain seconds - 1 over the same tokens.
    expect(summary.overhead as number).toBeCloseTo(timings.plainTokensPerSec! / timings.samplePipelineTokensPerSec! - 1, 9);
    expect(verifyCache(dir).problems).toEqual([]);
    expect((await cli(['teacher:verify', '--cache', dir])).code).toBe(0);
    const ds = await datasetFromFlags(resolveOptions(datasetOptions, { flags: { dataset: 'synthetic', syntheticUsers: 30, syntheticItems: 40, syntheticMinLen: 4, syntheticMaxLen: 9 } }));
    const r = openCache(dir, { fingerprint: ds.fingerprint });
    expect(r.layers).toEqual([0, 1]);
    expect(r.hiddenSize).toBe(32);
    const rows = r.rowsForUser(3);
    expect(rows.positions.length).toBe(ds.users[3]!.items.length - 1);
    expect(rows.hidden.length).toBe(rows.positions.length * 2 * 32);
  });

  it('--shard 0/2 and 1/2, then teacher:merge (the dataset flags read from the slices) equal the full run byte for byte', async () => {
    const model = join(tmp, 'tiny');
    // No --overhead-sample: by default the cache build does not re-run users to measure itself.
    const common = [...DATA, '--model', model, '--dtype', 'fp32', '--layers', '0,-1', '--max-prompt-tokens', '512', '--top-k', '5', '--head-epochs', '2', '--users-per-shard', '16', '--backend', 'cpu'];
    const s0 = join(tmp, 'sl', 'a');
    const s1 = join(tmp, 'sl', 'b');
    const first = await cli(['teacher:cache', ...common, '--shard', '0/2', '--out', s0]);
    expect(first.code).toBe(0);
    expect(first.summary).not.toHaveProperty('overhead'); // not measured by default
    expect(first.stderr).not.toMatch(/overhead/);
    // More slices than the 2 shards of 30 users at 16 per shard: refused, saying how to split instead.
    const many = await cli(['teacher:cache', ...common, '--shard', '0/40', '--out', join(tmp, 'sl', 'many')]);
    expect(many.code).toBe(2);
    expect(many.stderr).toMatch(/--shard 0\/40: synthetic makes only 2 shard\(s\) \(30 users, --users-per-shard 16\), so 38 of the 40 slices would have no users/);
    expect((await cli(['teacher:cache', ...common, '--shard', '1/2', '--out', s1])).code).toBe(0);
    const out = join(tmp, 'merged');
    const m = await cli(['teacher:merge', '--out', out, '--from', `${s0},${s1}`, '--backend', 'cpu']);
    expect(m.code).toBe(0);
    expect(m.summary.complete).toBe(true);
    const full = join(tmp, 'llm-cache');
    const files = readdirSync(full).filter((f) => f.endsWith('.safetensors')).sort();
    expect(readdirSync(out).filter((f) => f.endsWith('.safetensors')).sort()).toEqual(files);
    for (const f of files) expect(readFileSync(join(out, f)).equals(readFileSync(join(full, f))), f).toBe(true);
    // A dataset flag that contradicts the slices' record: refused, naming both values.
    const bad = await cli(['teacher:merge', '--dataset', 'synthetic', '--synthetic-users', '31', '--out', join(tmp, 'merged2'), '--from', `${s0},${s1}`, '--backend', 'cpu']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/the slices record --synthetic-users 30, the command line gives --synthetic-users 31/);
  });

  it('the default --top-k 50 on a 40-item catalogue keeps all 40, with a note', async () => {
    const dir = join(tmp, 'topk-default');
    const r = await cli(['teacher:cache', ...DATA, '--model', join(tmp, 'tiny'), '--dtype', 'fp32', '--max-prompt-tokens', '512', '--head-epochs', '1', '--backend', 'cpu', '--out', dir]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/--top-k 50 is more than the 40 items of synthetic: keeping all 40/);
    expect(readManifest(dir).softLabels.k).toBe(40);
  });

  it('a cache used with other dataset options: the error names the option and both values', async () => {
    const dir = join(tmp, 'llm-cache');
    const r = await cli(['student:train', ...DATA, '--max-history', '5', '--cache', dir, '--lambda-kd', '1', '--epochs', '1', '--backend', 'cpu', '--out', join(tmp, 'mh')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the cache was built with --max-history 0, this run uses 5/);
  });

  it('seqrec teacher: a student run folder as teacher, own soft labels; --shard with seqrec is refused', async () => {
    await initBackend('cpu');
    const ds = await datasetFromFlags(resolveOptions(datasetOptions, { flags: { dataset: 'synthetic', syntheticUsers: 30, syntheticItems: 40, syntheticMinLen: 4, syntheticMaxLen: 9 } }));
    const config = { numItems: ds.items.length - 1, maxLen: 8, dims: 8, blocks: 2, heads: 2, dropout: 0, attnDropout: 0, ffnDims: 8 };
    const m = createSasrec(config, 2);
    const run = join(tmp, 'run');
    writeTensors(join(run, 'model.safetensors'), tensorsOf(m.params), { format: 'recdistill-sasrec-1', config: JSON.stringify(config), dataset: ds.name, fingerprint: ds.fingerprint });
    disposeModel(m);
    const dir = join(tmp, 'seqrec-cache');
    const { code, summary } = await cli(['teacher:cache', ...DATA, '--teacher', 'seqrec', '--student-run', run, '--layers', '0,-1', '--out', dir, '--top-k', '4', '--backend', 'cpu']);
    expect(code).toBe(0);
    expect(summary.complete).toBe(true);
    // A seqrec teacher reads item ids, not tokens: no tokens/s in its summary (it printed "0 tokens/s").
    expect(summary).not.toHaveProperty('tokensPerSec');
    expect(summary).not.toHaveProperty('tokensPerSecond');
    expect(summary).not.toHaveProperty('tokens');
    const r = openCache(dir, { fingerprint: ds.fingerprint });
    expect(r.manifest.teacher.kind).toBe('seqrec');
    expect(r.manifest.softLabels.head).toBe('teacher');
    expect(r.rowsForUser(0).topkIndex!.length).toBe(4 * (ds.users[0]!.items.length - 1));
    expect((await cli(['teacher:cache', ...DATA, '--teacher', 'seqrec', '--student-run', run, '--out', join(tmp, 'x'), '--shard', '0/2', '--backend', 'cpu'])).code).toBe(2);
  });
});
