/**
 * A run folder travels: its config.json holds absolute data paths, so `eval --student RUN` works from another
 * folder; data that moved is an error that names --source; `student:train --config RUN/config.json` continues
 * RUN itself when nothing changed and trains a new run when an option changed.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Command, CommandContext } from '../../src/cli/command.js';
import { readConfigFile, resolveOptions, type OptionSpecs } from '../../src/config/options.js';
import { RecdistillError } from '../../src/errors.js';
import { TINY_DATA } from '../bench/fixtures.js';

const root = mkdtempSync(join(tmpdir(), 'recdistill-paths-'));
const home = process.cwd();
const logs: string[] = [];
const train = () => import('../../src/cli/commands/student-train.js');
const evaluate = () => import('../../src/cli/commands/eval.js');
const SMALL = { epochs: 1, dims: 8, blocks: 1, ffnDims: 8, maxLen: 8 };

/** A command run the way main() runs it: flags over an optional --config file, from folder `cwd`. */
async function cli(load: () => Promise<{ default: unknown }>, cwd: string, flags: Record<string, unknown>, config?: string): Promise<Record<string, unknown>> {
  const cmd = (await load()).default as Command<OptionSpecs>;
  process.chdir(cwd);
  const ctx: CommandContext = { log: (l) => logs.push(l), json: true, verbose: false, ...(config ? { configFile: config } : {}) };
  const file = config ? readConfigFile(config) : undefined;
  return cmd.run(resolveOptions(cmd.options, { file, filePath: config, flags }), ctx);
}

const a = join(root, 'a');
const b = join(root, 'b');
beforeAll(async () => {
  mkdirSync(a);
  mkdirSync(b);
  await cli(() => import('../../src/cli/commands/data-prepare.js'), a, { ...TINY_DATA, out: 'data' });
  // Relative --source and --out, as a user types them in folder a.
  await cli(train, a, { dataset: 'prepared', source: 'data', out: 'run', ...SMALL });
});
afterEach(() => process.chdir(home));
afterAll(() => {
  process.chdir(home);
  rmSync(root, { recursive: true, force: true });
});

describe('run folders from another directory', () => {
  it('config.json stores the data path absolute, in the options and in the identity', () => {
    const cfg = JSON.parse(readFileSync(join(a, 'run', 'config.json'), 'utf8')) as { options: { source: string }; train: { source: string; out?: string } };
    expect(cfg.options.source).toBe(join(a, 'data'));
    expect(cfg.train.source).toBe(join(a, 'data'));
    expect(cfg.train.out).toBeUndefined();
    expect(cfg.train).toHaveProperty('lambdaKd', 0); // the distillation flags too, so --config reruns a distilled run
  });

  it('eval --student RUN works from another folder', async () => {
    const r = await cli(evaluate, b, { student: '../a/run' });
    expect((r.test as { users: number }).users).toBe(40);
  });

  it('data that moved: E_NOT_FOUND naming --source; --source with the new place works', async () => {
    renameSync(join(a, 'data'), join(a, 'moved'));
    try {
      const e = await cli(evaluate, b, { student: '../a/run' }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(RecdistillError);
      expect((e as RecdistillError).code).toBe('E_NOT_FOUND');
      expect((e as Error).message).toMatch(/--source/);
      const r = await cli(evaluate, b, { student: '../a/run', source: '../a/moved' });
      expect((r.test as { users: number }).users).toBe(40);
    } finally {
      renameSync(join(a, 'moved'), join(a, 'data'));
    }
  });

  it('--config RUN/config.json continues RUN itself; a changed option trains a new run', async () => {
    const cfg = join(a, 'run', 'config.json');
    const same = await cli(train, b, {}, '../a/run/config.json');
    expect(same.resumedFrom).toBe(1); // the finished run, not retrained
    expect(logs.join('\n')).toMatch(/continuing .*[/\\]a[/\\]run/);
    expect(existsSync(join(b, 'student'))).toBe(false);
    const changed = await cli(train, b, { lr: 0.01 }, cfg);
    expect(changed.resumedFrom).toBeUndefined();
    expect(logs.join('\n')).toMatch(/lr differ from the run of --config/);
    expect(existsSync(join(b, 'student'))).toBe(true);
  });
});
