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

/** Decode a safetensors buffer; `where` (a file path) goes into error messages. Copies data so it is aligned. */
export function decodeSafetensors(buf: Uint8Array, where = 'safetensors buffer'): DecodedSafetensors {
  const bad = (why: string): never => {
    throw new RecdistillError('E_INPUT', `${where}: not a valid safetensors file (${why}).`);
  };
  if (buf.byteLength < 8) bad('shorter than its 8-byte header length');
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = Number(view.getBigUint64(0, true));
  if (8 + n > buf.byteLength) bad(`header length ${n} runs past the end of the file`);
  let header: Record<string, { dtype: STDtype; shape: number[]; data_offsets: [number, number] }> & { __metadata__?: Record<string, string> };
  try {
    header = JSON.parse(Buffer.from(buf.buffer, buf.byteOffset + 8, n).toString('utf8'));
  } catch {
    return bad('header is not JSON');
  }
  const base = 8 + n;
  const tensors: Record<string, STTensor> = {};
  for (const [name, h] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets } = h as { dtype: STDtype; shape: number[]; data_offsets: [number, number] };
    const size = BYTES[dtype];
    if (!size) bad(`tensor "${name}" has unsupported dtype ${String(dtype)}`);
    const [b, e] = data_offsets;
    const count = shape.reduce((a, c) => a * c, 1);
    if (e - b !== count * size || base + e > buf.byteLength) bad(`tensor "${name}" offsets [${b}, ${e}] do not match shape [${shape}] ${dtype}`);
    // A copy (Uint8Array.prototype.slice, not Buffer's view-returning slice): aligned, and its own ArrayBuffer.
    const bytes = Uint8Array.prototype.slice.call(buf, base + b, base + e);
    tensors[name] = { dtype, shape, data: typedArrayFor(dtype, bytes.buffer as ArrayBuffer) };
  }
  return { tensors, metadata: header.__metadata__ ?? {} };
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
