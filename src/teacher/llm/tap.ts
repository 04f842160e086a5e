/**
 * Hidden states by graph tapping. Exported LLMs only output logits (and present.*); the residual
 * stream after block i is an intermediate tensor. Appending a serialized
 * ModelProto{graph{output: [...]}} to the file makes protobuf merge it into the graph (repeated fields
 * append), so the tensors become graph outputs without decoding a multi-hundred-MB model in JS.
 */
import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { RecdistillError } from '../../errors.js';
import type { GraphScan } from './onnx-scan.js';
import { detectFamily, resolveResidualStream, type ExportFamily } from './residual.js';

const { onnx } = onnxProto;

/** Negative indices count from the end (-1 = last block). Returns absolute indices, validated. */
export function absoluteLayers(layers: number[], numLayers: number): number[] {
  if (!layers.length) throw new RecdistillError('E_USAGE', 'layers: give at least one layer index (e.g. "-1" or "-4,-1").');
  return layers.map((l) => {
    const a = l < 0 ? numLayers + l : l;
    if (!Number.isInteger(l) || a < 0 || a >= numLayers) {
      throw new RecdistillError('E_USAGE', `layers: index ${l} is out of range for a model with ${numLayers} layers (valid: ${-numLayers}..${numLayers - 1}).`);
    }
    return a;
  });
}

/** Parse "-4,-1" into [-4, -1]. */
export function parseLayers(spec: string): number[] {
  const parts = spec.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const out = parts.map((p) => Number(p));
  if (!parts.length || out.some((n, i) => !Number.isInteger(n) || !/^-?\d+$/.test(parts[i]!))) {
    throw new RecdistillError('E_USAGE', `layers: expected comma-separated integers like "-4,-1", got "${spec}".`);
  }
  return out;
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
    return { names, add: [], family: detectFamily(scan), how: `--tap-pattern ${pattern}` };
  }
  const stream = resolveResidualStream(scan, numLayers);
  const picked = layers.map((l) => stream.blocks[l]!);
  const add = picked.filter((b) => b.add).map((b) => ({ ...b.add!, output: b.tensor }));
  const how = `${stream.family} layout, ${stream.linksPerBlock} residual sums per block from ${stream.embedding}` + (stream.nameMismatches.length ? `; names do not mention layers.{i} for blocks ${stream.nameMismatches.join(',')}` : '');
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
  /** Remove temp files (external-data models). */
  cleanup(): void;
}

/**
 * Session over the model with `names` added as outputs. Models without external data load from a
 * buffer (file + appended bytes). With external data (model.onnx_data) onnxruntime resolves the data
 * files relative to the model path and refuses paths outside its folder (symlinks included), so the
 * small graph file + taps is written beside the original (a hidden, per-process file, removed on
 * dispose); when that folder is read-only, into a temp folder with hard links to the data files.
 */
export async function createTappedSession(modelPath: string, scan: GraphScan, plan: Pick<TapPlan, 'names' | 'add'>, options: ort.InferenceSession.SessionOptions): Promise<TappedSession> {
  const existing = new Set(scan.outputs.map((o) => o.name));
  const names = plan.names;
  const extra = tapBytes([...new Set(names.filter((n) => !existing.has(n)))], plan.add);
  const bytes = Buffer.concat([readFileSync(modelPath), extra]);
  try {
    if (!scan.externalData.length) {
      return { session: await ort.InferenceSession.create(bytes, options), cleanup: () => {} };
    }
    const { path, cleanup } = writeBeside(modelPath, bytes) ?? writeWithHardLinks(modelPath, scan.externalData, bytes);
    try {
      return { session: await ort.InferenceSession.create(path, options), cleanup };
    } catch (e) {
      cleanup();
      throw e;
    }
  } catch (e) {
    if (e instanceof RecdistillError) throw e;
    throw new RecdistillError('E_INPUT', `onnxruntime could not load ${modelPath} with tapped outputs ${names.join(', ')}: ${(e as Error).message}`, { cause: e });
  }
}

function writeBeside(modelPath: string, bytes: Uint8Array): { path: string; cleanup: () => void } | undefined {
  const path = join(dirname(modelPath), `.${basename(modelPath)}.recdistill-tap.${process.pid}.${randomBytes(4).toString('hex')}.onnx`);
  try {
    writeFileSync(path, bytes);
  } catch {
    return undefined;
  }
  return { path, cleanup: () => rmSync(path, { force: true }) };
}

function writeWithHardLinks(modelPath: string, externalData: string[], bytes: Uint8Array): { path: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'recdistill-tap-'));
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  try {
    const path = join(dir, 'model.onnx');
    writeFileSync(path, bytes);
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
