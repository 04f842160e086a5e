/**
 * Hidden states by graph tapping. Exported LLMs only output logits (and present.*); the residual
 * stream after block i is an intermediate tensor. Appending a serialized
 * ModelProto{graph{output: [...]}} to the file makes protobuf merge it into the graph (repeated fields
 * append), so the tensors become graph outputs without decoding a multi-hundred-MB model in JS.
 */
import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { RecdistillError } from '../../errors.js';
import { scanOnnx, type GraphNode, type GraphScan } from './onnx-scan.js';
import { copyModelWithout, spliceNoPastBranch, splicedBytes } from './onnx-splice.js';
import { detectFamily, resolveResidualStream, type ExportFamily } from './residual.js';

const { onnx } = onnxProto;

/**
 * The graph the teacher taps: the file's scan, or for a merged decoder (blocks inside an If) its no-past
 * branch spliced in place of the If (what Optimum's `no_past` decoder computes: an empty past).
 */
export function scanModel(path: string): GraphScan {
  const scan = scanOnnx(path);
  return (detectFamily(scan) === 'merged' && spliceNoPastBranch(path, scan)) || scan;
}

export interface TapPlan {
  /** Tensor to fetch for each requested layer, in request order. */
  names: string[];
  /** Nodes to add (residual sums that the export does not materialise). */
  add: { name: string; inputs: string[]; output: string }[];
  family: ExportFamily;
  /** How the names were found, for logs and manifests. */
  how: string;
}

/**
 * The tensors holding the residual stream after each requested (absolute) layer. By structure (see
 * residual.ts); `pattern` ("…layers.{i}…") names them by hand instead, for graphs the structure walk
 * cannot read, and must name tensors that exist.
 */
export function planTaps(scan: GraphScan, numLayers: number, layers: number[], pattern?: string): TapPlan {
  if (pattern) {
    if (!pattern.includes('{i}')) throw new RecdistillError('E_USAGE', `--tap-pattern must contain "{i}" for the block index; got "${pattern}".`);
    const have = new Set(scan.nodes.flatMap((n) => n.outputs));
    const names = layers.map((l) => pattern.replaceAll('{i}', String(l)));
    const missing = names.filter((n) => !have.has(n));
    if (missing.length) throw new RecdistillError('E_INPUT', `--tap-pattern "${pattern}": no node outputs ${missing.join(', ')} in this graph.`);
    return { names, add: [], family: scan.splice ? 'merged' : detectFamily(scan), how: `--tap-pattern ${pattern}` };
  }
  const stream = resolveResidualStream(scan, numLayers);
  if (scan.splice) stream.family = 'merged';
  const picked = layers.map((l) => stream.blocks[l]!);
  const add = picked.filter((b) => b.add).map((b) => ({ ...b.add!, output: b.tensor }));
  const how = `${scan.splice ? 'merged decoder read through its no-past branch, ' : ''}${stream.family} layout, ${stream.linksPerBlock} residual sums per block from ${stream.embedding}` + (stream.nameMismatches.length ? `; names do not mention layers.{i} for blocks ${stream.nameMismatches.join(',')}` : '');
  return { names: picked.map((b) => b.tensor), add: dedupe(add), family: stream.family, how };
}

function dedupe<T extends { name: string }>(xs: T[]): T[] {
  return [...new Map(xs.map((x) => [x.name, x])).values()];
}

/**
 * Bytes that, appended to a model file, add `names` as graph outputs (and the `add` nodes first). The
 * outputs carry no type: onnxruntime infers it (fp16 exports keep fp32 logits while the stream is fp16).
 */
export function tapBytes(names: string[], add: TapPlan['add'] = []): Uint8Array {
  const node = add.map((a) => onnx.NodeProto.create({ name: a.name, opType: 'Add', input: a.inputs, output: [a.output] }));
  const output = names.map((name) => onnx.ValueInfoProto.create({ name }));
  return onnx.ModelProto.encode(onnx.ModelProto.create({ graph: onnx.GraphProto.create({ node, output }) })).finish();
}

export interface TappedSession {
  session: ort.InferenceSession;
  /** Nodes left out because no tapped tensor depends on them (logits, lm_head, final norm, KV outputs). */
  prunedNodes: number;
  /** Remove the rewritten model file. */
  cleanup(): void;
}

/**
 * Nodes no tapped tensor depends on, and the initializers only they read (file offsets of both), or
 * undefined when pruning is unsafe (a kept node has subgraphs, whose outer-scope reads are not
 * tracked; or the scan has no offsets, e.g. a dump).
 */
function unusedFields(scan: GraphScan, plan: Pick<TapPlan, 'names' | 'add'>): { fields: Set<number>; nodes: number } | undefined {
  const producer = new Map<string, GraphNode>();
  for (const n of scan.nodes) for (const o of n.outputs) if (o) producer.set(o, n);
  const added = new Set(plan.add.map((a) => a.output));
  const stack = [...plan.names.filter((n) => !added.has(n)), ...plan.add.flatMap((a) => a.inputs)];
  const kept = new Set<GraphNode>();
  while (stack.length) {
    const n = producer.get(stack.pop()!);
    if (!n || kept.has(n)) continue;
    kept.add(n);
    stack.push(...n.inputs.filter((i) => i));
  }
  if ([...kept].some((n) => n.subgraphNodes > 0) || [...scan.nodes, ...scan.initializers].some((n) => n.offset === undefined)) return undefined;
  const read = new Set([...kept].flatMap((n) => n.inputs).concat(plan.add.flatMap((a) => a.inputs)));
  const nodes = scan.nodes.filter((n) => !kept.has(n));
  const inits = scan.initializers.filter((t) => !read.has(t.name));
  return { fields: new Set([...nodes, ...inits].map((x) => x.offset!)), nodes: nodes.length };
}

/**
 * Session over the model with the planned tensors as outputs. The model is rewritten (streamed, never
 * decoded) with the taps appended as ModelProto bytes; with `prune`, the nodes no tap depends on and the
 * original outputs are left out, so the final norm, lm_head (logits for every position) and the KV
 * outputs are not computed. Models with external data must be rewritten beside the original:
 * onnxruntime resolves data files relative to the model path and refuses paths outside its folder
 * (symlinks included); the file is hidden and per process, removed on dispose, and when that folder is
 * read-only it goes to a temp folder with hard links to the data files. Other models go to a temp folder.
 */
export async function createTappedSession(modelPath: string, scan: GraphScan, plan: Pick<TapPlan, 'names' | 'add'>, options: ort.InferenceSession.SessionOptions, opts: { prune?: boolean } = {}): Promise<TappedSession> {
  const drop = opts.prune ? unusedFields(scan, plan) : undefined;
  const existing = new Set(drop ? [] : scan.outputs.map((o) => o.name));
  const names = plan.names;
  const fields = new Set(drop?.fields);
  // A merged decoder: its If node goes, the no-past branch's fields come in as graph fields.
  const spliced = scan.splice ? splicedBytes(modelPath, scan.splice, fields) : new Uint8Array(0);
  if (scan.splice) fields.add(scan.splice.ifOffset);
  const extra = Buffer.concat([spliced, tapBytes([...new Set(names.filter((n) => !existing.has(n)))], plan.add)]);
  const write = (dest: string) => copyModelWithout(modelPath, dest, { fields, outputs: !!drop }, extra);
  try {
    const { path, cleanup } = scan.externalData.length ? (writeBeside(modelPath, write) ?? writeWithHardLinks(modelPath, scan.externalData, write)) : writeInTemp(write);
    try {
      return { session: await ort.InferenceSession.create(path, options), prunedNodes: drop?.nodes ?? 0, cleanup };
    } catch (e) {
      cleanup();
      throw e;
    }
  } catch (e) {
    if (e instanceof RecdistillError) throw e;
    throw new RecdistillError('E_INPUT', `onnxruntime could not load ${modelPath} with tapped outputs ${names.join(', ')}: ${(e as Error).message}`, { cause: e });
  }
}

type Writer = (dest: string) => void;

function writeInTemp(write: Writer): { path: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'recdistill-tap-'));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  try {
    const path = join(dir, 'model.onnx');
    write(path);
    return { path, cleanup };
  } catch (e) {
    cleanup();
    throw new RecdistillError('E_INPUT', `cannot write the tapped model into ${dir}: ${(e as Error).message}`);
  }
}

function writeBeside(modelPath: string, write: Writer): { path: string; cleanup: () => void } | undefined {
  const path = join(dirname(modelPath), `.${basename(modelPath)}.recdistill-tap.${process.pid}.${randomBytes(4).toString('hex')}.onnx`);
  try {
    write(path);
  } catch {
    rmSync(path, { force: true });
    return undefined;
  }
  return { path, cleanup: () => rmSync(path, { force: true }) };
}

function writeWithHardLinks(modelPath: string, externalData: string[], write: Writer): { path: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'recdistill-tap-'));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  try {
    const path = join(dir, 'model.onnx');
    write(path);
    for (const rel of externalData) {
      const target = join(dir, rel);
      mkdirSync(dirname(target), { recursive: true });
      linkSync(resolve(dirname(modelPath), rel), target);
    }
    return { path, cleanup };
  } catch (e) {
    cleanup();
    throw new RecdistillError(
      'E_INPUT',
      `cannot add tapped outputs to ${modelPath}: its folder is not writable and its external data cannot be hard-linked into ${tmpdir()} (${(e as Error).message}). Copy the model folder somewhere writable.`,
    );
  }
}
