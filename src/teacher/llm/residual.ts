/**
 * Find the residual stream of a decoder-only LM by graph structure, not by node names.
 *
 * The stream starts at the token-embedding Gather on `input_ids` and passes through the residual sums:
 * a plain `Add` (Optimum TorchScript exports) or output 3 (input + skip) of onnxruntime's fused
 * `SkipLayerNormalization` / `SkipSimplifiedLayerNormalization` (the transformer optimiser, and the
 * onnxruntime-genai model builder). A sum is a link of the chain when the stream tensor is one operand
 * and the other operand is computed from the stream (x + f(x)); that excludes norms' `+ eps`, position
 * embeddings and any constant bias. Blocks have two links (after attention, after the MLP) or one
 * (parallel attention + MLP). The chain must end where the final norm starts, i.e. it still leads to
 * `logits`. Fused exports do not materialise the last sum (output 3 of the final norm is dropped when
 * nothing else reads it); then the tap adds an `Add` node of the same operands.
 *
 * Layer i (0-based, -1 = last) is always "the residual stream after block i, before the final norm".
 */
import { RecdistillError } from '../../errors.js';
import type { GraphNode, GraphScan } from './onnx-scan.js';

export type ExportFamily = 'optimum' | 'optimum-fused' | 'genai' | 'merged' | 'unknown';

const SKIP_NORMS = new Set(['SkipLayerNormalization', 'SkipSimplifiedLayerNormalization']);
const EMBEDDING_OPS = new Set(['Gather', 'GatherBlockQuantized']);

/** One block's tapped tensor. `add` is set when the sum is not in the graph and a node must be added. */
export interface BlockTensor {
  block: number;
  tensor: string;
  /** The node whose output (Add output 0, or skip-norm output 3) is this tensor. */
  via: string;
  add?: { name: string; inputs: string[] };
}

export interface ResidualStream {
  family: ExportFamily;
  embedding: string;
  linksPerBlock: 1 | 2;
  blocks: BlockTensor[];
  /** Blocks whose tensor name does not mention `layers.{i}` or `layers.{i+1}` (names are only a cross-check). */
  nameMismatches: number[];
}

export function detectFamily(scan: GraphScan): ExportFamily {
  const ops = new Set(scan.nodes.map((n) => n.op));
  if (scan.nodes.some((n) => n.op === 'If' && n.subgraphNodes > 0) && !ops.has('MatMul') && !ops.has('MatMulNBits')) return 'merged';
  const hasPositionIds = scan.inputs.some((i) => i.name === 'position_ids');
  if (ops.has('GroupQueryAttention') || (!hasPositionIds && [...ops].some((o) => SKIP_NORMS.has(o)))) return 'genai';
  if ([...ops].some((o) => SKIP_NORMS.has(o))) return 'optimum-fused';
  if (hasPositionIds) return 'optimum';
  return 'unknown';
}

function mergedError(scan: GraphScan): RecdistillError | undefined {
  const ifNode = scan.nodes.find((n) => n.op === 'If' && n.subgraphNodes > 0);
  if (!ifNode) return undefined;
  return new RecdistillError(
    'E_INPUT',
    `this ONNX file is a merged decoder (decoder_model_merged.onnx style): its ${ifNode.subgraphNodes} block nodes sit inside the branches of the If node "${ifNode.name}" ` +
      `(on ${ifNode.inputs[0] ?? 'use_cache_branch'}), where no tensor can be made a graph output, and no no-past (else_branch) decoder could be read from it. Use the export without the merged branches instead: ` +
      `onnx/model.onnx (or model_q4.onnx, …) from a transformers.js / onnx-community export, or decoder_model.onnx from optimum-cli, saved as onnx/model<suffix>.onnx in the model folder.`,
  );
}

/** Follow the residual chain; map each block to the tensor holding the stream after it. */
export function resolveResidualStream(scan: GraphScan, numLayers: number): ResidualStream {
  const producer = new Map<string, GraphNode>();
  const consumers = new Map<string, GraphNode[]>();
  for (const n of scan.nodes) {
    for (const o of n.outputs) if (o) producer.set(o, n);
    for (const i of n.inputs) if (i) (consumers.get(i) ?? consumers.set(i, []).get(i)!).push(n);
  }
  const fail = (msg: string): never => {
    throw mergedError(scan) ?? new RecdistillError('E_INPUT', `cannot follow the residual stream of this ONNX graph (${numLayers} blocks in config.json): ${msg} Run teacher:inspect --dump graph.json and attach it to a bug report; --tap-pattern names the tensors by hand.`);
  };

  const embed = scan.nodes.find((n) => EMBEDDING_OPS.has(n.op) && reaches(n.inputs[1], 'input_ids', producer));
  if (!embed) return fail('no token-embedding Gather reads input_ids.');

  // Does `t` depend on `x`? Backward search over producers. A fused skip-norm's normed output 0 is
  // computed from its sum (output 3), so reaching any output of the node that produces x counts.
  const dependsOn = (t: string, x: string): boolean => {
    const px = producer.get(x);
    const targets = new Set(px && SKIP_NORMS.has(px.op) ? px.outputs.filter((o) => o) : [x]);
    const seen = new Set<string>();
    const stack = [t];
    while (stack.length) {
      const cur = stack.pop()!;
      if (targets.has(cur)) return true;
      if (seen.has(cur)) continue;
      seen.add(cur);
      for (const i of producer.get(cur)?.inputs ?? []) if (i) stack.push(i);
    }
    return false;
  };
  // A residual sum of x: x is one addend, the other is computed from x.
  const addends = (n: GraphNode): string[] => (n.op === 'Add' ? n.inputs.slice(0, 2) : SKIP_NORMS.has(n.op) ? n.inputs.slice(0, 2) : []);
  const isLink = (n: GraphNode, x: string): boolean => {
    const a = addends(n);
    if (a.length !== 2 || !a.includes(x)) return false;
    const other = a[0] === x ? a[1]! : a[0]!;
    return other !== x && dependsOn(other, x);
  };

  let x = embed.outputs[0]!;
  const links: BlockTensor[] = [];
  let ended = false;
  for (let guard = 0; !ended && guard < 4 * numLayers + 8; guard++) {
    const next = (consumers.get(x) ?? []).filter((n) => isLink(n, x));
    if (next.length > 1) fail(`tensor ${x} feeds ${next.length} residual sums (${next.map((n) => `${n.op} "${n.name}"`).join(', ')}); expected one.`);
    const n = next[0];
    if (!n) {
      // Before the first block: x + position embedding, embedding scale, casts (operands not computed from x).
      const step = links.length ? undefined : prefixStep(consumers.get(x) ?? [], x, dependsOn);
      if (step) {
        x = step;
        continue;
      }
      break;
    }
    if (n.op === 'Add') {
      links.push({ block: -1, tensor: n.outputs[0]!, via: n.name });
      x = n.outputs[0]!;
    } else if (n.outputs[3]) {
      links.push({ block: -1, tensor: n.outputs[3], via: n.name });
      x = n.outputs[3];
    } else {
      // The sum exists only inside the fused norm: add it (input + skip [+ bias]). Nothing can follow.
      const sumInputs = n.inputs.length > 3 && n.inputs[3] ? [...n.inputs.slice(0, 2), n.inputs[3]] : n.inputs.slice(0, 2);
      links.push({ block: -1, tensor: `${n.name}/recdistill_residual_sum`, via: n.name, add: { name: `${n.name}/recdistill_residual_sum`, inputs: sumInputs } });
      ended = true;
    }
  }
  const L = links.length;
  const perBlock = L === 2 * numLayers ? 2 : L === numLayers ? 1 : 0;
  if (!perBlock) {
    const sample = links.slice(0, 6).map((l) => l.via).join(', ');
    fail(`found ${L} residual sums from the embedding "${embed.name}" (${sample}${L > 6 ? ', …' : ''}); a ${numLayers}-block model has ${2 * numLayers} (or ${numLayers} with parallel attention + MLP).`);
  }
  const last = links[L - 1]!;
  const logits = scan.outputs.find((o) => o.name === 'logits');
  if (logits && !last.add && !reachesForward(last.tensor, 'logits', consumers)) {
    fail(`the last residual sum "${last.via}" does not lead to logits; the chain did not end at the final norm.`);
  }
  const blocks = Array.from({ length: numLayers }, (_, i) => ({ ...links[perBlock * i + perBlock - 1]!, block: i }));
  const nameMismatches = blocks.filter((b) => !new RegExp(`layers\\.(${b.block}|${b.block + 1})/`).test(b.via)).map((b) => b.block);
  return { family: detectFamily(scan), embedding: embed.name, linksPerBlock: perBlock as 1 | 2, blocks, nameMismatches };
}

/** Is `target` an ancestor of `t` through shape-preserving index ops (Cast, Reshape, Unsqueeze…)? */
function reaches(t: string | undefined, target: string, producer: Map<string, GraphNode>): boolean {
  for (let cur = t, i = 0; cur && i < 8; i++) {
    if (cur === target) return true;
    const p = producer.get(cur);
    if (!p || !['Cast', 'Reshape', 'Unsqueeze', 'Squeeze', 'Identity'].includes(p.op)) return false;
    cur = p.inputs[0];
  }
  return false;
}

function reachesForward(from: string, target: string, consumers: Map<string, GraphNode[]>): boolean {
  const seen = new Set<string>();
  const stack = [from];
  while (stack.length) {
    const cur = stack.pop()!;
    if (cur === target) return true;
    if (seen.has(cur)) continue;
    seen.add(cur);
    for (const n of consumers.get(cur) ?? []) for (const o of n.outputs) if (o) stack.push(o);
  }
  return false;
}

/** The one elementwise step that carries the embedding forward (x + pos, x * scale, Cast), if any. */
function prefixStep(cons: GraphNode[], x: string, dependsOn: (t: string, x: string) => boolean): string | undefined {
  const steps = cons.filter((n) => {
    if (n.op === 'Cast') return true;
    if (n.op !== 'Add' && n.op !== 'Mul') return false;
    const other = n.inputs[0] === x ? n.inputs[1] : n.inputs[0];
    return !!other && !dependsOn(other, x);
  });
  return steps.length === 1 && cons.length === 1 ? steps[0]!.outputs[0] : undefined;
}
