import { flagField } from '../util/fields.js';
import * as tf from '@tensorflow/tfjs-core';

/**
 * BatchMatMul for the wasm backend as B 2-D XNNPACK matmuls on views into the wasm heap.
 *
 * tfjs-backend-wasm 4.22 sends a matmul to XNNPACK only when it is 2-D in effect (batch 1) and has no transpose
 * flag (batch_mat_mul_impl.cc); every batched product (attention's [B, L, D] x [B, D, L] and [B, L, L] x
 * [B, L, D], forward and backward) takes `slow_batch_matmul`, a scalar triple loop at ~1-2 GFLOP/s. Here each
 * batch item of a, b and the output is registered as a temporary tensor id pointing inside the batched buffer
 * (register_tensor(id, size, offset)), the wasm BatchMatMul runs with shapes [1, M, K] x [1, K, N] (its XNNPACK
 * path), and the ids are released (which also frees the XNNPACK operator cached on them). A transpose flag
 * becomes one explicit Transpose of that operand first. Measured with `tools/attention-bench.ts`:
 * 8-16 GFLOP/s per product instead of 0.9-1.4, a default training step 2-4x faster; results differ from the
 * stock kernel by float rounding only (summation order), checked against the cpu backend in
 * test/backend/batch-matmul.test.ts. Float32 with equal or broadcast (1) batch sizes; anything else goes
 * to the stock kernel.
 */
interface WasmBackendLike {
  dataIdMap: { get(d: object): { id: number; memoryOffset: number } };
  dataIdNextNumber: number;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  disposeData(d: object): void;
  wasm: {
    cwrap(name: string, ret: null, args: string[]): (...a: unknown[]) => void;
    tfjs: { registerTensor(id: number, size: number, offset: number): void; disposeData(id: number): void };
  };
}

const shapeBytes = (s: number[]) => new Uint8Array(new Int32Array(s).buffer);
let wasmBmm: ((...a: unknown[]) => void) | undefined;
/** Calls of viewBatchMatMul (for checks that it is the kernel in use). */
export let viewCalls = 0;
/** The stock wasm kernel, for the cases this one does not cover (captured once, kept). */
let stock: tf.KernelConfig | undefined;
let viewRegistered = false;

const sameShape = (x: number[], y: number[]) => x.length === y.length && x.every((v, i) => v === y[i]);

/** Float32, a real batch (> 1 item), batch dims equal or one side a single item, no empty dimension. */
function coversCase({ a, b }: { a: tf.TensorInfo; b: tf.TensorInfo }): boolean {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 3 || b.shape.length < 3) return false;
  if (a.shape.includes(0) || b.shape.includes(0)) return false;
  const ba = a.shape.slice(0, -2);
  const bb = b.shape.slice(0, -2);
  const na = ba.reduce((x, y) => x * y, 1);
  const nb = bb.reduce((x, y) => x * y, 1);
  if (Math.max(na, nb) < 2) return false; // batch 1: the stock kernel already takes XNNPACK
  return sameShape(ba, bb) || (na === 1 && ba.length <= bb.length) || (nb === 1 && bb.length <= ba.length);
}

/**
 * Register viewBatchMatMul as the wasm backend's BatchMatMul (the stock kernel stays the fallback). Idempotent.
 * Called by registerWasmTrainingKernels; RECDISTILL_STOCK_BATCHMATMUL=1 keeps the stock kernel (benchmarks).
 */
export function registerViewBatchMatMul(): void {
  if (viewRegistered || process.env.RECDISTILL_STOCK_BATCHMATMUL === '1') return;
  stock ??= tf.getKernel(tf.BatchMatMul, 'wasm');
  if (!stock) return;
  tf.unregisterKernel(tf.BatchMatMul, 'wasm');
  // The stock kernel's setup (its cwrap of the wasm function) must still run when the backend initialises: our
  // fallback calls it.
  tf.registerKernel({ kernelName: tf.BatchMatMul, backendName: 'wasm', kernelFunc: viewBatchMatMul, setupFunc: stock.setupFunc });
  viewRegistered = true;
}

/** The stock kernel back in place (tests and A/B benchmarks); viewBatchMatMul still falls back to it. */
export function unregisterViewBatchMatMul(): void {
  if (!viewRegistered || !stock) return;
  tf.unregisterKernel(tf.BatchMatMul, 'wasm');
  tf.registerKernel(stock);
  viewRegistered = false;
}

/** Transpose the last two axes of a rank-3 tensor with the backend's own kernel (TensorInfo in, TensorInfo out). */
function transposeLast2(x: tf.TensorInfo, backend: WasmBackendLike): tf.TensorInfo {
  const k = tf.getKernel(tf.Transpose, 'wasm')!;
  return k.kernelFunc({ inputs: { x }, backend: backend as never, attrs: { perm: [0, 2, 1] } }) as tf.TensorInfo;
}

/** BatchMatMul as B 2-D XNNPACK matmuls on heap views (see the file comment). Float32, batch dims broadcast. */
export function viewBatchMatMul({ inputs, backend: be, attrs }: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const backend = be as WasmBackendLike;
  if (!coversCase(inputs as { a: tf.TensorInfo; b: tf.TensorInfo })) return (stock ??= tf.getKernel(tf.BatchMatMul, 'wasm'))!.kernelFunc({ inputs, backend: be as never, attrs }) as tf.TensorInfo;
  wasmBmm ??= backend.wasm.cwrap('BatchMatMul', null, ['number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number']);
  const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  const [transposeA, transposeB] = [flagField(attrs, 'transposeA', 'BatchMatMul attrs'), flagField(attrs, 'transposeB', 'BatchMatMul attrs')];
  const batchA = a.shape.slice(0, -2).reduce((x, y) => x * y, 1);
  const batchB = b.shape.slice(0, -2).reduce((x, y) => x * y, 1);
  const as3: tf.TensorInfo = { ...a, shape: [batchA, a.shape.at(-2)!, a.shape.at(-1)!] };
  const bs3: tf.TensorInfo = { ...b, shape: [batchB, b.shape.at(-2)!, b.shape.at(-1)!] };
  const at = transposeA ? transposeLast2(as3, backend) : as3;
  const bt = transposeB ? transposeLast2(bs3, backend) : bs3;
  const [, M, K] = at.shape as [number, number, number];
  const N = bt.shape[2]!;
  const batch = Math.max(batchA, batchB);
  const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2)).concat([M, N]);
  viewCalls++;
  const out = backend.makeOutput([batch, M, N], 'float32');
  const ao = backend.dataIdMap.get(at.dataId).memoryOffset;
  const bo = backend.dataIdMap.get(bt.dataId).memoryOffset;
  const oo = backend.dataIdMap.get(out.dataId).memoryOffset;
  const sa = shapeBytes([1, M, K]);
  const sb = shapeBytes([1, K, N]);
  for (let i = 0; i < batch; i++) {
    const ia = backend.dataIdNextNumber++;
    const ib = backend.dataIdNextNumber++;
    const io = backend.dataIdNextNumber++;
    backend.wasm.tfjs.registerTensor(ia, M * K, ao + (batchA === 1 ? 0 : i) * M * K * 4);
    backend.wasm.tfjs.registerTensor(ib, K * N, bo + (batchB === 1 ? 0 : i) * K * N * 4);
    backend.wasm.tfjs.registerTensor(io, M * N, oo + i * M * N * 4);
    wasmBmm(ia, sa, 3, ib, sb, 3, 0, 0, io);
    backend.wasm.tfjs.disposeData(ia);
    backend.wasm.tfjs.disposeData(ib);
    backend.wasm.tfjs.disposeData(io);
  }
  if (at !== as3) backend.disposeData(at.dataId);
  if (bt !== bs3) backend.disposeData(bt.dataId);
  return { ...out, shape: outShape };
}

