import { rmSync } from 'node:fs';
import { comparisonRows, textTable } from '../../bench/report.js';
import { defineOptions } from '../../config/options.js';
import { loadavg } from 'node:os';
import { availableCores, THREADS_ENV } from '../../backend/index.js';
import { demoPreset, demoThreads, runDemo, type DemoSummary } from '../demo-run.js';
import { defineCommand } from '../command.js';

const options = defineOptions({
  root: { type: 'string', help: 'where every demo artifact goes (gitignored)', default: '.recdistill/demo' },
  quick: { type: 'boolean', help: 'tiny sizes (tests, CI): 60 users, 40 items, 10 epochs', default: false },
  users: { type: 'int', help: 'synthetic users (0 = preset: 300, quick 60)', default: 0 },
  items: { type: 'int', help: 'synthetic items (0 = preset: 200, quick 40)', default: 0 },
  epochs: { type: 'int', help: 'student epochs (0 = preset: 12, quick 10)', default: 0 },
  threads: { type: 'int', help: 'wasm threads (0 = RECDISTILL_THREADS, else 1 when the load average shows busy cores, else every core)', default: 0 },
  requests: { type: 'int', help: 'bench requests for the student (0 = preset: 300, quick 30)', default: 0 },
  fresh: { type: 'boolean', help: 'delete --root first and rebuild everything', default: false },
});

export default defineCommand({
  description: 'the whole pipeline offline on the synthetic dataset: tiny LM teacher -> cache -> students (CE, distilled) -> eval -> bench',
  options,
  async run(o, ctx) {
    if (o.fresh) rmSync(o.root, { recursive: true, force: true });
    const p = demoPreset(o.quick);
    // Every stage (and the bench's child processes) reads the thread count from the environment.
    const before = process.env[THREADS_ENV];
    if (o.threads > 0) process.env[THREADS_ENV] = String(o.threads);
    else if (!before) {
      const t = demoThreads(loadavg()[0]!, availableCores());
      ctx.log(`demo: ${t.why}; --threads N or RECDISTILL_THREADS to choose`);
      process.env[THREADS_ENV] = String(t.threads);
    }
    try {
      return await runDemo({
      root: o.root,
      quick: o.quick,
      users: o.users || p.users,
      items: o.items || p.items,
      epochs: o.epochs || p.epochs,
      requests: o.requests || p.requests,
      log: ctx.log,
      });
    } finally {
      if (before === undefined) delete process.env[THREADS_ENV];
      else process.env[THREADS_ENV] = before;
    }
  },
  format(d: DemoSummary) {
    const acc = Object.entries(d.accuracy).map(([name, m]) => [name, m['ndcg@10'].toFixed(4), m['hr@10'].toFixed(4)]);
    const { header, rows } = comparisonRows(d.bench);
    const w = Math.max(...Object.keys(d.artifacts).map((k) => k.length));
    return [
      `recdistill demo: done in ${d.seconds.toFixed(0)}s (${Object.entries(d.stages).map(([k, v]) => `${k} ${v.toFixed(0)}s`).join(', ')})`,
      '',
      'Test accuracy (full ranking, history excluded):',
      textTable(['model', 'NDCG@10', 'HR@10'], acc),
      '',
      'Teacher vs distilled student (bench):',
      textTable(header, rows),
      `speed-up (teacher p50 / student p50): ${d.bench.speedup.toFixed(1)}x`,
      '',
      'Artifacts:',
      ...Object.entries(d.artifacts).map(([k, v]) => `  ${k.padEnd(w)}  ${v}`),
    ].join('\n');
  },
});
