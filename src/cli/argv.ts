import { RecdistillError } from '../errors.js';

export interface ParsedArgv {
  command: string | undefined;
  flags: Record<string, string | boolean>;
  positionals: string[];
}

/**
 * Parse `cmd --key value --key=value --bool --no-bool` into flags. Flags that `isBoolean` names never
 * take the next word as their value; any other flag followed by another flag (or nothing) is `true`.
 */
export function parseArgv(argv: string[], isBoolean: (name: string) => boolean = () => false): ParsedArgv {
  // Null prototype: --__proto__ / --constructor are stored as plain (unknown) names and refused later.
  const flags = Object.create(null) as Record<string, string | boolean>;
  const positionals: string[] = [];
  let command: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const body = a.slice(2);
      if (!body) throw new RecdistillError('E_USAGE', `empty flag "${a}".`);
      const eq = body.indexOf('=');
      if (eq >= 0) {
        flags[body.slice(0, eq)] = body.slice(eq + 1);
      } else if (body.startsWith('no-')) {
        flags[body.slice(3)] = false;
      } else {
        const next = argv[i + 1];
        if (!isBoolean(body) && next !== undefined && !(next.startsWith('--') && next.length > 2)) {
          flags[body] = next;
          i++;
        } else flags[body] = true;
      }
    } else if (a === '-h') {
      flags.help = true;
    } else if (command === undefined) {
      command = a;
    } else positionals.push(a);
  }
  return { command, flags, positionals };
}
