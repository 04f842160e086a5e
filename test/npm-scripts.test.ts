/**
 * The npm scripts as a user runs them: `npm run serve -- … &` then `kill $!` signals npm, which signals its
 * child; each script must hand the signal on down to the server (npm → sh → tsx → node), so the port is freed.
 * And `npm run` prints no warning about the project's own npm configuration.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCmd, TINY_DATA } from './bench/fixtures.js';

const ROOT = join(import.meta.dirname, '..');
const root = mkdtempSync(join(tmpdir(), 'recdistill-npm-'));
const run = join(root, 'run');
const started: ChildProcess[] = [];

beforeAll(async () => {
  await runCmd(() => import('../src/cli/commands/student-train.js'), { ...TINY_DATA, epochs: 1, dims: 8, blocks: 1, ffnDims: 8, maxLen: 8, out: run });
});
afterAll(() => {
  // Safety net if an assertion failed midway: the whole process group this test started, nothing else.
  for (const p of started) {
    try {
      if (p.pid) process.kill(-p.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  rmSync(root, { recursive: true, force: true });
});

/** Resolves with the text once `pattern` appears in the child's stderr; rejects if the child exits first. */
function waitFor(p: ChildProcess, pattern: RegExp, out: { text: string }): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const m = out.text.match(pattern);
      if (m) resolve(m);
    };
    p.stderr!.on('data', (d: Buffer) => {
      out.text += d.toString();
      check();
    });
    p.stdout!.on('data', (d: Buffer) => (out.text += d.toString()));
    p.on('exit', (code, signal) => reject(new Error(`npm exited (${code ?? signal}) before ${pattern}: ${out.text.slice(-2000)}`)));
  });
}

/** true when nothing accepts connections on 127.0.0.1:port. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

/** Polls until the port is free; gives up (false) only after a generous safety-net deadline. */
async function waitPortFree(port: number, deadlineMs = 300_000): Promise<boolean> {
  const end = Date.now() + deadlineMs;
  while (Date.now() < end) {
    if (await portFree(port)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

describe('npm scripts', () => {
  it('`npm run serve` then killing the npm process frees the port', async () => {
    // Its own process group, so the safety net above can end exactly what this test started.
    const p = spawn('npm', ['run', 'serve', '--', '--student', run, '--port', '0', '--host', '127.0.0.1'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    started.push(p);
    const out = { text: '' };
    const m = await waitFor(p, /listening on http:\/\/127\.0\.0\.1:(\d+)/, out);
    const port = Number(m[1]);
    expect(await portFree(port)).toBe(false);
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    process.kill(p.pid!, 'SIGTERM'); // what `kill $!` does after `npm run serve … &`
    await exited;
    expect(await waitPortFree(port)).toBe(true);
    expect(out.text).toMatch(/serve: SIGTERM: finishing/);
    // npm prints no warning about this project's .npmrc on any run.
    expect(out.text).not.toMatch(/npm warn Unknown project config/);
  });

  it('every script that starts a long-running process execs it, so signals reach it', () => {
    const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    const long = Object.entries(scripts).filter(([, cmd]) => /\b(tsx|vitest)\b/.test(cmd));
    expect(long.length).toBeGreaterThan(10);
    for (const [name, cmd] of long) expect({ name, cmd }).toEqual({ name, cmd: expect.stringMatching(/^(.*&& )?exec (tsx|vitest)\b/) });
  });
});
