/**
 * The teacher on every exporter layout the replicas reproduce (src/teacher/replica): the structural
 * resolver picks each exporter's own residual-stream tensor, the states read through the project's load
 * path agree across layouts and with an independent JS forward, the last state through the final norm
 * and lm_head gives the exported logits, and a merged If decoder is refused with a clear message.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadLlmTeacher, type LlmTeacherEncoder } from '../../src/teacher/llm/index.js';
import { dumpGraph, inspectModel, readGraphDump } from '../../src/teacher/llm/inspect.js';
import { scanOnnx } from '../../src/teacher/llm/onnx-scan.js';
import { createRuntime } from '../../src/teacher/llm/runtime.js';
import { createTappedSession, planTaps } from '../../src/teacher/llm/tap.js';
import { writeReplicaModel, type Layout, type ReplicaDtype, type ReplicaSummary } from '../../src/teacher/replica/index.js';
import { tinyDataset } from './fixtures.js';
import { referenceForward, referenceHead } from './replica-reference.js';
import { cosine, maxAbsDiff } from '../helpers/compare.js';

const root = mkdtempSync(join(tmpdir(), 'recdistill-layouts-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const sizes = { seed: 7, layers: 3, hidden: 64, heads: 4, kvHeads: 2, merges: 300, maxPositions: 512 };
const models = new Map<string, ReplicaSummary>();
const write = (layout: Layout, dtype: ReplicaDtype, externalDataChunks = 0): ReplicaSummary => {
  const key = `${layout}-${dtype}-${externalDataChunks}`;
  if (!models.has(key)) models.set(key, writeReplicaModel({ ...sizes, out: join(root, key), layout, dtype, externalDataChunks }));
  return models.get(key)!;
};
const ds = tinyDataset();
const load = (m: ReplicaSummary, extra: { prune?: boolean } = {}) =>
  loadLlmTeacher({ model: m.out, dtype: m.dtype, layers: [0, 1, 2], maxPromptTokens: 512, log: () => {}, ...extra }, ds);
const TINY_CFG = { numLayers: 3, hiddenSize: 64, numHeads: 4, numKvHeads: 2, headDim: 16, modelType: 'qwen2', raw: {} };
const onnxPath = (m: ReplicaSummary) => join(m.out, m.files.find((f) => f.endsWith('.onnx'))!);


/** Tapped states of every token of one pass: [layer][L * H], through the project's runtime feeds. */
async function tokenStates(enc: LlmTeacherEncoder, ids: number[]): Promise<Float32Array[]> {
  expect(enc.session.outputNames).toEqual(enc.tapNames); // pruned: only the taps are outputs
  const runtime = createRuntime(enc.session, enc.tapNames, TINY_CFG, { concurrency: 1, batch: 1 });
  return (await runtime.forward([ids])).states;
}

describe('teacher on exporter layouts (tiny replicas, same weights)', () => {
  const ids = [3, 17, 250, 42, 7, 7, 99, 120, 5];
  let reference: ReturnType<typeof referenceForward>;
  beforeAll(() => {
    reference = referenceForward(write('optimum', 'fp32').spec, ids);
  });

  it.each([
    ['optimum', 'fp32'],
    ['optimum-fused', 'fp32'],
    ['genai', 'fp32'],
    ['optimum', 'q4'],
    ['optimum', 'fp16'],
    ['optimum-fused', 'q4'],
    ['genai', 'q4'],
  ] as [Layout, ReplicaDtype][])('%s %s: the resolver picks the exporter\'s own tensor for every block', (layout, dtype) => {
    const m = write(layout, dtype);
    const plan = planTaps(scanOnnx(onnxPath(m)), 3, [0, 1, 2]);
    m.blockOutputs.forEach((truth, i) => {
      if (truth) expect(plan.names[i]).toBe(truth);
      else expect(plan.add.map((a) => a.output)).toContain(plan.names[i]); // not materialised: a sum is added
    });
    expect(plan.family).toBe(layout);
    // Where the exporter leaves the last sum out, it is the only block that needs an added node.
    expect(plan.add.length).toBe(m.blockOutputs.filter((b) => !b).length);
  });

  it('fp32 states of every token agree across optimum, optimum-fused and genai, and with a JS forward', async () => {
    const states: Float32Array[][] = [];
    for (const layout of ['optimum', 'optimum-fused', 'genai'] as Layout[]) {
      const enc = await load(write(layout, 'fp32'));
      states.push(await tokenStates(enc, ids));
      await enc.dispose();
    }
    for (const s of states) {
      for (let l = 0; l < 3; l++) expect(maxAbsDiff(s[l]!, reference.blockStates[l]!)).toBeLessThan(1e-5); // measured ~5e-8
    }
    // The states are not trivially small: the tolerance above is a few thousandths of their scale.
    expect(Math.max(...Array.from(reference.blockStates[2]!, Math.abs))).toBeGreaterThan(0.05);
  });

  it('per-prefix states from encodeHistory agree across layouts; pruning changes nothing', async () => {
    const u = ds.users[0]!.items;
    const got: Float32Array[] = [];
    for (const [layout, prune] of [['optimum', true], ['optimum', false], ['optimum-fused', true], ['genai', true]] as [Layout, boolean][]) {
      const enc = await load(write(layout, 'fp32'), { prune });
      const r = await enc.encodeHistory(u);
      expect(r.count).toBe(u.length);
      got.push(r.states);
      await enc.dispose();
    }
    expect(Array.from(got[1]!)).toEqual(Array.from(got[0]!)); // pruned == whole graph, bit for bit
    expect(maxAbsDiff(got[2]!, got[0]!)).toBeLessThan(1e-4);
    expect(maxAbsDiff(got[3]!, got[0]!)).toBeLessThan(1e-4);
  });

  it('final norm + lm_head on the tapped last state equal the exported logits (every layout)', async () => {
    for (const layout of ['optimum', 'optimum-fused', 'genai'] as Layout[]) {
      const m = write(layout, 'fp32');
      const scan = scanOnnx(onnxPath(m));
      const plan = planTaps(scan, 3, [2]);
      const { session, cleanup } = await createTappedSession(onnxPath(m), scan, plan, {}, { prune: false });
      const f = createRuntime(session, [plan.names[0]!, 'logits'], TINY_CFG, { concurrency: 1, batch: 1 }).feeds([ids]);
      const out = await session.run(f, [plan.names[0]!, 'logits']);
      const state = out[plan.names[0]!]!.data as Float32Array;
      const logits = out.logits!.data as Float32Array;
      const fromState = referenceHead(m.spec, state, ids.length);
      expect(maxAbsDiff(fromState, logits)).toBeLessThan(1e-4);
      expect(Math.max(...Array.from(logits, Math.abs))).toBeGreaterThan(1e-3);
      await session.release();
      cleanup();
    }
  });

  it('q4 and fp16 exports: states close to fp32 (quantisation error only), decoded from float16 where the stream is fp16', async () => {
    const fp32 = await load(write('optimum', 'fp32'));
    const base = await fp32.encodeHistory(ds.users[1]!.items);
    await fp32.dispose();
    const cos: Record<string, number> = {};
    for (const [layout, dtype] of [['optimum', 'fp16'], ['optimum', 'q4'], ['optimum-fused', 'q4'], ['genai', 'q4']] as [Layout, ReplicaDtype][]) {
      const enc = await load(write(layout, dtype));
      const r = await enc.encodeHistory(ds.users[1]!.items);
      cos[`${layout}-${dtype}`] = cosine(r.states, base.states);
      await enc.dispose();
    }
    // Measured: fp16 0.99997, q4 0.9977 (all three layouts) on these random weights; an fp16 tensor read as bits or
    // a wrong tensor would be far off.
    expect(cos['optimum-fp16']).toBeGreaterThan(0.9999);
    for (const k of ['optimum-q4', 'optimum-fused-q4', 'genai-q4']) expect(cos[k]).toBeGreaterThan(0.99);
  });

  it('external data in two chunks gives the same states as the single file', async () => {
    const a = await load(write('optimum', 'fp32'));
    const b = await load(write('optimum', 'fp32', 2));
    expect(b.weightsHash).not.toBe(a.weightsHash);
    const u = ds.users[1]!.items;
    expect(Array.from((await b.encodeHistory(u)).states)).toEqual(Array.from((await a.encodeHistory(u)).states));
    await a.dispose();
    await b.dispose();
  });

  it('a merged If decoder is read through its no-past branch: the same states as the plain export', async () => {
    const m = write('merged', 'fp32');
    expect(scanOnnx(onnxPath(m)).nodes.map((n) => n.name)).toEqual(['optimum::if']); // every block inside the If
    const merged = await load(m);
    expect(merged.tapPlan.family).toBe('merged');
    expect(merged.tapNames).toEqual(write('optimum', 'fp32').blockOutputs);
    const plain = await load(write('optimum', 'fp32'));
    const u = ds.users[1]!.items;
    expect(Array.from((await merged.encodeHistory(u)).states)).toEqual(Array.from((await plain.encodeHistory(u)).states));
    await merged.dispose();
    await plain.dispose();
    const r = await inspectModel({ model: m.out, dtype: 'fp32' });
    expect(r.family).toBe('merged');
    expect(r.layers).toEqual(write('optimum', 'fp32').blockOutputs);
  });

  it('a merged graph whose no-past branch cannot be read is refused, naming the file to use instead', () => {
    const scan = scanOnnx(onnxPath(write('merged', 'fp32'))); // not spliced: the blocks stay inside the If
    expect(() => planTaps(scan, 3, [0])).toThrow(/merged decoder .*If node "optimum::if".*no-past .*Use the export without the merged branches/);
  });

  it('teacher:inspect reports the layout; a --dump reads back to the same resolution', async () => {
    const m = write('genai', 'q4');
    const dump = join(root, 'genai-q4.json');
    const r = await inspectModel({ model: m.out, dtype: 'q4', dump });
    expect(r).toMatchObject({ family: 'genai', blocks: 3, hiddenSize: 64, heads: 4, kvHeads: 2, producer: 'onnxruntime-genai' });
    expect(r.inputs.map((i) => i.name)).not.toContain('position_ids');
    expect(r.weights.format).toMatch(/MatMulNBits/);
    expect(r.layers).toEqual(planTaps(scanOnnx(onnxPath(m)), 3, [0, 1, 2]).names);
    expect(r.layerDetails.map((l) => l.added)).toEqual([false, false, true]);
    const back = readGraphDump(dump);
    expect(planTaps(back, 3, [0, 1, 2]).names).toEqual(r.layers);
    dumpGraph(back, join(root, 'again.json'));
    expect(readGraphDump(join(root, 'again.json'))).toEqual(back);
  });
});

describe('teacher:cache on each layout, then teacher:verify --against', () => {
  it('the caches of optimum, optimum-fused and genai agree; q4 is close but measurably different', async () => {
    const { runCmd, TINY_DATA } = await import('../bench/fixtures.js');
    const cacheOf = async (m: ReplicaSummary) =>
      String(
        (await runCmd(() => import('../../src/cli/commands/teacher-cache.js'), {
          ...TINY_DATA, model: m.out, dtype: m.dtype, layers: '-2,-1', out: join(root, `cache-${m.layout}-${m.dtype}`), head: 'zeroshot', topK: 5, overheadSample: 0, offline: true, maxPromptTokens: 512,
        })).cache,
      );
    const a = await cacheOf(write('optimum', 'fp32'));
    const verify = (b: string) => runCmd(() => import('../../src/cli/commands/teacher-verify.js'), { cache: a, against: b });
    for (const layout of ['optimum-fused', 'genai'] as Layout[]) {
      const r = (await verify(await cacheOf(write(layout, 'fp32')))) as { against: { rows: number; layers: { maxAbsDiff: number; maxAbs: number; minCosine: number }[] } };
      expect(r.against.rows).toBeGreaterThan(100);
      for (const l of r.against.layers) {
        expect(l.maxAbsDiff).toBeLessThan(1e-5 * Math.max(1, l.maxAbs));
        expect(l.minCosine).toBeGreaterThan(0.999999);
      }
    }
    const q = (await verify(await cacheOf(write('genai', 'q4')))) as { against: { layers: { maxAbsDiff: number; meanCosine: number }[] } };
    for (const l of q.against.layers) {
      expect(l.maxAbsDiff).toBeGreaterThan(1e-4); // int4 weights: not the same numbers
      expect(l.meanCosine).toBeGreaterThan(0.99);
    }
  });
});

describe('teacher:inspect CLI', () => {
  it('--json carries family, blocks, hiddenSize and the tensor name of each layer', async () => {
    const { runCmd } = await import('../bench/fixtures.js');
    const m = write('optimum-fused', 'q4');
    const r = await runCmd(() => import('../../src/cli/commands/teacher-inspect.js'), { model: m.out, dtype: 'q4' });
    expect(r).toMatchObject({ family: 'optimum-fused', blocks: 3, hiddenSize: 64, kvHeads: 2 });
    expect(r.layers).toEqual(['/model/layers.0/Add_1_output_0', '/model/layers.1/Add_1_output_0', expect.stringMatching(/recdistill_residual_sum$/)]);
    await expect(runCmd(() => import('../../src/cli/commands/teacher-inspect.js'), { model: join(root, 'nope'), dtype: 'fp32' })).rejects.toThrow(/does not exist/);
  });
});

describe('an Optimum export with an extra scope-level Add (a name-based guess would take it)', () => {
  it('the resolver still takes the residual sum of every block', async () => {
    const { buildOptimumGraph } = await import('../../src/teacher/replica/optimum.js');
    const { writeOnnxModel, eagerTensor, DataType } = await import('../../src/util/onnx-file.js');
    const { makeNode, valueInfo } = await import('../../src/util/onnx-graph.js');
    const plain = write('optimum', 'fp32');
    const { desc } = buildOptimumGraph(plain.spec, { dtype: 'fp32' });
    // `/model/layers.2/Add_2` = block output + a constant, exposed as an extra output so nothing prunes it:
    // the last Add of the block by name, but not a residual sum (its other operand is not computed from the stream).
    const extra = makeNode('Add', '/model/layers.2/Add_2', ['/model/layers.2/Add_1_output_0', 'extra.bias'], ['/model/layers.2/Add_2_output_0']);
    const path = join(root, 'extra-add', 'model.onnx');
    writeOnnxModel(path, {
      ...desc,
      nodes: [...desc.nodes, extra],
      outputs: [...desc.outputs, valueInfo('/model/layers.2/Add_2_output_0', DataType.FLOAT, ['batch_size', 'sequence_length', 64])],
      initializers: [...desc.initializers, eagerTensor('extra.bias', [64], DataType.FLOAT, new Float32Array(64).fill(0.5))],
    });
    const scan = scanOnnx(path);
    expect(scan.nodes.filter((n) => n.name.startsWith('/model/layers.2/') && n.op === 'Add').map((n) => n.name).at(-1)).toBe('/model/layers.2/Add_2');
    expect(planTaps(scan, 3, [0, 1, 2]).names).toEqual(plain.blockOutputs);
  });
});

describe('a transformers.js v2 folder with only onnx/decoder_model_merged.onnx', () => {
  it('loads it (auto dtype too) and reads the no-past branch', async () => {
    const { renameSync } = await import('node:fs');
    const m = writeReplicaModel({ ...sizes, out: join(root, 'v2-merged'), layout: 'merged', dtype: 'fp32', externalDataChunks: 0 });
    renameSync(join(m.out, 'onnx', 'model.onnx'), join(m.out, 'onnx', 'decoder_model_merged.onnx'));
    const enc = await loadLlmTeacher({ model: m.out, dtype: 'auto', layers: [-1], maxPromptTokens: 512, log: () => {} }, ds);
    expect(enc.dtype).toBe('fp32');
    expect(enc.tapPlan.family).toBe('merged');
    expect((await enc.encodeHistory(ds.users[2]!.items)).count).toBe(2);
    await enc.dispose();
  });
});
