/**
 * Clients for the serve tests that fetch() cannot be: raw bytes on a socket (half requests, pipelining, bad
 * targets), and a recommender whose model calls wait until the test releases them, so a test knows a request is
 * in flight from an event rather than from a sleep.
 */
import type { IncomingMessage, Server } from 'node:http';
import net from 'node:net';
import type { Recommender } from '../../src/serve/recommender.js';

export interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A socket to the server's host and port, resolved once connected. */
export function connect(url: string): Promise<net.Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(port), hostname, () => resolve(s));
    s.once('error', reject);
  });
}

/**
 * Read HTTP answers from a socket as they come: `next()` resolves with the next whole answer, or with null once
 * the socket closed without one. HEAD answers carry no body: pass `head` for them.
 */
export function answers(s: net.Socket): { next(o?: { head?: boolean }): Promise<RawAnswer | null>; closed: Promise<void> } {
  let buf = Buffer.alloc(0);
  let ended = false;
  let wake: (() => void) | null = null;
  s.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    wake?.();
  });
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  void closed.then(() => {
    ended = true;
    wake?.();
  });
  s.on('error', () => {}); // a reset shows as the close that follows
  const parse = (head: boolean): RawAnswer | null => {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return null;
    const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
    const headers = Object.fromEntries(lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
    const len = head ? 0 : Number(headers['content-length'] ?? 0);
    if (buf.length < end + 4 + len) return null;
    const body = buf.subarray(end + 4, end + 4 + len).toString('utf8');
    buf = buf.subarray(end + 4 + len);
    return { status: Number(lines[0]!.split(' ')[1]), headers, body };
  };
  return {
    closed,
    async next(o = {}) {
      for (;;) {
        const a = parse(o.head ?? false);
        if (a) return a;
        if (ended) return null;
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
}

/** One raw exchange on a new connection. */
export async function rawExchange(url: string, bytes: string, o: { head?: boolean } = {}): Promise<RawAnswer | null> {
  const s = await connect(url);
  const a = answers(s);
  s.write(bytes);
  const r = await a.next(o);
  s.destroy();
  return r;
}

export const postBytes = (body: string, headers = ''): string =>
  `POST /recommend HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${headers}\r\n${body}`;

/** Resolves with the n-th request the server receives (its headers complete). */
export function nthRequest(server: Server, n: number): Promise<IncomingMessage> {
  let seen = 0;
  return new Promise((resolve) => {
    const on = (req: IncomingMessage) => {
      if (++seen < n) return;
      server.off('request', on);
      resolve(req);
    };
    server.on('request', on);
  });
}

/** A recommender whose model calls wait for release(); entered(n) resolves once n calls are waiting. */
export function heldRecommender(rec: Recommender): { rec: Recommender; entered(n: number): Promise<void>; release(): void } {
  let waiting = 0;
  const watchers: { n: number; resolve: () => void }[] = [];
  let open: () => void = () => {};
  const gate = new Promise<void>((resolve) => (open = resolve));
  return {
    rec: {
      ...rec,
      async recommend(history, k) {
        waiting++;
        for (const w of watchers.filter((x) => x.n <= waiting)) w.resolve();
        await gate;
        return rec.recommend(history, k);
      },
    },
    entered: (n) => new Promise((resolve) => (waiting >= n ? resolve() : watchers.push({ n, resolve }))),
    release: () => open(),
  };
}
