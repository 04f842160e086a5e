/**
 * The connections of a `serve` HTTP server, bounded whatever clients do:
 * - at most `maxConnections` open; one more gets a 503 with Retry-After and is closed;
 * - a read deadline: a client has `readTimeout` seconds to send a whole request (headers and body), counted from
 *   the connection or the end of the previous answer; it stays on while draining (Node's own header and request
 *   timeouts stop when server.close() is called);
 * - one request per connection at a time: pipelined requests wait, and the socket is not read until the answer
 *   before them has left the process (a response finishes only once the operating system took its last byte, so a
 *   client that does not read its answers holds at most one of them in the process);
 * - drain(): answers in flight get `Connection: close`, idle and half-sent connections are closed; destroyAll()
 *   ends the rest (the shutdown deadline).
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export interface ConnectionLimits {
  maxConnections: number;
  /** Seconds a client has to send a whole request. */
  readTimeout: number;
}

/** Sends an error answer ({"error": message}) with the given headers. */
export type Refuse = (res: ServerResponse, status: number, message: string, headers?: Record<string, string>) => void;

interface Turn {
  req: IncomingMessage;
  res: ServerResponse;
}

interface Conn {
  socket: Socket;
  /** The request being answered; `bodyRead` once its body is in (the read deadline then stops). */
  active: (Turn & { bodyRead: boolean }) | null;
  /** Pipelined requests received behind the active one, answered in order. */
  waiting: Turn[];
  deadline: NodeJS.Timeout | null;
}

export interface Connections {
  open(): number;
  /** The request's body has been read: the client has sent all it must. */
  bodyRead(req: IncomingMessage): void;
  draining(): boolean;
  drain(): void;
  destroyAll(): void;
  /** Most pipelined requests seen waiting on one connection. */
  pipelinedPeak(): number;
}

const RETRY_AFTER = '1';
/** How long a connection refused at the cap may still send before it is closed. */
const LINGER_MS = 1000;

/** A 503 written on a raw socket: the connection is over the cap, so no HTTP machinery is spent on it. */
function rawBusy(max: number): string {
  const body = JSON.stringify({ error: `busy: ${max} connections are open, the limit; try again.` });
  return `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nretry-after: ${RETRY_AFTER}\r\nconnection: close\r\n\r\n${body}`;
}

export function trackConnections(server: Server, limits: ConnectionLimits, handle: (req: IncomingMessage, res: ServerResponse) => void, refuse: Refuse): Connections {
  const conns = new Map<Socket, Conn>();
  let draining = false;
  let peak = 0;

  const arm = (c: Conn) => {
    if (c.deadline) clearTimeout(c.deadline);
    c.deadline = setTimeout(() => expire(c), limits.readTimeout * 1000);
  };
  const disarm = (c: Conn) => {
    if (c.deadline) clearTimeout(c.deadline);
    c.deadline = null;
  };
  // The deadline passed: a request half-received gets a 408; a connection with no request is closed.
  const expire = (c: Conn) => {
    c.deadline = null;
    const a = c.active;
    if (a && !a.bodyRead && !a.res.headersSent) {
      refuse(a.res, 408, `the request was not received within ${limits.readTimeout} s.`, { connection: 'close' });
      c.deadline = setTimeout(() => c.socket.destroy(), limits.readTimeout * 1000); // a client that reads nothing either
    } else if (!a) c.socket.destroy();
  };

  const start = (c: Conn, t: Turn) => {
    c.active = { ...t, bodyRead: false };
    if (draining) t.res.setHeader('connection', 'close');
    t.res.once('close', () => next(c));
    handle(t.req, t.res);
  };
  // The answer has left the process (the response closes after the socket's write callback): the next one may run.
  const next = (c: Conn) => {
    c.active = null;
    if (c.socket.destroyed) return;
    const t = c.waiting.shift();
    if (!c.waiting.length) c.socket.resume();
    if (t) return start(c, t);
    arm(c);
  };

  server.on('connection', (socket: Socket) => {
    if (draining) return void socket.destroy();
    if (conns.size >= limits.maxConnections) {
      // Half-close after the 503 and let the client's own bytes drain for a moment: closing with its request unread
      // would reset the connection and could lose the 503 on the way.
      socket.end(rawBusy(limits.maxConnections), () => setTimeout(() => socket.destroy(), LINGER_MS).unref());
      return;
    }
    const c: Conn = { socket, active: null, waiting: [], deadline: null };
    conns.set(socket, c);
    arm(c);
    // Node resumes the socket itself (reading a body, dumping an unread one); while requests wait, it stays paused.
    socket.on('resume', () => {
      if (c.waiting.length) socket.pause();
    });
    socket.once('close', () => {
      disarm(c);
      conns.delete(socket);
    });
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const c = conns.get(req.socket);
    if (!c) return; // a connection refused at the cap: its 503 is written, it closes soon
    if (!c.active) return start(c, { req, res });
    // Pipelined: wait for the answer before it, and read no more from this client meanwhile.
    c.waiting.push({ req, res });
    peak = Math.max(peak, c.waiting.length);
    c.socket.pause();
  });

  return {
    open: () => conns.size,
    bodyRead(req) {
      const c = conns.get(req.socket);
      if (c?.active?.req !== req) return;
      c.active.bodyRead = true;
      disarm(c);
    },
    draining: () => draining,
    drain() {
      draining = true;
      for (const c of conns.values()) {
        c.waiting = []; // their connection closes after the active answer; the client may send them again elsewhere
        const a = c.active;
        if (!a) c.socket.destroy();
        else if (!a.bodyRead && !a.res.headersSent) refuse(a.res, 503, 'the server is shutting down; try again.', { connection: 'close', 'retry-after': RETRY_AFTER });
        else if (!a.res.headersSent) a.res.setHeader('connection', 'close');
      }
    },
    destroyAll() {
      for (const c of conns.values()) c.socket.destroy();
    },
    pipelinedPeak: () => peak,
  };
}
