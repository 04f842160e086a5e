import { readFileSync } from 'node:fs';
import { RecdistillError } from '../errors.js';
import { camelToKebab, defineOptions, formatOptionsHelp, readConfigFile, resolveOptions, type OptionSpecs } from '../config/options.js';
import { parseArgv } from './argv.js';
import type { AnyCommand } from './command.js';
import { formatSummary } from './format.js';

/** Subcommands are lazy-loaded so `eval` never pays for the LLM runtime, and `--help` is instant. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<{ default: AnyCommand }> }> = {
  'data:prepare': { summary: 'load a raw dataset, filter, split leave-one-out, print counts and fingerprint', load: () => import('./commands/data-prepare.js') },
  'model:tiny': { summary: 'write a tiny random decoder-only ONNX LM + tokenizer (tests, demo)', load: () => import('./commands/model-tiny.js') },
  'teacher:cache': { summary: 'run the teacher over every history; cache hidden states, item embeddings, soft labels', load: () => import('./commands/teacher-cache.js') },
  'teacher:merge': { summary: 'join --shard i/N slices of a teacher cache', load: () => import('./commands/teacher-merge.js') },
  'teacher:inspect': { summary: 'show the exporter layout of an ONNX LM and the tensor each layer maps to (--dump: graph as JSON)', load: () => import('./commands/teacher-inspect.js') },
  'teacher:verify': { summary: 'check every shard of a teacher cache (hash, shape)', load: () => import('./commands/teacher-verify.js') },
  'student:train': { summary: 'train the SASRec student (optionally distilled from a teacher cache)', load: () => import('./commands/student-train.js') },
  'student:export': { summary: 'export a trained student as an ONNX graph (scores and top-k, history excluded)', load: () => import('./commands/student-export.js') },
  'student:bench': { summary: 'ms per training step for each tfjs backend available', load: () => import('./commands/student-bench.js') },
  'student:speed': { summary: 'ms per step and seconds per epoch of student:train on a real dataset, configurations timed in turns', load: () => import('./commands/student-speed.js') },
  recommend: { summary: 'recommend the next items for one history of raw item ids', load: () => import('./commands/recommend.js') },
  serve: { summary: 'serve a student over HTTP (POST /recommend, GET /health, GET /info)', load: () => import('./commands/serve.js') },
  'serve:bench': { summary: 'load-test serve from concurrent clients on 127.0.0.1 (latency, throughput, lost/wrong answers)', load: () => import('./commands/serve-bench.js') },
  eval: { summary: 'full-ranking evaluation of a trained student (HR/NDCG/MRR) and a popularity baseline', load: () => import('./commands/eval.js') },
  bench: { summary: 'teacher vs student: latency, throughput, size, memory, accuracy', load: () => import('./commands/bench.js') },
  ablate: { summary: 'CE-only vs each distillation term vs all, over seeds', load: () => import('./commands/ablate.js') },
  demo: { summary: 'the whole pipeline offline on the synthetic dataset', load: () => import('./commands/demo.js') },
};

/** Flags every command accepts. */
const GLOBAL: OptionSpecs = defineOptions({
  json: { type: 'boolean', help: 'print exactly one JSON summary object as the last line of stdout' },
  verbose: { type: 'boolean', help: 'show stack traces on errors, debug logs' },
  config: { type: 'string', help: 'JSON file of options (defaults < file < flags)' },
  help: { type: 'boolean', help: 'show this help' },
}, { group: 'General' });

function topHelp(): string {
  const rows = Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(16)} ${c.summary}`);
  return `recdistill: distil a local LLM into a small sequential recommender\n\nUsage: recdistill <command> [--options] [--json]\n\nCommands:\n${rows.join('\n')}\n\nRun "recdistill <command> --help" for a command's options.`;
}

/** The package's version (package.json sits two folders up from src/cli and from dist/cli). */
function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export async function main(argv: string[]): Promise<number> {
  const first = argv.find((a) => !a.startsWith('-'));
  const entry = first && Object.hasOwn(COMMANDS, first) ? COMMANDS[first] : undefined;
  let verbose = argv.includes('--verbose');
  try {
    if (!first && (argv.includes('--version') || argv.includes('-V'))) {
      process.stdout.write(`recdistill ${packageVersion()}\n`);
      return 0;
    }
    if (!first || !entry) {
      if (first && !entry) throw new RecdistillError('E_USAGE', `unknown command "${first}". Valid commands: ${Object.keys(COMMANDS).join(', ')}.`);
      process.stdout.write(topHelp() + '\n');
      return argv.includes('--help') || argv.includes('-h') ? 0 : 1;
    }
    const cmd = (await entry.load()).default;
    const specs = { ...cmd.options, ...GLOBAL };
    const isBool = (name: string) => {
      const camel = name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
      return Object.hasOwn(specs, camel) && specs[camel]!.type === 'boolean';
    };
    const parsed = parseArgv(argv, isBool);
    if (parsed.positionals.length) throw new RecdistillError('E_USAGE', `unexpected argument "${parsed.positionals[0]}"; options are given as --name value.`);
    if (parsed.flags.help) {
      process.stdout.write(`recdistill ${first}: ${cmd.description}\n\n${formatOptionsHelp(specs)}\n`);
      return 0;
    }
    const { json, verbose: v, config, help: _help, ...flags } = parsed.flags;
    verbose = v === true;
    const file = typeof config === 'string' ? readConfigFile(config) : undefined;
    const opts = resolveOptions(cmd.options, { file, filePath: typeof config === 'string' ? config : undefined, flags });
    const log = (line: string) => process.stderr.write(line + '\n');
    const summary = await cmd.run(opts, { log, json: json === true, verbose, ...(typeof config === 'string' ? { configFile: config } : {}) });
    if (json === true) {
      process.stdout.write(JSON.stringify(summary) + '\n');
    } else {
      process.stdout.write((cmd.format ? cmd.format(summary) : formatSummary(summary)) + '\n');
    }
    return 0;
  } catch (e) {
    if (e instanceof RecdistillError) {
      process.stderr.write(`error [${e.code}]: ${e.message}\n`);
      if (verbose && e.stack) process.stderr.write(e.stack + '\n');
      return e.code === 'E_USAGE' ? 2 : 1;
    }
    const err = e as Error;
    process.stderr.write(`error: ${err?.message ?? String(e)}\n`);
    if (verbose && err?.stack) process.stderr.write(err.stack + '\n');
    else process.stderr.write('(run with --verbose for the stack trace)\n');
    return 1;
  }
}

export { camelToKebab };

// Only the entry point calls process.exit.
if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('src/cli/main.ts')) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`fatal: ${String(e)}\n`);
      process.exit(1);
    },
  );
}
