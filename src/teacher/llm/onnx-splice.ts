import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { varintBytes } from '../../util/onnx-file.js';
import { all, fields, initializerOf, nodeOf, Reader, type Field, type GraphInitializer, type GraphNode, type GraphScan } from './onnx-scan.js';

/**
 * Rewriting an ONNX model file without decoding it: a copy with fields or outputs dropped, and the splice that
 * keeps a merged decoder's no-past branch as the main graph (src/teacher/llm/onnx-scan.ts finds both).
 */
/**
 * Copy an ONNX file to `dest` without decoding it, leaving out the graph nodes and initializers whose
 * field offsets are in `drop.fields` and, when `drop.outputs`, every graph output; then append `extra`
 * (serialized ModelProto bytes, merged by protobuf). Payloads are copied in 16 MB chunks, so memory
 * stays small for any model.
 */
export function copyModelWithout(src: string, dest: string, drop: { fields: Set<number>; outputs: boolean }, extra: Uint8Array): void {
  const fd = openSync(src, 'r');
  const out = openSync(dest, 'w');
  const chunk = Buffer.alloc(1 << 24);
  const write = (b: Uint8Array) => {
    for (let off = 0; off < b.byteLength; ) off += writeSync(out, b, off, b.byteLength - off);
  };
  const copy = (start: number, end: number) => {
    for (let pos = start; pos < end; ) {
      const n = readSync(fd, chunk, 0, Math.min(chunk.length, end - pos), pos);
      if (n <= 0) throw new Error(`unexpected end of ${src} at byte ${pos}`);
      write(chunk.subarray(0, n));
      pos += n;
    }
  };
  try {
    const r = new Reader(fd, fstatSync(fd).size);
    for (const g of all(r)) {
      const end = g.wire === 2 ? g.start + g.len : g.wire === 0 ? g.start + r.varint(g.start)[1] : g.start + (g.wire === 1 ? 8 : 4);
      if (g.field !== 7 || g.wire !== 2) {
        copy(g.tag, end);
        continue;
      }
      const keep: [number, number][] = [];
      for (const f of fields(r, g.start, end)) {
        const fend = f.wire === 2 ? f.start + f.len : f.wire === 0 ? f.start + r.varint(f.start)[1] : f.start + (f.wire === 1 ? 8 : 4);
        if ((f.field === 1 || f.field === 5) && drop.fields.has(f.tag)) continue;
        if (f.field === 12 && drop.outputs) continue;
        keep.push([f.tag, fend]);
      }
      const len = keep.reduce((a, [s, e]) => a + e - s, 0);
      write(Uint8Array.from([0x3a, ...varintBytes(len)])); // field 7, wire 2
      for (const [s, e] of keep) copy(s, e);
    }
    write(extra);
  } finally {
    closeSync(fd);
    closeSync(out);
  }
}

const fieldEnd = (r: Reader, f: Field): number => (f.wire === 2 ? f.start + f.len : f.wire === 0 ? f.start + r.varint(f.start)[1] : f.start + (f.wire === 1 ? 8 : 4));

/**
 * A merged decoder (Optimum's `merge_decoders`: one top-level If on `use_cache_branch`, then_branch
 * "with_past", else_branch "no_past", weights in the top-level graph) seen as its no-past decoder: the If
 * node replaced by the else_branch's nodes and initializers, which read the same top-level inputs and
 * weights and produce the If's outputs under the same names. Undefined when there is no single such If.
 */
export function spliceNoPastBranch(path: string, scan: GraphScan): GraphScan | undefined {
  const ifs = scan.nodes.filter((n) => n.op === 'If' && n.subgraphNodes > 0 && n.offset !== undefined);
  if (ifs.length !== 1) return undefined;
  const ifNode = ifs[0]!;
  const fd = openSync(path, 'r');
  try {
    const r = new Reader(fd, fstatSync(fd).size);
    const [tag, n] = r.varint(ifNode.offset!);
    const [len, m] = r.varint(ifNode.offset! + n);
    if (tag !== 10) return undefined; // GraphProto.node, LEN
    const start = ifNode.offset! + n + m;
    const nodes: GraphNode[] = [];
    const initializers: GraphInitializer[] = [];
    const ranges = new Map<number, [number, number]>();
    const ext = new Set<string>();
    for (const a of fields(r, start, start + len)) {
      if (a.field !== 5 || a.wire !== 2) continue; // attribute
      let name = '';
      let graph: Field | undefined;
      for (const x of fields(r, a.start, a.start + a.len)) {
        if (x.field === 1 && x.wire === 2) name = r.str(x);
        if (x.field === 6 && x.wire === 2) graph = x;
      }
      if (name !== 'else_branch' || !graph) continue;
      for (const f of fields(r, graph.start, graph.start + graph.len)) {
        if (f.field === 1 && f.wire === 2) nodes.push({ ...nodeOf(r.sub(f)), offset: f.tag });
        else if (f.field === 5 && f.wire === 2) initializers.push({ ...initializerOf(r, f, ext), offset: f.tag });
        else continue;
        ranges.set(f.tag, [f.tag, fieldEnd(r, f)]);
      }
    }
    if (!nodes.length) return undefined;
    return {
      ...scan,
      nodes: [...scan.nodes.filter((x) => x !== ifNode), ...nodes],
      initializers: [...scan.initializers, ...initializers],
      externalData: [...new Set([...scan.externalData, ...ext])].sort(),
      splice: { ifOffset: ifNode.offset!, fields: ranges },
    };
  } finally {
    closeSync(fd);
  }
}

/** GraphProto bytes (as one ModelProto.graph field) holding the spliced fields not in `drop`. */
export function splicedBytes(path: string, splice: NonNullable<GraphScan['splice']>, drop: Set<number>): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const parts: Buffer[] = [];
    for (const [offset, [a, b]] of splice.fields) {
      if (drop.has(offset)) continue;
      const buf = Buffer.alloc(b - a);
      readSync(fd, buf, 0, buf.length, a);
      parts.push(buf);
    }
    const body = Buffer.concat(parts);
    return Buffer.concat([Uint8Array.from([0x3a, ...varintBytes(body.length)]), body]);
  } finally {
    closeSync(fd);
  }
}
