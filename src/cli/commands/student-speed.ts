import { loadavg } from 'node:os';
import { initBackend, type BackendName } from '../../backend/index.js';
import { datasetFromFlags } from '../../data/options.js';
import { coerceOptions } from '../../config/options.js';
import { RecdistillError } from '../../errors.js';
import { studentOptions } from '../../student/training/config.js';
import { autoPreset, presetOption, presetStudentOptions, resolveStudentPreset } from '../../student/training/presets.js';
import { measureEpochSpeed, type SpeedRow, type SpeedVariant } from '../../student/training/speed.js';
import { defineCommand } from '../command.js';

/** "loss=ce,batch-size=64" -> typed student options (a key alone means true); unknown keys and bad values name the variant. */
export function parseVariant(spec: string): Record<string, unknown> {
  const raw: Record<string, string> = {};
  for (const part of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    raw[eq === -1 ? part : part.slice(0, eq)] = eq === -1 ? 'true' : part.slice(eq + 1);
  }
  return coerceOptions(studentOptions, raw, `--variants "${spec}"`);
}

export interface StudentSpeedSummary {
  dataset: string;
  backend: string;
  rows: SpeedRow[];
  loadAverage: { before: number[]; after: number[] };
}

const load = () => loadavg().map((x) => Number(x.toFixed(2)));

export default defineCommand({
  description: 'ms per training step and seconds per epoch of student:train on a real dataset, for one or more configurations timed in turns',
  options: {
    ...presetStudentOptions(),
    preset: presetOption('auto'),
    variants: { type: 'string', help: 'semicolon-separated configurations to compare, each comma-separated student:train options on top of the others, e.g. "loss=ce;loss=sampled,negatives=1024" (empty: the resolved configuration alone)', default: '' },
    steps: { type: 'int', help: 'timed optimiser steps per variant and round, on a random sample of an epoch\'s batches', default: 20 },
    warmup: { type: 'int', help: 'untimed steps before them', default: 2 },
    rounds: { type: 'int', help: 'rounds of every variant in turn (the median is reported)', default: 2 },
    validUsers: { type: 'int', help: 'users of the timed validation pass, scaled to every user (0 = no validation timing)', default: 2000 },
  },
  async run(opts, ctx) {
    for (const [k, v, min] of [['steps', opts.steps, 1], ['warmup', opts.warmup, 0], ['rounds', opts.rounds, 1], ['valid-users', opts.validUsers, 0]] as const) {
      if (!Number.isInteger(v) || v < min) throw new RecdistillError('E_USAGE', `--${k} must be an integer >= ${min}, got ${v}.`);
    }
    const specs = opts.variants.split(';').map((s) => s.trim()).filter(Boolean);
    const overrides = specs.length ? specs.map(parseVariant) : [{}];
    for (const ov of overrides) resolveStudentPreset(opts.preset, { ...opts, ...ov }); // ranges, before loading
    const backend = await initBackend(opts.backend as BackendName, { threads: opts.threads || undefined });
    const ds = await datasetFromFlags(opts);
    if (opts.preset === 'auto') ctx.log(`student:speed: --preset auto: ${autoPreset(ds).reason}`);
    const variants: SpeedVariant[] = overrides.map((ov, i) => ({ name: specs[i] ?? 'as given', options: resolveStudentPreset(opts.preset, { ...opts, ...ov }, ds) }));
    const before = load();
    ctx.log(`student:speed: ${ds.name}, ${variants.length} variant(s), ${opts.rounds} round(s) of ${opts.steps} steps; backend ${backend}; load average ${before.join(' ')}`);
    const rows = await measureEpochSpeed(ds, variants, { steps: opts.steps, warmup: opts.warmup, rounds: opts.rounds, validUsers: opts.validUsers, log: ctx.log });
    return { dataset: ds.name, backend, rows, loadAverage: { before, after: load() } } satisfies StudentSpeedSummary;
  },
  format(s: StudentSpeedSummary) {
    const head = ['variant', 'loss', 'maxLen', 'batch', 'batching', 'ms/step', 'steps/epoch', 'train s/epoch', 'valid s', 's/epoch'];
    const rows = s.rows.map((r) => [r.name, r.loss, String(r.maxLen), String(r.batchSize), r.batching, r.msPerStep.toFixed(0), String(r.stepsPerEpoch), r.trainSecondsPerEpoch.toFixed(1), r.validSecondsPerEpoch.toFixed(1), r.secondsPerEpoch.toFixed(1)]);
    const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
    return [`${s.dataset}, backend ${s.backend}; load average before ${s.loadAverage.before.join(' ')}, after ${s.loadAverage.after.join(' ')}`, line(head), ...rows.map(line)].join('\n');
  },
});
