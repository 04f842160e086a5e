import { availableBackends, initBackend, type BackendName } from '../../backend/index.js';
import { defineOptions } from '../../config/options.js';
import { RecdistillError } from '../../errors.js';
import { benchStudent } from '../../student/bench.js';
import { defineCommand } from '../command.js';

const benchOptions = defineOptions({
  backends: { type: 'string', help: 'comma-separated backends to time (default: every one available here)', default: '' },
  numItems: { type: 'int', help: 'catalogue size (ML-100K: 1682)', default: 1682 },
  maxLen: { type: 'int', help: 'sequence length of every benchmark row', default: 200 },
  dims: { type: 'int', help: 'hidden size', default: 64 },
  blocks: { type: 'int', help: 'attention blocks', default: 2 },
  heads: { type: 'int', help: 'attention heads', default: 1 },
  batchSize: { type: 'int', help: 'sequences per training step', default: 32 },
  steps: { type: 'int', help: 'timed training steps per backend (after one warm-up step)', default: 5 },
  cpuSteps: { type: 'int', help: 'timed steps on the slow pure-JS cpu backend', default: 1 },
  requests: { type: 'int', help: 'timed single-history serving requests per backend', default: 50 },
});

export default defineCommand({
  description: 'ms per training step and single-request serving latency for each tfjs backend available',
  options: benchOptions,
  async run(o, ctx) {
    const names = o.backends ? o.backends.split(',').map((s) => s.trim()) : await availableBackends();
    const rows: Record<string, unknown>[] = [];
    for (const name of names) {
      if (!['node', 'wasm', 'cpu'].includes(name)) throw new RecdistillError('E_USAGE', `unknown backend "${name}"; valid: node, wasm, cpu.`);
      const active = await initBackend(name as BackendName);
      const cfg = { numItems: o.numItems, maxLen: o.maxLen, dims: o.dims, blocks: o.blocks, heads: o.heads, ffnDims: o.dims, dropout: 0.2, attnDropout: 0, batchSize: o.batchSize, steps: name === 'cpu' ? o.cpuSteps : o.steps, requests: name === 'cpu' ? Math.min(o.requests, 10) : o.requests };
      ctx.log(`student:bench: ${active}: ${cfg.steps} steps of ${o.batchSize} x ${o.maxLen}, ${cfg.requests} requests ...`);
      const r = benchStudent(cfg);
      ctx.log(`student:bench: ${active}: ${r.msPerStep.toFixed(0)} ms/step, serve median ${r.serveMsMedian.toFixed(2)} ms (p90 ${r.serveMsP90.toFixed(2)} ms)`);
      rows.push({ backend: active, msPerStep: Number(r.msPerStep.toFixed(1)), serveMsMedian: Number(r.serveMsMedian.toFixed(3)), serveMsP90: Number(r.serveMsP90.toFixed(3)) });
    }
    return { config: { numItems: o.numItems, maxLen: o.maxLen, dims: o.dims, blocks: o.blocks, heads: o.heads, batchSize: o.batchSize }, results: rows, note: 'timings on a shared machine are pessimistic' };
  },
});
