/**
 * The LLM teacher: a quantised decoder LM (ONNX, onnxruntime-node) reading textified histories.
 *
 *   const enc = await loadLlmTeacher({ model: '/tmp/tiny', dtype: 'fp32', layers: [-1], maxPromptTokens: 1024 }, dataset);
 *   const { first, count, states } = await enc.encodeHistory(dataset.users[0].items); // [count, layers, H]
 *
 * Layer i's state is the residual stream after block i (before the final norm), read at the last token
 * of each item's text ('last-token-of-item' pooling).
 */
import { env as hfEnv } from '@huggingface/transformers';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch as osArch, platform as osPlatform } from 'node:os';
import { dirname, join } from 'node:path';
import type * as ort from 'onnxruntime-node';
import type { PreparedDataset } from '../../data/types.js';
import { env } from '../../env.js';
import { RecdistillError } from '../../errors.js';
import { createPromptCodec, loadPromptTemplate, type PromptCodec, type TruncateMode, TRUNCATE_MODES } from '../../prompt/index.js';
import { stderrLog, type LogFn } from '../../util/progress.js';
import type { TeacherEncoder } from '../types.js';
import { budgetError, embedItems, encodeHistory, measureOverhead, measurePlainLoop, planHistory, type ReadoutParts } from './encoder.js';
import { hubCacheDir, loadTokenizer, readModelConfig, resolveDtype, resolveModelFiles, weightsHash } from './load.js';
import { createRuntime, type RunStats } from './runtime.js';
import { createTappedSession, planTaps, scanModel, type TapPlan } from './tap.js';
import { parseLayerList, resolveIndices } from '../../util/layers.js';

export { llmTeacherOptions, type LlmTeacherFlags } from './options.js';
export { AUTO_DTYPE_ORDER, DEFAULT_DTYPE, DEFAULT_MODEL, DTYPES, DTYPE_SUFFIX, onnxFileFor, resolveDtype, resolveModelFiles } from './load.js';
export { planTaps } from './tap.js';

export interface LlmTeacherOptions {
  model: string;
  dtype: string;
  /** Layer indices; negative counts from the end. */
  layers: number[];
  promptPath?: string;
  maxPromptTokens: number;
  threads?: number;
  concurrency?: number;
  offline?: boolean;
  revision?: string; // hub ids: branch, tag or commit sha (default main)
  /** Sequences padded into one run (default 1). */
  batch?: number;
  truncate?: TruncateMode;
  tapPattern?: string;
  /** Let onnxruntime's intra-op threads spin-wait (faster only on an otherwise idle machine). */
  spin?: boolean;
  /** Leave out the nodes no tapped layer needs (final norm, lm_head, KV outputs). Default true. */
  prune?: boolean;
  /**
   * onnxruntime execution provider: cpu (default), cuda, tensorrt, dml, coreml, webgpu, qnn. Where the model
   * runs, not what it computes: not in the cache key (teacher:cache records it in the manifest's `runtime`).
   * Unset: RECDISTILL_DEVICE, else cpu.
   */
  device?: string;
  log?: LogFn;
}

/** Execution providers onnxruntime-node knows by name (onnxruntime-common's InferenceSession.ExecutionProviderName). */
const DEVICES = ['cpu', 'cuda', 'tensorrt', 'dml', 'coreml', 'webgpu', 'qnn'] as const;

/** What this onnxruntime-node install offers: its `listSupportedBackends()` and the folder of its native files. */
export interface OrtBuild {
  platform: string;
  arch: string;
  /** listSupportedBackends(): bundled = in the npm tarball; false = downloaded by its postinstall (CUDA, TensorRT). */
  backends: Array<{ name: string; bundled: boolean }>;
  binDir: string;
  exists(path: string): boolean;
}

/** Provider libraries onnxruntime-node's postinstall fetches from NuGet (Microsoft.ML.OnnxRuntime.Gpu.Linux) instead of bundling. */
const PROVIDER_LIBS: Record<string, string[]> = {
  cuda: ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so'],
  tensorrt: ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_tensorrt.so'],
};

const EP_NAME: Record<string, string> = { cpu: 'CPU', cuda: 'CUDA', tensorrt: 'TensorRT', dml: 'DirectML', coreml: 'CoreML', webgpu: 'WebGPU', qnn: 'QNN' };

const GET_IT: Record<string, string> = {
  cuda: 'prebuilt for linux x64 only (CUDA 12 + cuDNN 9)',
  tensorrt: 'prebuilt for linux x64 only (CUDA 12 + TensorRT 10)',
  dml: 'Windows only',
  coreml: 'macOS only',
  webgpu: 'not prebuilt for linux arm64',
  qnn: 'Windows on Snapdragon only',
};

export function ortBuild(): OrtBuild {
  const require = createRequire(import.meta.url);
  const ortNode = require('onnxruntime-node') as { listSupportedBackends?: () => Array<{ name: string; bundled: boolean }> };
  const binDir = join(dirname(require.resolve('onnxruntime-node')), '..', 'bin', 'napi-v6', osPlatform(), osArch());
  return { platform: osPlatform(), arch: osArch(), backends: ortNode.listSupportedBackends?.() ?? [{ name: 'cpu', bundled: true }], binDir, exists: existsSync };
}

/**
 * The executionProviders for `device`, or a usage error naming what is missing and how to get it. Checked
 * before the session is created (onnxruntime's own errors say "Failed to load shared library" or "backend not found").
 */
export function executionProvidersFor(device: string, build: OrtBuild = ortBuild()): string[] {
  const d = device.trim().toLowerCase();
  if (!(DEVICES as readonly string[]).includes(d)) {
    throw new RecdistillError('E_USAGE', `--device ${device}: unknown; onnxruntime-node execution providers are ${DEVICES.join(', ')}.`);
  }
  if (d === 'cpu') return ['cpu'];
  const where = `${build.platform}/${build.arch}`;
  const offered = build.backends.map((b) => b.name + (b.bundled ? '' : ' (downloaded at install)')).join(', ');
  const name = EP_NAME[d]!;
  const backend = build.backends.find((b) => b.name === d);
  if (!backend) {
    throw new RecdistillError('E_USAGE', `--device ${d}: the ${name} execution provider is not in this onnxruntime-node build for ${where} (it offers: ${offered}); ${name} is ${GET_IT[d] ?? 'not prebuilt here'}. Use --device cpu, or run on a machine where it exists.`);
  }
  const missing = (PROVIDER_LIBS[d] ?? []).filter((f) => !build.exists(join(build.binDir, f)));
  if (!backend.bundled && missing.length) {
    throw new RecdistillError(
      'E_USAGE',
      `--device ${d}: the ${name} execution provider is not in this onnxruntime-node install: ${missing.join(', ')} missing from ${build.binDir}. ` +
        `onnxruntime-node downloads them at install time (from NuGet: Microsoft.ML.OnnxRuntime.Gpu.Linux), which was skipped here (ONNXRUNTIME_NODE_INSTALL=skip, or no network). ` +
        `To get it, on a linux x64 machine with an NVIDIA driver, CUDA 12 and cuDNN 9${d === 'tensorrt' ? ' and TensorRT 10' : ''}: \`ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node\` with network access ` +
        `(or \`npm ci\` without the skip setting). Or use --device cpu.`,
    );
  }
  // onnxruntime appends the CPU provider itself for the nodes the device cannot run.
  return [d];
}

export interface LlmTeacherEncoder extends TeacherEncoder {
  /** Run counters (runs, real and padded tokens, seconds inside session.run). */
  stats(): RunStats;
  /** Plain sequential session.run loop over the same passes, for the overhead check. */
  measurePlainLoop(histories: Int32Array[]): Promise<{ seconds: number; runs: number; tokens: number }>;
  /** Plain loop vs encodeHistory on the same histories, alternating per history; overhead = pipeline / plain - 1. */
  measureOverhead(histories: Int32Array[]): Promise<{ plainSeconds: number; pipelineSeconds: number; overhead: number }>;
  /** Token ids of the passes for one history (debugging, tests). */
  planHistory(items: Int32Array): ReturnType<typeof planHistory>;
  codec: PromptCodec;
  /** Name of each tapped tensor, in layer order. */
  tapNames: string[];
  /** How the tapped tensors were found (export family, nodes added). */
  tapPlan: TapPlan;
  session: ort.InferenceSession;
  /** The device the session runs on (LlmTeacherOptions.device, lower-cased) and the executionProviders asked for. */
  device: string;
  executionProviders: string[];
}

/** Build options from the llmTeacherOptions flags (layers given as "-4,-1"). */
export function llmOptionsFromFlags(f: {
  model: string;
  dtype: string;
  layers: string;
  tapPattern?: string;
  prune?: boolean;
  prompt?: string;
  maxPromptTokens: number;
  truncate: string;
  threads: number;
  concurrency: number;
  batch: number;
  offline: boolean;
  device?: string;
}): LlmTeacherOptions {
  return {
    model: f.model,
    dtype: f.dtype,
    layers: parseLayerList(f.layers, '--layers'),
    tapPattern: f.tapPattern,
    prune: f.prune,
    promptPath: f.prompt,
    maxPromptTokens: f.maxPromptTokens,
    truncate: f.truncate as TruncateMode,
    threads: f.threads,
    concurrency: f.concurrency,
    batch: f.batch,
    offline: f.offline,
    device: f.device,
  };
}

export async function loadLlmTeacher(requested: LlmTeacherOptions, dataset: PreparedDataset): Promise<LlmTeacherEncoder> {
  const log = requested.log ?? stderrLog;
  // `auto` becomes a concrete dtype here, so the manifest and cache key record the file actually used.
  const opts = { ...requested, dtype: resolveDtype(requested.model, requested.dtype) };
  const offline = opts.offline || env.offline;
  const truncate = opts.truncate ?? 'windows';
  if (!TRUNCATE_MODES.includes(truncate)) throw new RecdistillError('E_USAGE', `truncate must be one of ${TRUNCATE_MODES.join(', ')}; got "${truncate}".`);
  for (const [k, v] of Object.entries({ maxPromptTokens: opts.maxPromptTokens, concurrency: opts.concurrency ?? 1, batch: opts.batch ?? 1 })) {
    if (!Number.isInteger(v) || v < 1) throw new RecdistillError('E_USAGE', `${k} must be a positive integer; got ${v}.`);
  }
  // transformers.js runtime settings, in line with ours (one cache, one offline switch).
  hfEnv.cacheDir = hubCacheDir();
  hfEnv.allowRemoteModels = !offline;

  const files = await resolveModelFiles(opts.model, opts.dtype, offline, log, { revision: opts.revision });
  const cfg = readModelConfig(files.dir);
  const maxPos = cfg.raw.max_position_embeddings ?? cfg.raw.n_positions;
  if (typeof maxPos === 'number' && opts.maxPromptTokens > maxPos) {
    throw new RecdistillError('E_USAGE', `max-prompt-tokens ${opts.maxPromptTokens} exceeds the model's max_position_embeddings (${maxPos}) in ${files.dir}/config.json.`);
  }
  const layers = resolveIndices(opts.layers, cfg.numLayers, { flag: '--layers', of: `a model with ${cfg.numLayers} layers` });
  const scan = scanModel(files.onnxPath);
  const plan = planTaps(scan, cfg.numLayers, layers, opts.tapPattern);
  const names = plan.names;
  const device = (opts.device ?? process.env.RECDISTILL_DEVICE ?? 'cpu').trim().toLowerCase() || 'cpu';
  const providers = executionProvidersFor(device);
  // No spin-waiting in the intra-op pool: onnxruntime-node runs session.run synchronously on the JS
  // thread, and spinning workers burn CPU that the other threads (and other processes) need. Measured on
  // the tiny model, 900 tokens, 2 busy cores: 117 -> 86 CPU ms per run, 297 -> 216 ms wall.
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    interOpNumThreads: 1,
    ...(opts.threads ? { intraOpNumThreads: opts.threads } : {}),
    extra: { session: { intra_op: { allow_spinning: opts.spin ? '1' : '0' } } },
    // cpu: no executionProviders at all (onnxruntime's default, as before --device existed).
    ...(device === 'cpu' ? {} : { executionProviders: providers }),
    // DirectML cannot run with memory patterns (onnxruntime docs); sequential execution is set above.
    ...(device === 'dml' ? { enableMemPattern: false } : {}),
  };
  const session = createTappedSession(files.onnxPath, scan, plan, sessionOptions, { prune: opts.prune ?? true }).catch((e: unknown) => {
    if (device === 'cpu') throw e;
    // The provider's files exist but did not load or run this graph (driver, CUDA / cuDNN libraries, an op it lacks).
    throw new RecdistillError('E_USAGE', `--device ${device}: onnxruntime could not create a session with the ${EP_NAME[device] ?? device} execution provider: ${String((e as Error).message ?? e).split('\n')[0]}. ${device === 'cuda' || device === 'tensorrt' ? 'It needs an NVIDIA driver, CUDA 12 and cuDNN 9 libraries on LD_LIBRARY_PATH. ' : ''}Use --device cpu to run on the CPU.`);
  });
  const [tapped, hash, tokenizer] = await Promise.all([
    session,
    weightsHash(files),
    loadTokenizer(files.dir),
  ]);
  const template = loadPromptTemplate(opts.promptPath);
  const codec = createPromptCodec(tokenizer, template, dataset.items);
  const rt = createRuntime(tapped.session, names, cfg, { concurrency: opts.concurrency ?? 1, batch: opts.batch ?? 1 });
  const parts: ReadoutParts = { rt, codec, maxPromptTokens: opts.maxPromptTokens, truncate, numItems: dataset.items.length - 1 };
  // The budget must hold the fixed prompt and the widest item line: say so now, before anything is written.
  const tooWide = budgetError(codec, opts.maxPromptTokens, dataset);
  if (tooWide) {
    await tapped.session.release();
    tapped.cleanup();
    throw new RecdistillError('E_USAGE', tooWide);
  }
  log(`teacher: ${opts.model} (${opts.dtype}, ${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, device ${device}) tapping ${names.join(', ')} [${plan.how}${tapped.prunedNodes ? `; ${tapped.prunedNodes} nodes no tap needs left out` : ''}]; prompt ${template.path} (${codec.chat ? 'chat template' : 'plain'}, ${codec.head.length + codec.tail.length} fixed tokens)`);
  return {
    kind: 'llm',
    model: opts.model,
    dtype: opts.dtype,
    weightsHash: hash,
    ...(files.commit ? { revision: files.revision, commit: files.commit } : {}),
    layers,
    hiddenSize: cfg.hiddenSize,
    pooling: 'last-token-of-item',
    prompt: { path: template.path, sha256: template.sha256 },
    encodeHistory: (items) => encodeHistory(parts, items),
    embedItems: (onProgress) => embedItems(parts, 32, onProgress),
    measurePlainLoop: (histories) => measurePlainLoop(parts, histories),
    measureOverhead: (histories) => measureOverhead(parts, histories),
    planHistory: (items) => planHistory(parts, items),
    stats: () => ({ ...rt.stats }),
    codec,
    tapNames: names,
    tapPlan: plan,
    session: tapped.session,
    device,
    executionProviders: providers,
    async dispose() {
      await tapped.session.release();
      tapped.cleanup();
    },
  };
}
