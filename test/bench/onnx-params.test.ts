import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, describe, expect, it } from 'vitest';
import { countOnnxParams } from '../../src/bench/onnx-params.js';
import { headScores } from '../../src/bench/servers.js';

const { onnx } = onnxProto;
const dir = mkdtempSync(join(tmpdir(), 'rd-onnx-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function model(inits: Array<{ dims: number[]; dataType: number; bytes: number }>): string {
  const initializer = inits.map((t, i) => onnx.TensorProto.create({ name: `w${i}`, dims: t.dims, dataType: t.dataType, rawData: new Uint8Array(t.bytes) }));
  const graph = onnx.GraphProto.create({ name: 'g', initializer, node: [onnx.NodeProto.create({ opType: 'Identity', input: ['w0'], output: ['y'] })] });
  const bytes = onnx.ModelProto.encode(onnx.ModelProto.create({ irVersion: 8, graph, opsetImport: [{ domain: '', version: 17 }] })).finish();
  const path = join(dir, `m${inits.length}.onnx`);
  writeFileSync(path, bytes);
  return path;
}

describe('countOnnxParams', () => {
  const F = onnx.TensorProto.DataType.FLOAT;
  const U8 = onnx.TensorProto.DataType.UINT8;
  it('sums the products of initializer dims (raw data skipped)', () => {
    const p = model([
      { dims: [3, 4], dataType: F, bytes: 48 },
      { dims: [1000], dataType: F, bytes: 4000 },
      { dims: [], dataType: F, bytes: 4 }, // a scalar counts 1
    ]);
    expect(countOnnxParams(p)).toEqual({ params: 12 + 1000 + 1, initializers: 3 });
  });
  it('counts uint8 tensors twice for 4-bit packed weights only when asked', () => {
    const p = model([
      { dims: [8, 2, 16], dataType: U8, bytes: 256 },
      { dims: [8, 2], dataType: F, bytes: 64 },
    ]);
    expect(countOnnxParams(p).params).toBe(256 + 16);
    expect(countOnnxParams(p, { packed4bit: true }).params).toBe(512 + 16);
  });
  it('names the file on garbage and on a missing file', () => {
    const bad = join(dir, 'bad.onnx');
    writeFileSync(bad, Buffer.from([0x3f, 0xff, 0xff]));
    expect(() => countOnnxParams(bad)).toThrow(/bad\.onnx/);
    expect(() => countOnnxParams(join(dir, 'nope.onnx'))).toThrow(/nope\.onnx not found/);
  });
});

describe('headScores', () => {
  it('is W h + b row by row (hand-computed)', () => {
    // W [3, 2] = [[1, 2], [0, -1], [3, 0.5]], b = [0.5, 1, -2], h = [2, -1]
    const s = headScores(Float32Array.from([1, 2, 0, -1, 3, 0.5]), Float32Array.from([0.5, 1, -2]), Float32Array.from([2, -1]));
    expect(Array.from(s)).toEqual([0.5, 2, 3.5]);
  });

  it('standardises the state first when the head file has input statistics, as the cache did', () => {
    // x = (h - mean) / std = ([2, -1] - [1, 1]) / [0.5, 2] = [2, -1]; then W x + b as above.
    const h = Float32Array.from([2, -1]);
    const s = headScores(Float32Array.from([1, 2, 0, -1, 3, 0.5]), Float32Array.from([0.5, 1, -2]), h, { mean: Float32Array.from([1, 1]), std: Float32Array.from([0.5, 2]) });
    expect(Array.from(s)).toEqual([0.5, 2, 3.5]);
    expect(Array.from(h)).toEqual([2, -1]); // the caller's state is not modified
  });
});
