/**
 * Read an ONNX file's structure without decoding its weights: every node (name, op, domain, inputs,
 * outputs), graph inputs/outputs with element types and shapes, initializers (name, type, dims, where the
 * bytes live) and model metadata. A 500 MB model is walked with small positional reads (protobuf wire
 * format: tag varint, then a length for LEN fields); initializer payloads are skipped, never read.
 *
 * ModelProto: ir_version = 1, producer_name = 2, producer_version = 3, graph = 7, opset_import = 8.
 * GraphProto: node = 1, initializer = 5, input = 11, output = 12.
 * NodeProto: input = 1, output = 2, name = 3, op_type = 4, attribute = 5, domain = 7.
 * AttributeProto: g = 6, graphs = 11 (subgraphs: If / Loop / Scan bodies).
 * ValueInfoProto: name = 1, type = 2 (TypeProto.tensor_type = 1 {elem_type = 1, shape = 2 {dim = 1 {dim_value = 1, dim_param = 2}}}).
 * TensorProto: dims = 1, data_type = 2, name = 8, raw_data = 9, external_data = 13 (key = 1, value = 2), data_location = 14.
 * Graph fields may repeat: protobuf merges them (appended tap bytes, streamed writers).
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { RecdistillError } from '../../errors.js';

export interface GraphValue {
  name: string;
  /** ONNX TensorProto.DataType: 1 = float32, 10 = float16, 16 = bfloat16, 7 = int64, ... (0 when untyped). */
  elemType: number;
  /** Dimensions: a number, a symbolic name, or null when unknown. Empty when the value has no shape. */
  shape: (number | string | null)[];
}

export interface GraphNode {
  name: string;
  op: string;
  /** '' = the default ONNX domain; 'com.microsoft' for onnxruntime contrib ops. */
  domain: string;
  inputs: string[];
  outputs: string[];
  /** Nodes inside this node's subgraphs (If / Loop / Scan), recursively counted. */
  subgraphNodes: number;
  /** Byte offset of the node's field in the file (identifies it for rewriting); absent in dumps. */
  offset?: number;
}

export interface GraphInitializer {
  name: string;
  dataType: number;
  dims: number[];
  /** True when the bytes live in an external data file. */
  external: boolean;
  /** Byte offset of the initializer's field in the file; absent in dumps. */
  offset?: number;
}

export interface GraphScan {
  nodes: GraphNode[];
  inputs: GraphValue[];
  outputs: GraphValue[];
  initializers: GraphInitializer[];
  /** Relative paths of external data files referenced by initializers (e.g. model.onnx_data). */
  externalData: string[];
  producer: string;
  opsets: { domain: string; version: number }[];
  /**
   * Set by spliceNoPastBranch: the scan shows a merged decoder's no-past branch in place of its If node.
   * `fields` maps each spliced node/initializer offset to its byte range [start, end) in the file.
   */
  splice?: { ifOffset: number; fields: Map<number, [number, number]> };
}

/** Random-access reader over a file descriptor (or a buffer) with a small window cache. */
export class Reader {
  private buf: Buffer;
  private bufStart = 0;
  constructor(
    private fd: number,
    readonly size: number,
    buf?: Buffer,
  ) {
    this.buf = buf ?? Buffer.alloc(0);
  }
  private load(pos: number, min: number): void {
    const len = Math.max(min, 1 << 16);
    this.buf = Buffer.alloc(Math.min(len, this.size - pos));
    readSync(this.fd, this.buf, 0, this.buf.length, pos);
    this.bufStart = pos;
  }
  bytes(pos: number, len: number): Buffer {
    if (pos < 0 || pos + len > this.size) throw new Error(`field at byte ${pos} (+${len}) runs past the end of the file (${this.size} bytes)`);
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
  /** A sub-message copied into memory (small messages only). */
  sub(f: Field): Reader {
    const b = Buffer.from(this.bytes(f.start, f.len));
    return new Reader(-1, b.length, b);
  }
  str(f: Field): string {
    return this.bytes(f.start, f.len).toString('utf8');
  }
}

export interface Field {
  field: number;
  wire: number;
  /** Offset of the field's tag (its first byte). */
  tag: number;
  /** Start of the payload (after tag and, for LEN, the length). */
  start: number;
  /** Payload length (LEN). */
  len: number;
  /** Varint value (VARINT). */
  value: number;
}

/** Iterate the fields of a message spanning [start, end). */
export function* fields(r: Reader, start: number, end: number): Generator<Field> {
  let pos = start;
  while (pos < end) {
    const tagAt = pos;
    const [tag, n] = r.varint(pos);
    pos += n;
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) {
      const [v, m] = r.varint(pos);
      yield { field, wire, tag: tagAt, start: pos, len: 0, value: v };
      pos += m;
    } else if (wire === 2) {
      const [len, m] = r.varint(pos);
      pos += m;
      if (pos + len > end) throw new Error(`field ${field} at byte ${pos} declares ${len} bytes, past the end of its message`);
      yield { field, wire, tag: tagAt, start: pos, len, value: 0 };
      pos += len;
    } else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else throw new Error(`unsupported wire type ${wire} at byte ${pos}`);
  }
}

export const all = (r: Reader): Generator<Field> => fields(r, 0, r.size);

/** Packed or unpacked repeated varints. */
function varints(r: Reader, f: Field, out: number[]): void {
  if (f.wire === 0) out.push(f.value);
  else if (f.wire === 2) for (let p = f.start; p < f.start + f.len; ) {
    const [v, n] = r.varint(p);
    out.push(v);
    p += n;
  }
}

function valueInfo(r: Reader): GraphValue {
  const v: GraphValue = { name: '', elemType: 0, shape: [] };
  for (const f of all(r)) {
    if (f.field === 1 && f.wire === 2) v.name = r.str(f);
    if (f.field !== 2 || f.wire !== 2) continue;
    for (const t of fields(r, f.start, f.start + f.len)) {
      if (t.field !== 1 || t.wire !== 2) continue; // tensor_type
      for (const e of fields(r, t.start, t.start + t.len)) {
        if (e.field === 1 && e.wire === 0) v.elemType = e.value;
        if (e.field !== 2 || e.wire !== 2) continue;
        for (const d of fields(r, e.start, e.start + e.len)) {
          if (d.field !== 1 || d.wire !== 2) continue;
          let dim: number | string | null = null;
          for (const x of fields(r, d.start, d.start + d.len)) {
            if (x.field === 1 && x.wire === 0) dim = x.value;
            if (x.field === 2 && x.wire === 2) dim = r.str(x);
          }
          v.shape.push(dim);
        }
      }
    }
  }
  return v;
}

/** Count nodes in a GraphProto (recursively through its nodes' subgraphs). */
function countNodes(r: Reader, start: number, end: number): number {
  let n = 0;
  for (const f of fields(r, start, end)) if (f.field === 1 && f.wire === 2) n += 1 + nodeOf(r.sub(f)).subgraphNodes;
  return n;
}

export function nodeOf(r: Reader): GraphNode {
  const node: GraphNode = { name: '', op: '', domain: '', inputs: [], outputs: [], subgraphNodes: 0 };
  for (const f of all(r)) {
    if (f.wire !== 2) continue;
    if (f.field === 1) node.inputs.push(r.str(f));
    else if (f.field === 2) node.outputs.push(r.str(f));
    else if (f.field === 3) node.name = r.str(f);
    else if (f.field === 4) node.op = r.str(f);
    else if (f.field === 7) node.domain = r.str(f);
    else if (f.field === 5) {
      for (const a of fields(r, f.start, f.start + f.len)) {
        if ((a.field === 6 || a.field === 11) && a.wire === 2) node.subgraphNodes += countNodes(r, a.start, a.start + a.len);
      }
    }
  }
  return node;
}

/** TensorProto fields up to (not into) the payload: raw_data is skipped by position. */
export function initializerOf(r: Reader, f: Field, ext: Set<string>): GraphInitializer {
  const t: GraphInitializer = { name: '', dataType: 0, dims: [], external: false };
  for (const x of fields(r, f.start, f.start + f.len)) {
    if (x.field === 1) varints(r, x, t.dims);
    else if (x.field === 2 && x.wire === 0) t.dataType = x.value;
    else if (x.field === 8 && x.wire === 2) t.name = r.str(x);
    else if (x.field === 14 && x.wire === 0) t.external = x.value === 1;
    else if (x.field === 13 && x.wire === 2) {
      let key = '';
      let value = '';
      for (const kv of fields(r, x.start, x.start + x.len)) {
        if (kv.field === 1 && kv.wire === 2) key = r.str(kv);
        if (kv.field === 2 && kv.wire === 2) value = r.str(kv);
      }
      if (key === 'location') ext.add(value);
    }
  }
  return t;
}

/** Scan an ONNX model file. */
export function scanOnnx(path: string): GraphScan {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    throw new RecdistillError('E_NOT_FOUND', `ONNX model ${path} not found or not readable.`);
  }
  const out: GraphScan = { nodes: [], inputs: [], outputs: [], initializers: [], externalData: [], producer: '', opsets: [] };
  const ext = new Set<string>();
  try {
    const r = new Reader(fd, fstatSync(fd).size);
    for (const g of all(r)) {
      if (g.field === 2 && g.wire === 2) out.producer = r.str(g);
      if (g.field === 8 && g.wire === 2) {
        const o = { domain: '', version: 0 };
        const s = r.sub(g);
        for (const x of all(s)) {
          if (x.field === 1 && x.wire === 2) o.domain = s.str(x);
          if (x.field === 2 && x.wire === 0) o.version = x.value;
        }
        out.opsets.push(o);
      }
      if (g.field !== 7 || g.wire !== 2) continue;
      for (const f of fields(r, g.start, g.start + g.len)) {
        if (f.wire !== 2) continue;
        if (f.field === 1) out.nodes.push({ ...nodeOf(r.sub(f)), offset: f.tag });
        else if (f.field === 11) out.inputs.push(valueInfo(r.sub(f)));
        else if (f.field === 12) out.outputs.push(valueInfo(r.sub(f)));
        else if (f.field === 5) out.initializers.push({ ...initializerOf(r, f, ext), offset: f.tag });
      }
    }
  } catch (e) {
    if (e instanceof RecdistillError) throw e;
    throw new RecdistillError('E_INPUT', `ONNX model ${path} could not be parsed: ${(e as Error).message}`);
  } finally {
    closeSync(fd);
  }
  // Graph inputs also list initializers in old exports (IR < 4); only real feeds count as inputs.
  const inits = new Set(out.initializers.map((i) => i.name));
  out.inputs = out.inputs.filter((i) => !inits.has(i.name));
  out.externalData = [...ext].sort();
  return out;
}

