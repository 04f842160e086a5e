/**
 * Number formats of the converted variants, bit for bit, and lazy initializers that produce them from the
 * spec's weights block by block (a 0.5B model is never held in memory).
 *
 * - q4: onnxruntime/python/tools/quantization/matmul_nbits_quantizer.py (DefaultWeightOnlyQuantizer,
 *   QOperator, is_symmetric=True as transformers.js scripts/quantize.py passes, block_size 32) calls the C++
 *   `quantize_matmul_4bits` -> MLAS BlockwiseQuantizer::quantizeAndTranspose (onnxruntime/core/mlas/lib/
 *   q4_dq.cpp). For B [K, N] (= torch W^T), each column n is cut into K/32 blocks along K; symmetric scale
 *   = range2scale: m = the value of largest |v| (signed), scale = -m / 8; q = clamp(roundf(v / scale + 8),
 *   0, 15) (zero point 8 implied, no zero-point input); two q per byte along K, low nibble first.
 *   B_Q4 is uint8 [N, K/32, 16], scales float32 [N * K/32] (n-major).
 * - fp16: transformers.js scripts/float16.py convert_np_to_float16 (min_positive_val 1e-7, max_finite_val
 *   1e4: magnitudes are clipped into [1e-7, 1e4] before np.float16's round-to-nearest-even).
 */
import { toHalf } from '../../util/f16.js';
import { DataType, type LazyTensor } from '../../util/onnx-file.js';
import { type DecoderSpec, type WeightSpec, weightValues } from './spec.js';

export const Q4_BLOCK = 32;

/** float32 -> IEEE half bits (round to nearest even, as numpy's astype(float16)) and back: one implementation, src/util/f16.ts. */
export { fromHalf as f16BitsToF32 } from '../../util/f16.js';

/** float16.py's clip, then half bits. */
export function toF16Converted(v: number, minPositive = 1e-7, maxFinite = 1e4): number {
  let x = v;
  if (x > 0 && x < minPositive) x = minPositive;
  else if (x < 0 && x > -minPositive) x = -minPositive;
  else if (x > maxFinite && x < Infinity) x = maxFinite;
  else if (x < -maxFinite && x > -Infinity) x = -maxFinite;
  return toHalf(x);
}

function toF16Array(a: Float32Array): Uint16Array {
  const out = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = toF16Converted(a[i]!);
  return out;
}

/**
 * Quantize one column of B (= one row of torch W, K values) into `packed` (K/2 bytes) and `scales` (K/32),
 * exactly as MLAS quantizeAndTranspose does for symmetric 4-bit.
 */
export function quantizeColumnQ4(col: Float32Array, packed: Uint8Array, pOff: number, scales: Float32Array, sOff: number): void {
  const K = col.length;
  for (let b = 0; b * Q4_BLOCK < K; b++) {
    const start = b * Q4_BLOCK;
    const end = Math.min(start + Q4_BLOCK, K);
    let min = Infinity;
    let max = -Infinity;
    for (let i = start; i < end; i++) {
      const v = col[i]!;
      if (v < min) min = v;
      if (v > max) max = v;
    }
    // range2scale: the signed value of larger magnitude maps to -8; stored as float (fround).
    const m = Math.abs(max) > Math.abs(min) ? max : min;
    const scale = Math.fround(-m / 8);
    scales[sOff + b] = scale;
    const r = scale ? Math.fround(1 / scale) : 0;
    for (let i = start; i < end; i += 2) {
      const q0 = quant(col[i]!, r);
      const q1 = i + 1 < end ? quant(col[i + 1]!, r) : 0;
      packed[pOff + (i >> 1)] = (q0 & 0xf) | (q1 << 4);
    }
  }
}

/** roundf(v * r + 8) clamped to [0, 15]; roundf rounds halves away from zero. */
function quant(v: number, r: number): number {
  const x = Math.fround(Math.fround(v * r) + 8);
  const q = x < 0 ? -Math.round(-x) : Math.round(x);
  return Math.min(15, Math.max(0, q));
}

const ROWS_PER_CHUNK = 256;

/** Rows [n0, n1) of torch weight `w` ([N, K] row-major). */
function rows(spec: DecoderSpec, w: WeightSpec, n0: number, n1: number): Float32Array {
  const K = w.dims[1]!;
  return weightValues(spec, w, n0 * K, (n1 - n0) * K);
}

/** MatMulNBits B and scales for torch weight w [N, K] (B = W^T [K, N]), generated row block by row block. */
export function q4Tensors(spec: DecoderSpec, w: WeightSpec, baseName: string): [LazyTensor, LazyTensor] {
  const [N, K] = [w.dims[0]!, w.dims[1]!];
  if (K % Q4_BLOCK !== 0) throw new Error(`${w.name}: K=${K} is not a multiple of ${Q4_BLOCK}`);
  const kBlocks = K / Q4_BLOCK;
  const blob = Q4_BLOCK / 2;
  // The writer emits B_Q4 then its scales: a full pass over B keeps the scales (N * K/32 floats, 17 MB for
  // the 0.5B lm_head) so the scales tensor needs no second pass over the weights.
  let kept: Float32Array | undefined;
  function* gen(which: 'data' | 'scales'): Generator<Uint8Array> {
    if (which === 'scales' && kept) {
      yield new Uint8Array(kept.buffer);
      return;
    }
    const all = new Float32Array(N * kBlocks);
    for (let n0 = 0; n0 < N; n0 += ROWS_PER_CHUNK) {
      const n1 = Math.min(N, n0 + ROWS_PER_CHUNK);
      const vals = rows(spec, w, n0, n1);
      const packed = new Uint8Array((n1 - n0) * kBlocks * blob);
      const scales = all.subarray(n0 * kBlocks, n1 * kBlocks);
      for (let n = 0; n < n1 - n0; n++) quantizeColumnQ4(vals.subarray(n * K, (n + 1) * K), packed, n * kBlocks * blob, scales, n * kBlocks);
      if (which === 'data') yield packed;
    }
    if (which === 'scales') yield new Uint8Array(all.buffer);
    else kept = all;
  }
  return [
    { name: `${baseName}_Q4`, dims: [N, kBlocks, blob], dataType: DataType.UINT8, byteLength: N * kBlocks * blob, chunks: () => gen('data') },
    {
      name: `${baseName}_scales`,
      dims: [N * kBlocks],
      dataType: DataType.FLOAT,
      byteLength: N * kBlocks * 4,
      *chunks() {
        yield* gen('scales');
        kept = undefined; // written: free it
      },
    },
  ];
}

export type Precision = 'fp32' | 'fp16';

function encode(vals: Float32Array, precision: Precision): Uint8Array {
  if (precision === 'fp32') return new Uint8Array(vals.buffer, vals.byteOffset, vals.byteLength);
  const h = toF16Array(vals);
  return new Uint8Array(h.buffer);
}

/** Initializer holding `w` in torch layout (embeddings, norms, biases), streamed in row blocks. */
export function rowTensor(spec: DecoderSpec, w: WeightSpec, name: string, precision: Precision): LazyTensor {
  const n = w.dims.reduce((a, b) => a * b, 1);
  const rowLen = w.dims.length > 1 ? w.dims[w.dims.length - 1]! : n;
  const step = Math.max(1, Math.floor((1 << 20) / rowLen)) * rowLen;
  return {
    name,
    dims: [...w.dims],
    dataType: precision === 'fp32' ? DataType.FLOAT : DataType.FLOAT16,
    byteLength: n * (precision === 'fp32' ? 4 : 2),
    *chunks() {
      for (let s = 0; s < n; s += step) yield encode(weightValues(spec, w, s, Math.min(step, n - s)), precision);
    },
  };
}

/**
 * Initializer holding W^T ([K, N]) for torch weight w [N, K]: what TorchScript's constant folding of
 * `matmul(x, t(weight))` stores (`onnx::MatMul_<id>`). The transpose needs whole columns, so the tensor is
 * generated one at a time (the largest, a 151936 x 896 lm_head, is 545 MB in fp32); only q4 is row-streamed.
 */
export function transposedTensor(spec: DecoderSpec, w: WeightSpec, name: string, precision: Precision): LazyTensor {
  const [N, K] = [w.dims[0]!, w.dims[1]!];
  return {
    name,
    dims: [K, N],
    dataType: precision === 'fp32' ? DataType.FLOAT : DataType.FLOAT16,
    byteLength: N * K * (precision === 'fp32' ? 4 : 2),
    *chunks() {
      const W = rows(spec, w, 0, N);
      const rowsPer = Math.max(1, Math.floor((1 << 20) / N));
      for (let k0 = 0; k0 < K; k0 += rowsPer) {
        const k1 = Math.min(K, k0 + rowsPer);
        const out = new Float32Array((k1 - k0) * N);
        for (let k = k0; k < k1; k++) for (let n = 0; n < N; n++) out[(k - k0) * N + n] = W[n * K + k]!;
        yield encode(out, precision);
      }
    },
  };
}
