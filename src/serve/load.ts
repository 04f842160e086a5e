/**
 * `serve:bench`: the HTTP server under load, measured from outside. The server runs in its own process
 * (`recdistill serve --port 0`); N clients on 127.0.0.1 send the test users' histories (raw ids) as fast as
 * answers come back; every answer is checked against the same model's answer computed in this process.
 * Reports p50/p95/p99 latency, requests/s, lost requests (network error or non-200) and wrong answers, and
 * that SIGTERM lets the server finish and exit 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RecdistillError } from '../errors.js';
import { percentile } from '../util/stats.js';
import type { LogFn } from '../util/progress.js';
import { loadRecommender, type Runtime } from './recommender.js';

export interface LoadOptions {
  student: string;
  runtime: Runtime;
  clients: number;
  requests: number;
  k: number;
  /** Distinct histories (test users spread evenly). */
  histories: number;
  log: LogFn;
}

export interface LoadReport {
  runtime: Runtime;
  clients: number;
  requests: number;
  ok: number;
  lost: number;
  wrong: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  requestsPerSecond: number;
  serverExitCode: number | null;
  serverAnswered?: number;
}

const here = dirname(fileURLToPath(import.meta.url));
const COMPILED = import.meta.url.endsWith('.js');

/** Start `serve --port 0` in a child process; resolves with its URL once it listens. */
function startChild(o: LoadOptions): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
  const require = createRequire(import.meta.url);
  const main = join(here, '..', 'cli', COMPILED ? 'main.js' : 'main.ts');
  const args = [...(COMPILED ? [] : [require.resolve('tsx/cli')]), main, 'serve', '--student', o.student, '--port', '0', '--runtime', o.runtime, '--json'];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new RecdistillError('E_INTERNAL', `serve did not start within 60 s: ${err.slice(-500)}`)), 60_000);
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      const m = /listening on (http:\/\/\S+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1]!, stderr: () => err });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new RecdistillError('E_INTERNAL', `serve exited with code ${code} before listening: ${err.slice(-500)}`));
    });
  });
}

export async function runServeBench(o: LoadOptions): Promise<LoadReport> {
  for (const [k, v] of Object.entries({ clients: o.clients, requests: o.requests, k: o.k, histories: o.histories })) {
    if (!Number.isInteger(v) || v < 1) throw new RecdistillError('E_USAGE', `--${k} must be a positive integer, got ${v}.`);
  }
  // Expected answers: the same model and runtime, in this process.
  const rec = await loadRecommender(o.student, { runtime: o.runtime, log: o.log });
  const { pickRequests } = await import('../bench/run.js');
  const { runDatasetFlags } = await import('../student/model/run-folder.js');
  const { datasetFromFlags } = await import('../data/options.js');
  const ds = await datasetFromFlags(runDatasetFlags(o.student));
  const picked = pickRequests(ds, o.histories).histories;
  const bodies = picked.map((h) => JSON.stringify({ history: h.map((id) => rec.itemMap.items[id]!.rawId), k: o.k }));
  const expected: string[][] = [];
  for (const h of picked) expected.push((await rec.recommendDense(Int32Array.from(h), o.k)).items.map((id) => rec.itemMap.items[id]!.rawId));
  await rec.dispose();

  const { child, url } = await startChild(o);
  o.log(`serve:bench: server ${url} (${o.runtime}); ${o.clients} clients, ${o.requests} requests over ${picked.length} histories`);
  const ms: number[] = [];
  let next = 0;
  let ok = 0;
  let lost = 0;
  let wrong = 0;
  const t0 = performance.now();
  const client = async () => {
    for (let i = next++; i < o.requests; i = next++) {
      const j = i % bodies.length;
      const s = performance.now();
      try {
        const res = await fetch(`${url}/recommend`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bodies[j] });
        const body = (await res.json()) as { items?: { id: string }[] };
        ms.push(performance.now() - s);
        if (res.status !== 200 || !body.items) lost++;
        else if (body.items.map((it) => it.id).join() !== expected[j]!.join()) wrong++;
        else ok++;
      } catch {
        lost++;
      }
    }
  };
  await Promise.all(Array.from({ length: o.clients }, client));
  const seconds = (performance.now() - t0) / 1000;
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.kill('SIGTERM');
  const serverExitCode = await exit;
  const last = out.trim().split('\n').at(-1);
  let serverAnswered: number | undefined;
  try {
    serverAnswered = (JSON.parse(last ?? '{}') as { answered?: number }).answered;
  } catch {
    serverAnswered = undefined;
  }
  ms.sort((a, b) => a - b);
  return {
    runtime: o.runtime,
    clients: o.clients,
    requests: o.requests,
    ok,
    lost,
    wrong,
    p50Ms: percentile(ms, 50),
    p95Ms: percentile(ms, 95),
    p99Ms: percentile(ms, 99),
    requestsPerSecond: o.requests / seconds,
    serverExitCode,
    serverAnswered,
  };
}
