/**
 * A Hugging Face Hub stand-in on 127.0.0.1 serving the endpoints @huggingface/hub calls to download into
 * the hub cache (read from node_modules/@huggingface/hub/src/lib):
 * - modelInfo:     GET  /api/models/<id>/revision/<rev>?expand=...  -> JSON with sha and siblings
 * - pathsInfo:     POST /api/models/<id>/paths-info/<rev>  {paths, expand} -> [{path, type, oid, size, lfs?, lastCommit}]
 * - fileDownloadInfo + WebBlob: GET /<id>/resolve/<rev>/<path> (first `Range: bytes=0-0` -> 206 with
 *   Content-Range and ETag, then the whole file -> 200), with X-Repo-Commit.
 * Private repos answer 401 without `Authorization: Bearer <token>`, as the hub does.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

export interface MockRepo {
  /** Branches and tags -> commit sha. */
  refs: Record<string, string>;
  /** Repo files (path -> bytes), the same at every commit. */
  files: Map<string, Buffer>;
  /** Token required (private / gated repo). */
  token?: string;
}

export interface MockRequest {
  method: string;
  url: string;
  authorization?: string;
  range?: string;
}

export interface MockHub {
  url: string;
  requests: MockRequest[];
  repos: Map<string, MockRepo>;
  /** Full downloads of files at least this big are sent in 10 chunks, `delayMs` apart. */
  slow: { minBytes: number; delayMs: number };
  close(): Promise<void>;
}

/** Every file under a folder, keyed by its relative path with forward slashes. */
export function folderFiles(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string) => {
    for (const f of readdirSync(d)) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(relative(dir, p).split('\\').join('/'), readFileSync(p));
    }
  };
  walk(dir);
  return out;
}

const isLfs = (path: string) => /\.onnx(_data)?$/.test(path);
export const lfsOid = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const gitOid = (b: Buffer): string => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers }).end(JSON.stringify(body));
}

export async function startMockHub(repos: Record<string, MockRepo>): Promise<MockHub> {
  const hub = { requests: [] as MockRequest[], repos: new Map(Object.entries(repos)), slow: { minBytes: Infinity, delayMs: 0 } };
  const server = createServer((req, res) => void handle(req, res));

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '';
    hub.requests.push({ method: req.method ?? '', url, authorization: req.headers.authorization, range: req.headers.range });
    const path = url.split('?')[0]!;
    const m =
      /^\/api\/models\/([^/]+\/[^/]+)\/(revision|paths-info)\/([^/]+)$/.exec(path) ?? /^\/([^/]+\/[^/]+)\/(resolve)\/([^/]+)\/(.+)$/.exec(path);
    const repo = m ? hub.repos.get(m[1]!) : undefined;
    if (!m || !repo) return json(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
    if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`) {
      return json(res, 401, { error: 'Invalid username or password.' }, { 'X-Error-Code': 'RepoNotFound' });
    }
    const rev = decodeURIComponent(m[3]!);
    const sha = repo.refs[rev] ?? (Object.values(repo.refs).includes(rev) ? rev : undefined);
    if (!sha) return json(res, 404, { error: `Invalid rev id: ${rev}` }, { 'X-Error-Code': 'RevisionNotFound' });
    const lastCommit = { id: sha, title: 'upload', date: '2025-01-01T00:00:00.000Z' };

    if (m[2] === 'revision') {
      const siblings = [...repo.files.keys()].map((rfilename) => ({ rfilename }));
      return json(res, 200, { _id: 'x', id: m[1], sha, siblings, private: !!repo.token, gated: false, downloads: 0, likes: 0, lastModified: lastCommit.date, pipeline_tag: 'text-generation' });
    }
    if (m[2] === 'paths-info') {
      let body = '';
      for await (const chunk of req) body += chunk;
      const { paths } = JSON.parse(body) as { paths: string[] };
      const found = paths.filter((p) => repo.files.has(p));
      return json(
        res,
        200,
        found.map((p) => {
          const b = repo.files.get(p)!;
          return { type: 'file', path: p, oid: gitOid(b), size: b.length, ...(isLfs(p) ? { lfs: { oid: lfsOid(b), size: b.length, pointerSize: 134 } } : {}), lastCommit };
        }),
      );
    }
    const file = repo.files.get(m[4]!);
    if (!file) return json(res, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
    const etag = `"${isLfs(m[4]!) ? lfsOid(file) : gitOid(file)}"`;
    const headers = { 'Content-Type': 'application/octet-stream', ETag: etag, 'X-Repo-Commit': sha, 'Accept-Ranges': 'bytes' };
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (range) {
      const [a, b] = [Number(range[1]), Math.min(Number(range[2]), file.length - 1)];
      res.writeHead(206, { ...headers, 'Content-Range': `bytes ${a}-${b}/${file.length}`, 'Content-Length': String(b - a + 1) }).end(file.subarray(a, b + 1));
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Length': String(file.length) });
    if (file.length < hub.slow.minBytes) return void res.end(file);
    const step = Math.ceil(file.length / 10);
    for (let i = 0; i < file.length; i += step) {
      res.write(file.subarray(i, i + step));
      await new Promise((r) => setTimeout(r, hub.slow.delayMs));
    }
    res.end();
  }

  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    ...hub,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
