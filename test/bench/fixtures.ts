import { join } from 'node:path';
import type { CommandContext } from '../../src/cli/command.js';
import { resolveOptions, type OptionSpecs } from '../../src/config/options.js';
import type { Command } from '../../src/cli/command.js';

/** Run a CLI command in-process with options resolved the way the CLI resolves them. */
export async function runCmd(load: () => Promise<{ default: unknown }>, flags: Record<string, unknown>, logs: string[] = []): Promise<Record<string, unknown>> {
  const cmd = (await load()).default as Command<OptionSpecs>;
  const ctx: CommandContext = { log: (l) => logs.push(l), json: true, verbose: false };
  return cmd.run(resolveOptions(cmd.options, { flags }), ctx);
}

export const TINY_DATA = { dataset: 'synthetic', syntheticUsers: 40, syntheticItems: 30, syntheticMinLen: 5, syntheticMaxLen: 12, syntheticSeed: 3 };

/** A tiny LM, its teacher cache and a one-epoch student on a 40-user synthetic dataset (about 20 s on 2 busy cores). */
export async function buildTinySetup(root: string): Promise<{ lm: string; cache: string; student: string }> {
  const lm = join(root, 'lm');
  await runCmd(() => import('../../src/cli/commands/model-tiny.js'), { out: lm, layers: 2, hidden: 32, heads: 2, merges: 200 });
  const c = await runCmd(() => import('../../src/cli/commands/teacher-cache.js'), {
    ...TINY_DATA, model: lm, dtype: 'fp32', cacheRoot: join(root, 'cache'), head: 'zeroshot', topK: 10, overheadSample: 0, offline: true,
  });
  const student = join(root, 'student');
  await runCmd(() => import('../../src/cli/commands/student-train.js'), { ...TINY_DATA, epochs: 1, dims: 16, blocks: 1, ffnDims: 16, maxLen: 16, batchSize: 64, out: student });
  return { lm, cache: String(c.cache), student };
}
