import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { RecdistillError } from '../errors.js';
import { sha256 } from '../util/hash.js';
import { decodeSafetensors, type STDtype, type STTensor } from '../util/safetensors.js';
import { f16ToF32 } from '../util/f16.js';
import type { CacheManifest, ShardEntry } from './format.js';

/**
 * Content checks of teacher-cache files, shared by the reader (training), teacher:verify, and the resume
 * paths of teacher:cache / teacher:merge. Each returns a problem (a sentence without the file name) or
 * undefined; callers put the file name in front. Sizes are checked against the real file before it is read,
 * values after decoding: finite hidden states / probabilities, item ids in [0, items], users / positions
 * in range and sorted.
 */

/** Header bytes a cache file may carry on top of its tensor data (the JSON header is a few hundred bytes). */
const HEADER_SLACK = 1 << 20;

/** Bytes of tensor data each file of a cache needs (its header comes on top). */
export function dataBytes(m: CacheManifest) {
  const L = m.teacher.layers.length;
  const H = m.teacher.hiddenSize;
  const K = m.softLabels.k;
  const N1 = m.dataset.items + 1;
  const hb = m.layout.hiddenDtype === 'F16' ? 2 : 4;
  return {
    hidden: (rows: number) => rows * (8 + L * H * hb),
    soft: (rows: number) => rows * (8 + K * 8),
    items: N1 * H * 4,
    stats: 2 * L * H * 4,
    /** weight [N+1, H], bias [N+1], input_mean / input_std [H] (older heads may lack the last two). */
    head: N1 * H * 4 + N1 * 4,
    headMax: N1 * H * 4 + N1 * 4 + 2 * H * 4,
  };
}

/** Problem with a file of `size` bytes that should hold `need` bytes of tensors (+ 8-byte length + header). */
export function sizeProblem(size: number, need: number, needMax = need): string | undefined {
  if (size < 8 + need || size > 8 + needMax + HEADER_SLACK) {
    return `${size} bytes on disk, but the manifest's shapes need ${8 + need}..${8 + needMax + HEADER_SLACK} (tensor data plus header)`;
  }
  return undefined;
}

/**
 * Read a whole file after checking its size (from the open descriptor, so no swap in between) against
 * `need` / `needMax`: nothing is allocated for a file the manifest cannot account for.
 */
export function readSized(path: string, need: number, needMax: number, what: string): Uint8Array {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new RecdistillError('E_NOT_FOUND', `${what} is ${code === 'ENOENT' ? 'missing' : `not readable (${code})`}.`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new RecdistillError('E_INPUT', `${what} is not a regular file.`);
    const bad = sizeProblem(st.size, need, needMax);
    if (bad) throw new RecdistillError('E_INPUT', `${what}: ${bad}.`);
    const buf = new Uint8Array(st.size);
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, off);
      if (n === 0) throw new RecdistillError('E_INPUT', `${what}: shorter than its size while reading (${off} of ${buf.length} bytes); was it being rewritten?`);
      off += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

/** Decode, turning any failure (including a TypeError from a malformed header) into a problem string. */
export function decodeOrProblem(buf: Uint8Array, path: string): Record<string, STTensor> | string {
  try {
    const { tensors } = decodeSafetensors(buf, path);
    if (tensors === null || typeof tensors !== 'object') return 'not a valid safetensors file (no tensors)';
    return tensors;
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    return e instanceof RecdistillError ? msg.replace(`${path}: `, '') : `not a valid safetensors file (${msg})`;
  }
}

function tensorProblem(ts: Record<string, STTensor>, name: string, dtypes: STDtype[], shape: number[]): string | undefined {
  const t = Object.prototype.hasOwnProperty.call(ts, name) ? ts[name] : undefined;
  if (!t) return `tensor "${name}" missing (expected ${dtypes.join('|')} [${shape}])`;
  if (!dtypes.includes(t.dtype)) return `tensor "${name}" has dtype ${t.dtype}, expected ${dtypes.join(' or ')}`;
  if (!Array.isArray(t.shape) || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    return `tensor "${name}" has shape [${t.shape}], the manifest implies [${shape}]`;
  }
  return undefined;
}

function firstProblem(...ps: Array<string | undefined>): string | undefined {
  return ps.find((p) => p !== undefined);
}

/** Index of the first non-finite value, or -1. */
export function firstNonFinite(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) {
    const v = a[i]!;
    if (v - v !== 0) return i; // NaN or +-Inf
  }
  return -1;
}

export interface HiddenShard {
  users: Int32Array;
  positions: Int32Array;
  /** [R, L, H] as float32 (F16 widened). */
  hidden: Float32Array;
}

/** A pass-1 shard's tensors: dtypes, shapes, users in the shard's range and sorted, positions sorted per user, finite states. */
export function checkHiddenShard(ts: Record<string, STTensor>, entry: ShardEntry, m: CacheManifest): HiddenShard | string {
  const R = entry.rows;
  const L = m.teacher.layers.length;
  const H = m.teacher.hiddenSize;
  const bad = firstProblem(
    tensorProblem(ts, 'user', ['I32'], [R]),
    tensorProblem(ts, 'position', ['I32'], [R]),
    tensorProblem(ts, 'hidden', [m.layout.hiddenDtype], [R, L, H]),
  );
  if (bad) return bad;
  const users = ts.user!.data as Int32Array;
  const positions = ts.position!.data as Int32Array;
  const rowsBad = rowsProblem(users, positions, entry);
  if (rowsBad) return rowsBad;
  const h = ts.hidden!;
  const hidden = h.dtype === 'F16' ? f16ToF32(h.data as Uint16Array) : (h.data as Float32Array);
  const i = firstNonFinite(hidden);
  if (i >= 0) {
    const r = Math.floor(i / (L * H));
    return `hidden state not finite (${hidden[i]}) at row ${r} (user ${users[r]}, position ${positions[r]}), layer ${Math.floor(i / H) % L}, dimension ${i % H}`;
  }
  return { users, positions, hidden };
}

function rowsProblem(users: Int32Array, positions: Int32Array, entry: ShardEntry): string | undefined {
  for (let r = 0; r < users.length; r++) {
    const u = users[r]!;
    if (u < entry.userStart || u >= entry.userEnd) return `row ${r} has user ${u}, outside the shard's users [${entry.userStart}, ${entry.userEnd})`;
    if (r > 0 && u < users[r - 1]!) return `row ${r} has user ${u} after user ${users[r - 1]}: rows are not sorted by user`;
    if (positions[r]! < 0) return `row ${r} (user ${u}) has position ${positions[r]}, expected >= 0`;
    if (r > 0 && u === users[r - 1]! && positions[r]! <= positions[r - 1]!) return `row ${r} (user ${u}) has position ${positions[r]} after ${positions[r - 1]}: positions are not increasing`;
  }
  return undefined;
}

export interface SoftShard {
  topkIndex: Int32Array;
  topkProb: Float32Array;
}

/** A soft-label shard: rows aligned with the hidden shard, item ids in [0, items], probabilities finite in [0, 1], rows summing to <= 1. */
export function checkSoftShard(ts: Record<string, STTensor>, entry: ShardEntry, m: CacheManifest, hidden?: { users: Int32Array; positions: Int32Array }): SoftShard | string {
  const R = entry.rows;
  const K = m.softLabels.k;
  const N = m.dataset.items;
  const bad = firstProblem(
    tensorProblem(ts, 'user', ['I32'], [R]),
    tensorProblem(ts, 'position', ['I32'], [R]),
    tensorProblem(ts, 'topk_index', ['I32'], [R, K]),
    tensorProblem(ts, 'topk_prob', ['F32'], [R, K]),
  );
  if (bad) return bad;
  const users = ts.user!.data as Int32Array;
  const positions = ts.position!.data as Int32Array;
  if (hidden) {
    for (let r = 0; r < R; r++) {
      if (users[r] !== hidden.users[r] || positions[r] !== hidden.positions[r]) {
        return `row ${r} is (user ${users[r]}, position ${positions[r]}) but row ${r} of ${entry.file} is (user ${hidden.users[r]}, position ${hidden.positions[r]}): rows not aligned`;
      }
    }
  } else {
    const rowsBad = rowsProblem(users, positions, entry);
    if (rowsBad) return rowsBad;
  }
  const topkIndex = ts.topk_index!.data as Int32Array;
  const topkProb = ts.topk_prob!.data as Float32Array;
  for (let i = 0; i < topkIndex.length; i++) {
    const id = topkIndex[i]!;
    if (id < 0 || id > N) return `topk_index ${id} at row ${Math.floor(i / K)} (user ${users[Math.floor(i / K)]}), column ${i % K} is outside the item ids 0..${N} (dataset.items)`;
  }
  for (let r = 0; r < R; r++) {
    let sum = 0;
    for (let j = r * K; j < (r + 1) * K; j++) {
      const p = topkProb[j]!;
      if (!(p >= 0 && p <= 1)) return `topk_prob ${p} at row ${r} (user ${users[r]}), column ${j - r * K} is not a probability (finite, in [0, 1])`;
      sum += p;
    }
    if (sum > 1 + 1e-3) return `topk_prob of row ${r} (user ${users[r]}) sums to ${sum.toFixed(6)}, more than 1`;
  }
  return { topkIndex, topkProb };
}

/** items.safetensors: `embedding` F32 [N+1, H], finite. */
export function checkItems(ts: Record<string, STTensor>, m: CacheManifest): Float32Array | string {
  const bad = tensorProblem(ts, 'embedding', ['F32'], [m.dataset.items + 1, m.teacher.hiddenSize]);
  if (bad) return bad;
  const e = ts.embedding!.data as Float32Array;
  const i = firstNonFinite(e);
  if (i >= 0) return `embedding not finite (${e[i]}) at item ${Math.floor(i / m.teacher.hiddenSize)}, dimension ${i % m.teacher.hiddenSize}`;
  return e;
}

/** stats.safetensors: `mean`, `std` F32 [L, H], finite, std >= 0. */
export function checkStats(ts: Record<string, STTensor>, m: CacheManifest): { mean: Float32Array; std: Float32Array } | string {
  const shape = [m.teacher.layers.length, m.teacher.hiddenSize];
  const bad = firstProblem(tensorProblem(ts, 'mean', ['F32'], shape), tensorProblem(ts, 'std', ['F32'], shape));
  if (bad) return bad;
  const mean = ts.mean!.data as Float32Array;
  const std = ts.std!.data as Float32Array;
  if (firstNonFinite(mean) >= 0) return `mean has a non-finite value at ${firstNonFinite(mean)}`;
  for (let i = 0; i < std.length; i++) if (!(std[i]! >= 0 && std[i]! < Infinity)) return `std ${std[i]} at ${i} is not a finite value >= 0`;
  return { mean, std };
}

/** head.safetensors: `weight` F32 [N+1, H], `bias` F32 [N+1] (and input_mean / input_std [H] when present), finite. */
export function checkHead(ts: Record<string, STTensor>, m: CacheManifest): { weight: Float32Array; bias: Float32Array } | string {
  const N1 = m.dataset.items + 1;
  const H = m.teacher.hiddenSize;
  const bad = firstProblem(
    tensorProblem(ts, 'weight', ['F32'], [N1, H]),
    tensorProblem(ts, 'bias', ['F32'], [N1]),
    ts.input_mean ? tensorProblem(ts, 'input_mean', ['F32'], [H]) : undefined,
    ts.input_std ? tensorProblem(ts, 'input_std', ['F32'], [H]) : undefined,
  );
  if (bad) return bad;
  for (const name of ['weight', 'bias', 'input_mean', 'input_std']) {
    const t = ts[name];
    if (t && firstNonFinite(t.data as Float32Array) >= 0) return `tensor "${name}" has a non-finite value at ${firstNonFinite(t.data as Float32Array)}`;
  }
  return { weight: ts.weight!.data as Float32Array, bias: ts.bias!.data as Float32Array };
}

/**
 * A finished file found on disk when resuming: size (checked before reading), sha256 against the manifest
 * when it lists one, decodable, and `content` (a check above) passing. Either its sha256 and tensors, or the
 * problem (the caller logs it and recomputes the file).
 */
export function inspectFinished(
  path: string,
  need: number,
  needMax: number,
  expectSha: string | undefined,
  content: (ts: Record<string, STTensor>) => unknown,
): { sha256: string; tensors: Record<string, STTensor> } | { problem: string } {
  let buf: Uint8Array;
  try {
    buf = readSized(path, need, needMax, path);
  } catch (e) {
    if (e instanceof RecdistillError) return { problem: e.message.replace(`${path}: `, '').replace(`${path} `, '').replace(/\.$/, '') };
    throw e;
  }
  const got = sha256(buf);
  if (expectSha !== undefined && got !== expectSha) return { problem: `sha256 ${got.slice(0, 16)}... does not match the manifest's ${expectSha.slice(0, 16)}...` };
  const ts = decodeOrProblem(buf, path);
  if (typeof ts === 'string') return { problem: ts };
  const r = content(ts);
  if (typeof r === 'string') return { problem: r };
  return { sha256: got, tensors: ts };
}
