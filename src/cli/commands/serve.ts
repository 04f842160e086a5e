import { defineOptions } from '../../config/options.js';
import { RecdistillError } from '../../errors.js';
import { SERVE_DEFAULTS, startServer } from '../../serve/http.js';
import { loadRecommender, RUNTIMES, type Runtime } from '../../serve/recommender.js';
import { defineCommand } from '../command.js';

const D = SERVE_DEFAULTS;
const options = defineOptions({
  student: { type: 'string', help: 'student:train run folder', required: true },
  port: { type: 'int', help: 'TCP port (0 = any free port)', default: 8080 },
  host: { type: 'string', help: 'address to listen on', default: '127.0.0.1' },
  runtime: { type: 'string', help: 'onnx (the exported graph on onnxruntime-node) or tfjs', default: 'onnx', choices: RUNTIMES },
  threads: { type: 'int', help: 'onnxruntime intra-op threads per request', default: 1 },
  infoPaths: { type: 'boolean', help: 'GET /info shows the run folder\'s absolute path (else its name only)', default: D.infoPaths },
});

/** Every bound a client meets; listed under one heading in --help. */
const limits = defineOptions(
  {
    concurrency: { type: 'int', help: 'requests running the model at once', default: D.concurrency },
    queue: { type: 'int', help: 'requests allowed to wait beyond those (more get 503 with Retry-After)', default: D.queue },
    maxRequestHistory: { type: 'int', help: 'longest history one request may send, in items (more get 413)', default: D.maxRequestHistory },
    maxHistory: { type: 'int', help: 'deprecated alias of --max-request-history' },
    maxK: { type: 'int', help: 'largest k', default: D.maxK },
    maxBodyBytes: { type: 'int', help: 'largest request body, in bytes (more get 413)', default: D.maxBodyBytes },
    maxBufferedBytes: { type: 'int', help: 'request body bytes held in memory by all connections together (a body that would pass it gets 503)', default: D.maxBufferedBytes },
    maxConnections: { type: 'int', help: 'open connections (one more gets 503 and is closed)', default: D.maxConnections },
    readTimeout: { type: 'number', help: 'seconds a client has to send a whole request, headers and body (408 after); also while shutting down', default: D.readTimeout },
    shutdownGrace: { type: 'number', help: 'seconds SIGTERM/SIGINT wait for requests in flight before every connection is closed and serve exits 0', default: D.shutdownGrace },
  },
  { group: 'Limits and shutdown' },
);

export default defineCommand({
  description: 'serve a student over HTTP: POST /recommend {"history": [raw ids], "k": 10}, GET /health, GET /info',
  options: { ...options, ...limits },
  async run(o, ctx) {
    const maxRequestHistory = requestHistoryFlag(o.maxRequestHistory, o.maxHistory, ctx.log);
    const rec = await loadRecommender(o.student, { runtime: o.runtime as Runtime, threads: o.threads, log: ctx.log });
    let server: Awaited<ReturnType<typeof startServer>>;
    try {
      server = await startServer(rec, { ...o, maxRequestHistory });
    } catch (e) {
      await rec.dispose();
      throw e;
    }
    // The line a supervisor (or the load test) waits for.
    ctx.log(`serve: listening on ${server.url} (${rec.info.items} items, runtime ${rec.info.runtime}); POST /recommend, GET /health, GET /info; SIGTERM stops`);
    // After the first signal neither listener stays: a second SIGTERM or SIGINT ends the process at once.
    const sig = await new Promise<string>((resolve) => {
      const on = (name: string) => () => {
        process.off('SIGTERM', term);
        process.off('SIGINT', int);
        resolve(name);
      };
      const term = on('SIGTERM');
      const int = on('SIGINT');
      process.once('SIGTERM', term);
      process.once('SIGINT', int);
    });
    const s = server.stats();
    ctx.log(`serve: ${sig}: finishing ${s.inFlight} request(s) in flight on ${s.connections} connection(s), at most ${o.shutdownGrace} s`);
    await server.close();
    await rec.dispose();
    return { url: server.url, answered: server.stats().answered };
  },
});

/** --max-history was serve's name for --max-request-history; it still works, with a warning (it is not the dataset's flag). */
function requestHistoryFlag(value: number, alias: number | undefined, log: (line: string) => void): number {
  if (alias === undefined) return value;
  log('serve: --max-history is deprecated (it is not the dataset flag of that name); use --max-request-history.');
  if (value !== SERVE_DEFAULTS.maxRequestHistory && value !== alias) {
    throw new RecdistillError('E_USAGE', `--max-history ${alias} and --max-request-history ${value} disagree; give --max-request-history only.`);
  }
  return alias;
}
