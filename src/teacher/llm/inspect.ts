/**
 * `teacher:inspect`: what the teacher sees in a model folder before it runs anything: the exporter
 * family, sizes from config.json, weight format, graph I/O, external data, and which tensor each layer
 * number maps to. `dumpGraph` writes the graph's structure (nodes, I/O, initializer names/types/dims,
 * no weights) as JSON, which `readGraphDump` reads back into the same GraphScan the resolver takes, so a
 * user's failing model can become a test fixture.
 */
import { readFileSync } from 'node:fs';
import { RecdistillError } from '../../errors.js';
import { writeJsonAtomic } from '../../util/atomic.js';
import type { LogFn } from '../../util/progress.js';
import { readModelConfig, resolveDtype, resolveModelFiles } from './load.js';
import type { GraphScan, GraphValue } from './onnx-scan.js';
import { scanModel } from './tap.js';
import { detectFamily, resolveResidualStream, type ExportFamily } from './residual.js';

/** ONNX TensorProto.DataType names. */
const ELEM_TYPES: Record<number, string> = { 1: 'float32', 2: 'uint8', 3: 'int8', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16', 11: 'float64', 16: 'bfloat16', 21: 'uint4', 22: 'int4' };
const ELEM_BYTES: Record<number, number> = { 1: 4, 2: 1, 3: 1, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2, 21: 0.5, 22: 0.5 };

export interface InspectReport {
  model: string;
  onnxPath: string;
  dtype: string;
  family: ExportFamily;
  producer: string;
  blocks: number;
  hiddenSize: number;
  heads: number;
  kvHeads: number;
  vocabSize: number | null;
  /** Weight format read from the graph: quantisation ops and the storage types of the initializers. */
  weights: { format: string; bytesByType: Record<string, number> };
  inputs: { name: string; type: string; shape: (number | string | null)[] }[];
  outputs: { name: string; type: string; shape: (number | string | null)[] }[];
  externalData: string[];
  nodes: number;
  ops: Record<string, number>;
  /** layers[i]: name of the tensor holding the residual stream after block i (i = 0..blocks-1; -1 = the last). */
  layers: string[];
  /** The same with how each was found: the node producing it, and whether the tap adds it (not in the export). */
  layerDetails: { layer: number; fromEnd: number; tensor: string; via: string; added: boolean }[];
  /** Why the layers could not be resolved, when they could not. */
  problem?: string;
}

const io = (v: GraphValue) => ({ name: v.name, type: ELEM_TYPES[v.elemType] ?? (v.elemType ? `type ${v.elemType}` : 'untyped'), shape: v.shape });

/** What the weights are stored as, from the graph alone. */
function weightFormat(scan: GraphScan): InspectReport['weights'] {
  const bytes: Record<string, number> = {};
  for (const t of scan.initializers) {
    const n = t.dims.reduce((a, b) => a * b, 1) * (ELEM_BYTES[t.dataType] ?? 0);
    const k = ELEM_TYPES[t.dataType] ?? `type ${t.dataType}`;
    bytes[k] = (bytes[k] ?? 0) + n;
  }
  const ops = new Set(scan.nodes.map((n) => n.op));
  const floats = ['float32', 'float16', 'bfloat16'].filter((k) => bytes[k]).sort((a, b) => bytes[b]! - bytes[a]!);
  const main = floats[0] ?? 'float32';
  let format = main;
  if (ops.has('MatMulNBits')) format = `MatMulNBits block-quantised weights, ${main} scales/embeddings`;
  else if (ops.has('MatMulInteger') || ops.has('DynamicQuantizeLinear')) format = `8-bit dynamic quantisation (MatMulInteger), ${main} elsewhere`;
  else if (ops.has('QLinearMatMul')) format = `8-bit static quantisation (QLinearMatMul), ${main} elsewhere`;
  return { format, bytesByType: bytes };
}

/** Inspect a graph (from a model file or a dump) against the sizes in config. */
function inspectGraph(scan: GraphScan, cfg: { numLayers: number; hiddenSize: number; numHeads: number; numKvHeads: number; raw: Record<string, unknown> }, where: { model: string; onnxPath: string; dtype: string }): InspectReport {
  const ops: Record<string, number> = {};
  for (const n of scan.nodes) {
    const k = n.domain ? `${n.domain}.${n.op}` : n.op;
    ops[k] = (ops[k] ?? 0) + 1;
  }
  const vocab = typeof cfg.raw.vocab_size === 'number' ? cfg.raw.vocab_size : null;
  const report: InspectReport = {
    ...where,
    family: detectFamily(scan),
    producer: scan.producer,
    blocks: cfg.numLayers,
    hiddenSize: cfg.hiddenSize,
    heads: cfg.numHeads,
    kvHeads: cfg.numKvHeads,
    vocabSize: vocab,
    weights: weightFormat(scan),
    inputs: scan.inputs.map(io),
    outputs: scan.outputs.map(io),
    externalData: scan.externalData,
    nodes: scan.nodes.length + scan.nodes.reduce((a, n) => a + n.subgraphNodes, 0),
    ops,
    layers: [],
    layerDetails: [],
  };
  try {
    const s = resolveResidualStream(scan, cfg.numLayers);
    report.family = scan.splice ? 'merged' : s.family;
    report.layerDetails = s.blocks.map((b) => ({ layer: b.block, fromEnd: b.block - cfg.numLayers, tensor: b.tensor, via: b.via, added: !!b.add }));
    report.layers = report.layerDetails.map((l) => l.tensor);
  } catch (e) {
    report.problem = (e as Error).message;
  }
  return report;
}

export async function inspectModel(o: { model: string; dtype: string; offline?: boolean; dump?: string; log?: LogFn }): Promise<InspectReport> {
  const dtype = resolveDtype(o.model, o.dtype);
  const files = await resolveModelFiles(o.model, dtype, !!o.offline, o.log);
  const scan = scanModel(files.onnxPath);
  if (o.dump) dumpGraph(scan, o.dump);
  return inspectGraph(scan, readModelConfig(files.dir), { model: o.model, onnxPath: files.onnxPath, dtype });
}

const DUMP_FORMAT = 'recdistill-graph-dump';

export function dumpGraph(scan: GraphScan, path: string): void {
  // Byte offsets and splice ranges locate fields in this file only: not part of the structure.
  const { splice, nodes, initializers, ...rest } = scan;
  const strip = <T extends { offset?: number }>({ offset: _, ...x }: T) => x;
  writeJsonAtomic(path, { format: DUMP_FORMAT, version: 1, ...rest, merged: !!splice, nodes: nodes.map(strip), initializers: initializers.map(strip) });
}

/** Read a `--dump` file back (validated) as a GraphScan. */
export function readGraphDump(path: string): GraphScan {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new RecdistillError('E_INPUT', `${path}: not a readable JSON graph dump (${(e as Error).message}).`);
  }
  const d = raw as Partial<GraphScan> & { format?: string; version?: number };
  if (d.format !== DUMP_FORMAT || d.version !== 1 || !Array.isArray(d.nodes) || !Array.isArray(d.inputs) || !Array.isArray(d.outputs)) {
    throw new RecdistillError('E_INPUT', `${path}: expected a ${DUMP_FORMAT} version 1 file (from teacher:inspect --dump) with nodes, inputs and outputs.`);
  }
  return { nodes: d.nodes, inputs: d.inputs, outputs: d.outputs, initializers: d.initializers ?? [], externalData: d.externalData ?? [], producer: d.producer ?? '', opsets: d.opsets ?? [] };
}

export interface ForwardTiming {
  tokens: number;
  rounds: number;
  /** Best ms of one forward pass fetching the last layer, whole graph (logits, KV outputs computed). */
  fullMs: number;
  /** The same with the nodes no tap needs left out (the teacher's default). */
  prunedMs: number;
  /** fullMs / prunedMs. */
  speedup: number;
  fullTokensPerSecond: number;
  prunedTokensPerSecond: number;
  nodesLeftOut: number;
}

/**
 * Time one forward pass of `tokens` tokens through the tapped graph, whole vs pruned, alternating
 * (full, pruned, full, …) in one process so machine load hits both alike; best of `rounds` each.
 * Answers whether onnxruntime computes outputs nobody fetched (logits for every position).
 */
export async function measureForward(o: { model: string; dtype: string; tokens: number; rounds: number; threads?: number; offline?: boolean; log?: LogFn }): Promise<ForwardTiming> {
  if (!Number.isInteger(o.tokens) || o.tokens < 1) throw new RecdistillError('E_USAGE', `--measure-tokens must be a positive integer, got ${o.tokens}.`);
  if (!Number.isInteger(o.rounds) || o.rounds < 1) throw new RecdistillError('E_USAGE', `--rounds must be a positive integer, got ${o.rounds}.`);
  const { createRuntime } = await import('./runtime.js');
  const { createTappedSession, planTaps } = await import('./tap.js');
  const dtype = resolveDtype(o.model, o.dtype);
  const files = await resolveModelFiles(o.model, dtype, !!o.offline, o.log);
  const cfg = readModelConfig(files.dir);
  const scan = scanModel(files.onnxPath);
  const plan = planTaps(scan, cfg.numLayers, [cfg.numLayers - 1]);
  const options = { graphOptimizationLevel: 'all' as const, executionMode: 'sequential' as const, interOpNumThreads: 1, ...(o.threads ? { intraOpNumThreads: o.threads } : {}), extra: { session: { intra_op: { allow_spinning: '0' } } } };
  const vocab = Math.min(typeof cfg.raw.vocab_size === 'number' ? cfg.raw.vocab_size : 1000, 1000);
  const ids = Array.from({ length: o.tokens }, (_, i) => (i * 7919 + 13) % vocab);
  const best = { full: Infinity, pruned: Infinity };
  let nodesLeftOut = 0;
  for (let r = 0; r < o.rounds; r++) {
    for (const kind of ['full', 'pruned'] as const) {
      const t = await createTappedSession(files.onnxPath, scan, plan, options, { prune: kind === 'pruned' });
      try {
        if (kind === 'pruned') nodesLeftOut = t.prunedNodes;
        const rt = createRuntime(t.session, plan.names, cfg, { concurrency: 1, batch: 1 });
        await rt.forward([ids.slice(0, 8)]); // warm-up: first-run allocations
        const t0 = performance.now();
        await rt.forward([ids]);
        best[kind] = Math.min(best[kind], performance.now() - t0);
      } finally {
        await t.session.release();
        t.cleanup();
      }
      o.log?.(`teacher:inspect: round ${r + 1}/${o.rounds} ${kind}: ${best[kind].toFixed(0)} ms best so far`);
    }
  }
  return {
    tokens: o.tokens,
    rounds: o.rounds,
    fullMs: best.full,
    prunedMs: best.pruned,
    speedup: best.full / best.pruned,
    fullTokensPerSecond: (o.tokens / best.full) * 1000,
    prunedTokensPerSecond: (o.tokens / best.pruned) * 1000,
    nodesLeftOut,
  };
}
