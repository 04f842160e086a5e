/**
 * The item map a served student needs to speak the dataset's language: dense id <-> raw id, title and
 * optional text. A run folder carries it as items.json (written at the end of training); runs without it
 * get it from the dataset recorded in their config.json (read once, at load).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ItemInfo, PreparedDataset } from '../../data/types.js';
import { RecdistillError } from '../../errors.js';
import { writeJsonAtomic } from '../../util/atomic.js';
import type { LogFn } from '../../util/progress.js';

export const ITEMS_FILE = 'items.json';
const FORMAT = 'recdistill-items-1';

export interface ItemMap {
  fingerprint: string;
  /** Index = dense id (0 = padding). */
  items: { id: number; rawId: string; title: string; text?: string }[];
  /** Raw id (as a string) -> dense id. */
  byRaw: Map<string, number>;
}

function textOf(it: ItemInfo): string | undefined {
  const parts = [it.genres.length ? it.genres.join(', ') : '', ...Object.values(it.extra ?? {})].filter(Boolean);
  return parts.length ? parts.join(' | ') : undefined;
}

function itemMapOf(ds: PreparedDataset): ItemMap {
  const items = ds.items.map((it) => ({ id: it.id, rawId: it.rawId, title: it.title, ...(textOf(it) ? { text: textOf(it) } : {}) }));
  return { fingerprint: ds.fingerprint, items, byRaw: new Map(items.slice(1).map((it) => [it.rawId, it.id])) };
}

export function writeItemMap(dir: string, ds: PreparedDataset): string {
  const m = itemMapOf(ds);
  const path = join(dir, ITEMS_FILE);
  writeJsonAtomic(path, { format: FORMAT, fingerprint: m.fingerprint, items: m.items.slice(1) });
  return path;
}

/** items.json, validated: dense ids 1..N in order, unique raw ids, the run's fingerprint. */
function readItemMap(dir: string, expect: { fingerprint: string; numItems: number }): ItemMap | undefined {
  const path = join(dir, ITEMS_FILE);
  if (!existsSync(path)) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new RecdistillError('E_INPUT', `${path}: not valid JSON (${(e as Error).message}).`);
  }
  const d = raw as { format?: unknown; fingerprint?: unknown; items?: unknown };
  if (d.format !== FORMAT || !Array.isArray(d.items)) throw new RecdistillError('E_INPUT', `${path}: expected {"format": "${FORMAT}", "fingerprint", "items": [...]}.`);
  if (d.fingerprint !== expect.fingerprint) throw new RecdistillError('E_MISMATCH', `${path}: fingerprint ${String(d.fingerprint).slice(0, 12)} is not the model's ${expect.fingerprint.slice(0, 12)}.`);
  if (d.items.length !== expect.numItems) throw new RecdistillError('E_MISMATCH', `${path}: ${d.items.length} items, the model has ${expect.numItems}.`);
  const items: ItemMap['items'] = [{ id: 0, rawId: '', title: '<pad>' }];
  const byRaw = new Map<string, number>();
  d.items.forEach((x, i) => {
    const it = x as { id?: unknown; rawId?: unknown; title?: unknown; text?: unknown };
    if (it.id !== i + 1 || typeof it.rawId !== 'string' || typeof it.title !== 'string' || (it.text !== undefined && typeof it.text !== 'string')) {
      throw new RecdistillError('E_INPUT', `${path}: items[${i}] must be {"id": ${i + 1}, "rawId": string, "title": string, "text"?: string}.`);
    }
    if (byRaw.has(it.rawId)) throw new RecdistillError('E_INPUT', `${path}: raw id "${it.rawId}" appears twice.`);
    byRaw.set(it.rawId, i + 1);
    items.push({ id: i + 1, rawId: it.rawId, title: it.title, ...(it.text !== undefined ? { text: it.text as string } : {}) });
  });
  return { fingerprint: expect.fingerprint, items, byRaw };
}

/** The run's item map: items.json, else the dataset its config.json names (which must still match). */
export async function loadItemMap(dir: string, expect: { fingerprint: string; numItems: number }, log?: LogFn): Promise<ItemMap> {
  const m = readItemMap(dir, expect);
  if (m) return m;
  const { runDatasetFlags } = await import('../model/run-folder.js');
  const { datasetFromFlags } = await import('../../data/options.js');
  log?.(`${join(dir, ITEMS_FILE)} not found: reading the item map from the run's dataset`);
  const ds = await datasetFromFlags(runDatasetFlags(dir));
  if (ds.fingerprint !== expect.fingerprint) throw new RecdistillError('E_MISMATCH', `${dir}: the dataset its config.json names has changed (fingerprint ${ds.fingerprint.slice(0, 12)}, the model was trained on ${expect.fingerprint.slice(0, 12)}); it has no ${ITEMS_FILE} to fall back on.`);
  return itemMapOf(ds);
}
