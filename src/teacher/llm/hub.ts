/**
 * Hugging Face Hub access through `@huggingface/hub`: revision -> commit sha (modelInfo), file sizes
 * (pathsInfo), downloads into the standard hub cache (downloadFileToCacheDir:
 * `<cache>/models--org--name/{blobs,snapshots/<commit>,refs}`), the one Python's huggingface_hub and
 * transformers share. Adds what the library leaves to callers: the token from the environment, the
 * endpoint from HF_ENDPOINT, refs/<revision> for offline use, progress for big files, and errors that
 * say what to do.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { downloadFileToCacheDir, getHFHubCachePath, getRepoFolderName, HUB_URL, HubApiError, modelInfo, pathsInfo, REGEX_COMMIT_HASH } from '@huggingface/hub';
import { RecdistillError } from '../../errors.js';
import { formatSeconds, stderrLog, type LogFn } from '../../util/progress.js';

export interface HubOptions {
  /** Branch, tag or commit sha (default `main`). */
  revision?: string;
  /** Hub endpoint (default $HF_ENDPOINT, else https://huggingface.co). */
  hubUrl?: string;
  /** Access token (default $HF_TOKEN, else $HUGGING_FACE_HUB_TOKEN). */
  token?: string;
  /** Hub cache root (default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub). */
  cacheDir?: string;
  /** Files at least this big get progress lines (default 20 MB). */
  progressBytes?: number;
  /** Milliseconds between progress lines (default 3000). */
  progressIntervalMs?: number;
}

const DEFAULT_REVISION = 'main';
const PROGRESS_BYTES = 20e6;
const PROGRESS_INTERVAL_MS = 3000;

/** The standard hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (read per call). */
export function hfHubCacheDir(): string {
  return getHFHubCachePath();
}

export function hubEndpoint(o: HubOptions = {}): string {
  return (o.hubUrl ?? process.env.HF_ENDPOINT ?? HUB_URL).replace(/\/+$/, '');
}

function hubToken(o: HubOptions = {}): string | undefined {
  const token = o.token ?? (process.env.HF_TOKEN || process.env.HUGGING_FACE_HUB_TOKEN || undefined);
  if (token !== undefined && !token.startsWith('hf_')) {
    throw new RecdistillError('E_USAGE', 'HF_TOKEN (or HUGGING_FACE_HUB_TOKEN) does not look like a Hugging Face token (they start with "hf_"; create one at https://huggingface.co/settings/tokens).');
  }
  return token;
}

export function revisionOf(o: HubOptions): string {
  const rev = o.revision || DEFAULT_REVISION;
  if (rev.startsWith('/') || rev.includes('\\') || rev.split('/').includes('..')) throw new RecdistillError('E_USAGE', `--revision "${rev}" is not a branch, tag or commit name.`);
  return rev;
}

/** `<cache>/models--org--name`. */
export function repoCacheDir(id: string, cacheDir = hfHubCacheDir()): string {
  return join(cacheDir, getRepoFolderName({ type: 'model', name: id }));
}

export function snapshotDir(id: string, commit: string, cacheDir = hfHubCacheDir()): string {
  return join(repoCacheDir(id, cacheDir), 'snapshots', commit);
}

/** The commit a revision points to in the cache: a sha is itself, a branch or tag is read from refs/<revision>. */
export function cachedCommit(id: string, revision: string, cacheDir = hfHubCacheDir()): string | undefined {
  if (REGEX_COMMIT_HASH.test(revision)) return revision;
  const ref = join(repoCacheDir(id, cacheDir), 'refs', revision);
  if (!existsSync(ref)) return undefined;
  const sha = readFileSync(ref, 'utf8').trim();
  return REGEX_COMMIT_HASH.test(sha) ? sha : undefined;
}

/** fetch() rejects with a TypeError ("fetch failed") when the host cannot be reached. */
export function isUnreachable(e: unknown): boolean {
  return e instanceof TypeError && !(e instanceof HubApiError) && /fetch failed|network|ECONN|ENOTFOUND|EAI_AGAIN|ETIMEDOUT/i.test(`${e.message} ${(e.cause as Error | undefined)?.message ?? ''} ${(e.cause as { code?: string } | undefined)?.code ?? ''}`);
}

/** A library / fetch error as a RecdistillError that says what to do. */
function hubError(e: unknown, id: string, revision: string, what: string, o: HubOptions = {}): RecdistillError {
  if (e instanceof RecdistillError) return e;
  const host = hubEndpoint(o);
  if (e instanceof HubApiError) {
    const detail = `${e.message.split('. URL:')[0]}`;
    if (e.statusCode === 401 || e.statusCode === 403) {
      const had = hubToken(o) !== undefined;
      return new RecdistillError(
        'E_AUTH',
        `${host} refused ${what} of ${id} (HTTP ${e.statusCode}): the repo is private, gated or does not exist, and ${had ? 'the token given (HF_TOKEN) has no access to it' : 'no token was sent'}. ` +
          `If it exists it needs a token: set HF_TOKEN to a read token from https://huggingface.co/settings/tokens (gated repos: accept their terms on the model page first).`,
        { cause: e },
      );
    }
    if (e.statusCode === 404) {
      return new RecdistillError('E_NOT_FOUND', `${host} has no model ${id} at revision ${revision} (HTTP 404: ${detail}). Check the id and --revision (a branch, tag or commit sha).`, { cause: e });
    }
    return new RecdistillError('E_NETWORK', `${what} of ${id}@${revision} from ${host} failed: HTTP ${e.statusCode} ${detail}`, { cause: e });
  }
  if (isUnreachable(e)) {
    const why = (e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message;
    return new RecdistillError('E_NETWORK', `cannot reach ${host} for ${what} of ${id} (${why}). Run once with network (the files are then cached in ${hfHubCacheDir()}), or pass a local model folder with --model.`, { cause: e });
  }
  return new RecdistillError('E_NETWORK', `${what} of ${id}@${revision} from ${host} failed: ${(e as Error).message}`, { cause: e });
}

export interface ResolvedRevision {
  commit: string;
  /** Every file of the repo at that commit (undefined when resolved from the cache). */
  files?: string[];
}

/**
 * Revision -> commit sha through the hub's model info (GET /api/models/<id>/revision/<rev>), recorded in
 * refs/<revision> so offline runs resolve it the same way.
 */
export async function resolveRevision(id: string, o: HubOptions = {}): Promise<ResolvedRevision> {
  const revision = revisionOf(o);
  const cacheDir = o.cacheDir ?? hfHubCacheDir();
  let info: { sha: string; filePaths: string[] };
  try {
    info = await modelInfo({ name: id, revision, hubUrl: hubEndpoint(o), accessToken: hubToken(o), additionalFields: ['sha', 'filePaths'] });
  } catch (e) {
    throw hubError(e, id, revision, 'model info', o);
  }
  if (typeof info.sha !== 'string' || !REGEX_COMMIT_HASH.test(info.sha)) {
    throw new RecdistillError('E_NETWORK', `${hubEndpoint(o)} answered the model info of ${id}@${revision} without a commit sha.`);
  }
  if (revision !== info.sha) {
    const ref = join(repoCacheDir(id, cacheDir), 'refs', revision);
    mkdirSync(dirname(ref), { recursive: true });
    writeFileSync(ref, info.sha);
  }
  return { commit: info.sha, files: info.filePaths };
}

/**
 * Download files of one commit into the hub cache (files already in snapshots/<commit> are not fetched).
 * Returns their snapshot paths (symlinks into blobs/, as the hub cache lays them out).
 */
export async function downloadToCache(id: string, commit: string, files: string[], o: HubOptions = {}, log: LogFn = stderrLog): Promise<string[]> {
  const cacheDir = o.cacheDir ?? hfHubCacheDir();
  const snap = snapshotDir(id, commit, cacheDir);
  const missing = files.filter((f) => !existsSync(join(snap, f)));
  if (missing.length) {
    const hub = { repo: { type: 'model' as const, name: id }, revision: commit, hubUrl: hubEndpoint(o), accessToken: hubToken(o), cacheDir };
    let sizes: Map<string, number>;
    try {
      sizes = new Map((await pathsInfo({ ...hub, paths: missing })).map((p) => [p.path, p.lfs?.size ?? p.size]));
    } catch (e) {
      throw hubError(e, id, commit, 'file listing', o);
    }
    for (const f of missing) {
      const size = sizes.get(f);
      if (size === undefined) throw new RecdistillError('E_NOT_FOUND', `${id} has no ${f} at commit ${commit}.`);
      const watch = size >= (o.progressBytes ?? PROGRESS_BYTES) ? watchDownload(join(repoCacheDir(id, cacheDir), 'blobs'), `model: ${f}`, size, log, o.progressIntervalMs ?? PROGRESS_INTERVAL_MS) : undefined;
      log(`model: downloading ${f} from ${id}@${commit.slice(0, 12)} (${mb(size)})`);
      try {
        await withoutConsoleDebug(() => downloadFileToCacheDir({ ...hub, path: f }));
        watch?.stop(true);
      } catch (e) {
        watch?.stop(false);
        if (e instanceof HubApiError && e.statusCode === 404) throw new RecdistillError('E_NOT_FOUND', `${id} has no ${f} at commit ${commit} (HTTP 404).`, { cause: e });
        throw hubError(e, id, commit, `download of ${f}`, o);
      }
    }
  }
  return files.map((f) => join(snap, f));
}

const mb = (bytes: number): string => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`);

/**
 * Progress of a download in flight: the library writes `blobs/<etag>.incomplete` and renames it when
 * done, so its size is the bytes received (whatever the transport: plain HTTP or Xet chunks).
 */
function watchDownload(blobsDir: string, label: string, total: number, log: LogFn, intervalMs: number): { stop(ok: boolean): void } {
  const start = performance.now();
  const since = Date.now() - 1000; // ignore .incomplete files left by an earlier, interrupted run
  const received = (): number => {
    if (!existsSync(blobsDir)) return 0;
    let n = 0;
    for (const f of readdirSync(blobsDir)) {
      if (!f.endsWith('.incomplete')) continue;
      try {
        const st = statSync(join(blobsDir, f));
        if (st.mtimeMs >= since) n += st.size;
      } catch {
        // renamed between readdir and stat: finished
      }
    }
    return n;
  };
  const timer = setInterval(() => {
    const bytes = received();
    const secs = (performance.now() - start) / 1000;
    const rate = bytes / Math.max(secs, 1e-9);
    const eta = rate > 0 ? (total - bytes) / rate : Infinity;
    log(`${label}: ${mb(bytes)} / ${mb(total)} (${((100 * bytes) / total).toFixed(1)}%) ${(rate / 1e6).toFixed(1)} MB/s ETA ${formatSeconds(eta)}`);
  }, intervalMs);
  timer.unref();
  return {
    stop(ok) {
      clearInterval(timer);
      if (!ok) return;
      const secs = (performance.now() - start) / 1000;
      log(`${label}: ${mb(total)} in ${formatSeconds(secs)} (${(total / 1e6 / Math.max(secs, 1e-9)).toFixed(1)} MB/s)`);
    },
  };
}

/** downloadFileToCacheDir announces each file with console.debug, i.e. on stdout, where command output goes. */
async function withoutConsoleDebug<T>(f: () => Promise<T>): Promise<T> {
  const debug = console.debug;
  console.debug = () => {};
  try {
    return await f();
  } finally {
    console.debug = debug;
  }
}
