/**
 * The three rewrites applied to an Optimum export, re-implemented as graph passes that follow the upstream
 * code step by step (so names, order and attributes come out as the tools write them):
 *   - fuseSkipSimplifiedLayerNorm: onnxruntime/python/tools/transformers/fusion_simplified_layernorm.py
 *     (FusionSimplifiedLayerNormalization, then FusionSkipSimplifiedLayerNormalization via
 *     fusion_skiplayernorm.py), onnx_model.py create_node_name / update_graph / graph_topological_sort.
 *   - applyQ4: onnxruntime/python/tools/quantization/matmul_nbits_quantizer.py (DefaultWeightOnlyQuantizer
 *     .quantize_matmul, QOperator, symmetric, accuracy_level None -> attribute omitted).
 *   - applyFp16: transformers.js scripts/float16.py convert_float_to_float16(keep_io_types=True, Cast in
 *     the op block list) and onnx-graphsurgeon's toposort; the onnxslim.slim() that quantize.py runs after it
 *     is not replicated.
 */
import onnxProto from 'onnx-proto';
import { DataType, type GraphDesc, type LazyTensor, type NodeProto } from '../../util/onnx-file.js';
import { attr, consumers, makeNode, producers, tensorProto, topologicalSort, type InitMeta } from '../../util/onnx-graph.js';
import { type DecoderSpec, weightList } from './spec.js';
import { Q4_BLOCK, q4Tensors, rowTensor, toF16Converted, transposedTensor } from './quant.js';

const { onnx } = onnxProto;
const MS = 'com.microsoft';

function constValue(nodes: Map<string, NodeProto>, name: string): number | undefined {
  const p = nodes.get(name);
  if (p?.opType !== 'Constant') return undefined;
  const t = p.attribute[0]?.t;
  if (!t || t.dataType !== DataType.FLOAT || !t.rawData || t.rawData.byteLength !== 4) return undefined;
  return new DataView(t.rawData.buffer, t.rawData.byteOffset, 4).getFloat32(0, true);
}

/** Drop Constant nodes nobody reads any more (OnnxModel.remove_unused_constant). */
function removeUnusedConstants(nodes: NodeProto[]): NodeProto[] {
  const used = consumers(nodes);
  return nodes.filter((n) => n.opType !== 'Constant' || used.has(n.output[0]!));
}

const withMsOpset = (desc: GraphDesc) =>
  desc.opsets.some((o) => o.domain === MS) ? desc.opsets : [...desc.opsets, { domain: MS, version: 1 }];

const readyNames = (desc: GraphDesc) => [...desc.initializers.map((t) => t.name), ...desc.inputs.map((i) => i.name)];

export function fuseSkipSimplifiedLayerNorm(desc: GraphDesc, taps: (string | undefined)[]): { desc: GraphDesc; blockOutputs: (string | undefined)[] } {
  const inits = new Set(desc.initializers.map((t) => t.name));
  // Pass 1: Pow -> ReduceMean -> Add(eps) -> Sqrt -> Div(1, .) -> Mul(x, .) -> Mul(weight, .) becomes
  // SimplifiedLayerNormalization(x, weight){epsilon, axis=-1, stash_type=1} named LayerNorm_<k>.
  let nodes = desc.nodes;
  let prod = producers(nodes);
  const parent = (n: NodeProto | undefined, i: number) => (n ? prod.get(n.input[i] ?? '') : undefined);
  const remove = new Set<NodeProto>();
  const added: NodeProto[] = [];
  let lnIdx = 0;
  for (const node of nodes) {
    if (node.opType !== 'Mul') continue;
    const path: NodeProto[] = [];
    let cur: NodeProto | undefined = node;
    const types = ['Mul', 'Div', 'Sqrt', 'Add', 'ReduceMean', 'Pow'];
    const idx = [1, 1, 1, 0, 0, 0];
    for (let k = 0; k < types.length && cur; k++) {
      const p: NodeProto | undefined = parent(cur, idx[k]!);
      cur = p?.opType === types[k] ? p : undefined;
      if (cur) path.push(cur);
    }
    const root = parent(path[5], 0);
    if (!cur || !root || (root.opType !== 'Add' && root.opType !== 'Gather')) continue;
    const [mul, , , add, , pow] = path as [NodeProto, NodeProto, NodeProto, NodeProto, NodeProto, NodeProto];
    if (constValue(prod, pow.input[1]!) !== 2) continue;
    if (pow.input[0] !== mul.input[0]) continue;
    const eps = constValue(prod, add.input[1]!) ?? constValue(prod, add.input[0]!);
    if (eps === undefined || eps <= 0 || eps > 1e-4) continue;
    for (const n of [...path, node]) remove.add(n);
    const ln = makeNode('SimplifiedLayerNormalization', `LayerNorm_${lnIdx++}`, [pow.input[0]!, node.input[0]!], [node.output[0]!]);
    ln.attribute.push(attr('epsilon', { f: eps }), attr('axis', { i: -1 }), attr('stash_type', { i: 1 }));
    added.push(ln);
  }
  nodes = removeUnusedConstants([...nodes.filter((n) => !remove.has(n)), ...added]);

  // Pass 2: residual Add + SimplifiedLayerNormalization -> SkipSimplifiedLayerNormalization(a, b, gamma)
  // named SkipLayerNorm_<k>; the Add's sum is kept as output 3 only when something else reads it.
  prod = producers(nodes);
  const readers = consumers(nodes);
  remove.clear();
  added.length = 0;
  let skipIdx = 0;
  for (const node of nodes) {
    if (node.opType !== 'SimplifiedLayerNormalization') continue;
    const add = parent(node, 0);
    if (!add || add.opType !== 'Add' || remove.has(add)) continue;
    if (add.input.some((i) => inits.has(i))) continue;
    if (add.input.filter((i) => prod.has(i)).length !== 2) continue;
    const gather = add.input.map((i) => prod.get(i)).find((p) => p?.opType === 'Gather');
    if (gather && !desc.inputs.some((vi) => vi.name === gather.input[1])) continue;
    const multi = (readers.get(add.output[0]!) ?? []).length !== 1 || desc.outputs.some((o) => o.name === add.output[0]);
    const outputs = multi ? [node.output[0]!, '', '', add.output[0]!] : [node.output[0]!];
    remove.add(add).add(node);
    const skip = makeNode('SkipSimplifiedLayerNormalization', `SkipLayerNorm_${skipIdx++}`, [add.input[0]!, add.input[1]!, node.input[1]!], outputs, {}, MS);
    skip.attribute.push(...node.attribute.filter((a) => a.name === 'epsilon'));
    added.push(skip);
  }
  nodes = [...nodes.filter((n) => !remove.has(n)), ...added];
  const out: GraphDesc = { ...desc, nodes: topologicalSort(nodes, readyNames(desc)), opsets: withMsOpset(desc) };
  const produced = new Set(out.nodes.flatMap((n) => n.output));
  return { desc: out, blockOutputs: taps.map((t) => (t && produced.has(t) ? t : undefined)) };
}

export function applyQ4(desc: GraphDesc, spec: DecoderSpec, meta: Map<string, InitMeta>): GraphDesc {
  const weights = new Map(weightList(spec).map((w) => [w.name, w]));
  const dropped = new Set<string>();
  const appended: LazyTensor[] = [];
  const nodes = desc.nodes.map((node) => {
    const b = node.input[1] ?? '';
    const m = meta.get(b);
    // Only MatMuls whose B is a 2-D constant initializer (the folded W^T) are quantized.
    if (node.opType !== 'MatMul' || !m?.transposed) return node;
    const w = weights.get(m.source)!;
    const [N, K] = [w.dims[0]!, w.dims[1]!];
    const [q, scales] = q4Tensors(spec, w, b);
    dropped.add(b);
    appended.push(q, scales);
    // helper.make_node sorts kwargs: K, N, bits, block_size.
    return makeNode('MatMulNBits', `${node.name}_Q4`, [node.input[0]!, q.name, scales.name], [...node.output], {
      K: { i: K },
      N: { i: N },
      bits: { i: 4 },
      block_size: { i: Q4_BLOCK },
    }, MS);
  });
  return {
    ...desc,
    nodes,
    initializers: [...desc.initializers.filter((t) => !dropped.has(t.name)), ...appended],
    opsets: withMsOpset(desc),
  };
}

const BLOCKED = new Set(['Cast', 'CumSum', 'Min', 'Max', 'TopK', 'Resize', 'Upsample', 'NonMaxSuppression', 'RoiAlign', 'RandomNormalLike', 'RandomUniformLike']);

export function applyFp16(desc: GraphDesc, spec: DecoderSpec, meta: Map<string, InitMeta>, types0: Map<string, number>): GraphDesc {
  const types = new Map(types0);
  let nodes = desc.nodes.map((n) => onnx.NodeProto.create({ ...n, input: [...n.input], output: [...n.output], attribute: [...n.attribute] }));
  const tail: NodeProto[] = [];
  const cast = (input: string, output: string, name: string, to: number) => {
    tail.push(makeNode('Cast', name, [input], [output], { to: { i: to } }));
    types.set(output, to);
  };
  // process_graph_input: one Cast `<input>_fp16` per float input, consumers rewired.
  for (const vi of desc.inputs) {
    if (types.get(vi.name) !== DataType.FLOAT) continue;
    const readers = nodes.filter((n) => n.input.includes(vi.name));
    if (!readers.length) continue;
    cast(vi.name, `${vi.name}_fp16`, `${vi.name}_fp16`, DataType.FLOAT16);
    for (const r of readers) r.input = r.input.map((i) => (i === vi.name ? `${vi.name}_fp16` : i));
  }
  // process_tensor_in_node + process_value_info: float tensors become fp16 except outputs of blocked ops.
  const blockedOut = new Set(nodes.filter((n) => BLOCKED.has(n.opType)).flatMap((n) => n.output));
  for (const n of nodes) {
    if (BLOCKED.has(n.opType)) continue;
    for (const a of n.attribute) {
      const t = a.t;
      if (!t || t.dataType !== DataType.FLOAT || !t.rawData) continue;
      const f = new Float32Array(t.rawData.slice().buffer);
      a.t = tensorProto(DataType.FLOAT16, (t.dims ?? []).map(Number), Uint16Array.from(f, (v) => toF16Converted(v)));
    }
  }
  for (const [k, v] of types) if (v === DataType.FLOAT && !blockedOut.has(k) && !desc.inputs.some((i) => i.name === k)) types.set(k, DataType.FLOAT16);
  // process_node_in_block_list: Cast32 before fp16 inputs, Cast16 after float outputs of blocked nodes.
  for (const n of nodes) {
    if (!BLOCKED.has(n.opType)) continue;
    n.input = n.input.map((inp, i) => {
      if (types.get(inp) !== DataType.FLOAT16) return inp;
      cast(inp, `${n.name}_input_cast_${i}`, `${n.name}_input_cast${i}`, DataType.FLOAT);
      return `${n.name}_input_cast_${i}`;
    });
    n.output = n.output.map((o, i) => {
      if (types.get(o) !== DataType.FLOAT) return o;
      cast(`${n.name}_output_cast_${i}`, o, `${n.name}_output_cast${i}`, DataType.FLOAT16);
      types.set(`${n.name}_output_cast_${i}`, DataType.FLOAT);
      return `${n.name}_output_cast_${i}`;
    });
  }
  // process_initializers: float initializers not read by blocked nodes -> fp16 (same names).
  const blockedIn = new Set(nodes.filter((n) => BLOCKED.has(n.opType)).flatMap((n) => n.input));
  const weights = new Map(weightList(spec).map((w) => [w.name, w]));
  const initializers = desc.initializers.map((t) => {
    const m = meta.get(t.name);
    if (t.dataType !== DataType.FLOAT || blockedIn.has(t.name) || !m) return t;
    const w = weights.get(m.source)!;
    return m.transposed ? transposedTensor(spec, w, t.name, 'fp16') : rowTensor(spec, w, t.name, 'fp16');
  });
  nodes = [...nodes, ...tail];
  tail.length = 0;
  // process_graph_output: producer writes `<out>_fp16`, Cast `<out>_fp16_input_cast0` restores float32.
  for (const vo of desc.outputs) {
    if (types0.get(vo.name) !== DataType.FLOAT) continue;
    const p = nodes.find((n) => n.output.includes(vo.name))!;
    // float16.py reuses `i` from the inner loop over the producer's outputs: the suffix is its last index.
    const suffix = p.output.length - 1;
    p.output = p.output.map((o) => (o === vo.name ? `${vo.name}_fp16` : o));
    cast(`${vo.name}_fp16`, vo.name, `${vo.name}_fp16_input_cast${suffix}`, DataType.FLOAT);
    for (const r of nodes) r.input = r.input.map((i) => (i === vo.name ? `${vo.name}_fp16` : i));
  }
  nodes = [...nodes, ...tail];
  return { ...desc, nodes: levelSort(nodes, readyNamesOf(desc, initializers)), initializers };
}

const readyNamesOf = (desc: GraphDesc, inits: LazyTensor[]) => [...inits.map((t) => t.name), ...desc.inputs.map((i) => i.name)];

/** onnx-graphsurgeon Graph.toposort: stable sort by hierarchy level (longest path from graph inputs). */
function levelSort(nodes: NodeProto[], ready: string[]): NodeProto[] {
  const prod = producers(nodes);
  const level = new Map<NodeProto, number>();
  const readySet = new Set(ready);
  const lvl = (n: NodeProto): number => {
    const known = level.get(n);
    if (known !== undefined) return known;
    let l = 0;
    for (const i of n.input) {
      const p = i && !readySet.has(i) ? prod.get(i) : undefined;
      if (p) l = Math.max(l, lvl(p) + 1);
    }
    level.set(n, l);
    return l;
  };
  return nodes.map((n, i) => ({ n, i, l: lvl(n) })).sort((a, b) => a.l - b.l || a.i - b.i).map((x) => x.n);
}
