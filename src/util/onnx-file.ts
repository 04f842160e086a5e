/**
 * Write an ONNX model whose initializers are produced lazily, chunk by chunk, so a model of any size is
 * written with bounded memory. The file is a valid ModelProto: the head (ir_version, opsets, producer,
 * graph with nodes and I/O) is encoded with onnx-proto, and each initializer follows as one more
 * `graph` field holding one TensorProto; protobuf merges repeated embedded-message fields (repeated
 * fields append), so readers see one graph. Only each tensor's own length prefix must be known up
 * front, which `byteLength` gives.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import onnxProto from 'onnx-proto';
import { tempPathFor } from './atomic.js';

const { onnx } = onnxProto;
export type NodeProto = InstanceType<typeof onnx.NodeProto>;
export type ValueInfoProto = InstanceType<typeof onnx.ValueInfoProto>;
export const DataType = onnx.TensorProto.DataType;

/** An initializer whose bytes (little-endian raw_data) are produced on demand, in chunks. */
export interface LazyTensor {
  name: string;
  dims: number[];
  /** ONNX TensorProto.DataType. */
  dataType: number;
  byteLength: number;
  chunks(): Iterable<Uint8Array>;
}

export interface GraphDesc {
  graphName: string;
  producerName: string;
  producerVersion?: string;
  irVersion: number;
  opsets: { domain: string; version: number }[];
  nodes: NodeProto[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
  initializers: LazyTensor[];
}

/** A LazyTensor over values already in memory. */
export function eagerTensor(name: string, dims: number[], dataType: number, data: Float32Array | Uint8Array | Uint16Array | Int32Array | BigInt64Array): LazyTensor {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { name, dims, dataType, byteLength: bytes.byteLength, chunks: () => [bytes] };
}


/** Protobuf varint encoding of a non-negative integer (lengths up to 2^53). */
export function varintBytes(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}
const varint = varintBytes; // short name for the encoders below

/** Tag + length of a LEN field. */
function lenPrefix(field: number, length: number): Uint8Array {
  return Uint8Array.from([...varint(field * 8 + 2), ...varint(length)]);
}

/** Bytes of one initializer wrapped as ModelProto.graph(7){initializer(5){TensorProto}}, yielded in chunks. */
function* initializerField(t: LazyTensor): Generator<Uint8Array> {
  // TensorProto without raw_data (dims=1, data_type=2, name=8), then raw_data = field 9.
  const head = onnx.TensorProto.encode(onnx.TensorProto.create({ name: t.name, dims: t.dims, dataType: t.dataType })).finish();
  const raw = lenPrefix(9, t.byteLength);
  const tensorLen = head.byteLength + raw.byteLength + t.byteLength;
  const init = lenPrefix(5, tensorLen);
  yield lenPrefix(7, init.byteLength + tensorLen);
  yield init;
  yield head;
  yield raw;
  let written = 0;
  for (const c of t.chunks()) {
    written += c.byteLength;
    yield c;
  }
  if (written !== t.byteLength) throw new Error(`initializer ${t.name}: produced ${written} bytes, declared ${t.byteLength}`);
}

/** The whole model in memory (small models: a served student, tests). */
export function encodeOnnxModel(desc: GraphDesc): Uint8Array {
  const parts: Uint8Array[] = [encodeHead(desc)];
  for (const t of desc.initializers) for (const c of initializerField(t)) parts.push(c);
  return Buffer.concat(parts);
}

/** The model head: everything but the initializers. */
function encodeHead(desc: GraphDesc): Uint8Array {
  const graph = onnx.GraphProto.create({ name: desc.graphName, node: desc.nodes, input: desc.inputs, output: desc.outputs });
  return onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: desc.irVersion,
      producerName: desc.producerName,
      producerVersion: desc.producerVersion ?? '',
      opsetImport: desc.opsets,
      graph,
    }),
  ).finish();
}

/**
 * External data like onnx.save_model(save_as_external_data=True, all_tensors_to_one_file=True,
 * size_threshold=1024) (onnx/external_data_helper.py): every initializer of >= 1024 bytes has no raw_data,
 * data_location = EXTERNAL and external_data entries location / offset / length (decimal strings, in that
 * order), its bytes appended without alignment to the data file. `chunks` > 1 spreads whole tensors over
 * `file`, `file_1`, ... (Optimum's `model.onnx_data`, `model.onnx_data_1`), each about total/chunks bytes.
 */
export interface ExternalDataOptions {
  /** Data file name, relative to the model's directory (written next to it). */
  file: string;
  chunks?: number;
}
const EXTERNAL_SIZE_THRESHOLD = 1024;

export interface WriteOptions {
  externalData?: ExternalDataOptions;
}

/** Which data file (index) each external initializer goes to; -1 = stays inline. */
function planExternal(desc: GraphDesc, ext: ExternalDataOptions): number[] {
  const big = desc.initializers.map((t) => t.byteLength >= EXTERNAL_SIZE_THRESHOLD);
  const total = desc.initializers.reduce((a, t, i) => a + (big[i] ? t.byteLength : 0), 0);
  const chunks = Math.max(1, ext.chunks ?? 1);
  const target = Math.ceil(total / chunks);
  let file = 0;
  let used = 0;
  return desc.initializers.map((t, i) => {
    if (!big[i]) return -1;
    if (used > 0 && used + t.byteLength > target && file < chunks - 1) {
      file++;
      used = 0;
    }
    used += t.byteLength;
    return file;
  });
}

const dataFileName = (ext: ExternalDataOptions, k: number): string => (k === 0 ? ext.file : `${ext.file}_${k}`);

/** Write the model atomically (temp + rename), streaming initializer bytes. Returns the .onnx file size. */
export function writeOnnxModel(path: string, desc: GraphDesc, options: WriteOptions = {}): number {
  if (options.externalData) return writeWithExternalData(path, desc, options.externalData);
  mkdirSync(dirname(path), { recursive: true });
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, 'w');
  let size = 0;
  const put = (b: Uint8Array) => {
    let off = 0;
    while (off < b.byteLength) off += writeSync(fd, b, off, b.byteLength - off);
    size += b.byteLength;
  };
  try {
    put(encodeHead(desc));
    for (const t of desc.initializers) for (const c of initializerField(t)) put(c);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, path);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
    rmSync(tmp, { force: true });
    throw e;
  }
  return size;
}

/** Open a temp sibling of `path` for streaming writes; commit() renames it into place. */
function openAtomic(path: string) {
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, 'w');
  let size = 0;
  return {
    get size() {
      return size;
    },
    put(b: Uint8Array) {
      let off = 0;
      while (off < b.byteLength) off += writeSync(fd, b, off, b.byteLength - off);
      size += b.byteLength;
    },
    commit() {
      fsyncSync(fd);
      closeSync(fd);
      renameSync(tmp, path);
    },
    abort() {
      try {
        closeSync(fd);
      } catch {
        /* already closed */
      }
      rmSync(tmp, { force: true });
    },
  };
}

function writeWithExternalData(path: string, desc: GraphDesc, ext: ExternalDataOptions): number {
  mkdirSync(dirname(path), { recursive: true });
  const plan = planExternal(desc, ext);
  const nFiles = Math.max(0, ...plan) + 1;
  const files = Array.from({ length: nFiles }, (_, k) => openAtomic(join(dirname(path), dataFileName(ext, k))));
  const model = openAtomic(path);
  try {
    model.put(encodeHead(desc));
    desc.initializers.forEach((t, i) => {
      const k = plan[i] ?? -1;
      if (k < 0) {
        for (const c of initializerField(t)) model.put(c);
        return;
      }
      const f = files[k]!;
      const offset = f.size;
      let written = 0;
      for (const c of t.chunks()) {
        written += c.byteLength;
        f.put(c);
      }
      if (written !== t.byteLength) throw new Error(`initializer ${t.name}: produced ${written} bytes, declared ${t.byteLength}`);
      const proto = onnx.TensorProto.create({
        name: t.name,
        dims: t.dims,
        dataType: t.dataType,
        externalData: [
          { key: 'location', value: dataFileName(ext, k) },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(t.byteLength) },
        ],
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      });
      const body = onnx.TensorProto.encode(proto).finish();
      const init = lenPrefix(5, body.byteLength);
      model.put(lenPrefix(7, init.byteLength + body.byteLength));
      model.put(init);
      model.put(body);
    });
    for (const f of files) f.commit();
    model.commit();
  } catch (e) {
    for (const f of files) f.abort();
    model.abort();
    throw e;
  }
  return model.size;
}
