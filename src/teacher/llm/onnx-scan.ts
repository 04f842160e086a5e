/**
 * Read what we need from an ONNX file without decoding it: node output names, graph inputs/outputs
 * with their element types, and external-data file names. A 500 MB model is walked with small positional
 * reads (protobuf wire format: tag varint, then a length for LEN fields), skipping initializer payloads.
 *
 * ModelProto.graph = field 7. GraphProto: node = 1, initializer = 5, input = 11, output = 12.
 * NodeProto: output = 2, op_type = 4. ValueInfoProto: name = 1, type = 2 (TypeProto.tensor_type = 1,
 * Tensor.elem_type = 1). TensorProto: name = 8, external_data = 13 (key = 1, value = 2), data_location = 14.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { RecdistillError } from '../../errors.js';

export interface GraphValue {
  name: string;
  /** ONNX TensorProto.DataType: 1 = float32, 10 = float16, 7 = int64, ... (0 when not a tensor). */
  elemType: number;
}

export interface GraphScan {
  /** Every node output name, in graph order. */
  nodeOutputs: string[];
  /** op_type per node output (same order). */
  nodeOps: string[];
  inputs: GraphValue[];
  outputs: GraphValue[];
  /** Relative paths of external data files referenced by initializers (e.g. model.onnx_data). */
  externalData: string[];
}

/** Random-access reader over a file descriptor with a small window cache. */
class FdReader {
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  constructor(
    private fd: number,
    readonly size: number,
  ) {}
  private load(pos: number, min: number): void {
    const len = Math.max(min, 1 << 16);
    this.buf = Buffer.alloc(Math.min(len, this.size - pos));
    readSync(this.fd, this.buf, 0, this.buf.length, pos);
    this.bufStart = pos;
  }
  bytes(pos: number, len: number): Buffer {
    if (pos < this.bufStart || pos + len > this.bufStart + this.buf.length) this.load(pos, len);
    return this.buf.subarray(pos - this.bufStart, pos - this.bufStart + len);
  }
  /** Varint at pos: [value, bytes used]. Values fit in 2^53 (field lengths of files < 8 PB). */
  varint(pos: number): [number, number] {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (pos + i >= this.size) throw new Error('truncated varint');
      const b = this.bytes(pos + i, 1)[0]!;
      v += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return [v, i + 1];
      mul *= 128;
    }
    throw new Error('bad varint');
  }
}

interface Field {
  field: number;
  wire: number;
  /** Start of the payload (after tag and, for LEN, the length). */
  start: number;
  /** Payload length (LEN) or varint value (VARINT). */
  len: number;
  value: number;
}

/** Iterate the fields of a message spanning [start, end). */
function* fields(r: FdReader, start: number, end: number): Generator<Field> {
  let pos = start;
  while (pos < end) {
    const [tag, n] = r.varint(pos);
    pos += n;
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) {
      const [v, m] = r.varint(pos);
      yield { field, wire, start: pos, len: 0, value: v };
      pos += m;
    } else if (wire === 2) {
      const [len, m] = r.varint(pos);
      pos += m;
      yield { field, wire, start: pos, len, value: 0 };
      pos += len;
    } else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else throw new Error(`unsupported wire type ${wire} at byte ${pos}`);
  }
}

/** The same walk over an in-memory buffer (for small sub-messages). */
function bufReader(b: Buffer): FdReader {
  const r = new FdReader(-1, b.length);
  (r as unknown as { buf: Buffer; bufStart: number }).buf = b;
  return r;
}

function str(r: FdReader, f: Field): string {
  return r.bytes(f.start, f.len).toString('utf8');
}

function valueInfo(b: Buffer): GraphValue {
  const r = bufReader(b);
  let name = '';
  let elemType = 0;
  for (const f of fields(r, 0, b.length)) {
    if (f.field === 1 && f.wire === 2) name = str(r, f);
    if (f.field === 2 && f.wire === 2) {
      for (const t of fields(r, f.start, f.start + f.len)) {
        if (t.field !== 1 || t.wire !== 2) continue; // tensor_type
        for (const e of fields(r, t.start, t.start + t.len)) if (e.field === 1 && e.wire === 0) elemType = e.value;
      }
    }
  }
  return { name, elemType };
}

/** Scan an ONNX model file (graph fields may repeat: protobuf merges them, as after appending taps). */
export function scanOnnx(path: string): GraphScan {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    throw new RecdistillError('E_NOT_FOUND', `ONNX model ${path} not found or not readable.`);
  }
  const out: GraphScan = { nodeOutputs: [], nodeOps: [], inputs: [], outputs: [], externalData: [] };
  const ext = new Set<string>();
  try {
    const r = new FdReader(fd, fstatSync(fd).size);
    for (const g of fields(r, 0, r.size)) {
      if (g.field !== 7 || g.wire !== 2) continue;
      for (const f of fields(r, g.start, g.start + g.len)) {
        if (f.wire !== 2) continue;
        if (f.field === 1) {
          const nb = bufReader(Buffer.from(r.bytes(f.start, f.len)));
          const outs: string[] = [];
          let opType = '';
          for (const n of fields(nb, 0, f.len)) {
            if (n.field === 2 && n.wire === 2) outs.push(str(nb, n));
            if (n.field === 4 && n.wire === 2) opType = str(nb, n);
          }
          for (const o of outs) {
            out.nodeOutputs.push(o);
            out.nodeOps.push(opType);
          }
        } else if (f.field === 11 || f.field === 12) {
          (f.field === 11 ? out.inputs : out.outputs).push(valueInfo(Buffer.from(r.bytes(f.start, f.len))));
        } else if (f.field === 5 && f.len < 1 << 16) {
          // Only small initializers can be external references (their payload lives in another file).
          const tb = bufReader(Buffer.from(r.bytes(f.start, f.len)));
          for (const t of fields(tb, 0, f.len)) {
            if (t.field !== 13 || t.wire !== 2) continue;
            let key = '';
            let value = '';
            for (const kv of fields(tb, t.start, t.start + t.len)) {
              if (kv.field === 1) key = str(tb, kv);
              if (kv.field === 2) value = str(tb, kv);
            }
            if (key === 'location') ext.add(value);
          }
        }
      }
    }
  } catch (e) {
    if (e instanceof RecdistillError) throw e;
    throw new RecdistillError('E_INPUT', `ONNX model ${path} could not be parsed: ${(e as Error).message}`);
  } finally {
    closeSync(fd);
  }
  out.externalData = [...ext].sort();
  return out;
}
