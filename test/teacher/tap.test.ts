import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { scanOnnx } from '../../src/teacher/llm/onnx-scan.js';
import type { GraphNode, GraphScan } from '../../src/teacher/llm/onnx-scan.js';
import { createTappedSession, planTaps, tapBytes } from '../../src/teacher/llm/tap.js';
import { loadLlmTeacher } from '../../src/teacher/llm/index.js';
import { tinyDataset, tinyModelDir } from './fixtures.js';

const { onnx } = onnxProto;
const m = tinyModelDir({ layers: 2, hidden: 32, heads: 2 });
afterAll(() => m.cleanup());
const modelPath = join(m.dir, 'onnx', 'model.onnx');

function initializers(path: string): Map<string, { dims: number[]; data: Float32Array }> {
  const model = onnx.ModelProto.decode(readFileSync(path));
  const out = new Map<string, { dims: number[]; data: Float32Array }>();
  for (const t of model.graph!.initializer!) {
    const raw = t.rawData!;
    out.set(t.name!, { dims: t.dims!.map(Number), data: new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength)) });
  }
  return out;
}

describe('graph scan', () => {
  it('finds nodes, graph io and their types without decoding the model', () => {
    const s = scanOnnx(modelPath);
    const outs = s.nodes.flatMap((n) => n.outputs);
    expect(outs).toContain('/model/layers.0/Add_1_output_0');
    expect(outs).toContain('/model/layers.1/Add_1_output_0');
    expect(s.nodes.find((n) => n.outputs[0] === '/model/layers.1/Add_1_output_0')).toMatchObject({ op: 'Add', domain: '', name: '/model/layers.1/Add_1' });
    expect(s.inputs.map((i) => [i.name, i.elemType, i.shape])).toEqual([
      ['input_ids', 7, ['batch_size', 'sequence_length']],
      ['attention_mask', 7, ['batch_size', 'total_sequence_length']],
      ['position_ids', 7, ['batch_size', 'sequence_length']],
    ]);
    expect(s.outputs.map((o) => [o.name, o.elemType])).toEqual([['logits', 1]]);
    expect(s.initializers.find((i) => i.name === 'lm_head.weight')).toEqual({ name: 'lm_head.weight', dataType: 1, dims: [32, expect.any(Number)], external: false, offset: expect.any(Number) });
    expect(s.externalData).toEqual([]);
  });

  // Hand-made graphs: x -> norm -> f -> Add(x, f) ... The resolver follows structure, whatever the names.
  const node = (name: string, op: string, inputs: string[], outputs: string[]): GraphNode => ({ name, op, domain: '', inputs, outputs, subgraphNodes: 0 });
  const graph = (nodes: GraphNode[]): GraphScan => ({ nodes, inputs: [{ name: 'input_ids', elemType: 7, shape: [] }], outputs: [{ name: 'logits', elemType: 1, shape: [] }], initializers: [], externalData: [], producer: '', opsets: [] });
  const block = (i: number, x: string, names: [string, string]): GraphNode[] => [
    node(`b${i}/ln1`, 'LayerNormalization', [x, 'g'], [`b${i}/h1`]),
    node(`b${i}/attn`, 'MatMul', [`b${i}/h1`, 'w'], [`b${i}/a`]),
    node(names[0], 'Add', [`b${i}/a`, x], [`${names[0]}_out`]),
    node(`b${i}/ln2`, 'LayerNormalization', [`${names[0]}_out`, 'g'], [`b${i}/h2`]),
    node(`b${i}/mlp`, 'MatMul', [`b${i}/h2`, 'w'], [`b${i}/m`]),
    node(names[1], 'Add', [`${names[0]}_out`, `b${i}/m`], [`${names[1]}_out`]),
  ];
  const head = (x: string) => [node('final_norm', 'LayerNormalization', [x, 'g'], ['normed']), node('lm_head', 'MatMul', ['normed', 'w'], ['logits'])];

  it('follows the residual chain by structure: names that say nothing, an extra constant Add, a subset of layers', () => {
    const nodes = [
      node('emb', 'Gather', ['wte', 'input_ids'], ['e']),
      ...block(0, 'e', ['weird/x', 'weird/y']),
      ...block(1, 'weird/y_out', ['/blocks.1/Add', '/blocks.1/Add_1']),
      // A scope-level Add that a name-based guess ("last Add of the block") would pick: x + constant, not a residual sum.
      node('/blocks.1/Add_2', 'Add', ['/blocks.1/Add_1_out', 'const'], ['/blocks.1/Add_2_out']),
      ...head('/blocks.1/Add_1_out'),
    ];
    expect(planTaps(graph(nodes), 2, [1, 0]).names).toEqual(['/blocks.1/Add_1_out', 'weird/y_out']);
    // The chain ending somewhere else than the final norm, or a wrong block count, is an error naming what was found.
    expect(() => planTaps(graph(nodes), 3, [0])).toThrow(/found 4 residual sums .* a 3-block model has 6/);
  });

  it('an extra residual sum on the stream, or two sums of one tensor, fail with a clear message', () => {
    const chain = [node('emb', 'Gather', ['wte', 'input_ids'], ['e']), ...block(0, 'e', ['a0', 'a1'])];
    const f = node('f', 'MatMul', ['a1_out', 'w'], ['f_out']);
    const twice = [...chain, f, node('dup', 'Add', ['a1_out', 'f_out'], ['dup_out']), node('dup2', 'Add', ['f_out', 'a1_out'], ['dup2_out']), ...head('dup_out')];
    expect(() => planTaps(graph(twice), 1, [0])).toThrow(/feeds 2 residual sums/);
    const noLogits = [...chain, ...head('e')];
    expect(() => planTaps(graph(noLogits), 1, [0])).toThrow(/does not lead to logits/);
  });

  it('--tap-pattern names tensors by hand and must name existing ones', () => {
    const s = scanOnnx(modelPath);
    expect(planTaps(s, 2, [1], '/model/layers.{i}/Add_output_0').names).toEqual(['/model/layers.1/Add_output_0']);
    expect(() => planTaps(s, 2, [0], '/nope.{i}/x')).toThrow(/tap-pattern/);
  });

  it('appended output bytes merge into the graph (protobuf field merge)', () => {
    const bytes = Buffer.concat([readFileSync(modelPath), tapBytes(['/model/layers.0/Add_1_output_0'])]);
    const p = join(m.dir, 'onnx', 'tapped-copy.onnx');
    writeFileSync(p, bytes);
    expect(scanOnnx(p).outputs.map((o) => o.name)).toEqual(['logits', '/model/layers.0/Add_1_output_0']);
  });
});

describe('tapped session', () => {
  it('final-layer state through the final norm and lm_head equals the logits output', async () => {
    const scan = scanOnnx(modelPath);
    const plan = planTaps(scan, 2, [1]);
    const names = plan.names;
    expect(names).toEqual(['/model/layers.1/Add_1_output_0']);
    const { session, cleanup } = await createTappedSession(modelPath, scan, plan, {});
    const ids = [5, 17, 42, 300, 7, 7, 99];
    const L = ids.length;
    const t = (a: number[]) => new ort.Tensor('int64', BigInt64Array.from(a.map(BigInt)), [1, a.length]);
    const out = await session.run({ input_ids: t(ids), attention_mask: t(ids.map(() => 1)), position_ids: t(ids.map((_, i) => i)) }, [names[0]!, 'logits']);
    await session.release();
    cleanup();
    const h = out[names[0]!]!.data as Float32Array; // [1, L, D]
    const logits = out.logits!.data as Float32Array; // [1, L, V]
    const w = initializers(modelPath);
    const g = w.get('model.norm.weight')!.data;
    const b = w.get('model.norm.bias')!.data;
    const head = w.get('lm_head.weight')!; // [D, V]
    const [D, V] = head.dims as [number, number];
    let maxErr = 0;
    for (let i = 0; i < L; i++) {
      const x = h.subarray(i * D, (i + 1) * D);
      const mean = x.reduce((s, v) => s + v, 0) / D;
      const vari = x.reduce((s, v) => s + (v - mean) ** 2, 0) / D;
      const n = Array.from(x, (v, d) => ((v - mean) / Math.sqrt(vari + 1e-5)) * g[d]! + b[d]!);
      for (let v = 0; v < V; v++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += n[d]! * head.data[d * V + v]!;
        maxErr = Math.max(maxErr, Math.abs(s - logits[i * V + v]!));
      }
    }
    expect(maxErr).toBeLessThan(1e-4);
    expect(Math.max(...Array.from(logits, Math.abs))).toBeGreaterThan(1e-3); // not trivially zero
  });

  it('a model with external data (model.onnx_data) gives the same states', async () => {
    // Move the two largest weights into onnx/model.onnx_data, as exporters do for big models.
    const model = onnx.ModelProto.decode(readFileSync(modelPath));
    const ext = join(m.dir, '..', 'ext');
    mkdirSync(join(ext, 'onnx'), { recursive: true });
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(m.dir, f), join(ext, f));
    const chunks: Buffer[] = [];
    let offset = 0;
    for (const t of model.graph!.initializer!) {
      if (t.name !== 'lm_head.weight' && t.name !== 'model.embed_tokens.weight') continue;
      const raw = Buffer.from(t.rawData!);
      t.externalData = [
        { key: 'location', value: 'model.onnx_data' },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(raw.length) },
      ];
      t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      t.rawData = new Uint8Array(0);
      chunks.push(raw);
      offset += raw.length;
    }
    writeFileSync(join(ext, 'onnx', 'model.onnx'), onnx.ModelProto.encode(model).finish());
    writeFileSync(join(ext, 'onnx', 'model.onnx_data'), Buffer.concat(chunks));
    expect(scanOnnx(join(ext, 'onnx', 'model.onnx')).externalData).toEqual(['model.onnx_data']);

    const ds = tinyDataset();
    const opts = { dtype: 'fp32', layers: [-1, 0], maxPromptTokens: 512, log: () => {} };
    const inline = await loadLlmTeacher({ ...opts, model: m.dir }, ds);
    const external = await loadLlmTeacher({ ...opts, model: ext }, ds);
    const u = ds.users[1]!.items;
    const [x, y] = [await inline.encodeHistory(u), await external.encodeHistory(u)];
    expect(y.count).toBe(5);
    expect(Array.from(y.states)).toEqual(Array.from(x.states));
    expect(external.weightsHash).not.toBe(inline.weightsHash);
    await inline.dispose();
    await external.dispose();
  });
});
