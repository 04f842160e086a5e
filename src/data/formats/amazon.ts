import { columnsBuilder } from '../columns.js';
import type { RawDataset } from '../types.js';
import { badRow, forEachLine, hashBuffers, readInput, type ItemText, type LoadContext } from './common.js';

/**
 * Amazon reviews (McAuley lab), JSON lines, plain or .gz:
 * - 2018 ("5-core" / ratings-only JSON): reviews {reviewerID, asin, unixReviewTime (s), overall};
 *   meta {asin, title, category: [..], main_cat}.
 * - 2023: reviews {user_id, parent_asin, timestamp (ms), rating}; meta {parent_asin, title,
 *   main_category, categories: [..]}. Items are parent_asin (variants of one product are one item).
 * --source is the reviews file, --items-file the meta file (optional: without it titles are the ids).
 * Times keep the file's unit (seconds for 2018, milliseconds for 2023): they only order a user's items.
 */
export type AmazonVersion = '2018' | '2023';

interface Fields {
  user: string;
  item: string;
  time: string;
  rating: string;
  metaItem: string;
}

const FIELDS: Record<AmazonVersion, Fields> = {
  '2018': { user: 'reviewerID', item: 'asin', time: 'unixReviewTime', rating: 'overall', metaItem: 'asin' },
  '2023': { user: 'user_id', item: 'parent_asin', time: 'timestamp', rating: 'rating', metaItem: 'parent_asin' },
};

function parseLine(line: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(line);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : typeof v === 'number' ? String(v) : undefined);
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string' && x.trim() !== '') : []);

/**
 * Item texts from a meta file, kept only for `wanted` items (a category's meta file lists millions of
 * products). Unknown / extra fields are ignored; a line that is not a JSON object is a bad row.
 */
function loadMeta(file: string, version: AmazonVersion, ctx: LoadContext, wanted: Set<string>): { items: Map<string, ItemText>; buf: Buffer } {
  const buf = readInput(file, `an Amazon ${version} metadata file (JSON lines, optionally .gz)`);
  const idKey = FIELDS[version].metaItem;
  const items = new Map<string, ItemText>();
  forEachLine(buf, file, 'utf8', (line, n) => {
    const o = parseLine(line);
    const id = o && str(o[idKey]);
    if (!o || !id) {
      badRow(ctx, file, n, `a JSON object with a string "${idKey}"`, line);
      return;
    }
    if (!wanted.has(id)) return;
    const title = typeof o.title === 'string' ? o.title.trim() : '';
    const main = version === '2023' ? str(o.main_category) : str(o.main_cat);
    const cats = strings(version === '2023' ? o.categories : o.category);
    const genres = [...new Set([...(main ? [main] : []), ...cats])];
    const extra: Record<string, string> = {};
    if (main) extra.main_category = main;
    items.set(id, { title: title || id, genres, extra });
  }, ctx.log);
  return { items, buf };
}

export function loadAmazon(version: AmazonVersion, source: string, itemsFile: string | undefined, ctx: LoadContext): RawDataset {
  const f = FIELDS[version];
  const buf = readInput(source, `an Amazon ${version} reviews file (JSON lines, optionally .gz)`);
  const rows = columnsBuilder();
  const expected = `a JSON object with "${f.user}" (string), "${f.item}" (string) and "${f.time}" (number)`;
  forEachLine(buf, source, 'utf8', (line, n) => {
    const o = parseLine(line);
    const user = o && str(o[f.user]);
    const item = o && str(o[f.item]);
    const time = o ? Number(o[f.time]) : NaN;
    if (!o || !user || !item || typeof o[f.time] !== 'number' || !Number.isFinite(time)) {
      badRow(ctx, source, n, expected, line);
      return;
    }
    const r = Number(o[f.rating]);
    rows.push(user, item, time, Number.isFinite(r) ? r : undefined);
  }, ctx.log);
  const columns = rows.finish();
  const meta = itemsFile ? loadMeta(itemsFile, version, ctx, new Set(columns.itemIds)) : undefined;
  return {
    interactions: [],
    columns,
    items: meta?.items ?? new Map(),
    rawHash: hashBuffers(meta ? [buf, meta.buf] : [buf]),
    files: itemsFile ? [source, itemsFile] : [source],
  };
}
