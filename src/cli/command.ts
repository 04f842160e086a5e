import type { OptionSpecs, Resolved } from '../config/options.js';
import type { LogFn } from '../util/progress.js';

/** What every command gets besides its options. */
export interface CommandContext {
  /** Human output: goes to stderr so stdout's last line can be the JSON summary. */
  log: LogFn;
  json: boolean;
  verbose: boolean;
}

/**
 * A CLI command: typed options, a library call, and a summary. `run` returns the summary object that
 * `--json` prints as the last stdout line; `format` renders it for humans (defaults to key: value lines).
 */
export interface Command<O extends OptionSpecs = OptionSpecs> {
  description: string;
  options: O;
  run(opts: Resolved<O>, ctx: CommandContext): Promise<Record<string, unknown>>;
  format?(summary: Record<string, unknown>): string;
}

export function defineCommand<const O extends OptionSpecs>(cmd: Command<O>): Command<O> {
  return cmd;
}
