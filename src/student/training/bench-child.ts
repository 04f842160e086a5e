/**
 * student:bench child process: starts ONE backend (for wasm: the thread count is fixed per process, so the parent
 * starts one child per count, with RECDISTILL_THREADS set), runs benchStudent, prints one JSON line on stdout
 * (BenchRow, or { error, code } on failure). Log lines (e.g. the threaded-wasm fallback notice) go to stderr.
 *
 *   node <tsx cli> src/student/training/bench-child.ts '<BenchJob as JSON>'
 */
import { activeBackend, initBackend, wasmThreads } from '../../backend/index.js';
import { RecdistillError } from '../../errors.js';
import { benchStudent } from './bench.js';
import { stderrLog } from '../../util/progress.js';
import type { BenchJob } from './bench-runner.js';

async function childMain(): Promise<number> {
  try {
    const job = JSON.parse(process.argv[2] ?? '') as BenchJob;
    await initBackend(job.backend, { threads: job.threads });
    const backend = activeBackend();
    const r = benchStudent(job.config, stderrLog); // progress on stderr: the parent shows it, tagged with the row
    const threads = backend === 'wasm' ? (wasmThreads() ?? null) : null;
    process.stdout.write(`${JSON.stringify({ backend, threads, ...r })}\n`);
    return 0;
  } catch (e) {
    const code = e instanceof RecdistillError ? e.code : 'E_INTERNAL';
    process.stdout.write(`${JSON.stringify({ error: (e as Error)?.message ?? String(e), code })}\n`);
    return 1;
  }
}

// Exit explicitly once stdout is flushed: nothing (such as an idle pthread pool) may keep the child alive.
childMain().then((code) => process.stdout.write('', () => process.exit(code)));
