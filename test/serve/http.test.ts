/**
 * `serve`: a real HTTP server on 127.0.0.1 in front of a trained student. Answers equal the recommender's,
 * every malformed request gets its 4xx with a message, concurrent clients lose nothing, and close() lets
 * requests in flight finish. `recommend` (CLI) answers with the same raw ids and titles.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVE_DEFAULTS, startServer, type RunningServer } from '../../src/serve/http.js';
import { loadRecommender, type Recommender } from '../../src/serve/recommender.js';
import { runCmd, TINY_DATA } from '../bench/fixtures.js';
import { heldRecommender } from './clients.js';

const root = mkdtempSync(join(tmpdir(), 'recdistill-serve-'));
const run = join(root, 'run');
let rec: Recommender;
let server: RunningServer;
const post = (body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) => fetch(`${server.url}/recommend`, { method: 'POST', headers, body });

beforeAll(async () => {
  await runCmd(() => import('../../src/cli/commands/student-train.js'), { ...TINY_DATA, epochs: 1, dims: 16, blocks: 1, ffnDims: 16, maxLen: 8, out: run });
  rec = await loadRecommender(run, { runtime: 'onnx' });
  server = await startServer(rec, { ...SERVE_DEFAULTS, port: 0, host: '127.0.0.1', maxRequestHistory: 50, maxBodyBytes: 4096, maxK: 20 });
});
afterAll(async () => {
  await server?.close();
  await rec?.dispose();
  rmSync(root, { recursive: true, force: true });
});

describe('serve', () => {
  it('GET /health and /info', async () => {
    expect(await (await fetch(`${server.url}/health`)).json()).toEqual({ status: 'ok' });
    const info = (await (await fetch(`${server.url}/info`)).json()) as Record<string, unknown>;
    expect(info).toMatchObject({ runtime: 'onnx', items: 30, maxLen: 8 });
  });

  it('POST /recommend answers raw ids with titles and scores, the same as the recommender and the tfjs model', async () => {
    const history = ['3', 7, '12'];
    const res = await post(JSON.stringify({ history, k: 5 }));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { items: { id: string; title: string; score: number }[] };
    expect(body).toEqual(JSON.parse(JSON.stringify(await rec.recommend(history, 5))));
    expect(body.items).toHaveLength(5);
    expect(body.items.map((it) => it.id)).not.toContain('3');
    const tfjs = await loadRecommender(run, { runtime: 'tfjs' });
    expect((await tfjs.recommend(history, 5)).items.map((it) => it.id)).toEqual(body.items.map((it) => it.id));
    await tfjs.dispose();
    // The CLI prints the same object.
    const cli = await runCmd(() => import('../../src/cli/commands/recommend.js'), { student: run, history: '3,7,12', k: 5 });
    expect(cli.items).toEqual(body.items);
  });

  it.each([
    ['not JSON', 400, '{"history": [1,', /not valid JSON/],
    ['an array body', 400, '[1, 2]', /JSON object/],
    ['history not an array', 400, '{"history": "1,2"}', /"history" must be an array/],
    ['a wrong id type', 400, '{"history": [1, {"id": 2}]}', /"history"\[1\] must be a string or a finite number/],
    ['an unknown field', 400, '{"history": [1], "user": 5}', /unknown field "user"/],
    ['k out of range', 400, '{"history": [1], "k": 0}', /"k" must be an integer in 1\.\.20/],
    ['k not an integer', 400, '{"history": [1], "k": 2.5}', /"k" must be an integer/],
    ['an empty history', 400, '{"history": []}', /"history" is empty: give at least one item id/],
    ['a 2,000-deep history', 400, `{"history": ${'['.repeat(2000)}${']'.repeat(2000)}}`, /"history"\[0\] must be a string or a finite number, got an array of 1/],
    ['too long a history', 413, JSON.stringify({ history: Array.from({ length: 51 }, () => 1) }), /at most 50/],
    ['too large a body', 413, JSON.stringify({ history: Array.from({ length: 40 }, () => 'x'.repeat(200)) }), /larger than the limit/],
    ['a huge key', 400, `{"${'k'.repeat(3000)}": 1}`, /unknown field "k{60}";/],
  ] as const)('%s -> %i', async (_what, status, body, message) => {
    const res = await post(body);
    expect(res.status).toBe(status);
    expect(((await res.json()) as { error: string }).error).toMatch(message);
  });

  it('unknown ids -> 422 listing them; wrong method, route and content type -> 405, 404, 415', async () => {
    const res = await post(JSON.stringify({ history: ['3', 'nope', 99999] }));
    expect(res.status).toBe(422);
    expect(await res.json()).toMatchObject({ unknown: ['nope', '99999'] });
    expect((await fetch(`${server.url}/recommend`)).status).toBe(405);
    expect((await fetch(`${server.url}/nowhere`)).status).toBe(404);
    expect((await post('{"history": [1]}', { 'content-type': 'text/plain' })).status).toBe(415);
  });

  it('8 concurrent clients: every request answered, every answer right', async () => {
    const histories = Array.from({ length: 20 }, (_, i) => [String((i % 30) + 1), String(((i * 7) % 30) + 1)]);
    const expected = await Promise.all(histories.map(async (h) => (await rec.recommend(h, 10)).items.map((it) => it.id).join()));
    let next = 0;
    const results: boolean[] = [];
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let i = next++; i < 200; i = next++) {
          const res = await post(JSON.stringify({ history: histories[i % 20], k: 10 }));
          const body = (await res.json()) as { items: { id: string }[] };
          results.push(res.status === 200 && body.items.map((it) => it.id).join() === expected[i % 20]);
        }
      }),
    );
    expect(results).toHaveLength(200);
    expect(results.every(Boolean)).toBe(true);
  });

  it('close() finishes requests in flight with Connection: close, then refuses new connections', async () => {
    // The model holds every call until released: the requests are in flight when close() starts, by construction.
    const held = heldRecommender(rec);
    const s2 = await startServer(held.rec, { ...SERVE_DEFAULTS, port: 0, host: '127.0.0.1', concurrency: 10 });
    const inFlight = Array.from({ length: 10 }, () => fetch(`${s2.url}/recommend`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ history: ['1', '2'] }) }));
    await held.entered(10);
    const closing = s2.close();
    held.release();
    const answers = await Promise.all(inFlight);
    await closing;
    expect(answers.map((r) => r.status)).toEqual(Array(10).fill(200));
    expect(answers.map((r) => r.headers.get('connection'))).toEqual(Array(10).fill('close'));
    await expect(fetch(`${s2.url}/health`)).rejects.toThrow();
  });
});
