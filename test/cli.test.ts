import { describe, expect, it } from 'vitest';
import { parseArgv } from '../src/cli/argv.js';
import { defineOptions, resolveOptions } from '../src/config/options.js';

const specs = defineOptions({
  epochs: { type: 'int', help: 'epochs', default: 10 },
  lr: { type: 'number', help: 'learning rate', default: 0.001 },
  loss: { type: 'string', help: 'loss', default: 'ce', choices: ['ce', 'bce'] },
  json: { type: 'boolean', help: 'json' },
  out: { type: 'string', help: 'output dir' },
});

describe('argv + options', () => {
  it('parses --k v, --k=v, booleans and --no-x', () => {
    const p = parseArgv(['train', '--epochs', '5', '--lr=0.01', '--json', '--no-verbose'], (n) => n === 'json' || n === 'verbose');
    expect(p.command).toBe('train');
    expect(p.flags).toEqual({ epochs: '5', lr: '0.01', json: true, verbose: false });
  });

  it('a boolean flag does not swallow the next word', () => {
    const p = parseArgv(['x', '--json', 'extra'], (n) => n === 'json');
    expect(p.flags.json).toBe(true);
    expect(p.positionals).toEqual(['extra']);
  });

  it('defaults < file < flags, kebab-case flags map to camelCase keys', () => {
    const r = resolveOptions(specs, { file: { epochs: 20, lr: 0.5 }, flags: { epochs: '7' } });
    expect(r).toEqual({ epochs: 7, lr: 0.5, loss: 'ce' });
  });

  it('unknown keys and wrong types are errors naming the valid choices', () => {
    expect(() => resolveOptions(specs, { flags: { epoch: '3' } })).toThrow(/unknown option "epoch".*--epochs/);
    expect(() => resolveOptions(specs, { flags: { epochs: '2.5' } })).toThrow(/expects an integer/);
    expect(() => resolveOptions(specs, { flags: { loss: 'mse' } })).toThrow(/must be one of ce, bce/);
    expect(() => resolveOptions(specs, { file: { lr: 'fast' }, filePath: 'c.json' })).toThrow(/config file c.json: option "lr" expects a number/);
  });
});

describe('CLI conveniences', () => {
  it('--version prints the package version; a typo in an option gets "did you mean"', async () => {
    const { main } = await import('../src/cli/main.js');
    const out: string[] = [];
    const orig = process.stdout.write.bind(process.stdout);
    const err = process.stderr.write.bind(process.stderr);
    process.stdout.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stderr.write;
    try {
      expect(await main(['--version'])).toBe(0);
      expect(await main(['student:train', '--epoch', '3'])).toBe(2);
    } finally {
      process.stdout.write = orig;
      process.stderr.write = err;
    }
    const { version } = JSON.parse((await import('node:fs')).readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(out[0]).toBe(`recdistill ${version}\n`);
    expect(out.join('')).toMatch(/unknown option "epoch"\. Did you mean --epochs\?/);
  });
});
