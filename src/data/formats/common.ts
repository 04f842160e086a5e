import { isUtf8 } from 'node:buffer';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parse as parseCsv } from 'csv-parse/sync';
import { RecdistillError } from '../../errors.js';
import { sha256 } from '../../util/hash.js';
import { formatSeconds, type LogFn } from '../../util/progress.js';

export type BadRowPolicy = 'error' | 'skip';

export interface LoadContext {
  onBadRow: BadRowPolicy;
  /** Incremented for every skipped row when onBadRow = 'skip'. */
  skipped: { count: number };
  /** Progress lines for big files (MB/s, ETA). */
  log?: LogFn;
}

export type ItemText = { title: string; year?: number; genres: string[]; extra?: Record<string, string> };

/** A malformed row: fail naming file, line and what was expected, or count it and go on. */
export function badRow(ctx: LoadContext, file: string, line: number, expected: string, text: string): void {
  if (ctx.onBadRow === 'skip') {
    ctx.skipped.count++;
    return;
  }
  const shown = text.length > 80 ? text.slice(0, 80) + '...' : text;
  throw new RecdistillError(
    'E_INPUT',
    `${file} line ${line}: expected ${expected}; got ${JSON.stringify(shown)} (use --on-bad-row skip to skip such rows).`,
  );
}

/** "Toy Story (1995)" -> 1995; undefined when the title has no trailing year. */
export function yearFromTitle(title: string): number | undefined {
  const m = /\((\d{4})\)\s*$/.exec(title);
  return m ? Number(m[1]) : undefined;
}

/** Read a whole file; `.gz` is gunzipped (zlib). A missing file is its own clear error. */
export function readInput(path: string, what: string): Buffer {
  if (!existsSync(path)) throw new RecdistillError('E_NOT_FOUND', `${path} not found: expected ${what}.`);
  if (statSync(path).isDirectory()) throw new RecdistillError('E_USAGE', `${path} is a directory: expected ${what} (a file).`);
  const buf = readFileSync(path);
  // A .gz without the gzip magic was already decompressed (e.g. by an HTTP client honouring
  // Content-Encoding: gzip): read it as is.
  if (!path.endsWith('.gz') || buf[0] !== 0x1f || buf[1] !== 0x8b) return buf;
  try {
    return gunzipSync(buf);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err instanceof RangeError || err.code === 'ERR_BUFFER_TOO_LARGE') {
      throw new RecdistillError('E_INPUT', `${path}: too large to decompress in memory (${err.message}); split the file or pick a smaller category.`);
    }
    throw new RecdistillError('E_INPUT', `${path}: not a valid gzip file (${err.message}).`);
  }
}

/**
 * The directory that holds `files`: `dir` itself, or its single sub-directory that does (official
 * archives extract to e.g. ml-1m/ml-1m/...). Names the missing file otherwise.
 */
export function findDataDir(dir: string, files: string[], what: string): string {
  if (!existsSync(dir)) throw new RecdistillError('E_NOT_FOUND', `${dir} not found: expected a directory with ${what} (${files.join(', ')}).`);
  if (!statSync(dir).isDirectory()) throw new RecdistillError('E_USAGE', `${dir} is a file: expected a directory with ${files.join(', ')}.`);
  const has = (d: string) => files.every((f) => existsSync(join(d, f)));
  if (has(dir)) return dir;
  const subs = readdirSync(dir).map((n) => join(dir, n)).filter((p) => statSync(p).isDirectory() && has(p));
  if (subs.length === 1) return subs[0]!;
  const missing = files.filter((f) => !existsSync(join(dir, f)));
  throw new RecdistillError('E_NOT_FOUND', `${join(dir, missing[0]!)} not found: expected the ${what} file ${missing[0]} in ${dir}.`);
}

/** 1-based line number of byte `offset`. */
function lineAt(buf: Buffer, offset: number): number {
  let n = 1;
  for (let i = buf.indexOf(10); i !== -1 && i < offset; i = buf.indexOf(10, i + 1)) n++;
  return n;
}

/** 1-based number of the first line that is not valid UTF-8. */
function firstInvalidLine(buf: Buffer): number {
  let start = 0;
  while (start < buf.length) {
    let end = buf.indexOf(10, start);
    if (end === -1) end = buf.length;
    if (!isUtf8(buf.subarray(start, end))) return lineAt(buf, start);
    start = end + 1;
  }
  return lineAt(buf, buf.length);
}

export type Encoding = 'utf8' | 'latin1';

/**
 * Decode text strictly: UTF-8 must be valid (TextDecoder fatal); a file in another encoding gets an
 * error naming the file and the first bad line rather than silently garbled titles.
 */
export function decodeText(buf: Buffer, file: string, encoding: Encoding): string {
  if (encoding === 'latin1') return buf.toString('latin1');
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(buf);
  } catch {
    throw new RecdistillError(
      'E_ENCODING',
      `${file} line ${firstInvalidLine(buf)}: invalid UTF-8; this file must be UTF-8 (re-encode it, e.g. iconv -f latin1 -t utf-8).`,
    );
  }
}

/** UTF-8 when valid, else latin-1: for files whose official encoding varies (MovieLens .dat). */
export function decodeUtf8OrLatin1(buf: Buffer): string {
  return isUtf8(buf) ? buf.toString('utf8') : buf.toString('latin1');
}

/** Chunks of at most ~32 MB cut at line ends: files larger than V8's max string length still load. */
const CHUNK = 32 * 1024 * 1024;

function countByte(buf: Buffer, byte: number, start: number, end: number): number {
  let n = 0;
  for (let i = buf.indexOf(byte, start); i !== -1 && i < end; i = buf.indexOf(byte, i + 1)) n++;
  return n;
}

/**
 * Byte ranges of about `size` bytes, each ending just after a newline. With `quote` set, a cut is
 * only made at a newline outside quoted fields (even number of quote bytes before it), so a quoted
 * field that spans lines is never split.
 */
export function* chunkRanges(buf: Buffer, start: number, size: number, quote?: number): Generator<[number, number]> {
  let s = start;
  while (s < buf.length) {
    let e = Math.min(s + size, buf.length);
    if (e < buf.length) {
      let odd = quote !== undefined && countByte(buf, quote, s, e) % 2 === 1;
      let nl = buf.indexOf(10, e);
      while (nl !== -1 && quote !== undefined) {
        if (countByte(buf, quote, e, nl) % 2 === 1) odd = !odd;
        if (!odd) break; // this newline is outside quotes: cut here
        e = nl;
        nl = buf.indexOf(10, nl + 1);
      }
      e = nl === -1 ? buf.length : nl + 1;
    }
    yield [s, e];
    s = e;
  }
}

/** Decode buf[s, e) whose first line is `firstLine`; an encoding error names the line in the whole file. */
function decodeChunk(buf: Buffer, s: number, e: number, file: string, encoding: Encoding, firstLine: number): string {
  try {
    return decodeText(buf.subarray(s, e), file, encoding);
  } catch (err) {
    const rel = /line (\d+)/.exec((err as Error).message);
    const abs = rel ? firstLine + Number(rel[1]) - 1 : firstLine;
    throw new RecdistillError('E_ENCODING', `${file} line ${abs}: invalid UTF-8; this file must be UTF-8 (re-encode it, e.g. iconv -f latin1 -t utf-8).`);
  }
}

const bomLength = (buf: Buffer) => (buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf ? 3 : 0);

function progressLogger(file: string, total: number, log?: LogFn): (done: number, lines: number) => void {
  const t0 = performance.now();
  let last = t0;
  return (done, lines) => {
    const now = performance.now();
    if (!log || now - last < 2000 || done >= total) return;
    last = now;
    const rate = done / ((now - t0) / 1000);
    log(`reading ${file}: ${(done / 1e6).toFixed(0)}/${(total / 1e6).toFixed(0)} MB, ${lines} lines, ${(rate / 1e6).toFixed(1)} MB/s, ETA ${formatSeconds((total - done) / rate)}`);
  };
}

/**
 * Call fn(line, lineNo) for every non-empty line (lineNo 1-based, \r stripped). Decodes in chunks
 * so a 1 GB ratings file never becomes one string.
 */
export function forEachLine(
  buf: Buffer,
  file: string,
  encoding: Encoding,
  fn: (line: string, lineNo: number) => void,
  log?: LogFn,
  chunkSize = CHUNK,
): void {
  const tick = progressLogger(file, buf.length, log);
  let lineNo = 1;
  for (const [s, e] of chunkRanges(buf, bomLength(buf), chunkSize)) {
    const lines = decodeChunk(buf, s, e, file, encoding, lineNo).split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    for (const l of lines) {
      const line = l.endsWith('\r') ? l.slice(0, -1) : l;
      if (line !== '') fn(line, lineNo);
      lineNo++;
    }
    tick(e, lineNo - 1);
  }
}

export interface CsvRow {
  fields: string[];
  /** 1-based line where the record ends (= its line, unless a quoted field spans lines). */
  line: number;
}

/**
 * RFC-4180 CSV/TSV through csv-parse (quoted fields with commas, doubled quotes, newlines), in
 * chunks cut outside quoted fields. Every record must have as many fields as the first one (the
 * header); a broken record (unclosed quote, other field count) is a bad row: error or skip.
 */
export function forEachCsvRow(
  buf: Buffer,
  file: string,
  delimiter: string,
  ctx: LoadContext,
  fn: (fields: string[], line: number) => void,
  chunkSize = CHUNK,
): void {
  const quoted = delimiter !== '\t';
  const tick = progressLogger(file, buf.length, ctx.log);
  let firstLine = 1;
  let width = -1;
  for (const [s, e] of chunkRanges(buf, bomLength(buf), chunkSize, quoted ? 0x22 : undefined)) {
    const text = decodeChunk(buf, s, e, file, 'utf8', firstLine);
    let records: InfoRow[];
    try {
      const rows: unknown[] = parseCsv(text, {
        delimiter,
        info: true,
        skip_empty_lines: true,
        relax_column_count: true,
        // TSV has no quoting: a bare quote in a field ("12" Monkeys) is just a character.
        quote: quoted ? '"' : false,
        skip_records_with_error: ctx.onBadRow === 'skip',
        on_skip: () => {
          ctx.skipped.count++;
          return undefined;
        },
      });
      // csv-parse's typings do not know `info: true` (they say string[][]): checked here instead of cast.
      checkInfoRows(rows, file);
      records = rows;
    } catch (err) {
      const x = err as Error & { lines?: number };
      const line = x.lines !== undefined ? firstLine + x.lines - 1 : '?';
      throw new RecdistillError(
        'E_INPUT',
        `${file} line ${line}: expected well-formed RFC-4180 quoting (delimiter ${JSON.stringify(delimiter)}); csv-parse says: ${x.message} (use --on-bad-row skip to skip such rows).`,
      );
    }
    for (const r of records) {
      const line = firstLine + r.info.lines - 1;
      if (width === -1) width = r.record.length;
      if (r.record.length !== width) {
        badRow(ctx, file, line, `the same number of columns as the header (${width}, delimiter ${JSON.stringify(delimiter)}), got ${r.record.length}`, r.record.join(delimiter));
        continue;
      }
      fn(r.record, line);
    }
    firstLine += countByte(buf, 10, s, e);
    tick(e, firstLine - 1);
  }
}

/** All records of a (small) delimited file; see forEachCsvRow. */
export function parseDelimited(buf: Buffer, file: string, delimiter: string, ctx: LoadContext): CsvRow[] {
  const rows: CsvRow[] = [];
  forEachCsvRow(buf, file, delimiter, ctx, (fields, line) => rows.push({ fields, line }));
  return rows;
}

/** sha256 over several inputs in a fixed order (hash of the per-file hashes). */
export function hashBuffers(bufs: Uint8Array[]): string {
  return sha256(Buffer.concat(bufs.map((b) => Buffer.from(sha256(b)))));
}

/** One csv-parse record with `info: true`: the fields and where the record ends. */
interface InfoRow {
  record: string[];
  info: { lines: number };
}

function checkInfoRows(rows: unknown[], file: string): asserts rows is InfoRow[] {
  for (const r of rows) {
    const ok = typeof r === 'object' && r !== null && Array.isArray((r as { record?: unknown }).record) && typeof (r as { info?: { lines?: unknown } }).info?.lines === 'number';
    if (!ok) throw new RecdistillError('E_INTERNAL', `${file}: the CSV parser returned a record without its fields and line info (csv-parse changed?).`);
  }
}
