import { camelToKebab } from '../config/options.js';
import { stableStringify } from '../util/hash.js';

/** What a fingerprint stands for: the dataset's name and the preprocessing options hashed with the raw bytes. */
export interface DatasetRecord {
  name: string;
  options?: Record<string, unknown>;
}

/**
 * Why two datasets' fingerprints differ, in the user's words: "the cache was built with --max-history 20, this run
 * uses 50". The fingerprint hashes the name, the options and the raw bytes, so when name and options agree the raw
 * data changed. `built` is what the artifact recorded (older artifacts record no options: then only the name is
 * compared); `what` names the artifact ("the cache", "the model"), `nowWhat` the other side.
 */
export function datasetDifference(built: DatasetRecord, now: DatasetRecord, what: string, nowWhat = 'this run uses'): string {
  if (built.name !== now.name) return `${what} was built on dataset ${built.name}, ${nowWhat} ${now.name}`;
  if (!built.options || !now.options) return `${what} was built on other ${now.name} data or preprocessing options (it records no options to compare)`;
  const flat = (o: Record<string, unknown>) => flatten(o);
  const a = flat(built.options);
  const b = flat(now.options);
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => k !== 'onBadRow' && stableStringify(a[k]) !== stableStringify(b[k])).sort();
  if (keys.length === 0) return `${what} was built with the same ${now.name} options, so the raw data differs (files changed, or another copy)`;
  const show = (v: unknown) => (v === undefined ? 'the default' : typeof v === 'string' ? v : stableStringify(v));
  const parts = keys.map((k) => `--${camelToKebab(k)} ${show(a[k])}, ${nowWhat} ${show(b[k])}`);
  return `${what} was built with ${parts.join('; with ')}`;
}

/** {format: {users: 40}} -> {"synthetic-users"...}: nested option groups (a loader's format options) as flat keys. */
function flatten(o: Record<string, unknown>, prefix = ''): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    const key = prefix ? `${prefix}${k[0]!.toUpperCase()}${k.slice(1)}` : k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) Object.assign(out, flatten(v as Record<string, unknown>, k === 'format' ? '' : key));
    else out[key] = v;
  }
  return out;
}
