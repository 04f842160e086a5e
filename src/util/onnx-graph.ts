/**
 * A small ONNX graph builder that names things the way TorchScript's exporter does (torch/onnx/utils.py,
 * `_set_node_name` via the module scope): a node of op `T` in module scope `/model/layers.0/self_attn` is
 * `/model/layers.0/self_attn/T`, then `T_1`, `T_2`, ... per (scope, op type) in emission order; its outputs
 * are `<node name>_output_<k>`. Constants are `Constant` nodes in the scope that uses them. The builder also
 * tracks each tensor's element type so the fp16 pass can decide where Casts go, as float16.py does from
 * value_info.
 */
import onnxProto from 'onnx-proto';
import { DataType, type LazyTensor, type NodeProto, type ValueInfoProto } from './onnx-file.js';

const { onnx } = onnxProto;
const AT = onnx.AttributeProto.AttributeType;
export type AttrValue = { i: number } | { f: number } | { ints: number[] } | { t: InstanceType<typeof onnx.TensorProto> } | { s: string };
export type Attrs = Record<string, AttrValue>;

export function attr(name: string, v: AttrValue): InstanceType<typeof onnx.AttributeProto> {
  if ('i' in v) return onnx.AttributeProto.create({ name, type: AT.INT, i: v.i });
  if ('f' in v) return onnx.AttributeProto.create({ name, type: AT.FLOAT, f: v.f });
  if ('ints' in v) return onnx.AttributeProto.create({ name, type: AT.INTS, ints: v.ints });
  if ('s' in v) return onnx.AttributeProto.create({ name, type: AT.STRING, s: new TextEncoder().encode(v.s) });
  return onnx.AttributeProto.create({ name, type: AT.TENSOR, t: v.t });
}

export function makeNode(opType: string, name: string, inputs: string[], outputs: string[], attrs: Attrs = {}, domain?: string): NodeProto {
  return onnx.NodeProto.create({
    opType,
    name,
    input: inputs,
    output: outputs,
    attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)),
    ...(domain ? { domain } : {}),
  });
}

/** Graph I/O; a string dim is a symbolic dim_param, a number a fixed dim_value. */
export function valueInfo(name: string, elemType: number, dims: (string | number)[]): ValueInfoProto {
  return onnx.ValueInfoProto.create({
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  });
}

export function tensorProto(dataType: number, dims: number[], data: Float32Array | BigInt64Array | Uint16Array): InstanceType<typeof onnx.TensorProto> {
  return onnx.TensorProto.create({ dims, dataType, rawData: new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)) });
}

/** Metadata the passes need to re-materialise an initializer in another format (q4, fp16). */
export interface InitMeta {
  /** HF weight name this initializer derives from. */
  source: string;
  /** true when the initializer is W^T (a Linear weight folded by the exporter). */
  transposed: boolean;
}

export class GraphBuilder {
  nodes: NodeProto[] = [];
  /** elem type of every tensor produced so far (graph inputs, initializers, node outputs). */
  types = new Map<string, number>();
  initializers: LazyTensor[] = [];
  initMeta = new Map<string, InitMeta>();
  private counters = new Map<string, number>();

  nodeName(scope: string, opType: string): string {
    const key = `${scope}/${opType}`;
    const k = this.counters.get(key) ?? 0;
    this.counters.set(key, k + 1);
    return k === 0 ? key : `${key}_${k}`;
  }

  /** Emit a node; returns its first output. `out` forces output names (graph outputs such as `logits`). */
  op(scope: string, opType: string, inputs: string[], attrs: Attrs = {}, o: { out?: string[]; nOut?: number; type?: number; domain?: string } = {}): string {
    const name = this.nodeName(scope, opType);
    const outs = o.out ?? Array.from({ length: o.nOut ?? 1 }, (_, k) => `${name}_output_${k}`);
    this.nodes.push(makeNode(opType, name, inputs, outs, attrs, o.domain));
    const t = o.type ?? this.types.get(inputs.find((x) => this.types.has(x)) ?? '') ?? DataType.FLOAT;
    for (const x of outs) this.types.set(x, t);
    return outs[0]!;
  }

  private constant(scope: string, dataType: number, dims: number[], data: Float32Array | BigInt64Array): string {
    return this.op(scope, 'Constant', [], { value: { t: tensorProto(dataType, dims, data) } }, { type: dataType });
  }
  constF(scope: string, v: number | number[], dims: number[] = []): string {
    return this.constant(scope, DataType.FLOAT, dims, Float32Array.from(typeof v === 'number' ? [v] : v));
  }
  constI(scope: string, v: number | (number | bigint)[], dims?: number[]): string {
    const arr = typeof v === 'number' ? [v] : v;
    return this.constant(scope, DataType.INT64, dims ?? (typeof v === 'number' ? [] : [arr.length]), BigInt64Array.from(arr.map((x) => BigInt(x))));
  }

  addInit(t: LazyTensor, meta?: InitMeta): string {
    this.initializers.push(t);
    this.types.set(t.name, t.dataType);
    if (meta) this.initMeta.set(t.name, meta);
    return t.name;
  }
}

/** Consumers of each tensor name, in node order. */
export function consumers(nodes: NodeProto[]): Map<string, NodeProto[]> {
  const m = new Map<string, NodeProto[]>();
  for (const n of nodes) for (const i of n.input) if (i) (m.get(i) ?? m.set(i, []).get(i)!).push(n);
  return m;
}

export function producers(nodes: NodeProto[]): Map<string, NodeProto> {
  const m = new Map<string, NodeProto>();
  for (const n of nodes) for (const o of n.output) if (o) m.set(o, n);
  return m;
}

/**
 * onnxruntime/python/tools/transformers/onnx_model.py graph_topological_sort (is_deterministic=False):
 * repeated sweeps in current order, taking every node whose inputs are ready.
 */
export function topologicalSort(nodes: NodeProto[], ready: Iterable<string>): NodeProto[] {
  const deps = new Set(ready);
  const done = new Set<number>();
  const out: NodeProto[] = [];
  let last = -1;
  while (done.size !== nodes.length && done.size !== last) {
    last = done.size;
    nodes.forEach((n, idx) => {
      if (done.has(idx)) return;
      if (n.input.every((i) => !i || deps.has(i))) {
        out.push(n);
        done.add(idx);
        for (const o of n.output) if (o) deps.add(o);
      }
    });
  }
  if (out.length !== nodes.length) throw new Error('graph is not a DAG');
  return out;
}
