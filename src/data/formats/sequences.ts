import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { RecdistillError } from '../../errors.js';
import { columnsBuilder } from '../columns.js';
import type { RawColumns, RawDataset } from '../types.js';
import { badRow, decodeText, findDataDir, forEachLine, hashBuffers, readInput, type ItemText, type LoadContext } from './common.js';

/**
 * Sequence files of the sequential-recommendation literature, with no timestamps: the line order is the
 * time order.
 * - sequences (S3Rec / CoSeRec / DuoRec / ICLRec / EMKD): one line per user, `user item item ...`, oldest first.
 * - pairs (SASRec's own files): one `user item` line per interaction, a user's lines in time order.
 * - an item-attributes JSON (`{"item": [attribute ids]}`, S3Rec's `*_item2attributes.json`) becomes the
 *   items' categories (`genres`, as the attribute ids). These files carry no item text, so titles are the ids.
 */

/** Ids in these files: any token without whitespace (the published files use decimal integers). */
const TOKEN = /\s+/;

/** `user item item ...` lines. Each interaction's time is its position in the file. */
export function loadSequencesFile(source: string, itemsFile: string | undefined, ctx: LoadContext): RawDataset {
  const buf = readInput(source, 'a sequences file: one line per user, "user item item ...", items oldest first');
  const rows = columnsBuilder(buf.length / 4);
  let t = 0;
  forEachLine(buf, source, 'utf8', (line, n) => {
    const f = line.trim().split(TOKEN);
    if (f.length < 2 || f[0] === '') {
      badRow(ctx, source, n, '"user item item ..." (a user id and at least one item id, separated by spaces)', line);
      return;
    }
    for (let i = 1; i < f.length; i++) rows.push(f[0]!, f[i]!, t++);
  }, ctx.log);
  return withAttributes(source, buf, rows.finish(), itemsFile);
}

/** `user item` lines (space or tab separated), grouped by user; a user's lines keep their file order. */
export function loadPairsFile(source: string, itemsFile: string | undefined, ctx: LoadContext): RawDataset {
  const buf = readInput(source, 'a pairs file: one "user item" line per interaction, in time order');
  const rows = columnsBuilder(buf.length / 8);
  let t = 0;
  forEachLine(buf, source, 'utf8', (line, n) => {
    const f = line.trim().split(TOKEN);
    if (f.length !== 2) {
      badRow(ctx, source, n, '"user item" (two ids separated by a space or tab)', line);
      return;
    }
    rows.push(f[0]!, f[1]!, t++);
  }, ctx.log);
  return withAttributes(source, buf, rows.finish(), itemsFile);
}

/**
 * A directory in S3Rec's layout for one Amazon category: `<stem>.txt` (sequences) and, when present,
 * `<stem>_item2attributes.json` beside it.
 */
export function loadS3RecDir(dir: string, stem: string, what: string, ctx: LoadContext): RawDataset {
  const root = findDataDir(dir, [`${stem}.txt`], what);
  const attrs = join(root, `${stem}_item2attributes.json`);
  return loadSequencesFile(join(root, `${stem}.txt`), existsSync(attrs) ? attrs : undefined, ctx);
}

function withAttributes(source: string, buf: Buffer, columns: RawColumns, itemsFile: string | undefined): RawDataset {
  if (!itemsFile) return { interactions: [], columns, items: new Map(), rawHash: hashBuffers([buf]), files: [source] };
  const attrBuf = readInput(itemsFile, 'an item-attributes JSON file: {"item": [attribute ids], ...}');
  const items = readAttributes(attrBuf, itemsFile, new Set(columns.itemIds));
  return { interactions: [], columns, items, rawHash: hashBuffers([buf, attrBuf]), files: [source, itemsFile] };
}

/** `{"item": [attribute ids]}` -> categories per item (ids as strings, sorted, unique); titles stay the ids. */
function readAttributes(buf: Buffer, file: string, wanted: Set<string>): Map<string, ItemText> {
  let v: unknown;
  try {
    v = JSON.parse(decodeText(buf, file, 'utf8'));
  } catch (e) {
    if (e instanceof RecdistillError) throw e;
    throw new RecdistillError('E_INPUT', `${file}: not valid JSON (${(e as Error).message}); expected {"item": [attribute ids], ...}.`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new RecdistillError('E_INPUT', `${file}: expected a JSON object {"item": [attribute ids], ...}, got ${Array.isArray(v) ? 'an array' : typeof v}.`);
  }
  const items = new Map<string, ItemText>();
  for (const [item, attrs] of Object.entries(v as Record<string, unknown>)) {
    if (!Array.isArray(attrs) || !attrs.every((a) => (typeof a === 'number' && Number.isInteger(a)) || (typeof a === 'string' && a !== ''))) {
      throw new RecdistillError('E_INPUT', `${file}: item ${JSON.stringify(item)} must map to an array of attribute ids (integers or strings), got ${JSON.stringify(attrs).slice(0, 60)}.`);
    }
    if (!wanted.has(item)) continue;
    const ids = [...new Set(attrs.map(String))].sort((a, b) => Number(a) - Number(b) || (a < b ? -1 : a > b ? 1 : 0));
    items.set(item, { title: item, genres: ids });
  }
  return items;
}

