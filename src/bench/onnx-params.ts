import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { RecdistillError } from '../errors.js';

/**
 * Parameter count of an ONNX model without decoding it: walk the protobuf wire format with positional reads
 * and sum, over the graph's initializers, the product of their dims. Payloads (raw_data, external data) are
 * skipped by length, so a 500 MB file costs a few thousand small reads.
 *
 * ModelProto.graph = 7; GraphProto.initializer = 5; TensorProto.dims = 1 (int64, packed or not), data_type = 2.
 * Block-quantised 4-bit weights (MatMulNBits) are stored as uint8 tensors holding two weights per byte: when
 * `packed4bit` is set, uint8 initializers count twice (their scales and zero points still count as parameters,
 * so the figure slightly over-counts them).
 */
export interface OnnxParams {
  params: number;
  initializers: number;
}

const UINT8 = 2; // TensorProto.DataType.UINT8

function readAt(fd: number, pos: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  const n = readSync(fd, b, 0, len, pos);
  return b.subarray(0, n);
}

/** Decode a varint at `pos`; returns [value, next position]. Values beyond 2^53 are not needed here. */
function varint(fd: number, pos: number, path: string): [number, number] {
  const b = readAt(fd, pos, 10);
  let v = 0;
  let mul = 1;
  for (let i = 0; i < b.length; i++) {
    const byte = b[i]!;
    v += (byte & 0x7f) * mul;
    if (!(byte & 0x80)) return [v, pos + i + 1];
    mul *= 128;
  }
  throw new RecdistillError('E_INPUT', `${path}: malformed protobuf varint at byte ${pos} (not an ONNX model?).`);
}

/** Visit the fields of a message in [start, end): cb(field, wireType, valueStart, valueEnd or varint value). */
function fields(fd: number, start: number, end: number, path: string, cb: (field: number, wire: number, a: number, b: number) => void): void {
  let pos = start;
  while (pos < end) {
    const [tag, p1] = varint(fd, pos, path);
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) {
      const [v, p2] = varint(fd, p1, path);
      cb(field, wire, v, p2);
      pos = p2;
    } else if (wire === 2) {
      const [len, p2] = varint(fd, p1, path);
      cb(field, wire, p2, p2 + len);
      pos = p2 + len;
    } else if (wire === 1) pos = p1 + 8;
    else if (wire === 5) pos = p1 + 4;
    else throw new RecdistillError('E_INPUT', `${path}: unsupported protobuf wire type ${wire} at byte ${pos} (not an ONNX model?).`);
  }
  if (pos !== end) throw new RecdistillError('E_INPUT', `${path}: a protobuf field runs past its message end (${pos} > ${end}); truncated file?`);
}

export function countOnnxParams(path: string, opts: { packed4bit?: boolean } = {}): OnnxParams {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    throw new RecdistillError('E_NOT_FOUND', `ONNX model ${path} not found or not readable.`);
  }
  let params = 0;
  let initializers = 0;
  try {
    const size = fstatSync(fd).size;
    fields(fd, 0, size, path, (f, w, a, b) => {
      if (f !== 7 || w !== 2) return; // graph
      fields(fd, a, b, path, (gf, gw, ga, gb) => {
        if (gf !== 5 || gw !== 2) return; // initializer
        let count = 1;
        let dtype = 0;
        fields(fd, ga, gb, path, (tf, tw, ta, tb) => {
          if (tf === 2 && tw === 0) dtype = ta;
          else if (tf === 1 && tw === 0) count *= ta;
          else if (tf === 1 && tw === 2) {
            // packed dims: a run of varints
            for (let p = ta; p < tb; ) {
              const [d, next] = varint(fd, p, path);
              count *= d;
              p = next;
            }
          }
        });
        params += opts.packed4bit && dtype === UINT8 ? 2 * count : count;
        initializers++;
      });
    });
  } finally {
    closeSync(fd);
  }
  return { params, initializers };
}
