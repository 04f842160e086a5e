import { defineOptions } from '../../config/options.js';
import { SERVE_DEFAULTS, startServer } from '../../serve/http.js';
import { loadRecommender, RUNTIMES, type Runtime } from '../../serve/recommender.js';
import { defineCommand } from '../command.js';

const options = defineOptions({
  student: { type: 'string', help: 'student:train run folder', required: true },
  port: { type: 'int', help: 'TCP port (0 = any free port)', default: 8080 },
  host: { type: 'string', help: 'address to listen on', default: '127.0.0.1' },
  runtime: { type: 'string', help: 'onnx (the exported graph on onnxruntime-node) or tfjs', default: 'onnx', choices: RUNTIMES },
  threads: { type: 'int', help: 'onnxruntime intra-op threads per request', default: 1 },
  concurrency: { type: 'int', help: 'requests running the model at once', default: SERVE_DEFAULTS.concurrency },
  queue: { type: 'int', help: 'requests allowed to wait beyond those (more get 503)', default: SERVE_DEFAULTS.queue },
  maxHistory: { type: 'int', help: 'longest history accepted (items)', default: SERVE_DEFAULTS.maxHistory },
  maxBodyBytes: { type: 'int', help: 'largest request body (bytes)', default: SERVE_DEFAULTS.maxBodyBytes },
  maxK: { type: 'int', help: 'largest k', default: SERVE_DEFAULTS.maxK },
});

export default defineCommand({
  description: 'serve a student over HTTP: POST /recommend {"history": [raw ids], "k": 10}, GET /health, GET /info',
  options,
  async run(o, ctx) {
    const rec = await loadRecommender(o.student, { runtime: o.runtime as Runtime, threads: o.threads, log: ctx.log });
    const server = await startServer(rec, o);
    // The line a supervisor (or the load test) waits for.
    ctx.log(`serve: listening on ${server.url} (${rec.info.items} items, runtime ${rec.info.runtime}); POST /recommend, GET /health, GET /info; SIGTERM stops`);
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        ctx.log(`serve: ${sig}: finishing ${server.stats().inFlight} request(s) in flight`);
        resolve();
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
    await server.close();
    await rec.dispose();
    return { url: server.url, answered: server.stats().answered };
  },
});
