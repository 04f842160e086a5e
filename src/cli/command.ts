import type { OptionSpecs, Resolved } from '../config/options.js';
import type { LogFn } from '../util/progress.js';

/** What every command gets besides its options. */
export interface CommandContext {
  /** Human output: goes to stderr so stdout's last line can be the JSON summary. */
  log: LogFn;
  json: boolean;
  verbose: boolean;
  /** The --config file the options came from, if any (student:train continues a run named by its config.json). */
  configFile?: string;
}

/**
 * A CLI command: typed options, a library call, and a summary. `run` returns the summary object (type `R`) that
 * `--json` prints as the last stdout line; `format` renders that same summary for humans (defaults to key: value
 * lines). `R` defaults to an untyped record, as held by code that loads any command by name.
 */
export interface Command<O extends OptionSpecs = OptionSpecs, R extends object = Record<string, unknown>> {
  description: string;
  options: O;
  run(opts: Resolved<O>, ctx: CommandContext): Promise<R>;
  format?(summary: R): string;
}

/** Any command, whatever its summary type (the CLI's command table). */
export type AnyCommand = Command<OptionSpecs, object>;

/**
 * Declares a command; `O` is inferred from `options`. The summary type `R` comes from `format`'s parameter
 * annotation (or an explicit `defineCommand<typeof options, R>`), and `run` is then checked to return it:
 *
 *   defineCommand({ options, async run(o, ctx) { return summary; }, format(s: Summary) { ... } })
 *
 * `R` is deliberately not inferred from `run`'s return: without an annotation it stays `Record<string, unknown>`,
 * so a command whose summary is built from untyped records keeps an indexable summary in `format`.
 */
export function defineCommand<const O extends OptionSpecs, R extends object = Record<string, unknown>>(cmd: {
  description: string;
  options: O;
  run(opts: Resolved<O>, ctx: CommandContext): Promise<NoInfer<R>>;
  format?(summary: R): string;
}): Command<O, R> {
  return cmd;
}
