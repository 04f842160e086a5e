/**
 * `serve` against hostile clients, on 127.0.0.1: half-sent requests, stalls mid-body, keep-alive pools during
 * shutdown, more connections than allowed, bodies that would pass the memory budget, deep pipelines, bad targets.
 * Each test waits on events (the server received the request, the model was entered, the socket closed); the
 * short read timeouts and grace periods are what the server is told, and only make the tests quick.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVE_DEFAULTS, startServer, type RunningServer, type ServeOptions } from '../../src/serve/http.js';
import { loadRecommender, type Recommender } from '../../src/serve/recommender.js';
import { runCmd, TINY_DATA } from '../bench/fixtures.js';
import { answers, connect, heldRecommender, nthRequest, postBytes, rawExchange } from '../serve/clients.js';

const root = mkdtempSync(join(tmpdir(), 'recdistill-serve-hostile-'));
const run = join(root, 'run');
let rec: Recommender;
const started: RunningServer[] = [];
const serve = async (o: Partial<ServeOptions> = {}, r: Recommender = rec) => {
  const s = await startServer(r, { ...SERVE_DEFAULTS, port: 0, host: '127.0.0.1', ...o });
  started.push(s);
  return s;
};
const body = (history: string[], k = 5) => JSON.stringify({ history, k });

beforeAll(async () => {
  await runCmd(() => import('../../src/cli/commands/student-train.js'), { ...TINY_DATA, epochs: 1, dims: 16, blocks: 1, ffnDims: 16, maxLen: 8, out: run });
  rec = await loadRecommender(run, { runtime: 'onnx' });
});
afterAll(async () => {
  await Promise.all(started.map((s) => s.close()));
  await rec?.dispose();
  rmSync(root, { recursive: true, force: true });
});

describe('serve: shutdown', () => {
  it('close() ends although clients hold half-sent requests: a stalled body gets 503 + Retry-After, half headers are closed', async () => {
    const s = await serve();
    const headers = await connect(s.url);
    const stalled = await connect(s.url);
    const stalledAnswers = answers(stalled);
    const received = nthRequest(s.http, 1);
    stalled.write(postBytes(body(['1', '2'])).slice(0, -5)); // headers whole, body 5 bytes short
    await received;
    headers.write('POST /recommend HTTP/1.1\r\nHost: t\r\n');
    const headersClosed = answers(headers).closed;
    await s.close();
    const a = await stalledAnswers.next();
    expect(a).toMatchObject({ status: 503, headers: { connection: 'close', 'retry-after': '1' } });
    expect(JSON.parse(a!.body).error).toMatch(/shutting down/);
    await stalledAnswers.closed;
    await headersClosed;
  });

  it('answers in flight say Connection: close, so a keep-alive pool does not keep the server serving', async () => {
    const held = heldRecommender(rec);
    const s = await serve({ concurrency: 4 }, held.rec);
    const sockets = await Promise.all(Array.from({ length: 4 }, () => connect(s.url)));
    const readers = sockets.map(answers);
    sockets.forEach((x, i) => x.write(postBytes(body([String(i + 1)]))));
    await held.entered(4);
    const closing = s.close();
    held.release();
    const got = await Promise.all(readers.map((r) => r.next()));
    expect(got.map((a) => [a?.status, a?.headers.connection])).toEqual(Array(4).fill([200, 'close']));
    // The client tries its pooled connection again: the server has closed it.
    sockets.forEach((x) => x.write(postBytes(body(['1']))));
    expect(await Promise.all(readers.map((r) => r.next()))).toEqual([null, null, null, null]);
    await closing;
  });

  it('after the grace period every connection is closed, even one whose request is still in the model', async () => {
    const held = heldRecommender(rec);
    const s = await serve({ shutdownGrace: 0.2 }, held.rec);
    const sock = await connect(s.url);
    const r = answers(sock);
    sock.write(postBytes(body(['1'])));
    await held.entered(1);
    const closing = s.close();
    expect(await r.next()).toBeNull(); // closed by the deadline, the model call still held
    held.release();
    await closing; // and close() still waits for the model before the caller frees it
  });
});

describe('serve: bounded per connection and in total', () => {
  it('a client that sends part of a request and stalls gets 408 after --read-timeout; one that sends half headers is closed', async () => {
    const s = await serve({ readTimeout: 0.3 });
    const stalled = await connect(s.url);
    const r = answers(stalled);
    const received = nthRequest(s.http, 1);
    stalled.write(postBytes(body(['1'])).slice(0, -3));
    await received;
    const a = await r.next();
    expect(a).toMatchObject({ status: 408, headers: { connection: 'close' } });
    expect(JSON.parse(a!.body).error).toMatch(/not received within 0.3 s/);
    const slow = await connect(s.url);
    slow.write('GET /health HTTP/1.1\r\nHo');
    expect(await answers(slow).next()).toBeNull();
  });

  it('more than --max-connections: the next one gets 503 with Retry-After and is closed; freed slots are reused', async () => {
    const s = await serve({ maxConnections: 2 });
    const serverSide: Socket[] = [];
    const accepted = new Promise<void>((resolve) => s.http.on('connection', (x: Socket) => serverSide.push(x) === 2 && resolve()));
    const held = await Promise.all([connect(s.url), connect(s.url)]);
    await accepted;
    const over = await rawExchange(s.url, 'GET /health HTTP/1.1\r\nHost: t\r\n\r\n');
    expect(over).toMatchObject({ status: 503, headers: { 'retry-after': '1', connection: 'close' } });
    // The slot is free once the server's side of a held connection has closed.
    const freed = Promise.race(serverSide.slice(0, 2).map((x) => new Promise((resolve) => x.once('close', resolve))));
    held[0]!.destroy();
    await freed;
    expect((await rawExchange(s.url, 'GET /health HTTP/1.1\r\nHost: t\r\n\r\n'))?.status).toBe(200);
  });

  it('bodies in memory are bounded in total: past --max-buffered-bytes a request gets 503 + Retry-After and its connection closes', async () => {
    const s = await serve({ maxBodyBytes: 4096, maxBufferedBytes: 8192 });
    const big = JSON.stringify({ history: ['1'], k: 1 }).padEnd(4096, ' ');
    const stalls = await Promise.all([connect(s.url), connect(s.url)]);
    const received = nthRequest(s.http, 2);
    stalls.forEach((x) => x.write(postBytes(big).slice(0, -10)));
    await received;
    const a = await rawExchange(s.url, postBytes(body(['1'])));
    expect(a).toMatchObject({ status: 503, headers: { 'retry-after': '1', connection: 'close' } });
    expect(JSON.parse(a!.body).error).toMatch(/limit of 8192 bytes/);
    // A stalled body sent whole frees its share: the next request is served.
    const r = answers(stalls[0]!);
    stalls[0]!.write(' '.repeat(10));
    expect((await r.next())?.status).toBe(200);
    expect((await rawExchange(s.url, postBytes(body(['1']))))?.status).toBe(200);
  });

  it('2,000 pipelined requests on one socket: all answered, in order, none refused as busy', async () => {
    const s = await serve({ maxBodyBytes: 4096 });
    const sock = await connect(s.url);
    const r = answers(sock);
    const reqs = Array.from({ length: 2000 }, (_, i) => postBytes(JSON.stringify({ history: [String((i % 30) + 1)], k: 1 }).padEnd(1024, ' ')));
    sock.write(reqs.join(''));
    const expected = await Promise.all(Array.from({ length: 30 }, async (_, i) => (await rec.recommend([String(i + 1)], 1)).items[0]!.id));
    for (let i = 0; i < 2000; i++) {
      const a = await r.next();
      expect(a?.status).toBe(200);
      expect((JSON.parse(a!.body) as { items: { id: string }[] }).items[0]!.id).toBe(expected[i % 30]);
    }
    sock.destroy();
  });

  it('a client that stops reading its answers stops being answered, and is closed after --read-timeout with no traffic', async () => {
    // Answers of about 480 KB: the operating system's socket buffers take a few dozen of 120 at most.
    const padded: Recommender = { ...rec, recommend: async (h, k) => ({ items: (await rec.recommend(h, k)).items.map((it) => ({ ...it, title: it.title.padEnd(16_384) })) }) };
    const s = await serve({ readTimeout: 0.5 }, padded);
    const serverSide = new Promise<Socket>((resolve) => s.http.once('connection', resolve));
    const sock = await connect(s.url);
    sock.pause(); // never reads
    sock.write(Array.from({ length: 120 }, () => postBytes(body(['1'], 30))).join(''));
    const closed = new Promise<void>((resolve) => void serverSide.then((x) => x.once('close', () => resolve())));
    await closed;
    expect(s.stats().answered).toBeLessThan(120);
    sock.destroy();
  });

  it('a chunked body over --max-body-bytes gets 413, not a reset, while the client is still sending', async () => {
    const s = await serve({ maxBodyBytes: 4096 });
    const sock = await connect(s.url);
    const r = answers(sock);
    sock.write('POST /recommend HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n');
    for (let i = 0; i < 8; i++) sock.write(`400\r\n${' '.repeat(0x400)}\r\n`); // 8 KiB, then more after the answer
    const a = await r.next();
    expect(a).toMatchObject({ status: 413 });
    expect(JSON.parse(a!.body).error).toMatch(/larger than the limit of 4096 bytes/);
    sock.destroy();
  });
});

describe('serve: every bad request a 4xx, and the small things', () => {
  it('a 10,000-deep history and a request target "//[" are 400 with a message', async () => {
    const s = await serve();
    const deep = await rawExchange(s.url, postBytes(`{"history": ${'['.repeat(10_000)}${']'.repeat(10_000)}}`));
    expect(deep?.status).toBe(400);
    expect(JSON.parse(deep!.body).error).toMatch(/"history"\[0\] must be a string or a finite number, got an array of 1/);
    const target = await rawExchange(s.url, 'GET //[ HTTP/1.1\r\nHost: t\r\n\r\n');
    expect(target?.status).toBe(400);
    expect(JSON.parse(target!.body).error).toMatch(/request target "\/\/\[" is not a valid path/);
  });

  it('HEAD works where GET does; /info names the run folder, its absolute path only with infoPaths', async () => {
    const s = await serve();
    for (const path of ['/health', '/info']) {
      const get = await rawExchange(s.url, `GET ${path} HTTP/1.1\r\nHost: t\r\n\r\n`);
      const head = await rawExchange(s.url, `HEAD ${path} HTTP/1.1\r\nHost: t\r\n\r\n`, { head: true });
      expect(head).toMatchObject({ status: 200, body: '', headers: { 'content-length': get!.headers['content-length'] } });
    }
    expect(((await (await fetch(`${s.url}/info`)).json()) as { dir: string }).dir).toBe('run');
    const withPaths = await serve({ infoPaths: true });
    expect(((await (await fetch(`${withPaths.url}/info`)).json()) as { dir: string }).dir).toBe(run);
  });

  it('--queue 0 serves one request at a time when idle; the one beyond gets 503 with Retry-After', async () => {
    const held = heldRecommender(rec);
    const s = await serve({ queue: 0 }, held.rec);
    const json = { 'content-type': 'application/json' };
    const first = fetch(`${s.url}/recommend`, { method: 'POST', headers: json, body: body(['1']) });
    await held.entered(1);
    const second = await fetch(`${s.url}/recommend`, { method: 'POST', headers: json, body: body(['2']) });
    expect(second.status).toBe(503);
    expect(second.headers.get('retry-after')).toBe('1');
    held.release();
    expect((await first).status).toBe(200);
  });
});

describe('serve (the command): SIGTERM', () => {
  it('exits 0 within --shutdown-grace while a client holds a half-sent request; --max-history still works, with a warning', async () => {
    const main = join(import.meta.dirname, '..', '..', 'src', 'cli', 'main.ts');
    const child = spawn(process.execPath, ['--import', 'tsx', main, 'serve', '--student', run, '--port', '0', '--max-history', '2', '--shutdown-grace', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    let err = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        err += d;
        const m = /listening on (http:\/\/\S+)/.exec(err);
        if (m) resolve(m[1]!);
      });
      void exited.then((code) => reject(new Error(`serve exited (${code}) before listening: ${err}`)));
    });
    expect(err).toMatch(/--max-history is deprecated .*use --max-request-history/);
    const tooLong = await rawExchange(url, postBytes(body(['1', '2', '3'])));
    expect(tooLong?.status).toBe(413);
    expect(JSON.parse(tooLong!.body).error).toMatch(/at most 2 are accepted/);
    // The client holds a request it never finishes (it has been answered once, so the server has its connection).
    const sock = await connect(url);
    const r = answers(sock);
    sock.write('GET /health HTTP/1.1\r\nHost: t\r\n\r\n');
    expect((await r.next())?.status).toBe(200);
    sock.write('POST /recommend HTTP/1.1\r\nHost: t\r\n');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    await r.closed;
  }, 60_000);
});
