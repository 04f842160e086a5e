/**
 * teacher:cache --count-only: the prompt tokens pass 1 encodes, without the model. Checked against real runs of the
 * tiny model (the manifest's timings.tokens and row count), for the whole dataset and for a slice.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { readManifest, sliceUsers } from '../../src/cache/format.js';
import { main } from '../../src/cli/main.js';
import { writeTinyModel, TINY_DEFAULTS } from '../../src/teacher/tiny/index.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-count-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const DATA = ['--dataset', 'synthetic', '--synthetic-users', '30', '--synthetic-items', '40', '--synthetic-min-len', '4', '--synthetic-max-len', '30'];

async function cli(args: string[]): Promise<{ code: number; summary: Record<string, any>; stderr: string }> {
  const out: string[] = [];
  const errs: string[] = [];
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => (out.push(String(s)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => (errs.push(String(s)), true));
  try {
    const code = await main([...args, '--json']);
    const last = out.join('').trim().split('\n').pop() ?? '{}';
    return { code, summary: code === 0 ? (JSON.parse(last) as Record<string, any>) : {}, stderr: errs.join('') };
  } finally {
    spy.mockRestore();
    err.mockRestore();
  }
}

describe('teacher:cache --count-only', () => {
  it('slices are whole shards of users, as pass 1 assigns them', () => {
    expect(sliceUsers(943, 10, { index: 0, count: 10 })).toEqual([0, 90]); // 95 shards: slice 0 holds shards 0-8
    expect(sliceUsers(943, 10, { index: 9, count: 10 })).toEqual([850, 943]);
    expect(sliceUsers(30, 16, { index: 1, count: 2 })).toEqual([16, 30]);
    expect(sliceUsers(943, 128, { index: 0, count: 10 })).toEqual([0, 0]); // 8 shards for 10 slices: slice 0 is empty
    expect(sliceUsers(943, 128)).toEqual([0, 943]);
  });

  it('counts what a real run encodes (timings.tokens, rows), whole and per slice, and writes nothing', async () => {
    const model = join(tmp, 'tiny');
    writeTinyModel({ ...TINY_DEFAULTS, out: model, layers: 1, hidden: 16, heads: 2, merges: 200 });
    // A 160-token budget splits the longer histories into several windows.
    const common = [...DATA, '--model', model, '--dtype', 'fp32', '--max-prompt-tokens', '160', '--users-per-shard', '8', '--backend', 'cpu', '--overhead-sample', '0', '--top-k', '5', '--head-epochs', '1'];
    // Separate parent folders: a run reuses the pass-1 shards of a sibling cache (and counts only what it encodes).
    const slice = await cli(['teacher:cache', ...common, '--shard', '1/2', '--out', join(tmp, 'a', 's1')]);
    expect(slice.code).toBe(0);
    const full = await cli(['teacher:cache', ...common, '--out', join(tmp, 'b', 'full')]);
    expect(full.code).toBe(0);

    const root = join(tmp, 'never');
    const c = await cli(['teacher:cache', ...common, '--count-only', '--cache-root', root]);
    expect(c.code).toBe(0);
    const m = readManifest(join(tmp, 'b', 'full'));
    expect(c.summary.tokens).toBe(m.timings.tokens);
    expect(c.summary.encodedItems).toBe(full.summary.rows);
    expect(c.summary.passes).toBeGreaterThan(c.summary.encodedUsers); // some users took several windows
    expect(c.summary.users).toBe(30);
    expect(existsSync(root)).toBe(false);

    const cs = await cli(['teacher:cache', ...common, '--count-only', '--shard', '1/2']);
    expect(cs.code).toBe(0);
    expect(cs.summary.users).toBe(14); // 4 shards of 8 users: slice 1 holds shards 2-3, users 16-29
    expect(cs.summary.tokens).toBe(readManifest(join(tmp, 'a', 's1')).timings.tokens);
    // The slices' largest share (N = 2) of a full count is this slice's or the other's.
    const other = c.summary.tokens - cs.summary.tokens;
    expect(c.summary.largestSliceShare['2']).toBeCloseTo(Math.max(other, cs.summary.tokens) / c.summary.tokens, 12);
  }, 120_000);

  it('refuses a seqrec teacher, and a budget the widest item line does not fit, naming the flag', async () => {
    const r = await cli(['teacher:cache', ...DATA, '--teacher', 'seqrec', '--student-run', join(tmp, 'x'), '--count-only']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--count-only counts an llm teacher's prompt tokens/);
    const b = await cli(['teacher:cache', ...DATA, '--model', join(tmp, 'tiny'), '--dtype', 'fp32', '--max-prompt-tokens', '30', '--count-only']);
    expect(b.code).not.toBe(0);
    expect(b.stderr).toMatch(/--max-prompt-tokens 30 leaves -?\d+ tokens after the prompt's \d+ fixed tokens/);
    // Items without text (an S3Rec-style sequences file): refused as a real run refuses them.
    const seqs = join(tmp, 'seqs.txt');
    writeFileSync(seqs, '1 1 2 3 4\n2 2 3 4 5\n3 1 3 5 2\n');
    const t = await cli(['teacher:cache', '--dataset', 'sequences', '--source', seqs, '--model', join(tmp, 'tiny'), '--dtype', 'fp32', '--count-only']);
    expect(t.code).not.toBe(0);
    expect(t.stderr).toMatch(/has no item text/);
    // More slices than shards: slice 0 of 10 over 4 shards of 8 users is empty, and the run says so.
    const e = await cli(['teacher:cache', ...DATA, '--model', join(tmp, 'tiny'), '--dtype', 'fp32', '--users-per-shard', '8', '--shard', '0/10', '--count-only']);
    expect(e.code).toBe(0);
    expect(e.summary).toMatchObject({ users: 0, tokens: 0 });
    expect(e.stderr).toMatch(/slice 0\/10 holds no users \(30 users in 4 shards of --users-per-shard 8\); with --users-per-shard 3 or less/);
  }, 60_000);
});
