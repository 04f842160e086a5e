import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import { join } from 'node:path';
import { sha256 } from '../../util/hash.js';
import { formatSeconds, type LogFn } from '../../util/progress.js';
import { gunzipSync } from 'node:zlib';
import { parse as parseCsv } from 'csv-parse/sync';
import { RecdistillError } from '../../errors.js';

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
  if (!path.endsWith('.gz')) return buf;
  try {
    return gunzipSync(buf);
  } catch (e) {
    throw new RecdistillError('E_INPUT', `${path}: not a valid gzip file (${(e as Error).message}).`);
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

/** First byte offset that is not valid UTF-8 (binary search on prefixes cut at line ends). */
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
): void {
  const t0 = performance.now();
  let lastLog = t0;
  let start = 0;
  let lineNo = 1;
  if (buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) start = 3; // UTF-8 BOM
  while (start < buf.length) {
    let end = Math.min(start + CHUNK, buf.length);
    if (end < buf.length) {
      const nl = buf.indexOf(10, end);
      end = nl === -1 ? buf.length : nl + 1;
    }
    let text: string;
    try {
      text = decodeText(buf.subarray(start, end), file, encoding);
    } catch (e) {
      // Re-number the line relative to the whole file.
      const rel = /line (\d+)/.exec((e as Error).message);
      const abs = rel ? lineNo + Number(rel[1]) - 1 : lineNo;
      throw new RecdistillError('E_ENCODING', `${file} line ${abs}: invalid UTF-8; this file must be UTF-8 (re-encode it, e.g. iconv -f latin1 -t utf-8).`);
    }
    const lines = text.split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    for (const l of lines) {
      const line = l.endsWith('\r') ? l.slice(0, -1) : l;
      if (line !== '') fn(line, lineNo);
      lineNo++;
    }
    start = end;
    const now = performance.now();
    if (log && now - lastLog > 2000 && start < buf.length) {
      lastLog = now;
      const rate = start / ((now - t0) / 1000);
      log(`reading ${file}: ${(start / 1e6).toFixed(0)}/${(buf.length / 1e6).toFixed(0)} MB, ${lineNo - 1} lines, ${(rate / 1e6).toFixed(1)} MB/s, ETA ${formatSeconds((buf.length - start) / rate)}`);
    }
  }
}

export interface CsvRow {
  fields: string[];
  /** 1-based line where the record ends (= its line, unless a quoted field spans lines). */
  line: number;
}

/**
 * RFC-4180 CSV/TSV through csv-parse (quoted fields with commas, doubled quotes, newlines).
 * A structurally broken record (unclosed quote, wrong column count) is a bad row: error or skip.
 */
export function parseDelimited(text: string, file: string, delimiter: string, ctx: LoadContext): CsvRow[] {
  const rows: CsvRow[] = [];
  try {
    const records = parseCsv(text, {
      delimiter,
      bom: true,
      info: true,
      skip_empty_lines: true,
      relax_column_count: false,
      // A bare quote inside an unquoted TSV field is common and harmless ("12" Monkeys" is not, in CSV).
      relax_quotes: delimiter === '\t',
      quote: delimiter === '\t' ? false : '"',
      skip_records_with_error: ctx.onBadRow === 'skip',
      on_skip: () => {
        ctx.skipped.count++;
        return undefined;
      },
    }) as unknown as { record: string[]; info: { lines: number; raw?: string } }[];
    for (const r of records) rows.push({ fields: r.record, line: r.info.lines });
  } catch (e) {
    const err = e as Error & { lines?: number; code?: string };
    const what = err.code === 'CSV_RECORD_INCONSISTENT_FIELDS_LENGTH' ? 'the same number of columns as the header' : 'well-formed RFC-4180 quoting';
    throw new RecdistillError(
      'E_INPUT',
      `${file} line ${err.lines ?? '?'}: expected ${what} (delimiter ${JSON.stringify(delimiter)}); csv-parse says: ${err.message} (use --on-bad-row skip to skip such rows).`,
    );
  }
  return rows;
}

/** sha256 over several inputs in a fixed order (hash of the per-file hashes). */
export function hashBuffers(bufs: Uint8Array[]): string {
  return sha256(Buffer.concat(bufs.map((b) => Buffer.from(sha256(b)))));
}
