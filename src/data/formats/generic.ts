import { RecdistillError } from '../../errors.js';
import { columnsBuilder } from '../columns.js';
import type { RawDataset } from '../types.js';
import { badRow, forEachCsvRow, hashBuffers, readInput, yearFromTitle, type ItemText, type LoadContext } from './common.js';

/**
 * Any interaction log as CSV/TSV (plain or .gz; RFC-4180 quoting; UTF-8) plus an optional items file.
 * Columns are header names, or 0-based indices (always with --header false).
 */
export interface GenericOptions {
  /** 'auto' (tab for .tsv/.tab or when the first line has a tab, else comma), ',', 'tab', ';', '|', ... */
  delimiter: string;
  /** First row names the columns. */
  header: boolean;
  userCol: string;
  itemCol: string;
  /** '' = no time column: file order is the time order. Numbers as given; otherwise ISO dates (ms). */
  timeCol: string;
  /** '' = no rating column. */
  ratingCol: string;
  itemsFile?: string;
  /** Id column in the items file ('' = same name as --item-col). */
  itemIdCol: string;
  titleCol: string;
  /** '' = none; values split on '|'. */
  genreCol: string;
  /** Comma-separated extra text columns of the items file (kept in ItemInfo.extra for prompts). */
  textCols: string;
}

export const GENERIC_DEFAULTS: Omit<GenericOptions, 'itemsFile'> = {
  delimiter: 'auto',
  header: true,
  userCol: 'user_id',
  itemCol: 'item_id',
  timeCol: 'timestamp',
  ratingCol: '',
  itemIdCol: '',
  titleCol: 'title',
  genreCol: '',
  textCols: '',
};

function resolveDelimiter(spec: string, file: string, firstLine: string): string {
  if (spec === 'auto') return /\.(tsv|tab)(\.gz)?$/i.test(file) || firstLine.includes('\t') ? '\t' : ',';
  if (spec === 'tab' || spec === '\\t') return '\t';
  if ([...spec].length !== 1) throw new RecdistillError('E_USAGE', `--delimiter must be one character, "tab" or "auto"; got ${JSON.stringify(spec)}.`);
  return spec;
}

/** Column spec -> index. Header names win; an all-digit spec is a 0-based index. */
function columnIndex(spec: string, header: string[] | undefined, file: string, flag: string): number {
  if (header) {
    const i = header.findIndex((h) => h.trim() === spec);
    if (i >= 0) return i;
  }
  if (/^\d+$/.test(spec)) return Number(spec);
  const valid = header ? ` Columns: ${header.map((h) => JSON.stringify(h)).join(', ')}.` : ' Without a header, give a 0-based column number.';
  throw new RecdistillError('E_USAGE', `${file}: ${flag} ${JSON.stringify(spec)} is not a column.${valid}`);
}

function parseTime(v: string): number {
  if (v.trim() === '') return NaN;
  const n = Number(v);
  return Number.isFinite(n) ? n : Date.parse(v);
}

/**
 * Stream the rows of a table: `setup` gets the header (undefined with --no-header) once, before the
 * first data row, and returns the per-row handler.
 */
function readTable(
  file: string,
  o: GenericOptions,
  ctx: LoadContext,
  what: string,
  setup: (header: string[] | undefined) => (fields: string[], line: number) => void,
): Buffer {
  const buf = readInput(file, what);
  const nl = buf.indexOf(10);
  const delim = resolveDelimiter(o.delimiter, file, buf.subarray(0, nl === -1 ? buf.length : nl).toString('latin1'));
  let onRow: ((fields: string[], line: number) => void) | undefined = o.header ? undefined : setup(undefined);
  forEachCsvRow(buf, file, delim, ctx, (fields, line) => {
    if (onRow) onRow(fields, line);
    else onRow = setup(fields);
  });
  return buf;
}

function loadItems(file: string, o: GenericOptions, ctx: LoadContext): { items: Map<string, ItemText>; buf: Buffer } {
  const items = new Map<string, ItemText>();
  const buf = readTable(file, o, ctx, 'an items file (CSV/TSV with id and title columns)', (header) => {
    const idIdx = columnIndex(o.itemIdCol || o.itemCol, header, file, '--item-id-col');
    const titleIdx = columnIndex(o.titleCol, header, file, '--title-col');
    const genreIdx = o.genreCol ? columnIndex(o.genreCol, header, file, '--genre-col') : -1;
    const textCols = o.textCols.split(',').map((c) => c.trim()).filter((c) => c !== '');
    const textIdx = textCols.map((c) => [c, columnIndex(c, header, file, '--text-cols')] as const);
    return (f, line) => {
      const id = f[idIdx]?.trim();
      if (!id) {
        badRow(ctx, file, line, `a non-empty item id in column ${idIdx}`, f.join(','));
        return;
      }
      const title = (f[titleIdx] ?? '').trim() || id;
      const genres = genreIdx >= 0 ? (f[genreIdx] ?? '').split('|').map((g) => g.trim()).filter((g) => g !== '') : [];
      const extra: Record<string, string> = {};
      for (const [name, i] of textIdx) if (f[i]?.trim()) extra[name] = f[i]!.trim();
      items.set(id, { title, year: yearFromTitle(title), genres, ...(textIdx.length ? { extra } : {}) });
    };
  });
  return { items, buf };
}

export function loadGeneric(source: string, o: GenericOptions, ctx: LoadContext): RawDataset {
  const out = columnsBuilder();
  const buf = readTable(source, o, ctx, 'an interactions file (CSV/TSV with user, item and time columns)', (header) => {
    const u = columnIndex(o.userCol, header, source, '--user-col');
    const it = columnIndex(o.itemCol, header, source, '--item-col');
    const t = o.timeCol ? columnIndex(o.timeCol, header, source, '--time-col') : -1;
    const r = o.ratingCol ? columnIndex(o.ratingCol, header, source, '--rating-col') : -1;
    const expected = `non-empty user (column ${u}) and item (column ${it})${t >= 0 ? `, a numeric or ISO-date time (column ${t})` : ''}${r >= 0 ? `, a numeric rating (column ${r})` : ''}`;
    return (f, line) => {
      const user = f[u]?.trim();
      const item = f[it]?.trim();
      const time = t >= 0 ? parseTime(f[t] ?? '') : out.length;
      const rating = r >= 0 ? Number(f[r]) : undefined;
      if (!user || !item || !Number.isFinite(time) || (r >= 0 && (f[r]?.trim() === '' || !Number.isFinite(rating)))) {
        badRow(ctx, source, line, expected, f.join(','));
        return;
      }
      out.push(user, item, time, rating);
    };
  });
  const meta = o.itemsFile ? loadItems(o.itemsFile, o, ctx) : undefined;
  return {
    interactions: [],
    columns: out.finish(),
    items: meta?.items ?? new Map(),
    rawHash: hashBuffers(meta ? [buf, meta.buf] : [buf]),
    files: o.itemsFile ? [source, o.itemsFile] : [source],
  };
}
