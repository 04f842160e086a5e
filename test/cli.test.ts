import { describe, expect, it } from 'vitest';
import { parseArgv } from '../src/cli/argv.js';
import { defineCommand, type AnyCommand, type Command } from '../src/cli/command.js';
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

describe('grouped --help', () => {
  async function help(command: string): Promise<string> {
    const { main } = await import('../src/cli/main.js');
    const out: string[] = [];
    const orig = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stdout.write;
    try {
      expect(await main([command, '--help'])).toBe(0);
    } finally {
      process.stdout.write = orig;
    }
    return out.join('');
  }

  /** heading -> the flags listed under it. */
  function sections(text: string): Map<string, string[]> {
    const out = new Map<string, string[]>();
    let current: string[] | undefined;
    for (const line of text.split('\n')) {
      const heading = /^([A-Z][\w :-]*):$/.exec(line);
      if (heading) {
        expect(out.has(heading[1]!), `heading ${heading[1]} twice`).toBe(false);
        out.set(heading[1]!, (current = []));
      } else if (/^ {2}--/.test(line)) current!.push(line.trim().split(/\s/)[0]!);
    }
    return out;
  }

  it('student:train lists every option once, dataset options under one Dataset heading', async () => {
    const { default: cmd } = await import('../src/cli/commands/student-train.js');
    const { datasetOptions } = await import('../src/data/options.js');
    const { camelToKebab } = await import('../src/config/options.js');
    const text = await help('student:train');
    expect(text.match(/^Dataset:$/gm)).toHaveLength(1);
    const s = sections(text);
    expect([...s.keys()]).toEqual(['Options', 'Dataset', 'Model', 'Training', 'Runtime', 'Output', 'Evaluation', 'Distillation', 'EMKD', 'General']);
    expect(s.get('Dataset')).toEqual(Object.keys(datasetOptions).map((k) => `--${camelToKebab(k)}`));
    const listed = [...s.values()].flat();
    const want = [...Object.keys(cmd.options), 'json', 'verbose', 'config', 'help'].map((k) => `--${camelToKebab(k)}`);
    expect([...listed].sort()).toEqual([...want].sort()); // each exactly once
  });

  it('a command that spreads the same table gets the same heading', async () => {
    const s = sections(await help('teacher:cache'));
    const { datasetOptions } = await import('../src/data/options.js');
    expect(s.get('Dataset')).toHaveLength(Object.keys(datasetOptions).length);
    expect(s.has('Teacher cache')).toBe(true);
  });

  it('headings follow the tables, ungrouped options first, long flags wrap', async () => {
    const { defineOptions, formatOptionsHelp } = await import('../src/config/options.js');
    const a = defineOptions({ x: { type: 'int', help: 'x', default: 1 }, y: { type: 'string', help: 'y', group: 'Other' } }, { group: 'A' });
    const text = formatOptionsHelp({ ...a, own: { type: 'boolean', help: 'own' }, veryLongOptionNameForWrapping: { type: 'string', help: 'wrapped', choices: ['aaaaaaaa', 'bbbbbbbb'] } });
    expect(text.split('\n')).toEqual([
      'Options:',
      '  --own                              own',
      '  --very-long-option-name-for-wrapping <aaaaaaaa|bbbbbbbb>',
      `  ${' '.repeat(34)} wrapped`,
      '',
      'A:',
      '  --x <int>                          x (default: 1)',
      '',
      'Other:',
      '  --y <string>                       y',
    ]);
  });
});

describe('defineCommand: the summary type', () => {
  const ctx = { log: () => {}, json: false, verbose: false };

  it('format receives the type run returns (annotated once, on format); run is checked against it', async () => {
    interface Summary { n: number; label: string }
    const cmd = defineCommand({
      description: 'typed',
      options: specs,
      async run(o) {
        return { n: o.epochs, label: o.loss };
      },
      format(s: Summary) {
        return `${s.label} ${s.n.toFixed(1)}`;
      },
    });
    const typed: Command<typeof specs, Summary> = cmd;
    const any: AnyCommand = cmd; // the CLI's table holds any command
    const s = await typed.run(resolveOptions(specs, { flags: {} }), ctx);
    expect(any.format!(s)).toBe('ce 10.0');
    defineCommand({
      description: 'run does not return the summary format expects',
      options: specs,
      // @ts-expect-error n must be a number
      async run(o) {
        return { n: o.loss, label: o.loss };
      },
      format(s: Summary) {
        return s.label;
      },
    });
  });

  it('without an annotation the summary stays an indexable record', async () => {
    const cmd = defineCommand({
      description: 'untyped',
      options: specs,
      async run() {
        const loose: Record<string, unknown> = { a: 1 };
        return { ...loose, b: 2 };
      },
      format(s) {
        return String(s.a);
      },
    });
    const untyped: Command<typeof specs> = cmd;
    expect(untyped.format!({ a: 3 })).toBe('3');
  });
});
