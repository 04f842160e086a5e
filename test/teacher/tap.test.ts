import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { scanOnnx } from '../../src/teacher/llm/onnx-scan.js';
import { absoluteLayers, createTappedSession, parseLayers, resolveTapNames, tapBytes } from '../../src/teacher/llm/tap.js';
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
  it('finds node outputs, graph io and their types without decoding the model', () => {
    const s = scanOnnx(modelPath);
    expect(s.nodeOutputs).toContain('/model/layers.0/Add_1_output_0');
    expect(s.nodeOutputs).toContain('/model/layers.1/Add_1_output_0');
    expect(s.inputs.map((i) => [i.name, i.elemType])).toEqual([['input_ids', 7], ['attention_mask', 7], ['position_ids', 7]]);
    expect(s.outputs).toEqual([{ name: 'logits', elemType: 1 }]);
    expect(s.externalData).toEqual([]);
  });

  it('falls back to the last top-level residual Add of each block for other exporters', () => {
    const names = ['/backbone/blocks.0/Add_output_0', '/backbone/blocks.0/attn/Add_output_0', '/backbone/blocks.0/Add_1_output_0', '/backbone/blocks.0/Add_2_output_0',
      '/backbone/blocks.1/Add_output_0', '/backbone/blocks.1/Add_1_output_0', '/backbone/blocks.1/Add_2_output_0', 'logits'];
    const scan = { nodeOutputs: names, nodeOps: names.map(() => 'Add'), inputs: [], outputs: [], externalData: [] };
    expect(resolveTapNames(scan, 2, [1, 0])).toEqual({ names: ['/backbone/blocks.1/Add_2_output_0', '/backbone/blocks.0/Add_2_output_0'], pattern: '/backbone/blocks.{i}/Add_2_output_0' });
    // A block without that add: no guess, an error naming --tap-pattern.
    const partial = { ...scan, nodeOutputs: names.filter((n) => n !== '/backbone/blocks.1/Add_2_output_0') };
    partial.nodeOps = partial.nodeOutputs.map(() => 'Add');
    expect(() => resolveTapNames(partial, 2, [0])).toThrow(/--tap-pattern/);
  });

  it('appended output bytes merge into the graph (protobuf field merge)', () => {
    const bytes = Buffer.concat([readFileSync(modelPath), tapBytes(['/model/layers.0/Add_1_output_0'], 1)]);
    const p = join(m.dir, 'onnx', 'tapped-copy.onnx');
    writeFileSync(p, bytes);
    expect(scanOnnx(p).outputs.map((o) => o.name)).toEqual(['logits', '/model/layers.0/Add_1_output_0']);
  });

  it('layer indices: negative from the end, range errors name the valid range', () => {
    expect(parseLayers('-4, -1')).toEqual([-4, -1]);
    expect(absoluteLayers([-1, 0, -2], 2)).toEqual([1, 0, 0]);
    expect(() => absoluteLayers([2], 2)).toThrow(/valid: -2\.\.1/);
    expect(() => parseLayers('1.5')).toThrow(/comma-separated integers/);
    expect(() => resolveTapNames(scanOnnx(modelPath), 2, [0], '/nope.{i}/x')).toThrow(/tap-pattern/);
  });
});

describe('tapped session', () => {
  it('final-layer state through the final norm and lm_head equals the logits output', async () => {
    const scan = scanOnnx(modelPath);
    const { names } = resolveTapNames(scan, 2, [1]);
    const { session, cleanup } = await createTappedSession(modelPath, scan, names, 1, {});
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
