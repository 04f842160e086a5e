import { loadavg } from 'node:os';
import { availableBackends } from '../../backend/index.js';
import { defineOptions } from '../../config/options.js';
import { RecdistillError } from '../../errors.js';
import { benchTable, parseThreadList, runBenchPlan, type BenchRow } from '../../student/training/bench-runner.js';
import { defineCommand } from '../command.js';

const benchOptions = defineOptions({
  backends: { type: 'string', help: 'comma-separated backends to time (default: every one available here)', default: '' },
  threads: { type: 'string', help: 'comma-separated wasm thread counts, one row and one child process each (default: $RECDISTILL_THREADS if set, else 1,<cores available>); cpu and node get one row', default: '' },
  numItems: { type: 'int', help: 'catalogue size (ML-100K: 1682)', default: 1682 },
  maxLen: { type: 'int', help: 'sequence length of every benchmark row', default: 200 },
  dims: { type: 'int', help: 'hidden size', default: 64 },
  blocks: { type: 'int', help: 'attention blocks', default: 2 },
  heads: { type: 'int', help: 'attention heads', default: 1 },
  dropout: { type: 'number', help: 'dropout on embeddings, attention output and feed-forward', default: 0.2 },
  attnDropout: { type: 'number', help: 'dropout on attention probabilities (student:train defaults to 0.2; each one draws a mask over [B, H, L, L])', default: 0 },
  batchSize: { type: 'int', help: 'sequences per training step', default: 32 },
  steps: { type: 'int', help: 'timed training steps per backend (after one warm-up step)', default: 5 },
  cpuSteps: { type: 'int', help: 'timed steps on the slow pure-JS cpu backend', default: 1 },
  requests: { type: 'int', help: 'timed single-history serving requests per backend', default: 50 },
  breakdown: { type: 'boolean', help: 'after each timed step, time attention, FFN, output layer and optimiser alone (forward + backward; --no-breakdown skips it)', default: true },
});

/** student:bench's summary: the configuration timed, one row per (backend, threads), the load around it. */
export interface StudentBenchSummary {
  config: { numItems: number; maxLen: number; dims: number; blocks: number; heads: number; batchSize: number; dropout: number; attnDropout: number };
  results: BenchRow[];
  loadAverage: { before: number[]; after: number[] };
  note: string;
}

const load = () => loadavg().map((x) => Number(x.toFixed(2)));

export default defineCommand({
  description: 'ms per training step (and its share in attention, FFN, output layer, optimiser) and single-request serving latency, per tfjs backend and wasm thread count',
  options: benchOptions,
  async run(o, ctx) {
    const names = o.backends ? o.backends.split(',').map((s) => s.trim()) : await availableBackends();
    for (const name of names) {
      if (!['node', 'wasm', 'cpu'].includes(name)) throw new RecdistillError('E_USAGE', `unknown backend "${name}"; valid: node, wasm, cpu.`);
    }
    for (const [k, v] of [['steps', o.steps], ['cpu-steps', o.cpuSteps], ['requests', o.requests], ['batch-size', o.batchSize], ['max-len', o.maxLen], ['num-items', o.numItems]] as const) {
      if (!(v >= 1)) throw new RecdistillError('E_USAGE', `--${k} must be at least 1, got ${v}.`);
    }
    const threads = parseThreadList(o.threads);
    const loadBefore = load();
    ctx.log(`student:bench: backends ${names.join(', ')}; wasm threads ${threads.join(', ')}; load average ${loadBefore.join(' ')}`);
    const rows: BenchRow[] = await runBenchPlan({
      backends: names,
      threads,
      log: ctx.log,
      configFor: (name) => ({
        numItems: o.numItems, maxLen: o.maxLen, dims: o.dims, blocks: o.blocks, heads: o.heads, ffnDims: o.dims, dropout: o.dropout, attnDropout: o.attnDropout,
        batchSize: o.batchSize, steps: name === 'cpu' ? o.cpuSteps : o.steps, requests: name === 'cpu' ? Math.min(o.requests, 10) : o.requests, breakdown: o.breakdown,
      }),
    });
    const loadAfter = load();
    const summary: StudentBenchSummary = {
      config: { numItems: o.numItems, maxLen: o.maxLen, dims: o.dims, blocks: o.blocks, heads: o.heads, batchSize: o.batchSize, dropout: o.dropout, attnDropout: o.attnDropout },
      results: rows,
      loadAverage: { before: loadBefore, after: loadAfter },
      note: 'timings on a shared machine are pessimistic',
    };
    if (ctx.json) ctx.log(`${benchTable(rows)}\nload average before ${loadBefore.join(' ')}, after ${loadAfter.join(' ')}`);
    return summary;
  },
  format(s: StudentBenchSummary) {
    return `${benchTable(s.results)}\nload average before ${s.loadAverage.before.join(' ')}, after ${s.loadAverage.after.join(' ')}`;
  },
});
