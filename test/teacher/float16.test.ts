/**
 * Node versions with `globalThis.Float16Array` make onnxruntime-common hand back float16 outputs as
 * decoded Float16Array values instead of raw bits (tensor-impl.js: `new globalThis.Float16Array(buffer…)`).
 * Node 20 has no Float16Array, so a stand-in with the same constructor contract is installed before
 * onnxruntime creates its first tensor (the check runs once per process; vitest runs each file in its
 * own fork). The fp16 model's states must then equal those read from raw bits.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { halfToFloat, toFloat32 } from '../../src/teacher/llm/runtime.js';

/** Decoded values by index, like a native Float16Array view (here a copy into float32 storage). */
class Float16ArrayStandIn extends Float32Array {
  constructor(a: ArrayBufferLike | number, byteOffset?: number, length?: number) {
    if (typeof a === 'number') super(a);
    else {
      const bits = new Uint16Array(a, byteOffset ?? 0, length);
      super(bits.length);
      for (let i = 0; i < bits.length; i++) this[i] = halfToFloat(bits[i]!);
    }
  }
}
(globalThis as Record<string, unknown>).Float16Array = Float16ArrayStandIn;

const root = mkdtempSync(join(tmpdir(), 'recdistill-f16-'));
afterAll(() => {
  delete (globalThis as Record<string, unknown>).Float16Array;
  rmSync(root, { recursive: true, force: true });
});

describe('float16 states', () => {
  it('decode by value from Float16Array and by bit pattern from Uint16Array to the same floats', () => {
    const values = [1.5, -2, 65504, 2 ** -24, 0];
    const bits = Uint16Array.from([0x3e00, 0xc000, 0x7bff, 0x0001, 0x0000]);
    expect(Array.from(toFloat32({ type: 'float16', data: bits }))).toEqual(values);
    expect(Array.from(toFloat32({ type: 'float16', data: new Float16ArrayStandIn(bits.buffer, 0, 5) }))).toEqual(values);
    expect(Array.from(toFloat32({ type: 'bfloat16', data: Uint16Array.from([0x3fc0, 0xc000]) }))).toEqual([1.5, -2]);
    expect(() => toFloat32({ type: 'int64', data: new BigInt64Array(1) }, 'x')).toThrow(/x has type int64/);
  });

  it('an fp16 export read through onnxruntime with Float16Array present gives the fp16-rounded fp32 states', async () => {
    const { writeReplicaModel } = await import('../../src/teacher/replica/index.js');
    const { loadLlmTeacher } = await import('../../src/teacher/llm/index.js');
    const { scanOnnx } = await import('../../src/teacher/llm/onnx-scan.js');
    const { planTaps, createTappedSession } = await import('../../src/teacher/llm/tap.js');
    const { createRuntime } = await import('../../src/teacher/llm/runtime.js');
    const { tinyDataset } = await import('./fixtures.js');
    const sizes = { seed: 3, layers: 2, hidden: 64, heads: 4, kvHeads: 2, merges: 300, maxPositions: 512, externalDataChunks: 0, layout: 'optimum' as const };
    const fp16 = writeReplicaModel({ ...sizes, out: join(root, 'fp16'), dtype: 'fp16' });
    const fp32 = writeReplicaModel({ ...sizes, out: join(root, 'fp32'), dtype: 'fp32' });

    // The raw tensor onnxruntime hands back is the stand-in, so the check below exercises the by-value path.
    const path = join(fp16.out, 'onnx', 'model_fp16.onnx');
    const scan = scanOnnx(path);
    const plan = planTaps(scan, 2, [1]);
    const t = await createTappedSession(path, scan, plan, {}, { prune: true });
    const rt = createRuntime(t.session, plan.names, { numLayers: 2, hiddenSize: 64, numHeads: 4, numKvHeads: 2, headDim: 16, modelType: 'qwen2', raw: {} }, { concurrency: 1, batch: 1 });
    const raw = await t.session.run(rt.feeds([[5, 9, 200, 31]]), plan.names);
    expect(raw[plan.names[0]!]!.type).toBe('float16');
    expect(raw[plan.names[0]!]!.data).toBeInstanceOf(Float16ArrayStandIn);
    await t.session.release();
    t.cleanup();

    const ds = tinyDataset();
    const opts = { layers: [0, 1], maxPromptTokens: 512, log: () => {} };
    const a = await loadLlmTeacher({ ...opts, model: fp16.out, dtype: 'fp16' }, ds);
    const b = await loadLlmTeacher({ ...opts, model: fp32.out, dtype: 'fp32' }, ds);
    const [x, y] = [await a.encodeHistory(ds.users[1]!.items), await b.encodeHistory(ds.users[1]!.items)];
    let dot = 0, nx = 0, ny = 0, maxAbs = 0;
    for (let i = 0; i < x.states.length; i++) {
      dot += x.states[i]! * y.states[i]!;
      nx += x.states[i]! ** 2;
      ny += y.states[i]! ** 2;
      maxAbs = Math.max(maxAbs, Math.abs(x.states[i]! - y.states[i]!));
    }
    // fp16 rounding only (measured cosine 0.99997 with raw bits); floats read as bit patterns would be
    // values in the thousands.
    expect(dot / Math.sqrt(nx * ny)).toBeGreaterThan(0.9999);
    expect(maxAbs).toBeLessThan(0.01);
    await a.dispose();
    await b.dispose();
  });
});
