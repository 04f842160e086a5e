import { numberField } from '../util/fields.js';
import * as tf from '@tensorflow/tfjs-core';
import { registerViewBatchMatMul } from './batch-matmul.js';

/**
 * Kernels the wasm backend lacks but training needs, registered by the project.
 * - UnsortedSegmentSum: the gradient of gather (embedding lookups) scatters dy rows back with it.
 * The implementation reads the inputs from the wasm heap, accumulates in JS and writes the output back
 * into a heap buffer made by the backend: the sizes involved are small ([B*L, D] rows).
 * - Identity (replaced): the stock wasm kernel copies the buffer. The gradient tape clones every tensor a
 *   kernel saves for its backward pass, so a training step spent ~1.5 s of ~10 s copying. Tensors are
 *   immutable (Variable.assign swaps buffers), so sharing the buffer with a reference count is safe; this
 *   is what the cpu backend and the wasm Reshape kernel already do.
 */
interface WasmLike extends tf.KernelBackend {
  incRef(dataId: object): void;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}

/** Pure segment sum: out[segmentIds[i]] += x[i] over rows of length `inner`. Exported for tests. */
export function segmentSum(x: ArrayLike<number>, segmentIds: ArrayLike<number>, numSegments: number, inner: number, out: Float32Array | Int32Array): void {
  out.fill(0);
  const rows = segmentIds.length;
  for (let r = 0; r < rows; r++) {
    const s = segmentIds[r]!;
    if (s < 0 || s >= numSegments) continue; // TF semantics: out-of-range ids are dropped
    const src = r * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) out[dst + j] = out[dst + j]! + x[src + j]!;
  }
}

let registered = false;

export function registerWasmTrainingKernels(): void {
  if (registered) return;
  registered = true;
  // Batched products (attention) on XNNPACK instead of the stock scalar loop: batch-matmul.ts.
  registerViewBatchMatMul();
  const stockIdentity = tf.getKernel(tf.Identity, 'wasm');
  if (stockIdentity) {
    tf.unregisterKernel(tf.Identity, 'wasm');
    tf.registerKernel({
      kernelName: tf.Identity,
      backendName: 'wasm',
      kernelFunc: (args) => {
        const x = (args.inputs as { x: tf.TensorInfo }).x;
        if (x.dtype === 'string') return stockIdentity.kernelFunc(args);
        (args.backend as WasmLike).incRef(x.dataId);
        return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
      },
    });
  }
  if (tf.getKernel(tf.UnsortedSegmentSum, 'wasm')) return;
  tf.registerKernel({
    kernelName: tf.UnsortedSegmentSum,
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const b = backend as WasmLike;
      const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
      const numSegments = numberField(attrs, 'numSegments', 'UnsortedSegmentSum attrs');
      // x: [rows, ...inner] where segmentIds: [rows] (gather's gradient always uses 1-D ids after reshape)
      const rows = segmentIds.shape.reduce((a, c) => a * c, 1);
      const total = x.shape.reduce((a, c) => a * c, 1);
      const inner = rows === 0 ? 0 : total / rows;
      const outShape = [numSegments, ...x.shape.slice(segmentIds.shape.length)];
      const out = b.makeOutput(outShape, x.dtype);
      // Read inputs BEFORE taking the output view: makeOutput may grow the heap and detach old views.
      const xv = numeric(b.readSync(x.dataId));
      const ids = numeric(b.readSync(segmentIds.dataId));
      const ov = b.typedArrayFromHeap(out) as Float32Array | Int32Array;
      segmentSum(xv, ids, numSegments, inner, ov);
      return out;
    },
  });
}

/** A numeric tensor's values (a typed array); string tensors never reach the kernels registered here. */
function numeric(v: tf.BackendValues): ArrayLike<number> {
  if (Array.isArray(v)) throw new Error('UnsortedSegmentSum: expected a numeric tensor, got string data.');
  return v;
}
