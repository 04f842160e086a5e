import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { RecdistillError } from '../errors.js';

/**
 * safetensors (https://github.com/huggingface/safetensors): 8-byte little-endian header length N, then N bytes
 * of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the raw
 * little-endian tensor bytes. Readable from Python with `safetensors.numpy.load_file`.
 * Tensors are laid out in name order and the header is padded with spaces to 8 bytes, so the same tensors
 * always give the same bytes (resumed and uninterrupted runs compare equal).
 */
export type STDtype = 'F32' | 'F16' | 'I32' | 'I64' | 'U8' | 'I8';

export type STArray = Float32Array | Int32Array | Uint8Array | Int8Array | Uint16Array | BigInt64Array;

export interface STTensor {
  dtype: STDtype;
  shape: number[];
  data: STArray;
}

const BYTES: Record<STDtype, number> = { F32: 4, F16: 2, I32: 4, I64: 8, U8: 1, I8: 1 };

export function encodeSafetensors(tensors: Record<string, STTensor>, metadata: Record<string, string> = {}): Uint8Array {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors[name]!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    const bytes = n * BYTES[t.dtype];
    if (t.data.byteLength !== bytes) {
      throw new RecdistillError('E_INTERNAL', `safetensors: tensor "${name}" has ${t.data.byteLength} bytes, shape [${t.shape}] ${t.dtype} needs ${bytes}.`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let pos = 8 + headerBytes.length;
  for (const name of names) {
    const t = tensors[name]!;
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), pos);
    pos += t.data.byteLength;
  }
  return out;
}

export interface DecodedSafetensors {
  tensors: Record<string, STTensor>;
  metadata: Record<string, string>;
}

/** Largest JSON header accepted (the reference implementation's limit): a bigger length is a corrupt file. */
const MAX_HEADER_BYTES = 100_000_000;

interface EntryHeader {
  name: string;
  dtype: STDtype;
  shape: number[];
  begin: number;
  end: number;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * Validate a safetensors header against `fileBytes` (the whole file's length) without reading any tensor
 * data: header length bounded and inside the file, JSON an object, every tensor's dtype known, shape
 * non-negative safe integers, data_offsets [begin, end] integers with begin <= end <= data length,
 * end - begin = prod(shape) * dtype size, no two tensors overlapping. Errors name `where` and the tensor.
 * `readHeader(n)` gives the n bytes after the 8-byte length (called only once n is known to fit).
 */
function parseHeader(
  headerLength: bigint,
  readHeader: (n: number) => Uint8Array,
  fileBytes: number,
  where: string,
): { entries: EntryHeader[]; metadata: Record<string, string>; base: number } {
  const bad = (why: string): never => {
    throw new RecdistillError('E_INPUT', `${where}: not a valid safetensors file (${why}).`);
  };
  if (headerLength > BigInt(MAX_HEADER_BYTES)) bad(`header length ${headerLength} is over the ${MAX_HEADER_BYTES}-byte limit`);
  const n = Number(headerLength);
  if (8 + n > fileBytes) bad(`header length ${n} runs past the end of the file (${fileBytes} bytes)`);
  if (n < 2) bad(`header length ${n} is too short for a JSON object`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(readHeader(n)));
  } catch {
    return bad('header is not UTF-8 JSON');
  }
  if (!isObject(header)) return bad('header is not a JSON object');
  const base = 8 + n;
  const dataBytes = fileBytes - base;
  const metadata: Record<string, string> = {};
  const entries: EntryHeader[] = [];
  for (const [name, h] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(h)) bad('"__metadata__" is not an object of strings');
      for (const [k, v] of Object.entries(h as Record<string, unknown>)) {
        if (typeof v !== 'string') bad(`"__metadata__"."${k}" is not a string`);
        if (k !== '__proto__') metadata[k] = v as string;
      }
      continue;
    }
    const t = `tensor ${JSON.stringify(name)}`;
    if (name === '__proto__') bad(`${t} is not a usable tensor name`);
    if (!isObject(h)) return bad(`${t}: expected an object {dtype, shape, data_offsets}`);
    const { dtype, shape, data_offsets: offsets } = h;
    if (typeof dtype !== 'string' || !Object.hasOwn(BYTES, dtype)) bad(`${t} has unsupported dtype ${JSON.stringify(dtype)} (known: ${Object.keys(BYTES).join(', ')})`);
    if (!Array.isArray(shape) || !shape.every(isCount)) return bad(`${t}: shape ${JSON.stringify(shape)} is not an array of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      return bad(`${t}: data_offsets ${JSON.stringify(offsets)} is not two non-negative integers [begin, end]`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) bad(`${t}: data_offsets [${begin}, ${end}] has begin > end`);
    if (end > dataBytes) bad(`${t}: data_offsets [${begin}, ${end}] run past the ${dataBytes} data bytes of the file`);
    let bytes = BYTES[dtype as STDtype];
    for (const d of shape as number[]) {
      bytes *= d;
      if (!Number.isSafeInteger(bytes)) bad(`${t}: shape [${String(shape)}] is too large`);
    }
    if (end - begin !== bytes) bad(`${t}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes, shape [${String(shape)}] ${dtype} needs ${bytes}`);
    entries.push({ name, dtype: dtype as STDtype, shape: shape as number[], begin, end });
  }
  const byBegin = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < byBegin.length; i++) {
    const p = byBegin[i - 1]!;
    const c = byBegin[i]!;
    if (c.begin < p.end) bad(`tensor ${JSON.stringify(c.name)} data_offsets [${c.begin}, ${c.end}] overlap tensor ${JSON.stringify(p.name)} [${p.begin}, ${p.end}]`);
  }
  return { entries, metadata, base };
}

function buildTensors(entries: EntryHeader[], base: number, slice: (from: number, to: number) => Uint8Array): Record<string, STTensor> {
  const tensors: Record<string, STTensor> = {};
  for (const e of entries) {
    const bytes = slice(base + e.begin, base + e.end);
    tensors[e.name] = { dtype: e.dtype, shape: e.shape, data: typedArrayFor(e.dtype, bytes.buffer as ArrayBuffer) };
  }
  return tensors;
}

/**
 * Decode a safetensors buffer; `where` (a file path) goes into error messages. The whole header is
 * validated (see parseHeader) before any tensor is copied. Copies data so it is aligned.
 */
export function decodeSafetensors(buf: Uint8Array, where = 'safetensors buffer'): DecodedSafetensors {
  if (buf.byteLength < 8) throw new RecdistillError('E_INPUT', `${where}: not a valid safetensors file (shorter than its 8-byte header length).`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const { entries, metadata, base } = parseHeader(view.getBigUint64(0, true), (n) => buf.subarray(8, 8 + n), buf.byteLength, where);
  // A copy (Uint8Array.prototype.slice, not Buffer's view-returning slice): aligned, and its own ArrayBuffer.
  const tensors = buildTensors(entries, base, (from, to) => Uint8Array.prototype.slice.call(buf, from, to));
  return { tensors, metadata };
}

/**
 * Read and decode a safetensors file, checking the header length and every tensor's offsets against the
 * file's real size before reading (and allocating) the data: a corrupt or hostile length fails fast.
 */
export function readSafetensorsFile(path: string): DecodedSafetensors {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new RecdistillError(code === 'ENOENT' ? 'E_NOT_FOUND' : 'E_INPUT', `${path}: cannot open the safetensors file (${code ?? (e as Error).message}).`, { cause: e });
  }
  try {
    const size = fstatSync(fd).size;
    const readAt = (pos: number, n: number): Uint8Array => {
      const out = new Uint8Array(n);
      let got = 0;
      while (got < n) {
        const r = readSync(fd, out, got, n - got, pos + got);
        if (r === 0) throw new RecdistillError('E_INPUT', `${path}: not a valid safetensors file (the file shrank while being read).`);
        got += r;
      }
      return out;
    };
    if (size < 8) throw new RecdistillError('E_INPUT', `${path}: not a valid safetensors file (shorter than its 8-byte header length).`);
    const len = new DataView(readAt(0, 8).buffer).getBigUint64(0, true);
    const { entries, metadata, base } = parseHeader(len, (n) => readAt(8, n), size, path);
    const tensors = buildTensors(entries, base, (from, to) => readAt(from, to - from));
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

function typedArrayFor(dtype: STDtype, ab: ArrayBuffer): STArray {
  switch (dtype) {
    case 'F32':
      return new Float32Array(ab);
    case 'F16':
      return new Uint16Array(ab);
    case 'I32':
      return new Int32Array(ab);
    case 'I64':
      return new BigInt64Array(ab);
    case 'U8':
      return new Uint8Array(ab);
    case 'I8':
      return new Int8Array(ab);
  }
}
