import type { OptionSpec } from '../../config/options.js';
import type { PreparedDataset } from '../../data/types.js';
import { RecdistillError } from '../../errors.js';
import { resolveStudentOptions, studentOptions, type StudentOptions } from './config.js';

/** The `short` preset's values (see STUDENT_PRESETS.short). */
const SHORT_PRESET = {
  maxLen: 50, batchSize: 128, lr: 0.002, dropout: 0.5, batching: 'length', stepWeight: 'token',
  loss: 'sampled', negatives: 1024, sampler: 'popularity', patience: 10, filterAlpha: 0.7,
} as const;

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
  /**
   * Short histories over a large catalogue (the Amazon 5-core sets: median 6 items, 12k items): the window the
   * papers use on these sets, larger length-sorted batches with every step weighed the same, more dropout, a
   * sampled softmax whose cost does not grow with the catalogue, and the causal frequency filter (BSARec's alpha
   * 0.7, c 5) in every block. Chosen by `--preset auto` from the data.
   */
  short: SHORT_PRESET,
} as const satisfies Record<string, Partial<StudentOptions>>;

export type PresetName = keyof typeof STUDENT_PRESETS;
const PRESET_NAMES = Object.keys(STUDENT_PRESETS) as PresetName[];
/** `--preset auto` picks one of these from the dataset (autoPreset). */
export type PresetChoice = PresetName | 'auto';
const PRESET_CHOICES: PresetChoice[] = ['auto', ...PRESET_NAMES];

/** Median user history (items) below which `--preset auto` takes `short`. */
const SHORT_MEDIAN_ITEMS = 20;

/**
 * The preset `--preset auto` stands for on a dataset: `short` when the median user history is under
 * SHORT_MEDIAN_ITEMS items (Amazon Beauty and Toys: 6), else `none` (MovieLens 100K: 64). The reason is printed.
 */
export function autoPreset(ds: Pick<PreparedDataset, 'stats' | 'name'>): { preset: PresetName; reason: string } {
  const m = ds.stats.medianSeqLen;
  return m < SHORT_MEDIAN_ITEMS
    ? { preset: 'short', reason: `${ds.name}'s median history is ${m} items (< ${SHORT_MEDIAN_ITEMS}): preset short (${describe('short')})` }
    : { preset: 'none', reason: `${ds.name}'s median history is ${m} items (>= ${SHORT_MEDIAN_ITEMS}): student:train's defaults` };
}

function describe(p: PresetName): string {
  return Object.entries(STUDENT_PRESETS[p]).map(([k, v]) => `${k} ${v}`).join(', ');
}

/** Options some preset sets: their flags carry no spec default (unset = the preset's value, else the default). */
type PresetKey = { [P in PresetName]: keyof (typeof STUDENT_PRESETS)[P] }[PresetName];
const PRESET_KEYS = new Set<string>(Object.values(STUDENT_PRESETS).flatMap((p) => Object.keys(p)));

/** The `--preset` flag, with a command's own default preset. */
export function presetOption<const D extends PresetChoice>(def: D) {
  const values = PRESET_NAMES.filter((n) => n !== 'none').map((n) => `${n} = ${describe(n)}`);
  return {
    type: 'string',
    help: `named student configuration between the defaults and --config/flags (auto = short when the dataset's median history is under ${SHORT_MEDIAN_ITEMS} items, else none; none = student:train's defaults; ${values.join('; ')})`,
    default: def,
    choices: PRESET_CHOICES,
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
 * the student option keys are read, undefined ones skipped). Range-checked (resolveStudentOptions). `auto` takes
 * the preset autoPreset picks for `ds`.
 */
export function resolveStudentPreset(choice: PresetChoice, given: Record<string, unknown>, ds?: Pick<PreparedDataset, 'stats' | 'name'>): StudentOptions {
  // auto without a dataset resolves as none: the range check a command runs before it loads the data.
  const preset: PresetName = choice === 'auto' ? (ds ? autoPreset(ds).preset : 'none') : choice;
  if (!Object.hasOwn(STUDENT_PRESETS, preset)) throw new RecdistillError('E_USAGE', `--preset must be one of ${PRESET_CHOICES.join(', ')}; got ${JSON.stringify(preset)}.`);
  const flags: Record<string, unknown> = {};
  for (const k of Object.keys(studentOptions)) if (given[k] !== undefined) flags[k] = given[k];
  return resolveStudentOptions({ file: { ...STUDENT_PRESETS[preset] }, filePath: `--preset ${preset}`, flags });
}
