import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { BenchReport } from '../bench/report.js';
import { runBench } from '../bench/run.js';
import { resolveOptions, type OptionSpecs } from '../config/options.js';
import type { Command, CommandContext } from './command.js';
import { sha256, stableStringify } from '../util/hash.js';
import { studentOptions } from '../student/training/config.js';
import { readManifest } from '../cache/format.js';
import { resolveCacheConfig, runCacheStage } from '../cache/config.js';
import { initBackend } from '../backend/index.js';
import { datasetFromFlags, datasetOptions } from '../data/options.js';
import { runStudentStage, studentStageConfig } from '../distill/stage.js';
import { evalOptions, runEvalStage } from '../student/serving/eval-stage.js';
import { readRunMetrics } from '../student/serving/serve.js';
import type { LogFn } from '../util/progress.js';

/**
 * The whole pipeline offline, in-process, on the synthetic dataset:
 *   model:tiny -> teacher:cache (tiny LM teacher) -> student:train (CE only) -> student:train (distilled)
 *   -> eval -> bench (each model in its own child process).
 * Every stage is its library function (runCacheStage, runStudentStage, runEvalStage, runBench) with its config
 * resolved from flags as the CLI resolves them (model:tiny, a tool rather than a stage, through its command), so
 * the demo exercises the same code a user runs. Idempotent: outputs live under `root` in folders named by their
 * options (the cache by its key, students by a hash of their flags); a finished artifact is reused, a half one
 * resumes (teacher:cache shards, student checkpoints).
 */
export interface DemoOptions {
  root: string;
  quick: boolean;
  users: number;
  items: number;
  epochs: number;
  requests: number;
  log: LogFn;
}

export interface DemoSummary extends Record<string, unknown> {
  root: string;
  seconds: number;
  stages: Record<string, number>;
  accuracy: Record<string, { 'ndcg@10': number; 'hr@10': number }>;
  bench: Pick<BenchReport, 'teacher' | 'student' | 'speedup'>;
  artifacts: Record<string, string>;
}

/**
 * wasm threads for the demo when neither --threads nor RECDISTILL_THREADS says: every core on an idle machine,
 * one when the other processes already keep the cores busy (threads then wait on each other: one is faster).
 */
export function demoThreads(load: number, cores: number): { threads: number; why: string } {
  const busy = load >= cores - 0.5;
  return busy
    ? { threads: 1, why: `load average ${load.toFixed(1)} on ${cores} cores: 1 wasm thread (faster than ${cores} on busy cores)` }
    : { threads: cores, why: `load average ${load.toFixed(1)} on ${cores} cores: ${cores} wasm threads` };
}

/** Size presets: --quick is for tests and CI (well under a minute of training on 2 cores). */
export function demoPreset(quick: boolean): { users: number; items: number; epochs: number; requests: number } {
  // quick: 10 epochs (2 steps each on 60 users): one epoch left the students at the popularity baseline.
  return quick ? { users: 60, items: 40, epochs: 10, requests: 30 } : { users: 300, items: 200, epochs: 12, requests: 300 };
}

type AnyCommand = Command<OptionSpecs>;

async function runCommand(load: () => Promise<{ default: unknown }>, flags: Record<string, unknown>, ctx: CommandContext): Promise<Record<string, unknown>> {
  const cmd = (await load()).default as AnyCommand;
  return cmd.run(resolveOptions(cmd.options, { flags }), ctx);
}

const metricsOf = (m: unknown): { 'ndcg@10': number; 'hr@10': number } => {
  const r = m as Record<string, number>;
  return { 'ndcg@10': r['ndcg@10']!, 'hr@10': r['hr@10']! };
};

export async function runDemo(o: DemoOptions): Promise<DemoSummary> {
  const t0 = performance.now();
  const log = o.log;
  const ctx: CommandContext = { log, json: false, verbose: false };
  const stages: Record<string, number> = {};
  const step = async <T>(name: string, n: number, fn: () => Promise<T>): Promise<T> => {
    log(`\ndemo [${n}/6] ${name} (${((performance.now() - t0) / 1000).toFixed(0)}s elapsed)`);
    const s = performance.now();
    const r = await fn();
    stages[name] = Number(((performance.now() - s) / 1000).toFixed(1));
    return r;
  };
  const data = { dataset: 'synthetic', syntheticUsers: o.users, syntheticItems: o.items };

  // 1. A tiny random decoder-only LM with a real BPE tokenizer stands in for the quantised LLM (no hub here).
  const lm = join(o.root, 'tiny-lm');
  await step('model:tiny', 1, async () => {
    if (existsSync(join(lm, 'config.json')) && existsSync(join(lm, 'onnx', 'model.onnx')) && existsSync(join(lm, 'tokenizer.json'))) {
      log(`demo: reusing ${lm}`);
      return;
    }
    await runCommand(() => import('./commands/model-tiny.js'), { out: lm }, ctx);
  });

  // 2. The teacher reads every textified history once; hidden states, item embeddings, soft labels, its metrics.
  const cacheSummary = await step('teacher:cache', 2, async () => {
    // The cache stage with teacher:cache's resolution of the same flags (same config, same cache key).
    const config = resolveCacheConfig({ teacher: 'llm', model: lm, dtype: 'fp32', layers: '-3,-1', topK: Math.min(50, Math.max(1, Math.floor(o.items / 2))), cacheRoot: join(o.root, 'teacher-cache'), headEpochs: o.quick ? 3 : 10, overheadSample: 0, offline: true });
    const ds = await datasetFromFlags(resolveOptions(datasetOptions, { flags: data }));
    return runCacheStage(config, ds, { backend: await initBackend('auto'), log });
  });
  const cache = String(cacheSummary.cache);

  // 3-4. Students: CE only (the baseline), then distilled from the cache (soft labels + hidden alignment).
  // A run folder's name covers student:train's defaults too, so a run finished before a default changed is not reused.
  const defaults = Object.fromEntries(Object.entries(studentOptions).map(([k, spec]) => [k, (spec as { default?: unknown }).default]));
  const train = async (name: string, extra: Record<string, unknown>) => {
    const flags = { ...data, epochs: o.epochs, patience: 5, ...extra };
    const out = join(o.root, 'student', `${name}-${sha256(stableStringify({ flags, defaults })).slice(0, 8)}`);
    if (existsSync(join(out, 'model.safetensors')) && existsSync(join(out, 'metrics.json'))) {
      log(`demo: reusing finished run ${out}`);
      return { out, test: readRunMetrics(out)?.test };
    }
    const r = await runStudentStage(studentStageConfig({ ...flags, out }, 'demo'), { log });
    return { out, test: r.test };
  };
  const base = await step('student:train (CE only)', 3, () => train('ce', {}));
  const distilled = await step('student:train (distilled)', 4, () => train('distilled', { cache, lambdaKd: 1, lambdaCos: 0.5 }));

  // 5. Evaluation of the distilled student (full ranking, sampled-100, popularity), written to its eval.json.
  const ev = await step('eval', 5, () => runEvalStage(resolveOptions(evalOptions, { flags: { student: distilled.out } }), { log }));

  // 6. Teacher vs distilled student: latency, throughput, size, memory, accuracy; report next to the run.
  const bench = await step('bench', 6, () =>
    runBench({
      student: distilled.out,
      cache,
      requests: o.requests,
      teacherRequests: Math.min(o.requests, o.quick ? 8 : 40),
      warmup: o.quick ? 5 : 30,
      batch: 64,
      batchRounds: o.quick ? 2 : 8,
      k: 10,
      backend: 'auto',
      threads: 0,
      teacherMicroBatch: 8,
      log,
    }),
  );
  const manifest = readManifest(cache);
  const rel = (p: string) => relative(process.cwd(), p) || '.';
  return {
    root: rel(o.root),
    seconds: Number(((performance.now() - t0) / 1000).toFixed(1)),
    stages,
    accuracy: {
      popularity: metricsOf(ev.popularity),
      teacher: metricsOf(manifest.metrics?.test),
      'student (CE only)': metricsOf(base.test),
      'student (distilled)': metricsOf(distilled.test),
    },
    bench: { teacher: bench.teacher, student: bench.student, speedup: bench.speedup },
    artifacts: {
      'tiny LM (teacher model)': rel(lm),
      'teacher cache': rel(cache),
      'teacher cache manifest': rel(join(cache, 'manifest.json')),
      'student (CE only)': rel(base.out),
      'student (distilled)': rel(distilled.out),
      'training curves': rel(join(distilled.out, 'curves.svg')),
      'eval report': rel(join(distilled.out, 'eval.json')),
      'bench report': rel(bench.files.md),
      'bench JSON': rel(bench.files.json),
      'bench chart': rel(bench.files.svg),
    },
  };
}
