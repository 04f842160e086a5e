import { isUtf8 } from 'node:buffer';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { columnsBuilder, dropDuplicateRows, type ColumnsBuilder } from '../columns.js';
import type { RawColumns, RawDataset } from '../types.js';
import {
  badRow, decodeUtf8OrLatin1, findDataDir, forEachLine, hashBuffers, parseDelimited, readInput, yearFromTitle,
  type Encoding, type ItemText, type LoadContext,
} from './common.js';

// Re-exported for code that imported them from here before the split into common.ts.
export { badRow, yearFromTitle, type BadRowPolicy, type LoadContext } from './common.js';

const isId = (s: string | undefined): s is string => s !== undefined && s !== '';

/** MovieLens ids are plain decimal integers: "196", not "196.0", " 196", "0x10", "1e3" or "\"196\"". */
const INT_ID = /^(?:0|[1-9][0-9]{0,14})$/;
/** Unix timestamps: plain decimal integers (a leading minus allowed), within the safe-integer range. */
const INT_TIME = /^-?(?:0|[1-9][0-9]{0,15})$/;
/** Ratings: plain decimals ("4", "3.5"); Number() would also take "0x10", "1e3", " 4" and "". */
const DECIMAL = /^-?[0-9]+(?:\.[0-9]+)?$/;

const isIntId = (s: string | undefined): s is string => s !== undefined && INT_ID.test(s);
const isIntTime = (s: string | undefined): s is string => s !== undefined && INT_TIME.test(s) && Number.isSafeInteger(Number(s));

/** Parse one "user SEP item SEP rating SEP time" ratings line; a bad row is reported and skipped. */
function pushRating(out: ColumnsBuilder, f: string[], ctx: LoadContext, file: string, lineNo: number, line: string, expected: string): void {
  if (f.length !== 4 || !isId(f[0]) || !isId(f[1]) || f[2] === undefined || !DECIMAL.test(f[2]) || !isId(f[3])) {
    badRow(ctx, file, lineNo, expected, line);
    return;
  }
  const field = !isIntId(f[0]) ? 'the user id' : !isIntId(f[1]) ? 'the item id' : !isIntTime(f[3]) ? 'the timestamp' : '';
  if (field) {
    badRow(ctx, file, lineNo, `${expected}, where ${field} is a plain decimal integer (${field} here is ${JSON.stringify(field === 'the timestamp' ? f[3] : field === 'the item id' ? f[1] : f[0])})`, line);
    return;
  }
  out.push(f[0], f[1], Number(f[3]), Number(f[2]));
}

/** UTF-8 when the bytes are valid UTF-8, else latin-1 (the official encoding of ml-100k/ml-1m item files). */
const textEncoding = (buf: Buffer): Encoding => (isUtf8(buf) ? 'utf8' : 'latin1');

/**
 * Drop repeated (user, item, timestamp) rows, keeping the first: a copy-pasted block would otherwise
 * count twice in every sequence. The count goes into RawDataset.duplicateRows (logged by prepareDataset).
 */
function dedupe(rows: ColumnsBuilder): { columns: RawColumns; duplicateRows: number } {
  const { columns, dropped } = dropDuplicateRows(rows.finish());
  return { columns, duplicateRows: dropped };
}

/**
 * MovieLens 100K: u.data (user \t item \t rating \t time), u.item (| separated, 19 genre flags; latin-1
 * officially, UTF-8 when the bytes are valid UTF-8, e.g. a re-encoded copy).
 */
export function loadMl100k(source: string, ctx: LoadContext): RawDataset {
  const dir = findDataDir(source, ['u.data', 'u.item'], 'MovieLens 100K');
  const dataFile = join(dir, 'u.data');
  const itemFile = join(dir, 'u.item');
  const dataBuf = readInput(dataFile, 'the MovieLens 100K ratings file u.data');
  const itemBuf = readInput(itemFile, 'the MovieLens 100K items file u.item');
  const genreFile = join(dir, 'u.genre');
  const genreBuf = existsSync(genreFile) ? readFileSync(genreFile) : undefined;
  const rows = columnsBuilder();
  forEachLine(dataBuf, dataFile, 'utf8', (line, n) =>
    pushRating(rows, line.split('\t'), ctx, dataFile, n, line, '4 tab-separated fields: user id, item id, rating, unix timestamp'),
    ctx.log,
  );
  const genreNames = genreBuf ? genreBuf.toString(textEncoding(genreBuf)).split('\n').map((l) => l.split('|')[0]!).filter((g) => g !== '') : [];
  const items = new Map<string, ItemText>();
  // u.item is latin-1 ("Misérables" is one byte per letter), as the MovieLens README says; a copy
  // re-encoded to UTF-8 is read as UTF-8 (decoding it as latin-1 would turn "é" into "Ã©").
  forEachLine(itemBuf, itemFile, textEncoding(itemBuf), (line, n) => {
    const f = line.split('|');
    if (f.length < 5 || !isIntId(f[0])) {
      badRow(ctx, itemFile, n, '"|"-separated fields: id|title|release date|video date|url|genre flags', line);
      return;
    }
    const title = f[1]!.trim();
    const genres = f.slice(5).flatMap((v, g) => (v === '1' ? [genreNames[g] ?? `genre${g}`] : []));
    items.set(f[0], { title, year: yearFromTitle(title), genres });
  });
  return { interactions: [], ...dedupe(rows), items, rawHash: hashBuffers([dataBuf, itemBuf]), files: [dataFile, itemFile] };
}

/** "Genre|Genre" -> list; "(no genres listed)" -> []. */
function splitGenres(s: string | undefined): string[] {
  if (!s || s === '(no genres listed)') return [];
  return s.split('|').filter((g) => g !== '');
}

/**
 * MovieLens 1M / 10M: ratings.dat (UserID::MovieID::Rating::Timestamp) and movies.dat
 * (MovieID::Title (Year)::Genre|Genre). ml-1m's movies.dat is latin-1 and ml-10m's is UTF-8: it is
 * decoded as UTF-8 when valid, else latin-1.
 */
export function loadMlDat(source: string, ctx: LoadContext, what = 'MovieLens 1M/10M'): RawDataset {
  const dir = findDataDir(source, ['ratings.dat', 'movies.dat'], what);
  const ratingsFile = join(dir, 'ratings.dat');
  const moviesFile = join(dir, 'movies.dat');
  const rBuf = readInput(ratingsFile, `the ${what} ratings file ratings.dat`);
  const mBuf = readInput(moviesFile, `the ${what} movies file movies.dat`);
  const rows = columnsBuilder();
  forEachLine(rBuf, ratingsFile, 'utf8', (line, n) =>
    pushRating(rows, line.split('::'), ctx, ratingsFile, n, line, '4 "::"-separated fields: UserID::MovieID::Rating::Timestamp'),
    ctx.log,
  );
  const items = new Map<string, ItemText>();
  const lines = decodeUtf8OrLatin1(mBuf).split('\n');
  lines.forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (line === '') return;
    const f = line.split('::');
    if (f.length !== 3 || !isIntId(f[0]) || !f[1]) {
      badRow(ctx, moviesFile, i + 1, '3 "::"-separated fields: MovieID::Title (Year)::Genre|Genre', line);
      return;
    }
    const title = f[1].trim();
    items.set(f[0], { title, year: yearFromTitle(title), genres: splitGenres(f[2]) });
  });
  return { interactions: [], ...dedupe(rows), items, rawHash: hashBuffers([rBuf, mBuf]), files: [ratingsFile, moviesFile] };
}

function expectHeader(header: string[] | undefined, want: string[], file: string, ctx: LoadContext): void {
  const got = (header ?? []).map((h) => h.trim());
  if (want.some((w, i) => got[i] !== w)) badRow({ ...ctx, onBadRow: 'error' }, file, 1, `the header ${want.join(',')}`, got.join(','));
}

/**
 * MovieLens 20M / 25M / 32M / latest / latest-small: ratings.csv (userId,movieId,rating,timestamp) and
 * movies.csv (movieId,title,genres; RFC-4180 quoting, titles contain commas and quotes). UTF-8.
 */
export function loadMlCsv(source: string, ctx: LoadContext, what = 'MovieLens 20M+/latest'): RawDataset {
  const dir = findDataDir(source, ['ratings.csv', 'movies.csv'], what);
  const ratingsFile = join(dir, 'ratings.csv');
  const moviesFile = join(dir, 'movies.csv');
  const rBuf = readInput(ratingsFile, `the ${what} ratings file ratings.csv`);
  const mBuf = readInput(moviesFile, `the ${what} movies file movies.csv`);
  const ratings = columnsBuilder();
  // ratings.csv holds only numbers (no quoting): a plain split is exact and ~10x faster than a CSV parser
  // on 32M rows; any quote or extra field makes the row fail the numeric checks and be reported.
  forEachLine(rBuf, ratingsFile, 'utf8', (line, n) => {
    if (n === 1) return expectHeader(line.split(','), ['userId', 'movieId', 'rating', 'timestamp'], ratingsFile, ctx);
    pushRating(ratings, line.split(','), ctx, ratingsFile, n, line, '4 comma-separated fields: userId,movieId,rating,timestamp');
  }, ctx.log);
  const rows = parseDelimited(mBuf, moviesFile, ',', ctx);
  expectHeader(rows[0]?.fields, ['movieId', 'title', 'genres'], moviesFile, ctx);
  const items = new Map<string, ItemText>();
  for (const { fields: f, line } of rows.slice(1)) {
    if (!isIntId(f[0]) || !f[1]) {
      badRow(ctx, moviesFile, line, 'movieId,title,genres with an integer id and a non-empty title', f.join(','));
      continue;
    }
    const title = f[1].trim();
    items.set(f[0], { title, year: yearFromTitle(title), genres: splitGenres(f[2]) });
  }
  return { interactions: [], ...dedupe(ratings), items, rawHash: hashBuffers([rBuf, mBuf]), files: [ratingsFile, moviesFile] };
}
