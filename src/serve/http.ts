/**
 * `serve`: a student behind a small HTTP JSON API on node:http.
 *
 *   POST /recommend  {"history": ["raw id", ...], "k": 10}  ->  {"items": [{"id", "title", "score"}, ...]}
 *   GET  /health     {"status": "ok"}                        (HEAD too)
 *   GET  /info       the model: run, dataset, fingerprint, items, maxLen, runtime, parameters  (HEAD too)
 *
 * Every bad request gets a 4xx with {"error": "..."} (and "unknown": [...] for ids not in the catalogue). Every
 * resource a client can hold is bounded (connections.ts, request.ts): connections, the time to send a request,
 * body bytes per request and in total, answers a client leaves unread (one per connection). At most `concurrency` requests run the
 * model at once (p-limit) and at most `queue` wait; beyond that, and for every other 503, a Retry-After.
 * close() is a shutdown with a deadline: stop accepting, answer requests in flight with `Connection: close`,
 * close idle and half-sent connections, and after `shutdownGrace` seconds close everything.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename } from 'node:path';
import pLimit from 'p-limit';
import { camelToKebab } from '../config/options.js';
import { RecdistillError } from '../errors.js';
import { trackConnections, type Refuse } from './connections.js';
import { UnknownItemsError, type Recommender } from './recommender.js';
import { HttpError, parseRecommendBody, readBody, requestPath, type BodyBudget } from './request.js';

export { parseRecommendBody } from './request.js';

export interface ServeOptions {
  port: number;
  host: string;
  /** Largest request body (bytes). */
  maxBodyBytes: number;
  /** Request body bytes held in memory by all connections together; a body that would pass it gets 503. */
  maxBufferedBytes: number;
  /** Longest history a request may send (items). */
  maxRequestHistory: number;
  /** Largest k. */
  maxK: number;
  /** Requests running the model at once. */
  concurrency: number;
  /** Requests allowed to wait beyond those; more get 503. */
  queue: number;
  /** Open connections; one more gets 503 and is closed. */
  maxConnections: number;
  /** Seconds a client has to send a whole request (headers and body); 408 after. */
  readTimeout: number;
  /** Seconds close() waits for requests in flight before it closes every connection. */
  shutdownGrace: number;
  /** GET /info shows the run folder's absolute path (else its name only). */
  infoPaths: boolean;
}

export const SERVE_DEFAULTS: Omit<ServeOptions, 'port' | 'host'> = {
  maxBodyBytes: 1 << 20,
  maxBufferedBytes: 16 << 20,
  maxRequestHistory: 10_000,
  maxK: 1000,
  concurrency: 1,
  queue: 256,
  maxConnections: 512,
  readTimeout: 10,
  shutdownGrace: 5,
  infoPaths: false,
};

export interface RunningServer {
  url: string;
  /** The node:http server, for listeners ('connection', 'request') that watch traffic. */
  http: Server;
  /** Requests answered (any status) since start, requests in flight, open connections. */
  stats(): { answered: number; inFlight: number; connections: number; pipelinedPeak: number };
  /** Shutdown with a deadline; resolves once every connection is closed and the model is idle. */
  close(): Promise<void>;
}

const ROUTES = 'routes: POST /recommend, GET /health, GET /info.';

const send: Refuse = (res, status, body, headers = {}) => sendJson(res, status, { error: body }, headers);

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  if (status === 503) headers = { 'retry-after': '1', ...headers };
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** Requests admitted to the model (running or waiting), so `queue` 0 still lets `concurrency` requests run. */
function modelGate(rec: Recommender, o: ServeOptions) {
  const limit = pLimit(Math.max(1, o.concurrency));
  let admitted = 0;
  let stopped = false;
  let idle: (() => void) | null = null;
  return {
    async recommend(history: (string | number)[], k: number) {
      if (stopped) throw new HttpError(503, 'the server is shutting down; try again.');
      if (admitted >= Math.max(1, o.concurrency) + o.queue) throw new HttpError(503, `busy: ${o.concurrency} requests are running the model and ${o.queue} waiting, the limits; try again.`);
      admitted++;
      try {
        // A request still queued when the shutdown deadline passes is refused, not run on a model being freed.
        return await limit(() => (stopped ? Promise.reject(new HttpError(503, 'the server is shutting down; try again.')) : rec.recommend(history, k)));
      } finally {
        if (--admitted === 0) idle?.();
      }
    },
    /** Refuse what still waits; resolves when no request is running the model. */
    stop(): Promise<void> {
      stopped = true;
      return admitted === 0 ? Promise.resolve() : new Promise((resolve) => (idle = resolve));
    },
  };
}

/** Limits that make no sense are refused with the flag that sets them. */
function checkOptions(o: ServeOptions): void {
  const ints: (keyof ServeOptions)[] = ['maxBodyBytes', 'maxBufferedBytes', 'maxRequestHistory', 'maxK', 'concurrency', 'maxConnections'];
  for (const key of ints) {
    const v = o[key];
    if (!Number.isInteger(v) || (v as number) < 1) throw new RecdistillError('E_USAGE', `--${camelToKebab(key)} must be a positive integer, got ${String(v)}.`);
  }
  if (!Number.isInteger(o.queue) || o.queue < 0) throw new RecdistillError('E_USAGE', `--queue must be an integer >= 0, got ${o.queue}.`);
  if (!(o.readTimeout > 0)) throw new RecdistillError('E_USAGE', `--read-timeout must be a number of seconds > 0, got ${o.readTimeout}.`);
  if (!(o.shutdownGrace >= 0)) throw new RecdistillError('E_USAGE', `--shutdown-grace must be a number of seconds >= 0, got ${o.shutdownGrace}.`);
  if (o.maxBufferedBytes < o.maxBodyBytes) throw new RecdistillError('E_USAGE', `--max-buffered-bytes (${o.maxBufferedBytes}) must be at least --max-body-bytes (${o.maxBodyBytes}), or no largest body could be read.`);
}

export async function startServer(rec: Recommender, o: ServeOptions): Promise<RunningServer> {
  checkOptions(o);
  const gate = modelGate(rec, o);
  const budget: BodyBudget = { used: 0, max: o.maxBufferedBytes };
  const info = o.infoPaths ? rec.info : { ...rec.info, dir: basename(rec.info.dir) };
  let answered = 0;
  let inFlight = 0;
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = requestPath(req.url);
    const get = req.method === 'GET' || req.method === 'HEAD'; // Node writes no body for HEAD
    if (path === '/health' || path === '/info') {
      conns.bodyRead(req);
      if (!get) throw new HttpError(405, `${path} takes GET or HEAD.`);
      return sendJson(res, 200, path === '/health' ? { status: 'ok' } : info);
    }
    if (path !== '/recommend') {
      conns.bodyRead(req);
      throw new HttpError(404, `no route ${req.method} ${path.slice(0, 100)}; ${ROUTES}`);
    }
    if (req.method !== 'POST') {
      conns.bodyRead(req);
      throw new HttpError(405, `${path} takes POST with a JSON body.`);
    }
    const type = String(req.headers['content-type'] ?? '');
    if (type && !type.startsWith('application/json')) throw new HttpError(415, `content-type must be application/json, got ${type.slice(0, 100)}.`);
    const text = await readBody(req, o.maxBodyBytes, budget);
    conns.bodyRead(req);
    const { history, k } = parseRecommendBody(text, o);
    sendJson(res, 200, await gate.recommend(history, k));
  };
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    inFlight++;
    handle(req, res)
      .catch((e: unknown) => {
        if (e instanceof HttpError) sendJson(res, e.status, { error: e.message, ...e.extra }, e.headers);
        else if (e instanceof UnknownItemsError) sendJson(res, 422, { error: e.message, unknown: e.unknown });
        else if (e instanceof RecdistillError && e.code === 'E_INPUT') sendJson(res, 400, { error: e.message });
        else sendJson(res, 500, { error: `internal error: ${(e as Error)?.message ?? String(e)}` });
      })
      .finally(() => {
        inFlight--;
        answered++;
      });
  };
  const server = createServer();
  const conns = trackConnections(server, o, onRequest, send);
  server.keepAliveTimeout = 5000;
  // A connection on which nothing moves either way for --read-timeout (a client that stopped reading its answers
  // holds a slot and an answer otherwise) is closed; Node applies this to every socket, draining or not.
  server.timeout = o.readTimeout * 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new RecdistillError('E_USAGE', `cannot listen on ${o.host}:${o.port}: ${e.code ?? e.message}.`)));
    server.listen(o.port, o.host, resolve);
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  let closing: Promise<void> | null = null;
  const close = async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    conns.drain();
    const deadline = setTimeout(() => conns.destroyAll(), o.shutdownGrace * 1000);
    await closed;
    clearTimeout(deadline);
    await gate.stop();
  };
  return {
    url: `http://${host}:${addr.port}`,
    http: server,
    stats: () => ({ answered, inFlight, connections: conns.open(), pipelinedPeak: conns.pipelinedPeak() }),
    close: () => (closing ??= close()),
  };
}
