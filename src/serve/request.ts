/**
 * Reading and checking one HTTP request for `serve`: the request target, the body (bounded per request and in
 * total across connections) and the /recommend JSON. Every refusal is an HttpError whose status and message the
 * server sends as {"error": "..."}.
 */
import type { IncomingMessage } from 'node:http';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** The path of a request target; a target that is not a path (e.g. "//[") is a 400, not a crash. */
export function requestPath(target: string | undefined): string {
  try {
    return new URL(target ?? '/', 'http://localhost').pathname;
  } catch {
    throw new HttpError(400, `the request target ${JSON.stringify(String(target).slice(0, 100))} is not a valid path.`);
  }
}

/** Request-body bytes held in memory by all connections together: a budget that bodies reserve and release. */
export interface BodyBudget {
  used: number;
  readonly max: number;
}

/**
 * The whole body as text, at most `limit` bytes (413 beyond), reserving its bytes from `budget` while held (503
 * when the budget is spent: memory stays bounded however many clients stall mid-body). A body whose connection
 * closes before its end rejects, so the caller never waits on a dead socket.
 */
export function readBody(req: IncomingMessage, limit: number, budget: BodyBudget): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > limit) return reject(new HttpError(413, `request body of ${declared} bytes is larger than the limit of ${limit}.`));
    // A declared length is reserved up front, so a client cannot claim budget it has not sent yet either way.
    let reserved = Number.isFinite(declared) ? declared : 0;
    if (budget.used + reserved > budget.max) return reject(busy(budget));
    budget.used += reserved;
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const finish = (err: Error | null, text = '') => {
      if (settled) return;
      settled = true;
      budget.used -= reserved;
      req.off('data', onData);
      // Bytes after a refusal are read and dropped (not kept) so the 4xx reaches the client instead of a reset.
      if (err) req.resume();
      if (err) reject(err);
      else resolve(text);
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) return finish(new HttpError(413, `request body is larger than the limit of ${limit} bytes.`));
      if (size > reserved) {
        if (budget.used + (size - reserved) > budget.max) return finish(busy(budget));
        budget.used += size - reserved;
        reserved = size;
      }
      chunks.push(c);
    };
    req.on('data', onData);
    req.on('end', () => finish(null, Buffer.concat(chunks).toString('utf8')));
    req.on('error', (e) => finish(e));
    req.on('close', () => finish(new HttpError(400, 'the connection closed before the request body ended.')));
  });
}

/** The connection is closed after this 503: reading (and dropping) the rest of its body would cost what the budget saves. */
function busy(budget: BodyBudget): HttpError {
  return new HttpError(503, `busy: request bodies in memory would pass the limit of ${budget.max} bytes; try again.`, {}, { connection: 'close' });
}

/** A short description of a JSON value for an error message (never serialises a deep or large value). */
function describeJson(x: unknown): string {
  if (Array.isArray(x)) return `an array of ${x.length}`;
  if (x === null) return 'null';
  if (typeof x === 'object') return 'an object';
  const text = JSON.stringify(x);
  return text.length > 60 ? `${text.slice(0, 60)}…` : text;
}

/** Validate a /recommend body: {"history": [string | number, ...], "k"?: integer}. */
export function parseRecommendBody(text: string, o: { maxRequestHistory: number; maxK: number }): { history: (string | number)[]; k: number } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `the body is not valid JSON (${(e as Error).message}).`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'the body must be a JSON object: {"history": [item ids], "k": 10}.');
  const { history, k = 10, ...rest } = body as Record<string, unknown>;
  const extra = Object.keys(rest);
  if (extra.length) throw new HttpError(400, `unknown field${extra.length > 1 ? 's' : ''} ${extra.map((x) => `"${x.slice(0, 60)}"`).join(', ')}; expected "history" and "k".`);
  if (!Array.isArray(history)) throw new HttpError(400, '"history" must be an array of item ids (strings or numbers).');
  if (history.length === 0) throw new HttpError(400, '"history" is empty: give at least one item id, oldest first, e.g. {"history": ["50", "172"]}.');
  if (history.length > o.maxRequestHistory) throw new HttpError(413, `"history" has ${history.length} items; at most ${o.maxRequestHistory} are accepted.`);
  const bad = history.findIndex((x) => !(typeof x === 'string' || (typeof x === 'number' && Number.isFinite(x))));
  if (bad >= 0) throw new HttpError(400, `"history"[${bad}] must be a string or a finite number, got ${describeJson(history[bad])}.`);
  if (!Number.isInteger(k) || (k as number) < 1 || (k as number) > o.maxK) throw new HttpError(400, `"k" must be an integer in 1..${o.maxK}, got ${describeJson(k)}.`);
  return { history: history as (string | number)[], k: k as number };
}
