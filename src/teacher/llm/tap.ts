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

const { onnx } = onnxProto;

/**
 * Where exporters put the block-i output (the residual stream after the MLP add). `{i}` is the layer.
 * optimum names nodes after the torch module path; the second residual add of a block is `Add_1`.
 */
export const TAP_PATTERNS = [
  '/model/layers.{i}/Add_1_output_0', // optimum: Llama, Qwen2, Mistral, Gemma, Phi-3 (and model:tiny)
  '/transformer/h.{i}/Add_1_output_0', // optimum: GPT-2, GPT-J
  '/model/decoder/layers.{i}/Add_1_output_0', // optimum: OPT
  '/gpt_neox/layers.{i}/Add_1_output_0', // optimum: GPT-NeoX, Pythia
] as const;

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

/**
 * Names of the tensors to tap for the given absolute layers: the first pattern (or `pattern` when the
 * user gives one) under which every block 0..numLayers-1 has an output in the graph.
 */
export function resolveTapNames(scan: GraphScan, numLayers: number, layers: number[], pattern?: string): { names: string[]; pattern: string } {
  const have = new Set(scan.nodeOutputs);
  const candidates = pattern ? [pattern] : TAP_PATTERNS;
  for (const p of candidates) {
    const all = Array.from({ length: numLayers }, (_, i) => p.replaceAll('{i}', String(i)));
    if (all.every((n) => have.has(n))) return { names: layers.map((l) => all[l]!), pattern: p };
  }
  if (!pattern) {
    const guessed = guessPattern(scan, numLayers);
    if (guessed) return { names: layers.map((l) => guessed.replaceAll('{i}', String(l))), pattern: guessed };
  }
  const sample = scan.nodeOutputs.filter((n) => /layers?\.?\d+|\/h\.\d+/.test(n) && /Add/.test(n)).slice(0, 8);
  throw new RecdistillError(
    'E_INPUT',
    `cannot find the per-layer residual-stream tensors in this ONNX graph (${numLayers} layers) under ${candidates.map((c) => `"${c}"`).join(', ')}. ` +
      `Pass --tap-pattern with "{i}" for the layer index. Some candidate tensors in the graph: ${sample.join(', ') || '(none with "layers" + "Add")'}.`,
  );
}

/**
 * Fallback for exporters with other module paths: top-level residual adds of each block
 * (`<prefix>layers.{i}/Add[_k]_output_0`); the block output is the last one, so take the largest k,
 * provided every block has it. The caller logs the chosen names.
 */
function guessPattern(scan: GraphScan, numLayers: number): string | undefined {
  const re = /^(.*\/(?:layers|h|blocks?|layer)\.)(\d+)\/Add(?:_(\d+))?_output_0$/;
  const byPrefix = new Map<string, Map<number, number>>(); // prefix -> layer -> max k
  scan.nodeOutputs.forEach((name, i) => {
    const m = re.exec(name);
    if (!m || scan.nodeOps[i] !== 'Add') return;
    const layer = Number(m[2]);
    const k = m[3] === undefined ? 0 : Number(m[3]);
    const per = byPrefix.get(m[1]!) ?? new Map<number, number>();
    per.set(layer, Math.max(per.get(layer) ?? -1, k));
    byPrefix.set(m[1]!, per);
  });
  for (const [prefix, per] of byPrefix) {
    const ks = new Set(Array.from({ length: numLayers }, (_, l) => per.get(l)));
    const [k] = [...ks];
    if (ks.size === 1 && k !== undefined) return `${prefix}{i}/${k === 0 ? 'Add' : `Add_${k}`}_output_0`;
  }
  return undefined;
}

/** Bytes that, appended to a model file, add `names` as graph outputs of the given element type. */
export function tapBytes(names: string[], elemType: number): Uint8Array {
  const output = names.map((name) => onnx.ValueInfoProto.create({ name, type: { tensorType: { elemType } } }));
  return onnx.ModelProto.encode(onnx.ModelProto.create({ graph: onnx.GraphProto.create({ output }) })).finish();
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
export async function createTappedSession(modelPath: string, scan: GraphScan, names: string[], elemType: number, options: ort.InferenceSession.SessionOptions): Promise<TappedSession> {
  const existing = new Set(scan.outputs.map((o) => o.name));
  const extra = tapBytes(names.filter((n) => !existing.has(n)), elemType);
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
