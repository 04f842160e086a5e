import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { RecdistillError } from '../errors.js';
import { sha256 } from '../util/hash.js';
import { stderrLog, type LogFn } from '../util/progress.js';
import { datasetsCacheDir, ensureDownloaded, ensureExtracted, isComplete, readMarker } from './download.js';
import { defaultExtractLimits } from './zip.js';
import { GROUPLENS_BASE_URL, checkSourceFlags, datasetSpec, type DatasetSpec } from './registry.js';

/** --source values that are fetched rather than read. */
function isUrl(s: string | undefined): s is string {
  return s !== undefined && /^https?:\/\//i.test(s);
}

/** Base URL for official archives: RECDISTILL_DATASETS_URL (read at call time, so tests can point it at 127.0.0.1). */
function datasetsBaseUrl(): string {
  return (process.env.RECDISTILL_DATASETS_URL || GROUPLENS_BASE_URL).replace(/\/+$/, '');
}

/** Cache directory of a named dataset's extracted archive. */
function namedCacheDir(name: string): string {
  return join(datasetsCacheDir(), name);
}

/** Cache directory of an arbitrary URL (one per URL). */
function urlCacheDir(url: string): string {
  return join(datasetsCacheDir(), `url-${sha256(url).slice(0, 16)}`);
}

/** A local .zip given as --source (an archive downloaded by hand). */
function isLocalZip(s: string): boolean {
  return /\.zip$/i.test(s) && existsSync(s) && statSync(s).isFile();
}

/** Cache directory of a local zip, keyed by its content (so a changed archive is extracted again). */
function zipCacheDir(zipPath: string): string {
  return join(datasetsCacheDir(), `zip-${sha256(readFileSync(zipPath)).slice(0, 16)}`);
}

/** A completed download's usable path: the extracted dir, or the single file for non-zip downloads. */
function downloadedPath(dir: string): string {
  const file = readMarker(dir).file;
  return file ? join(dir, file) : dir;
}

/**
 * Synchronous source resolution for prepareDataset: a local path as given; '' = the downloaded copy
 * in the cache (or nothing, for synthetic). URLs and missing downloads need the async loadDataset.
 */
export function resolveLocalSource(spec: DatasetSpec, source: string, itemsFile?: string): string {
  checkSourceFlags(spec, source, itemsFile);
  if (isUrl(source)) {
    const dir = urlCacheDir(source);
    if (isComplete(dir)) return downloadedPath(dir);
    throw new RecdistillError('E_USAGE', `--source ${source} is a URL that is not downloaded yet: use data:prepare (or loadDataset/datasetFromFlags), which downloads it.`);
  }
  if (source && isLocalZip(source)) {
    const dir = zipCacheDir(source);
    if (isComplete(dir)) return dir;
    throw new RecdistillError('E_USAGE', `--source ${source} is a zip that is not extracted yet: use data:prepare (or loadDataset/datasetFromFlags), which extracts it.`);
  }
  if (source) return source;
  if (spec.needsSource) throw new RecdistillError('E_USAGE', `--source is required for dataset "${spec.name}": ${spec.description}.`);
  if (!spec.archive) return '';
  const dir = namedCacheDir(spec.name);
  if (isComplete(dir)) return dir;
  throw new RecdistillError(
    'E_NOT_FOUND',
    `${spec.name} is not downloaded yet (${dir}): run "npm run data:prepare -- --dataset ${spec.name}" to download it, or pass --source DIR.`,
  );
}

export interface FetchOptions {
  /** Expected sha256 of the archive or file (overrides the registry's). */
  sha256?: string;
  log?: LogFn;
}

/**
 * Make the source local: download the official archive for a known name with no --source, or the
 * URL given as --source / --items-file. Returns local paths; already-present downloads are skipped.
 */
export async function fetchSources(
  dataset: string,
  source: string,
  itemsFile: string | undefined,
  o: FetchOptions = {},
): Promise<{ source: string; itemsFile: string | undefined }> {
  const spec = datasetSpec(dataset);
  checkSourceFlags(spec, source, itemsFile);
  const log = o.log ?? stderrLog;
  let src = source;
  if (isLocalZip(source)) {
    src = (await ensureExtracted(source, zipCacheDir(source), o.sha256, log, defaultExtractLimits(spec.extractedBytes))).dir;
  } else if (isUrl(source)) {
    const r = await ensureDownloaded({ url: source, sha256: o.sha256, cachedSha256: o.sha256, dest: urlCacheDir(source), log });
    src = downloadedPath(r.dir);
  } else if (!source && spec.archive) {
    const url = `${datasetsBaseUrl()}/${spec.archive}`;
    const r = await ensureDownloaded({ url, sha256: o.sha256 || spec.sha256, md5: spec.md5, cachedSha256: o.sha256, dest: namedCacheDir(spec.name), log, limits: defaultExtractLimits(spec.extractedBytes) });
    src = r.dir;
  }
  let items = itemsFile;
  if (isUrl(itemsFile)) {
    // The --sha256 flag pins the main source; an items-file URL is trusted on first use (hash logged).
    const r = await ensureDownloaded({ url: itemsFile, dest: urlCacheDir(itemsFile), log });
    items = downloadedPath(r.dir);
  }
  return { source: src, itemsFile: items };
}
