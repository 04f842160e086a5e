import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createWriteStream, existsSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, normalize, isAbsolute, sep } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import yauzl from 'yauzl';
import { env } from '../env.js';
import { RecdistillError } from '../errors.js';
import { writeJsonAtomic } from '../util/atomic.js';
import { sha256File } from '../util/hash.js';
import { formatSeconds, type LogFn } from '../util/progress.js';

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
}

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

export function readMarker(dir: string): { url: string; sha256: string; file?: string } {
  return JSON.parse(readFileSync(join(dir, COMPLETE_MARKER), 'utf8')) as { url: string; sha256: string; file?: string };
}

/** Stream the URL into `file`, hashing as it goes; progress (MB/s, ETA) every 2 s. */
async function fetchTo(url: string, file: string, log: LogFn): Promise<{ sha256: string; md5: string; bytes: number }> {
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow' });
  } catch (e) {
    throw new RecdistillError('E_NETWORK', `download of ${url} failed: ${(e as Error).message}. Check the network, or pass --source with a local copy.`, { cause: e });
  }
  if (!res.ok || !res.body) throw new RecdistillError('E_NETWORK', `download of ${url} failed: HTTP ${res.status} ${res.statusText}.`);
  const total = Number(res.headers.get('content-length') ?? NaN);
  const hash = createHash('sha256');
  const md5 = createHash('md5');
  const start = performance.now();
  let bytes = 0;
  let last = start;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      md5.update(chunk);
      bytes += chunk.length;
      const now = performance.now();
      if (now - last > 2000) {
        last = now;
        const rate = bytes / ((now - start) / 1000);
        const eta = Number.isFinite(total) ? formatSeconds((total - bytes) / rate) : '?';
        log(`download ${url}: ${(bytes / 1e6).toFixed(1)}/${Number.isFinite(total) ? (total / 1e6).toFixed(1) : '?'} MB ${(rate / 1e6).toFixed(2)} MB/s ETA ${eta}`);
      }
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
    throw new RecdistillError('E_NETWORK', `download of ${url} broke off after ${bytes} bytes: ${(e as Error).message}.`, { cause: e });
  }
  log(`download ${url}: ${(bytes / 1e6).toFixed(1)} MB in ${formatSeconds((performance.now() - start) / 1000)}`);
  return { sha256: hash.digest('hex'), md5: md5.digest('hex'), bytes };
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

/** Extract every entry under `dir`, refusing paths that would escape it (zip-slip). */
export async function extractZip(file: string, dir: string): Promise<number> {
  let zf: yauzl.ZipFile;
  try {
    zf = await openZip(file);
  } catch (e) {
    throw new RecdistillError('E_INPUT', `${file} is not a readable zip archive: ${(e as Error).message}.`, { cause: e });
  }
  let count = 0;
  await new Promise<void>((resolve, reject) => {
    zf.on('error', reject);
    zf.on('end', () => resolve());
    zf.on('entry', (entry: yauzl.Entry) => {
      const rel = normalize(entry.fileName);
      if (isAbsolute(rel) || rel.split(sep).includes('..')) {
        zf.close();
        reject(new RecdistillError('E_INPUT', `${file}: entry ${JSON.stringify(entry.fileName)} would extract outside the target directory.`));
        return;
      }
      const out = join(dir, rel);
      if (entry.fileName.endsWith('/')) {
        mkdirSync(out, { recursive: true });
        zf.readEntry();
        return;
      }
      mkdirSync(dirname(out), { recursive: true });
      zf.openReadStream(entry, (err, stream) => {
        if (err || !stream) return reject(err);
        pipeline(stream, createWriteStream(out)).then(() => {
          count++;
          zf.readEntry();
        }, reject);
      });
    });
    zf.readEntry();
  });
  return count;
}

/** The cached copy's sha256; an explicitly expected one that differs is an error (not a silent reuse). */
function checkCached(dest: string, want: string | undefined): string {
  const got = readMarker(dest).sha256;
  if (want && want.toLowerCase() !== got) {
    throw new RecdistillError('E_CHECKSUM', `the cached copy in ${dest} has sha256 ${got}, not the expected ${want.toLowerCase()}; delete ${dest} to download it again.`);
  }
  return got;
}

/** Write the completion marker into the temp dir, then rename it to `dest` (the atomic step). */
function publish(tmpDir: string, dest: string, marker: Record<string, unknown>): void {
  writeJsonAtomic(join(tmpDir, COMPLETE_MARKER), marker);
  // A dest without a marker is debris from an older tool or a hand-made dir: replace it.
  if (existsSync(dest)) rmSync(dest, { recursive: true, force: true });
  try {
    renameSync(tmpDir, dest);
  } catch (e) {
    if (!isComplete(dest)) throw e; // another process finished first: use its copy
  }
}

/**
 * Extract a local zip (an archive the user downloaded by hand) into `dest`, atomically, once.
 * With `sha256` given, the archive must match it.
 */
export async function ensureExtracted(zipPath: string, dest: string, sha256: string | undefined, log: LogFn): Promise<DownloadResult> {
  if (isComplete(dest)) return { dir: dest, sha256: checkCached(dest, sha256), bytes: 0, skipped: true };
  if (!existsSync(zipPath)) throw new RecdistillError('E_NOT_FOUND', `${zipPath} not found: expected a zip archive.`);
  const got = await sha256File(zipPath);
  if (sha256 && got !== sha256.toLowerCase()) {
    throw new RecdistillError('E_CHECKSUM', `sha256 mismatch for ${zipPath}: expected ${sha256.toLowerCase()}, got ${got}.`);
  }
  const parent = dirname(dest);
  mkdirSync(parent, { recursive: true });
  const tmpDir = join(parent, `.${dest.slice(parent.length + 1)}.${process.pid}.${randomBytes(4).toString('hex')}.extract`);
  try {
    mkdirSync(tmpDir);
    const n = await extractZip(zipPath, tmpDir);
    log(`extracted ${n} files from ${zipPath} -> ${dest}`);
    publish(tmpDir, dest, { url: `file://${zipPath}`, sha256: got, bytes: statSync(zipPath).size, extractedAt: new Date().toISOString() });
    return { dir: dest, sha256: got, bytes: statSync(zipPath).size, skipped: false };
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
  }
}

/** Is process `pid` alive? (signal 0 checks without signalling.) */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Remove temp files/dirs of `base` left by killed downloads (their process is gone). */
export function removeStaleTemps(parent: string, base: string, log: LogFn): number {
  if (!existsSync(parent)) return 0;
  const re = new RegExp(`^\\.${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(\\d+)\\.[0-9a-f]+\\.(download|extract)$`);
  let n = 0;
  for (const name of readdirSync(parent)) {
    const m = re.exec(name);
    if (!m || alive(Number(m[1]))) continue;
    rmSync(join(parent, name), { recursive: true, force: true });
    n++;
  }
  if (n) log(`removed ${n} leftover temp file(s) of an interrupted ${base} download`);
  return n;
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
  mkdirSync(parent, { recursive: true });
  const tag = `${process.pid}.${randomBytes(4).toString('hex')}`;
  const base = dest.slice(parent.length + 1);
  const tmpFile = join(parent, `.${base}.${tag}.download`);
  const tmpDir = join(parent, `.${base}.${tag}.extract`);
  removeStaleTemps(parent, base, log);
  try {
    log(`downloading ${url} -> ${dest}`);
    const got = await fetchTo(url, tmpFile, log);
    const want = req.sha256?.toLowerCase();
    if (want && got.sha256 !== want) {
      throw new RecdistillError('E_CHECKSUM', `sha256 mismatch for ${url}: expected ${want}, got ${got.sha256} (${got.bytes} bytes). Nothing was kept.`);
    }
    if (!want && req.md5 && got.md5 !== req.md5.toLowerCase()) {
      throw new RecdistillError('E_CHECKSUM', `md5 mismatch for ${url}: expected ${req.md5.toLowerCase()}, got ${got.md5} (${got.bytes} bytes). Nothing was kept.`);
    }
    if (!want && req.md5) log(`no known sha256 for ${url}; md5 ${got.md5} matches; its sha256 is ${got.sha256} (pass --sha256 to pin it).`);
    else if (!want) log(`warning: no known sha256 for ${url}; trusting this download (sha256 ${got.sha256}); pass --sha256 to pin it.`);
    mkdirSync(tmpDir, { recursive: true });
    const last = decodeURIComponent(new URL(url).pathname.split('/').pop() ?? '');
    const fileName = /^[^/\\]+$/.test(last) && last !== '.' && last !== '..' ? last : 'download';
    const isZip = startsWithZipMagic(tmpFile);
    if (isZip) {
      const n = await extractZip(tmpFile, tmpDir);
      log(`extracted ${n} files`);
    } else {
      renameSync(tmpFile, join(tmpDir, fileName));
    }
    publish(tmpDir, dest, { url, sha256: got.sha256, bytes: got.bytes, file: isZip ? undefined : fileName, downloadedAt: new Date().toISOString() });
    return { dir: dest, sha256: got.sha256, bytes: got.bytes, skipped: false };
  } finally {
    rmSync(tmpFile, { force: true });
    rmSync(tmpDir, { recursive: true, force: true });
  }
}
