import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { env } from '../env.js';
import { RecdistillError } from '../errors.js';
import { writeJsonAtomic } from '../util/atomic.js';
import { sha256File } from '../util/hash.js';
import { removeStaleEntries, removeStaleTemps, writeError } from './io.js';
import { formatSeconds, type LogFn } from '../util/progress.js';
import { defaultExtractLimits, envNumber, extractZip, startsWithZipMagic, type ExtractLimits } from './zip.js';

/** Written last inside the extracted directory, before the rename: its presence means "complete". */
export const COMPLETE_MARKER = '.recdistill-complete.json';

export interface DownloadRequest {
  url: string;
  /** Expected sha256 (hex). undefined = trust on first use: the computed hash is logged and recorded. */
  sha256?: string;
  /**
   * sha256 an already-present copy must have (the user's explicit --sha256). Built-in values are not
   * re-checked on reuse, so a copy fetched with a user override keeps working without the flag.
   */
  cachedSha256?: string;
  /** Expected md5, checked only when no sha256 is known (GroupLens publishes md5 files). */
  md5?: string;
  /** Final directory; created atomically (extract to a temp dir, then rename). */
  dest: string;
  log: LogFn;
  /** Defaults to env.offline. */
  offline?: boolean;
  /** Limits on what the archive may extract to (defaults: defaultExtractLimits()). */
  limits?: Partial<ExtractLimits>;
  /** Fail after this long without a byte (default RECDISTILL_DOWNLOAD_STALL_SECONDS, else 60 s). */
  stallMs?: number;
  /** A progress (or "no data for ...") line this often (default 10 s). */
  progressMs?: number;
}

const DEFAULT_STALL_MS = 60_000;
const DEFAULT_PROGRESS_MS = 10_000;

export interface DownloadResult {
  dir: string;
  sha256: string;
  bytes: number;
  skipped: boolean;
}

/** Root of downloaded datasets: env.cacheDir/datasets. */
export function datasetsCacheDir(): string {
  return join(env.cacheDir, 'datasets');
}

export function isComplete(dir: string): boolean {
  return existsSync(join(dir, COMPLETE_MARKER));
}

/** The completion marker, checked field by field: a corrupt or edited one names the file and the field. */
export function readMarker(dir: string): { url: string; sha256: string; file?: string } {
  const path = join(dir, COMPLETE_MARKER);
  let m: unknown;
  try {
    m = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new RecdistillError('E_INPUT', `${path}: not valid JSON (${(e as Error).message}); delete ${dir} to download it again.`);
  }
  const bad = (field: string, expected: string, got: unknown): never => {
    throw new RecdistillError('E_INPUT', `${path}: field "${field}" must be ${expected}; got ${JSON.stringify(got) ?? 'nothing'}; delete ${dir} to download it again.`);
  };
  if (m === null || typeof m !== 'object' || Array.isArray(m)) return bad('(top level)', 'a JSON object', m);
  const o = m as Record<string, unknown>;
  if (typeof o.url !== 'string') bad('url', 'a string', o.url);
  if (typeof o.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(o.sha256)) bad('sha256', 'a sha256 (64 lowercase hex digits)', o.sha256);
  if (o.file !== undefined && (typeof o.file !== 'string' || !/^[^/\\]+$/.test(o.file) || o.file === '.' || o.file === '..')) {
    bad('file', 'a file name inside the directory', o.file);
  }
  return { url: o.url as string, sha256: o.sha256 as string, ...(o.file !== undefined ? { file: o.file as string } : {}) };
}

/**
 * Stream the URL into `file`, hashing as it goes. A line every `progressMs` (MB, MB/s, ETA, or how long
 * no data came); no byte for `stallMs` aborts with an error naming the URL.
 */
async function fetchTo(url: string, file: string, log: LogFn, stallMs: number, progressMs: number): Promise<{ sha256: string; md5: string; bytes: number }> {
  const abort = new AbortController();
  const hash = createHash('sha256');
  const md5 = createHash('md5');
  const start = performance.now();
  let bytes = 0;
  let total = NaN;
  let lastByte = start;
  let lastLog = start;
  let stalled = false;
  const mb = (n: number) => (n / 1e6).toFixed(1);
  const timer = setInterval(() => {
    const now = performance.now();
    if (now - lastByte >= stallMs) {
      stalled = true;
      abort.abort();
      return;
    }
    if (now - lastLog < progressMs) return;
    lastLog = now;
    const idle = now - lastByte;
    const size = `${mb(bytes)}/${Number.isFinite(total) ? mb(total) : '?'} MB`;
    if (idle >= progressMs) {
      log(`download ${url}: ${size}, no data for ${formatSeconds(idle / 1000)} (giving up after ${formatSeconds(stallMs / 1000)} without data)`);
    } else {
      const rate = bytes / ((now - start) / 1000);
      const eta = Number.isFinite(total) && rate > 0 ? formatSeconds((total - bytes) / rate) : '?';
      log(`download ${url}: ${size} ${(rate / 1e6).toFixed(2)} MB/s ETA ${eta}`);
    }
  }, Math.max(10, Math.min(progressMs, stallMs / 4)));
  const stallError = (e: unknown) =>
    new RecdistillError(
      'E_NETWORK',
      `download of ${url} stalled: no data for ${formatSeconds(stallMs / 1000)} after ${bytes} bytes; check the network and retry (RECDISTILL_DOWNLOAD_STALL_SECONDS sets the limit), or pass --source with a local copy.`,
      { cause: e },
    );
  try {
    let res: Response;
    try {
      res = await fetch(url, { redirect: 'follow', signal: abort.signal });
    } catch (e) {
      if (stalled) throw stallError(e);
      throw new RecdistillError('E_NETWORK', `download of ${url} failed: ${(e as Error).message}. Check the network, or pass --source with a local copy.`, { cause: e });
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel().catch(() => {});
      throw new RecdistillError('E_NETWORK', `download of ${url} failed: HTTP ${res.status} ${res.statusText}.`);
    }
    total = Number(res.headers.get('content-length') ?? NaN);
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        md5.update(chunk);
        bytes += chunk.length;
        lastByte = performance.now();
        cb(null, chunk);
      },
    });
    const out = createWriteStream(file);
    try {
      await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), tap, out);
    } catch (e) {
      // pipeline rejects as soon as the source fails, possibly before the file stream has even opened its file;
      // wait until it is closed so the caller's cleanup removes the file instead of racing its creation.
      if (!out.closed) await new Promise<void>((r) => out.once('close', () => r()));
      if (stalled) throw stallError(e);
      const w = writeError(e, file, `the download of ${url} needs ${Number.isFinite(total) ? `${mb(total)} MB` : 'more space'} there; free some space or point RECDISTILL_CACHE_DIR elsewhere`);
      if (w !== e) throw w;
      throw new RecdistillError('E_NETWORK', `download of ${url} broke off after ${bytes} bytes: ${(e as Error).message}.`, { cause: e });
    }
  } finally {
    clearInterval(timer);
  }
  log(`download ${url}: ${mb(bytes)} MB in ${formatSeconds((performance.now() - start) / 1000)}`);
  return { sha256: hash.digest('hex'), md5: md5.digest('hex'), bytes };
}

function checkCached(dest: string, want: string | undefined): string {
  const got = readMarker(dest).sha256;
  if (want && want.toLowerCase() !== got) {
    throw new RecdistillError('E_CHECKSUM', `the cached copy in ${dest} has sha256 ${got}, not the expected ${want.toLowerCase()}; delete ${dest} to download it again.`);
  }
  return got;
}

/** Write the completion marker into the temp dir, then rename it to `dest` (the atomic step). */
function publish(tmpDir: string, dest: string, marker: Record<string, unknown>): void {
  try {
    writeJsonAtomic(join(tmpDir, COMPLETE_MARKER), marker);
    // A dest without a marker is debris from an older tool or a hand-made dir: replace it.
    if (existsSync(dest)) rmSync(dest, { recursive: true, force: true });
  } catch (e) {
    throw writeError(e, dest);
  }
  try {
    renameSync(tmpDir, dest);
  } catch (e) {
    if (!isComplete(dest)) throw writeError(e, dest); // else another process finished first: use its copy
  }
}

/** Temp entries of any download/extraction in `parent` whose process died over a day ago. */
function sweepStaleTemps(parent: string, log: LogFn): void {
  const gone = removeStaleEntries(parent, /^\..+\.(\d+)\.[0-9a-f]{8}\.(?:download|extract)$/);
  if (gone.length) log(`removed ${gone.length} leftover temp file(s) of killed downloads in ${parent}`);
}

/** mkdir -p, a full or read-only disk named as such. */
function makeDir(path: string): void {
  try {
    mkdirSync(path, { recursive: true });
  } catch (e) {
    throw writeError(e, path, 'free some space or fix the permissions, or point RECDISTILL_CACHE_DIR elsewhere');
  }
}

/**
 * Extract a local zip (an archive the user downloaded by hand) into `dest`, atomically, once.
 * With `sha256` given, the archive must match it.
 */
export async function ensureExtracted(zipPath: string, dest: string, sha256: string | undefined, log: LogFn, limits?: Partial<ExtractLimits>): Promise<DownloadResult> {
  if (isComplete(dest)) return { dir: dest, sha256: checkCached(dest, sha256), bytes: 0, skipped: true };
  if (!existsSync(zipPath)) throw new RecdistillError('E_NOT_FOUND', `${zipPath} not found: expected a zip archive.`);
  const got = await sha256File(zipPath);
  if (sha256 && got !== sha256.toLowerCase()) {
    throw new RecdistillError('E_CHECKSUM', `sha256 mismatch for ${zipPath}: expected ${sha256.toLowerCase()}, got ${got}.`);
  }
  const parent = dirname(dest);
  makeDir(parent);
  sweepStaleTemps(parent, log);
  const tmpDir = join(parent, `.${dest.slice(parent.length + 1)}.${process.pid}.${randomBytes(4).toString('hex')}.extract`);
  try {
    makeDir(tmpDir);
    const n = await extractZip(zipPath, tmpDir, { ...defaultExtractLimits(), ...limits });
    log(`extracted ${n} files from ${zipPath} -> ${dest}`);
    publish(tmpDir, dest, { url: `file://${zipPath}`, sha256: got, bytes: statSync(zipPath).size, extractedAt: new Date().toISOString() });
    return { dir: dest, sha256: got, bytes: statSync(zipPath).size, skipped: false };
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
  }
}

/**
 * Download `url` into `dest` unless a complete copy is there. Atomic: the archive goes to a temp file,
 * is verified, extracted into a temp dir that gets the completion marker, and only then renamed to
 * `dest`. A killed or failed download leaves no `dest` (only a temp name starting with ".").
 * Non-zip files are stored as `dest/<file name>`.
 */
export async function ensureDownloaded(req: DownloadRequest): Promise<DownloadResult> {
  const { url, dest, log } = req;
  if (isComplete(dest)) {
    const sha = checkCached(dest, req.cachedSha256);
    log(`dataset already present in ${dest} (sha256 ${sha.slice(0, 12)}...); skipping download.`);
    return { dir: dest, sha256: sha, bytes: 0, skipped: true };
  }
  if (req.offline ?? env.offline) {
    throw new RecdistillError('E_NETWORK', `offline (RECDISTILL_OFFLINE=1) and ${dest} is not in the cache: download ${url} elsewhere and pass --source, or unset RECDISTILL_OFFLINE.`);
  }
  const parent = dirname(dest);
  makeDir(parent);
  const tag = `${process.pid}.${randomBytes(4).toString('hex')}`;
  const base = dest.slice(parent.length + 1);
  const tmpFile = join(parent, `.${base}.${tag}.download`);
  const tmpDir = join(parent, `.${base}.${tag}.extract`);
  removeStaleTemps(parent, base, log);
  sweepStaleTemps(parent, log);
  const stallS = envNumber('RECDISTILL_DOWNLOAD_STALL_SECONDS');
  const stallMs = req.stallMs ?? (stallS !== undefined ? stallS * 1000 : DEFAULT_STALL_MS);
  try {
    log(`downloading ${url} -> ${dest}`);
    const got = await fetchTo(url, tmpFile, log, stallMs, req.progressMs ?? DEFAULT_PROGRESS_MS);
    const want = req.sha256?.toLowerCase();
    if (want && got.sha256 !== want) {
      throw new RecdistillError('E_CHECKSUM', `sha256 mismatch for ${url}: expected ${want}, got ${got.sha256} (${got.bytes} bytes). Nothing was kept.`);
    }
    if (!want && req.md5 && got.md5 !== req.md5.toLowerCase()) {
      throw new RecdistillError('E_CHECKSUM', `md5 mismatch for ${url}: expected ${req.md5.toLowerCase()}, got ${got.md5} (${got.bytes} bytes). Nothing was kept.`);
    }
    if (!want && req.md5) log(`no known sha256 for ${url}; md5 ${got.md5} matches; its sha256 is ${got.sha256} (pass --sha256 to pin it).`);
    else if (!want) log(`warning: no known sha256 for ${url}; trusting this download (sha256 ${got.sha256}); pass --sha256 to pin it.`);
    makeDir(tmpDir);
    const last = decodeURIComponent(new URL(url).pathname.split('/').pop() ?? '');
    const fileName = /^[^/\\]+$/.test(last) && last !== '.' && last !== '..' ? last : 'download';
    const isZip = startsWithZipMagic(tmpFile);
    if (isZip) {
      const n = await extractZip(tmpFile, tmpDir, { ...defaultExtractLimits(), ...req.limits }, `${url} (the downloaded archive)`);
      log(`extracted ${n} files`);
    } else {
      try {
        renameSync(tmpFile, join(tmpDir, fileName));
      } catch (e) {
        throw writeError(e, join(tmpDir, fileName));
      }
    }
    publish(tmpDir, dest, { url, sha256: got.sha256, bytes: got.bytes, file: isZip ? undefined : fileName, downloadedAt: new Date().toISOString() });
    return { dir: dest, sha256: got.sha256, bytes: got.bytes, skipped: false };
  } finally {
    rmSync(tmpFile, { force: true });
    rmSync(tmpDir, { recursive: true, force: true });
  }
}
