import type { OptionSpec } from '../config/options.js';
import { RecdistillError } from '../errors.js';
import { resolveStudentOptions, studentOptions, type StudentOptions } from './config.js';

/**
 * Named student configurations (`--preset`), defined once. Precedence: defaults < preset < --config file < flags.
 * A preset is a name for values, not part of a run: a run's identity and config.json hold the resolved values only.
 */
export const STUDENT_PRESETS = {
  /** student:train's defaults as they are. */
  none: {},
  /**
   * The small student of the ablation (~18% of the default student's parameters on ML-100K). It keeps
   * --batching length, the batches its ablation and EMKD tables were measured with.
   */
  small: { dims: 16, blocks: 2, ffnDims: 16, maxLen: 50, lr: 0.005, batchSize: 128, patience: 10, batching: 'length' },
} as const satisfies Record<string, Partial<StudentOptions>>;

export type PresetName = keyof typeof STUDENT_PRESETS;
export const PRESET_NAMES = Object.keys(STUDENT_PRESETS) as PresetName[];

/** Options some preset sets: their flags carry no spec default (unset = the preset's value, else the default). */
type PresetKey = { [P in PresetName]: keyof (typeof STUDENT_PRESETS)[P] }[PresetName];
const PRESET_KEYS = new Set<string>(Object.values(STUDENT_PRESETS).flatMap((p) => Object.keys(p)));

/** The `--preset` flag, with a command's own default preset. */
export function presetOption<const D extends PresetName>(def: D) {
  const values = PRESET_NAMES.filter((n) => n !== 'none').map((n) => `${n} = ${Object.entries(STUDENT_PRESETS[n]).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  return {
    type: 'string',
    help: `named student configuration between the defaults and --config/flags (none = student:train's defaults; ${values.join('; ')})`,
    default: def,
    choices: PRESET_NAMES,
  } as const satisfies OptionSpec;
}

type WithoutDefault<S> = Omit<S, 'default'>;
type PresetSpecs<O> = { [K in keyof O]: K extends PresetKey ? WithoutDefault<O[K]> : O[K] };

/**
 * The student option spec of a command that takes --preset: the keys a preset sets lose their spec default (so
 * an option nobody gave stays undefined and the preset can fill it); their help names the default and the presets.
 */
export function presetStudentOptions(): PresetSpecs<typeof studentOptions> {
  const out: Record<string, OptionSpec> = {};
  for (const [k, spec] of Object.entries(studentOptions) as Array<[string, OptionSpec]>) {
    if (!PRESET_KEYS.has(k)) {
      out[k] = spec;
      continue;
    }
    const { default: def, ...rest } = spec;
    const byPreset = PRESET_NAMES.filter((n) => k in STUDENT_PRESETS[n]).map((n) => `--preset ${n}: ${(STUDENT_PRESETS[n] as Record<string, unknown>)[k]}`);
    out[k] = { ...rest, help: `${spec.help} (default: ${String(def)}; ${byPreset.join('; ')})` };
  }
  return out as PresetSpecs<typeof studentOptions>;
}

/**
 * The student options of a run: defaults < preset < `given` (a command's resolved --config file and flags; only
 * the student option keys are read, undefined ones skipped). Range-checked (resolveStudentOptions).
 */
export function resolveStudentPreset(preset: PresetName, given: Record<string, unknown>): StudentOptions {
  if (!Object.hasOwn(STUDENT_PRESETS, preset)) throw new RecdistillError('E_USAGE', `--preset must be one of ${PRESET_NAMES.join(', ')}; got ${JSON.stringify(preset)}.`);
  const flags: Record<string, unknown> = {};
  for (const k of Object.keys(studentOptions)) if (given[k] !== undefined) flags[k] = given[k];
  return resolveStudentOptions({ file: { ...STUDENT_PRESETS[preset] }, filePath: `--preset ${preset}`, flags });
}
