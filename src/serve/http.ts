/**
 * `serve`: a student behind a small HTTP JSON API on node:http.
 *
 *   POST /recommend  {"history": ["raw id", ...], "k": 10}  ->  {"items": [{"id", "title", "score"}, ...]}
 *   GET  /health     {"status": "ok"}
 *   GET  /info       the model: dataset, fingerprint, items, maxLen, runtime, parameters
 *
 * Every bad request gets a 4xx with {"error": "..."} (and "unknown": [...] for ids not in the catalogue);
 * bodies and histories are bounded; at most `concurrency` requests run the model at once (p-limit) and at
 * most `queue` wait, beyond that 503. close() stops accepting, lets requests in flight finish, then frees
 * the model (the CLI calls it on SIGTERM / SIGINT).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import pLimit from 'p-limit';
import { RecdistillError } from '../errors.js';
import { UnknownItemsError, type Recommender } from './recommender.js';

export interface ServeOptions {
  port: number;
  host: string;
  /** Largest request body (bytes). */
  maxBodyBytes: number;
  /** Longest history accepted (items). */
  maxHistory: number;
  /** Largest k. */
  maxK: number;
  /** Requests running the model at once. */
  concurrency: number;
  /** Requests allowed to wait beyond those; more get 503. */
  queue: number;
}

export const SERVE_DEFAULTS: Omit<ServeOptions, 'port' | 'host'> = { maxBodyBytes: 1 << 20, maxHistory: 10_000, maxK: 1000, concurrency: 1, queue: 256 };

export interface RunningServer {
  url: string;
  /** Requests answered (any status) since start. */
  stats(): { answered: number; inFlight: number };
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > limit) return reject(new HttpError(413, `request body of ${declared} bytes is larger than the limit of ${limit}.`));
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new HttpError(413, `request body is larger than the limit of ${limit} bytes.`));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Validate a /recommend body: {"history": [string | number, ...], "k"?: integer}. */
export function parseRecommendBody(text: string, o: Pick<ServeOptions, 'maxHistory' | 'maxK'>): { history: (string | number)[]; k: number } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `the body is not valid JSON (${(e as Error).message}).`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'the body must be a JSON object: {"history": [item ids], "k": 10}.');
  const { history, k = 10, ...rest } = body as Record<string, unknown>;
  const extra = Object.keys(rest);
  if (extra.length) throw new HttpError(400, `unknown field${extra.length > 1 ? 's' : ''} ${extra.map((x) => `"${x}"`).join(', ')}; expected "history" and "k".`);
  if (!Array.isArray(history)) throw new HttpError(400, '"history" must be an array of item ids (strings or numbers).');
  if (history.length > o.maxHistory) throw new HttpError(413, `"history" has ${history.length} items; at most ${o.maxHistory} are accepted.`);
  const bad = history.findIndex((x) => !(typeof x === 'string' || (typeof x === 'number' && Number.isFinite(x))));
  if (bad >= 0) throw new HttpError(400, `"history"[${bad}] must be a string or a finite number, got ${JSON.stringify(history[bad])}.`);
  if (!Number.isInteger(k) || (k as number) < 1 || (k as number) > o.maxK) throw new HttpError(400, `"k" must be an integer in 1..${o.maxK}, got ${JSON.stringify(k)}.`);
  return { history: history as (string | number)[], k: k as number };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export async function startServer(rec: Recommender, o: ServeOptions): Promise<RunningServer> {
  const limit = pLimit(Math.max(1, o.concurrency));
  let answered = 0;
  let inFlight = 0;
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === '/health' && req.method === 'GET') return send(res, 200, { status: 'ok' });
    if (url.pathname === '/info' && req.method === 'GET') return send(res, 200, rec.info);
    if (url.pathname !== '/recommend') throw new HttpError(404, `no route ${req.method} ${url.pathname}; routes: POST /recommend, GET /health, GET /info.`);
    if (req.method !== 'POST') throw new HttpError(405, `${url.pathname} takes POST with a JSON body.`);
    const type = String(req.headers['content-type'] ?? '');
    if (type && !type.startsWith('application/json')) throw new HttpError(415, `content-type must be application/json, got ${type}.`);
    const { history, k } = parseRecommendBody(await readBody(req, o.maxBodyBytes), o);
    if (limit.pendingCount >= o.queue) throw new HttpError(503, `busy: ${limit.pendingCount} requests are waiting; try again.`);
    const answer = await limit(() => rec.recommend(history, k));
    send(res, 200, answer);
  };
  const server = createServer((req, res) => {
    inFlight++;
    handle(req, res)
      .catch((e: unknown) => {
        if (e instanceof HttpError) send(res, e.status, { error: e.message, ...e.extra });
        else if (e instanceof UnknownItemsError) send(res, 422, { error: e.message, unknown: e.unknown });
        else if (e instanceof RecdistillError && e.code === 'E_INPUT') send(res, 400, { error: e.message });
        else send(res, 500, { error: `internal error: ${(e as Error)?.message ?? String(e)}` });
      })
      .finally(() => {
        inFlight--;
        answered++;
      });
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new RecdistillError('E_USAGE', `cannot listen on ${o.host}:${o.port}: ${e.code ?? e.message}.`)));
    server.listen(o.port, o.host, resolve);
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}`,
    stats: () => ({ answered, inFlight }),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve()); // waits for requests in flight; idle keep-alive sockets are closed below
        server.closeIdleConnections();
      }),
  };
}
