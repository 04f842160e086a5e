import { readFileSync } from 'node:fs';
import { RecdistillError } from '../errors.js';

/**
 * Typed option specs for every stage. Resolution order: defaults < config file (JSON) < flags.
 * Unknown keys and wrong types are errors that name the valid choices.
 */
export type OptionType = 'string' | 'number' | 'int' | 'boolean';

export interface OptionSpec {
  type: OptionType;
  /** One line: what the option does (shown by --help). */
  help: string;
  default?: string | number | boolean;
  choices?: readonly string[];
  required?: boolean;
  /** Heading --help lists the option under: the table it comes from (Dataset, Model, Training, ...). */
  group?: string;
  /**
   * Bounds of a number/int option, inclusive unless exclusiveMin/exclusiveMax; checked when options resolve and by
   * checkRanges (libraries that take resolved values). Upper bounds are sanity limits far above real settings.
   */
  min?: number;
  max?: number;
  exclusiveMin?: boolean;
  exclusiveMax?: boolean;
  /** Part of a run's identity: resuming refuses a checkpoint whose value differs (student/training/config.ts RUN_KEYS). */
  run?: boolean;
  /**
   * A run key added after the first runs were written: `value` is what every run did before (not necessarily
   * today's default), `since` the order keys were added in. An identity leaves the key out when it holds `value`,
   * so older runs keep their identity (and default folder name).
   */
  legacy?: { value: string | number | boolean; since: number };
}

export type OptionSpecs = Record<string, OptionSpec>;

type ValueOf<S extends OptionSpec> = S['type'] extends 'number' | 'int'
  ? number
  : S['type'] extends 'boolean'
    ? boolean
    : S extends { choices: readonly (infer C)[] }
      ? C
      : string;

/** The resolved options object: keys with a default or `required` are always present. */
export type Resolved<O extends OptionSpecs> = {
  [K in keyof O]: O[K] extends { default: unknown } | { required: true } ? ValueOf<O[K]> : ValueOf<O[K]> | undefined;
};

/**
 * An option table. With `group`, every option that names no group of its own is listed under that heading in
 * --help; a command that spreads the table keeps the headings, so shared options are grouped the same everywhere.
 */
export function defineOptions<const O extends OptionSpecs>(specs: O, o: { group?: string } = {}): O {
  const group = o.group;
  if (!group) return specs;
  return Object.fromEntries(Object.entries(specs).map(([k, s]) => [k, s.group ? s : { ...s, group }])) as O;
}

/** Edit distance (Levenshtein), for "did you mean". */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** "Did you mean --x?" for the nearest valid names (a typo), else the list of valid options. */
function closest(name: string, valid: string[]): string {
  if (!valid.length) return '';
  const kebab = name.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
  const scored = valid.map((v) => ({ v, d: distance(kebab, v) })).sort((a, b) => a.d - b.d);
  const best = scored.filter((x) => x.d === scored[0]!.d && x.d <= Math.max(2, Math.floor(kebab.length / 3)));
  if (best.length) return ` Did you mean ${best.slice(0, 3).map((x) => `--${x.v}`).join(' or ')}? (--help lists every option)`;
  return ` Valid options: ${valid.map((v) => `--${v}`).join(', ')}.`;
}

function coerce(key: string, spec: OptionSpec, raw: unknown, where: string): string | number | boolean {
  const bad = (expected: string): never => {
    throw new RecdistillError('E_USAGE', `${where}: option "${key}" expects ${expected}, got ${JSON.stringify(raw)}.`);
  };
  let v: string | number | boolean;
  switch (spec.type) {
    case 'boolean':
      if (typeof raw === 'boolean') v = raw;
      else if (raw === 'true' || raw === '1') v = true;
      else if (raw === 'false' || raw === '0') v = false;
      else return bad('a boolean (true/false)');
      break;
    case 'number':
    case 'int': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
      if (!Number.isFinite(n)) return bad(spec.type === 'int' ? 'an integer' : 'a number');
      if (spec.type === 'int' && !Number.isInteger(n)) return bad('an integer');
      v = n;
      break;
    }
    case 'string':
      if (typeof raw === 'string') v = raw;
      else if (typeof raw === 'number') v = String(raw);
      else return bad('a string');
      break;
  }
  if (typeof v === 'number') checkRange(key, spec, v, where === 'command line' ? '' : ` (${where})`);
  if (spec.choices && !spec.choices.includes(String(v))) {
    throw new RecdistillError(
      'E_USAGE',
      `${where}: option "${key}" must be one of ${spec.choices.join(', ')}; got ${JSON.stringify(raw)}.`,
    );
  }
  return v;
}

/** "an integer >= 1 and <= 1000", from a spec's bounds; undefined when it has none. */
function rangeText(spec: OptionSpec): string | undefined {
  if (spec.min === undefined && spec.max === undefined) return undefined;
  const lo = spec.min === undefined ? '' : `${spec.exclusiveMin ? '>' : '>='} ${spec.min}`;
  const hi = spec.max === undefined || spec.max >= Number.MAX_VALUE ? '' : `${spec.exclusiveMax ? '<' : '<='} ${spec.max}`;
  return `${spec.type === 'int' ? 'an integer' : 'a number'} ${[lo, hi].filter(Boolean).join(' and ')}`;
}

/** Throws E_USAGE naming the flag (`key`, kebab-case) when `v` is outside the spec's bounds (or not an int for int). */
function checkRange(key: string, spec: OptionSpec, v: unknown, suffix = ''): void {
  const range = rangeText(spec);
  if (!range) return;
  const ok = typeof v === 'number' && Number.isFinite(v) && (spec.type !== 'int' || Number.isInteger(v))
    && (spec.min === undefined || (spec.exclusiveMin ? v > spec.min : v >= spec.min))
    && (spec.max === undefined || (spec.exclusiveMax ? v < spec.max : v <= spec.max));
  if (!ok) throw new RecdistillError('E_USAGE', `--${key} must be ${range}; got ${JSON.stringify(v)}${suffix}.`);
}

/** The range check of every bounded option in `values` (camelCase keys; undefined values skipped). */
export function checkRanges(specs: OptionSpecs, values: Record<string, unknown>): void {
  for (const [k, spec] of Object.entries(specs)) if (values[k] !== undefined) checkRange(camelToKebab(k), spec, values[k]);
}

/**
 * The run keys of a table in identity order: the keys that were run keys from the start in table order, then those
 * added later in the order they were added (config.json's "options" and every stored identity keep that order).
 */
export function runKeysOf(specs: OptionSpecs): string[] {
  const keys = Object.entries(specs).filter(([, s]) => s.run);
  const first = keys.filter(([, s]) => !s.legacy).map(([k]) => k);
  const later = keys.filter(([, s]) => s.legacy).sort((a, b) => a[1].legacy!.since - b[1].legacy!.since).map(([k]) => k);
  return [...first, ...later];
}

/** The legacy value of every run key added later (spec.legacy), in the order the keys were added. */
export function legacyValuesOf(specs: OptionSpecs): Record<string, string | number | boolean> {
  const entries = Object.entries(specs).filter(([, s]) => s.legacy).sort((a, b) => a[1].legacy!.since - b[1].legacy!.since);
  return Object.fromEntries(entries.map(([k, s]) => [k, s.legacy!.value]));
}

export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new RecdistillError('E_NOT_FOUND', `config file ${path} not found or not readable.`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new RecdistillError('E_CONFIG', `config file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new RecdistillError('E_CONFIG', `config file ${path} must hold a JSON object of option: value.`);
  }
  // A student run's config.json ({format, fingerprint, model, train, …}) stands for the options it was
  // trained with: `student:train --config RUN/config.json` retrains it.
  const p = parsed as Record<string, unknown>;
  const isRun = typeof p.fingerprint === 'string' && p.train !== null && typeof p.train === 'object' && !Array.isArray(p.train) && typeof p.model === 'object';
  const options = isRun ? (p.train as Record<string, unknown>) : p;
  // JSON.parse makes "__proto__" an own key; copy into a null-prototype map so no key can reach Object.prototype.
  return Object.assign(Object.create(null) as Record<string, unknown>, options);
}

/**
 * The given options only (no defaults), keys camelCased and values coerced to their spec's type; an unknown key or
 * a bad value is an error that names `where`.
 */
export function coerceOptions(specs: OptionSpecs, src: Record<string, unknown>, where: string): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  const valid = Object.keys(specs);
  for (const [rawKey, raw] of Object.entries(src)) {
    const key = kebabToCamel(rawKey);
    // Own keys only: "constructor", "__proto__", "toString" ... are Object.prototype members, not options.
    const spec = Object.hasOwn(specs, key) ? specs[key] : undefined;
    if (!spec) throw new RecdistillError('E_USAGE', `${where}: unknown option "${rawKey}".${closest(key, valid.map(camelToKebab))}`);
    out[key] = coerce(camelToKebab(key), spec, raw, where);
  }
  return out;
}

/**
 * Resolve options: defaults < file < flags. `flags` keys are option names (camelCase or kebab-case).
 */
export function resolveOptions<O extends OptionSpecs>(
  specs: O,
  sources: { file?: Record<string, unknown>; filePath?: string; flags?: Record<string, unknown> },
): Resolved<O> {
  const out: Record<string, unknown> = {};
  for (const [k, spec] of Object.entries(specs)) if (spec.default !== undefined) out[k] = spec.default;
  if (sources.file) Object.assign(out, coerceOptions(specs, sources.file, `config file ${sources.filePath ?? ''}`.trim()));
  if (sources.flags) Object.assign(out, coerceOptions(specs, sources.flags, 'command line'));
  for (const [k, spec] of Object.entries(specs)) {
    if (spec.required && out[k] === undefined) {
      throw new RecdistillError('E_USAGE', `missing required option --${camelToKebab(k)} (${spec.help}).`);
    }
  }
  return out as Resolved<O>;
}

function kebabToCamel(s: string): string {
  return s.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

export function camelToKebab(s: string): string {
  return s.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

const FLAG_WIDTH = 34;

/**
 * Help text for a spec table: options under headings (their `group`; the command's own ungrouped options first,
 * under `ungrouped`), headings in the order they first appear, one line per option.
 */
export function formatOptionsHelp(specs: OptionSpecs, ungrouped = 'Options'): string {
  const groups = new Map<string, string[]>([[ungrouped, []]]);
  for (const [k, s] of Object.entries(specs)) {
    const flag = `--${camelToKebab(k)}${s.type === 'boolean' ? '' : ` <${s.choices ? s.choices.join('|') : s.type}>`}`;
    const def = s.required ? ' (required)' : s.default !== undefined ? ` (default: ${String(s.default)})` : '';
    // a flag too long for its column puts its help on the next line, aligned with the others
    const row = flag.length < FLAG_WIDTH ? `  ${flag.padEnd(FLAG_WIDTH)} ${s.help}${def}` : `  ${flag}\n  ${' '.repeat(FLAG_WIDTH)} ${s.help}${def}`;
    const g = s.group ?? ungrouped;
    groups.set(g, [...(groups.get(g) ?? []), row]);
  }
  return [...groups].filter(([, rows]) => rows.length).map(([g, rows]) => `${g}:\n${rows.join('\n')}`).join('\n\n');
}
