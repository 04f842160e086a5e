import { existsSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import type { BackendName } from '../backend/index.js';
import { readManifest, type CacheManifest } from '../cache/format.js';
import { readSafetensorsFile } from '../util/safetensors.js';
import type { ItemInfo, PreparedDataset } from '../data/types.js';
import { RecdistillError } from '../errors.js';
import { sasrecParams } from '../student/model/model.js';
import { loadStudent, topK } from '../student/serving/serve.js';
import { resolveIndex } from '../util/layers.js';
import type { LogFn } from '../util/progress.js';
import { countOnnxParams } from './onnx-params.js';
import { standardise } from '../teacher/head.js';

/**
 * What bench measures for one model: a request is a history (dense item ids, oldest first) and its answer is
 * the top-k item ids with the history excluded, exactly what a recommender endpoint returns.
 * - student: loadStudent(dir).recommend (src/student/serving/serve.ts); batches go through scoreBatch + topK.
 * - llm teacher: tokenise the textified history (the cache's prompt), one forward pass of the ONNX LM over
 *   the most recent items that fit the token budget ('recent' truncation: the same last window the cache read
 *   for the test position), the tapped state at the last item's last token, the cache's soft-label head
 *   (logits = W h + b, W [N+1, H]) and top-k. Only the head's layer is tapped.
 * - seqrec teacher: its run folder served like a student.
 */
export interface ModelFile {
  path: string;
  bytes: number;
}

export interface Server {
  kind: 'student' | 'llm' | 'seqrec';
  recommend(history: Int32Array, k: number): number[];
  /** Top-k for many histories (one batched forward pass where the model allows it). */
  recommendBatch(histories: Int32Array[], k: number): Promise<number[][]>;
  /** Async single request (the LLM path is async); defaults to recommend. */
  recommendAsync(history: Int32Array, k: number): Promise<number[]>;
  params: number;
  files: ModelFile[];
  /** tfjs backend (student, seqrec) or onnxruntime-node (llm). */
  runtime: string;
  dispose(): Promise<void>;
}

const fileOf = (path: string): ModelFile => ({ path, bytes: statSync(path).size });

export async function studentServer(dir: string, kind: 'student' | 'seqrec' = 'student', backend: BackendName = 'auto'): Promise<Server> {
  const s = await loadStudent(dir, { backend });
  const recommend = (h: Int32Array, k: number) => s.recommend(h, k).items;
  return {
    kind,
    recommend,
    recommendAsync: async (h, k) => recommend(h, k),
    async recommendBatch(hs, k) {
      const N = s.info.config.numItems;
      const scores = s.scoreBatch(hs); // [B, N + 1]
      return hs.map((h, b) => topK(scores.subarray(b * (N + 1), (b + 1) * (N + 1)), k, new Set(h)).items);
    },
    params: s.info.parameters,
    files: (s.info.members ?? [dir]).map((d) => fileOf(join(d, 'model.safetensors'))),
    runtime: `tfjs-${s.info.backend}`,
    async dispose() {
      s.dispose();
    },
  };
}

/** The cache's soft-label head: W [N+1, H], b [N+1]. */
/**
 * The student through onnxruntime-node: the exported graph (student:export), built in memory from the run; a run
 * whose serve.json names an ensemble (EMKD --serve ensemble) answers with the mean of its members' scores.
 */
export async function studentOnnxServer(dir: string): Promise<Server> {
  const { loadServedOnnx } = await import('../student/serving/onnx.js');
  const s = await loadServedOnnx(dir);
  const N = s.config.numItems;
  return {
    kind: 'student',
    recommend() {
      throw new RecdistillError('E_INTERNAL', 'the onnx student answers asynchronously: use recommendAsync.');
    },
    recommendAsync: async (h, k) => (await s.recommend(h, k)).items,
    async recommendBatch(hs, k) {
      const scores = await s.scoreBatch(hs); // [B, N + 1]
      return hs.map((h, b) => topK(scores.subarray(b * (N + 1), (b + 1) * (N + 1)), k, new Set(h)).items);
    },
    params: s.members.length * sasrecParams(s.config),
    files: s.members.map((d) => fileOf(join(d, 'model.safetensors'))),
    runtime: 'onnxruntime-node',
    dispose: () => s.dispose(),
  };
}


function readHead(cacheDir: string, m: CacheManifest): { weight: Float32Array; bias: Float32Array; mean?: Float32Array; std?: Float32Array; path: string } {
  const path = join(cacheDir, m.head.file ?? 'head.safetensors');
  if (!existsSync(path)) throw new RecdistillError('E_NOT_FOUND', `${path} not found: the teacher cache ${cacheDir} has no soft-label head (is it complete? manifest "complete" = ${m.complete}).`);
  const { tensors } = readSafetensorsFile(path);
  const w = tensors.weight;
  const b = tensors.bias;
  const N1 = m.dataset.items + 1;
  if (!w || !b || w.shape[0] !== N1 || w.shape[1] !== m.teacher.hiddenSize || b.shape[0] !== N1) {
    throw new RecdistillError('E_INPUT', `${path}: expected weight [${N1}, ${m.teacher.hiddenSize}] and bias [${N1}], got weight [${w?.shape ?? ''}] and bias [${b?.shape ?? ''}].`);
  }
  const mean = tensors.input_mean?.data as Float32Array | undefined;
  const std = tensors.input_std?.data as Float32Array | undefined;
  if ((mean && mean.length !== m.teacher.hiddenSize) || (std && std.length !== m.teacher.hiddenSize)) {
    throw new RecdistillError('E_INPUT', `${path}: input_mean / input_std must have ${m.teacher.hiddenSize} values.`);
  }
  return { weight: w.data as Float32Array, bias: b.data as Float32Array, mean, std, path };
}

/**
 * logits[i] = W[i] . x + b[i] for i in 0..N, x = (h - mean) / std when the head file has input
 * statistics (the head is trained and the cached soft labels computed on standardised states; see
 * src/cache/soft.ts). Plain loops: one [N+1, H] x [H] product per request.
 */
export function headScores(weight: Float32Array, bias: Float32Array, state: Float32Array, stats?: { mean?: Float32Array; std?: Float32Array }): Float32Array {
  const H = state.length;
  const h = stats?.mean && stats.std ? standardise(Float32Array.from(state), H, stats.mean, stats.std) : state;
  const out = new Float32Array(bias.length);
  for (let i = 0; i < bias.length; i++) {
    let s = bias[i]!;
    const off = i * H;
    for (let d = 0; d < H; d++) s += weight[off + d]! * h[d]!;
    out[i] = s;
  }
  return out;
}

/** Serve the LLM teacher of a cache: model path, dtype, prompt, token budget and head come from its manifest. */
/**
 * A relative local model path in the manifest is relative to where teacher:cache ran (usually the project root):
 * try the current directory, then each ancestor of the cache folder. Hub ids and absolute paths pass through.
 */
export function localModelPath(model: string, cacheDir: string, alwaysPath = false): string {
  if (isAbsolute(model)) return model;
  if (existsSync(resolve(model))) return resolve(model);
  if (!alwaysPath && !model.startsWith('.')) return model; // a hub id
  for (let dir = resolve(cacheDir); ; dir = dirname(dir)) {
    if (existsSync(join(dir, model))) return join(dir, model);
    if (dirname(dir) === dir) break;
  }
  throw new RecdistillError('E_NOT_FOUND', `the teacher model ${model} recorded in ${join(cacheDir, 'manifest.json')} is relative to where teacher:cache ran and is not found from ${process.cwd()} nor from any folder above the cache; run bench from that folder or pass --teacher-model PATH.`);
}

async function llmTeacherServer(cacheDir: string, items: ItemInfo[], o: { batch: number; threads: number; log: LogFn; model?: string; device?: string }): Promise<Server> {
  const m = readManifest(cacheDir);
  if (m.teacher.kind !== 'llm') throw new RecdistillError('E_USAGE', `${cacheDir}: teacher kind is ${m.teacher.kind}, not llm.`);
  const head = readHead(cacheDir, m);
  const L = m.teacher.layers.length;
  const li = resolveIndex(m.head.layer, L, { flag: `${cacheDir}/manifest.json: head.layer`, of: `the ${L} tapped layers`, code: 'E_INPUT' });
  const layer = m.teacher.layers[li]!;
  const topt = m.teacher.options as { maxPromptTokens?: number; tapPattern?: string | null };
  const { loadLlmTeacher, resolveModelFiles } = await import('../teacher/llm/index.js');
  const model = o.model ?? localModelPath(m.teacher.model, cacheDir);
  const ds: PreparedDataset = { name: m.dataset.name, fingerprint: m.dataset.fingerprint, options: {}, items, users: [], stats: { users: 0, items: items.length - 1, interactions: 0, meanSeqLen: 0, medianSeqLen: 0, density: 0 } };
  const enc = await loadLlmTeacher(
    {
      model,
      dtype: m.teacher.dtype,
      layers: [layer],
      promptPath: m.teacher.prompt?.path,
      maxPromptTokens: topt.maxPromptTokens ?? 1024,
      truncate: 'recent',
      tapPattern: topt.tapPattern ?? undefined,
      threads: o.threads,
      device: o.device, // unset: RECDISTILL_DEVICE (how bench's --device reaches this worker), else cpu
      concurrency: 1,
      batch: o.batch,
      offline: true,
      revision: m.teacher.commit, // a hub model: the snapshot the cache was built from
      log: o.log,
    },
    ds,
  );
  const H = m.teacher.hiddenSize;
  const answer = async (h: Int32Array, k: number) => {
    const st = await enc.encodeHistory(h); // states [count, 1, H]
    if (!st.count) throw new RecdistillError('E_INPUT', 'llm teacher: empty history.');
    const last = st.states.subarray((st.count - 1) * H, st.count * H);
    return topK(headScores(head.weight, head.bias, last, head), k, new Set(h)).items;
  };
  const files = await resolveModelFiles(model, m.teacher.dtype, true, o.log, { revision: m.teacher.commit });
  const onnx = [files.onnxPath, ...files.externalData];
  const lm = countOnnxParams(files.onnxPath, { packed4bit: /q4|bnb4/.test(m.teacher.dtype) });
  return {
    kind: 'llm',
    recommend() {
      throw new RecdistillError('E_INTERNAL', 'the llm teacher answers asynchronously: use recommendAsync.');
    },
    recommendAsync: answer,
    // Requests made together share padded runs of up to `batch` sequences (the runtime's micro-batcher).
    recommendBatch: (hs, k) => Promise.all(hs.map((h) => answer(h, k))),
    params: lm.params + head.weight.length + head.bias.length,
    files: [...onnx, join(files.dir, 'tokenizer.json'), head.path].map(fileOf),
    runtime: 'onnxruntime-node',
    dispose: () => enc.dispose(),
  };
}

/** Serve a cache's teacher (llm or seqrec). */
export async function teacherServer(cacheDir: string, items: ItemInfo[], o: { batch: number; threads: number; log: LogFn; backend?: BackendName; model?: string; device?: string }): Promise<Server> {
  const m = readManifest(cacheDir);
  if (m.teacher.kind === 'seqrec') return studentServer(o.model ?? localModelPath(m.teacher.model, cacheDir, true), 'seqrec', o.backend);
  return llmTeacherServer(cacheDir, items, o);
}
