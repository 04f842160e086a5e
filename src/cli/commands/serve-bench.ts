import { defineOptions } from '../../config/options.js';
import { runServeBench } from '../../serve/load.js';
import { RUNTIMES, type Runtime } from '../../serve/recommender.js';
import { defineCommand } from '../command.js';

const options = defineOptions({
  student: { type: 'string', help: 'student:train run folder', required: true },
  runtime: { type: 'string', help: 'runtime of the server: onnx or tfjs', default: 'onnx', choices: RUNTIMES },
  clients: { type: 'int', help: 'concurrent clients on 127.0.0.1', default: 8 },
  requests: { type: 'int', help: 'requests in all', default: 2000 },
  histories: { type: 'int', help: 'distinct test-user histories cycled through', default: 200 },
  k: { type: 'int', help: 'items per answer', default: 10 },
});

export default defineCommand({
  description: 'load-test `serve` from N concurrent clients: p50/p95/p99, requests/s, lost and wrong answers, clean SIGTERM',
  options,
  async run(o, ctx) {
    const r = await runServeBench({ ...o, runtime: o.runtime as Runtime, log: ctx.log });
    ctx.log(`serve:bench: ${r.requests} requests from ${r.clients} clients: ${r.requestsPerSecond.toFixed(0)} req/s, p50 ${r.p50Ms.toFixed(2)} ms, p99 ${r.p99Ms.toFixed(2)} ms; ${r.lost} lost, ${r.wrong} wrong; server exit ${r.serverExitCode}`);
    return { ...r };
  },
});
