import { closeSync, createWriteStream, mkdirSync, openSync, readSync } from 'node:fs';
import { dirname, join, normalize, isAbsolute, sep } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import yauzl from 'yauzl';
import { RecdistillError } from '../errors.js';
import { writeError } from './io.js';

/**
 * Zip archives of downloaded datasets: extraction bounded against zip bombs (sizes and ratios from the central
 * directory, checked again on the bytes inflated), entries confined to the target folder.
 */
/**
 * Bounds on an archive's extracted content, checked from the central directory before anything is
 * extracted and again on the bytes actually inflated (a header can lie): a small zip that inflates to
 * gigabytes (a zip bomb) is refused and nothing is kept.
 */
export interface ExtractLimits {
  /** Total uncompressed bytes of all entries. */
  maxTotalBytes: number;
  /** Uncompressed / compressed size of one entry (entries under 1 MiB are exempt). */
  maxRatio: number;
  /** Number of entries. */
  maxEntries: number;
}

/** Largest extracted size of a known archive (ml-latest, which grows): the default bound is 4x this. */
const LARGEST_KNOWN_EXTRACTED_BYTES = 1.6e9;
/** Deflate's best case is ~1030:1; real data files (CSV, JSON) compress 3-20:1. */
const DEFAULT_MAX_RATIO = 100;
const DEFAULT_MAX_ENTRIES = 100_000;
const RATIO_EXEMPT_BYTES = 1 << 20;

export const envNumber = (name: string): number | undefined => {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new RecdistillError('E_USAGE', `${name}=${JSON.stringify(v)}: expected a positive number.`);
  return n;
};

/**
 * Extraction limits: 4x the archive's known extracted size (`knownBytes`, from the registry) or 4x the
 * largest known archive's; RECDISTILL_MAX_EXTRACT_MB and RECDISTILL_MAX_ZIP_RATIO override (read at call time).
 */
export function defaultExtractLimits(knownBytes?: number): ExtractLimits {
  const mb = envNumber('RECDISTILL_MAX_EXTRACT_MB');
  const ratio = envNumber('RECDISTILL_MAX_ZIP_RATIO');
  return {
    maxTotalBytes: mb !== undefined ? mb * 1e6 : 4 * (knownBytes ?? LARGEST_KNOWN_EXTRACTED_BYTES),
    maxRatio: ratio ?? DEFAULT_MAX_RATIO,
    maxEntries: DEFAULT_MAX_ENTRIES,
  };
}

/** "PK\x03\x04": a zip archive (decided by content, not by the URL's name). */
export function startsWithZipMagic(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    return readSync(fd, b, 0, 4, 0) === 4 && b.equals(Buffer.from([0x50, 0x4b, 0x03, 0x04]));
  } finally {
    closeSync(fd);
  }
}

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => yauzl.open(file, { lazyEntries: true }, (err, zf) => (err || !zf ? reject(err) : resolve(zf))));
}

const fmtMB = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/** Central-directory sizes of every entry, without extracting anything. */
async function listEntries(file: string): Promise<{ name: string; compressed: number; uncompressed: number }[]> {
  const zf = await openZip(file);
  const out: { name: string; compressed: number; uncompressed: number }[] = [];
  await new Promise<void>((resolve, reject) => {
    zf.on('error', reject);
    zf.on('end', () => resolve());
    zf.on('entry', (e: yauzl.Entry) => {
      out.push({ name: e.fileName, compressed: e.compressedSize, uncompressed: e.uncompressedSize });
      if (out.length > DEFAULT_MAX_ENTRIES * 10) {
        zf.close();
        resolve();
        return;
      }
      zf.readEntry();
    });
    zf.readEntry();
  }).finally(() => zf.close());
  return out;
}

/** Refuse an archive whose central directory already exceeds the limits (nothing extracted yet). */
function checkDeclaredSizes(file: string, entries: { name: string; compressed: number; uncompressed: number }[], limits: ExtractLimits): void {
  const how = 'RECDISTILL_MAX_EXTRACT_MB / RECDISTILL_MAX_ZIP_RATIO raise the limits for an archive you trust';
  if (entries.length > limits.maxEntries) {
    throw new RecdistillError('E_INPUT', `${file}: ${entries.length} entries, over the limit of ${limits.maxEntries}; refusing to extract it.`);
  }
  let total = 0;
  for (const e of entries) {
    total += e.uncompressed;
    const ratio = e.uncompressed / Math.max(1, e.compressed);
    if (e.uncompressed >= RATIO_EXEMPT_BYTES && ratio > limits.maxRatio) {
      throw new RecdistillError(
        'E_INPUT',
        `${file}: entry ${JSON.stringify(e.name)} inflates ${fmtMB(e.compressed)} to ${fmtMB(e.uncompressed)} (ratio ${Math.round(ratio)}:1, limit ${limits.maxRatio}:1); this looks like a zip bomb, refusing to extract it (${how}).`,
      );
    }
  }
  if (total > limits.maxTotalBytes) {
    throw new RecdistillError(
      'E_INPUT',
      `${file}: extracts to ${fmtMB(total)}, over the limit of ${fmtMB(limits.maxTotalBytes)} for this dataset; refusing to extract it (${how}).`,
    );
  }
}

/**
 * Extract every entry under `dir`, refusing paths that would escape it (zip-slip) and archives over
 * `limits` (declared sizes checked first; inflated bytes counted while streaming, so a lying header is
 * caught too). On error the partial output stays in `dir` for the caller to remove (a temp dir).
 */
export async function extractZip(path: string, dir: string, limits: ExtractLimits = defaultExtractLimits(), label = path): Promise<number> {
  // `file` names the archive in messages (the URL for a download: its temp file is gone by then).
  const file = label;
  let zf: yauzl.ZipFile;
  try {
    checkDeclaredSizes(file, await listEntries(path), limits);
    zf = await openZip(path);
  } catch (e) {
    if (e instanceof RecdistillError) throw e;
    throw new RecdistillError('E_INPUT', `${file} is not a readable zip archive: ${(e as Error).message}.`, { cause: e });
  }
  let count = 0;
  let total = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      zf.on('error', (e: Error) => reject(new RecdistillError('E_INPUT', `${file}: broken zip archive: ${e.message}.`, { cause: e })));
      zf.on('end', () => resolve());
      zf.on('entry', (entry: yauzl.Entry) => {
        const rel = normalize(entry.fileName);
        if (isAbsolute(rel) || rel.split(sep).includes('..')) {
          reject(new RecdistillError('E_INPUT', `${file}: entry ${JSON.stringify(entry.fileName)} would extract outside the target directory.`));
          return;
        }
        const out = join(dir, rel);
        try {
          if (entry.fileName.endsWith('/')) {
            mkdirSync(out, { recursive: true });
            zf.readEntry();
            return;
          }
          mkdirSync(dirname(out), { recursive: true });
        } catch (e) {
          reject(writeError(e, out));
          return;
        }
        zf.openReadStream(entry, (err, stream) => {
          if (err || !stream) {
            reject(new RecdistillError('E_INPUT', `${file}: entry ${JSON.stringify(entry.fileName)} cannot be read: ${err?.message ?? 'no data'}.`, { cause: err }));
            return;
          }
          let entryBytes = 0;
          const guard = new Transform({
            transform(chunk: Buffer, _enc, cb) {
              entryBytes += chunk.length;
              total += chunk.length;
              if (entryBytes > entry.uncompressedSize) {
                cb(new RecdistillError('E_INPUT', `${file}: entry ${JSON.stringify(entry.fileName)} inflates past the ${entry.uncompressedSize} bytes its header declares; the archive is corrupt or hostile, refusing it.`));
              } else if (total > limits.maxTotalBytes) {
                cb(new RecdistillError('E_INPUT', `${file}: extracted data passed the limit of ${fmtMB(limits.maxTotalBytes)}; refusing the archive (RECDISTILL_MAX_EXTRACT_MB raises the limit).`));
              } else cb(null, chunk);
            },
          });
          const sink = createWriteStream(out);
          pipeline(stream, guard, sink).then(
            () => {
              count++;
              zf.readEntry();
            },
            async (e: unknown) => {
              if (!sink.closed) await new Promise<void>((r) => sink.once('close', () => r()));
              if (e instanceof RecdistillError) return reject(e);
              if (/too many bytes in the stream/.test((e as Error).message)) {
                // yauzl's own size check: the entry inflates past what the central directory declares.
                return reject(new RecdistillError('E_INPUT', `${file}: entry ${JSON.stringify(entry.fileName)} inflates past the ${entry.uncompressedSize} bytes its header declares; the archive is corrupt or hostile, refusing it.`, { cause: e }));
              }
              const w = writeError(e, out);
              reject(w !== e ? w : new RecdistillError('E_INPUT', `${file}: entry ${JSON.stringify(entry.fileName)}: ${(e as Error).message}.`, { cause: e }));
            },
          );
        });
      });
      zf.readEntry();
    });
  } finally {
    zf.close();
  }
  return count;
}

/** The cached copy's sha256; an explicitly expected one that differs is an error (not a silent reuse). */
