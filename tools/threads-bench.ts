/**
 * ms/step of the student at 1 vs N wasm threads, measured alternately in one run (A B A B ...): each round
 * starts one `student:bench --backends wasm --json` child per thread count with RECDISTILL_THREADS set, so both
 * arms see the same machine load. Prints one line per child, then per arm the median ms/step and serving
 * latency and the N/1 ratio, and the load average before and after.
 *
 *   npx tsx tools/threads-bench.ts [--threads 1,2] [--rounds 4] [--steps 5] [--requests 20] [--num-items 1682] [--max-len 200] [--dims 64] [--batch-size 32] [--json]
 *
 * Not a CLI command: the training commands' --threads flag does not exist yet; the children read RECDISTILL_THREADS.
 */
import { spawnSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..');

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}

const threads = arg('threads', '1,2').split(',').map(Number);
const rounds = Number(arg('rounds', '4'));
const benchArgs = ['--steps', arg('steps', '5'), '--requests', arg('requests', '20'), '--num-items', arg('num-items', '1682'), '--max-len', arg('max-len', '200'), '--dims', arg('dims', '64'), '--batch-size', arg('batch-size', '32')];
const json = process.argv.includes('--json');

const median = (xs: number[]) => {
  const s = xs.slice().sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');

const loadBefore = load();
const log = (s: string) => process.stderr.write(`${s}\n`);
log(`threads-bench: threads ${threads.join(' vs ')}, ${rounds} rounds, load average ${loadBefore}`);
const runs: Record<number, { msPerStep: number[]; serveMsMedian: number[]; reported: number[] }> = {};
for (const t of threads) runs[t] = { msPerStep: [], serveMsMedian: [], reported: [] };
for (let r = 0; r < rounds; r++) {
  // Alternate the order too (1 2, 2 1, ...): the first child of a round may see a different load than the second.
  const order = r % 2 ? threads.slice().reverse() : threads;
  for (const t of order) {
    const p = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'student:bench', '--backends', 'wasm', ...benchArgs, '--json'], {
      cwd: ROOT,
      env: { ...process.env, RECDISTILL_THREADS: String(t) },
      encoding: 'utf8',
    });
    const last = p.stdout.trim().split('\n').pop() ?? '';
    if (p.status !== 0) throw new Error(`student:bench (threads ${t}) exited ${p.status}: ${p.stderr.slice(-2000)}`);
    const out = JSON.parse(last) as { results: Array<{ msPerStep: number; serveMsMedian: number }> };
    const res = out.results[0]!;
    const notice = p.stderr.split('\n').find((l) => l.includes('threaded wasm'));
    runs[t]!.msPerStep.push(res.msPerStep);
    runs[t]!.serveMsMedian.push(res.serveMsMedian);
    log(`round ${r + 1} threads ${t}: ${res.msPerStep.toFixed(0)} ms/step, serve ${res.serveMsMedian.toFixed(2)} ms, load ${load()}${notice ? ` [${notice}]` : ''}`);
  }
}
const summary = threads.map((t) => ({ threads: t, msPerStepMedian: median(runs[t]!.msPerStep), msPerStep: runs[t]!.msPerStep, serveMsMedian: median(runs[t]!.serveMsMedian) }));
const base = summary[0]!;
for (const s of summary) {
  log(`threads ${s.threads}: median ${s.msPerStepMedian.toFixed(0)} ms/step (${(s.msPerStepMedian / base.msPerStepMedian).toFixed(2)}x of threads ${base.threads}), serve median ${s.serveMsMedian.toFixed(2)} ms`);
}
log(`load average before ${loadBefore}, after ${load()}`);
if (json) process.stdout.write(`${JSON.stringify({ config: Object.fromEntries(benchArgs.map((v, i, a) => (i % 2 ? [] : [a[i]!.slice(2), Number(a[i + 1])])).filter((e) => e.length)), rounds, loadBefore, loadAfter: load(), results: summary })}\n`);
