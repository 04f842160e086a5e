/**
 * int4 weight packing for MatMulNBits exactly as the onnxruntime-genai model builder produces it for
 * `-p int4 -e cpu` with default options (builders/base.py `Model.to_nbits` -> onnxruntime
 * quantization/matmul_nbits_quantizer.py `DefaultWeightOnlyQuantizer.qbits_block_quant`
 * -> pybind `quantize_matmul_4bits` -> MLAS core/mlas/lib/q4_dq.cpp
 * `BlockwiseQuantizer<float, 32, 4, Columnwise=true>::quantizeAndTranspose` with zero_points = nullptr,
 * i.e. symmetric: block_size 32, is_symmetric True, accuracy_level 4 on CPU (quant_config.py defaults).
 *
 * Per output feature n (one torch Linear row, K input features) and per block of 32 along K:
 *   m     = |max| > |min| ? max : min               (range2scale; min/max of the block, signed)
 *   scale = -m / 8                                   (float32)
 *   q     = clamp(roundf(v * (1/scale) + 8), 0, 15)  (uint4, implicit zero point 8)
 * Layout (MatMulNBits): B uint8 [N, kBlocks, 16] with element 2j in the low nibble and 2j+1 in the
 * high nibble; scales float32 [N * kBlocks]. No zero-point input (symmetric). Dequantised value is
 * (q - 8) * scale.
 *
 * The per-column packing itself is quant.ts `quantizeColumnQ4` (the same MatMulNBitsQuantizer path
 * serves the Optimum-layout q4 variant); this file adds what the builder layout needs on top.
 *
 * Also the lazy initializer sources genai.ts needs (embedding as-is, transposed/packed float MatMul
 * weights, the two q4 initializers), each streamed in bounded bands so a real-size spec can be written.
 */
import type { DecoderSpec, WeightSpec } from './spec.js';
import { weightValues } from './spec.js';
import { DataType, type LazyTensor } from '../../util/onnx-file.js';
import { Q4_BLOCK, quantizeColumnQ4 } from './quant.js';

export { Q4_BLOCK };

/** Number of K blocks for K input features. */
const kBlocksOf = (K: number, block = Q4_BLOCK): number => Math.ceil(K / block);

/** Inverse of quantizeColumnQ4 (quant.ts) for one output feature: [K] float32 values the kernel multiplies by. */
export function dequantizeRowQ4(packed: Uint8Array, pOff: number, scales: Float32Array, sOff: number, K: number, block = Q4_BLOCK): Float32Array {
  const out = new Float32Array(K);
  const blob = block / 2;
  for (let k = 0; k < K; k++) {
    const b = Math.floor(k / block);
    const j = k - b * block;
    const byte = packed[pOff + b * blob + (j >> 1)]!;
    const q = (j & 1) === 0 ? byte & 0xf : byte >> 4;
    out[k] = (q - 8) * scales[sOff + b]!;
  }
  return out;
}

/* ------------------------------------------------------------------------------------------------
 * Lazy initializer sources. weightValues is only guaranteed to agree with weightTensor (the canonical
 * full tensor) when `start` is a multiple of its 4096-value block, so everything below generates
 * from aligned starts and re-slices; memory stays bounded by BAND_BYTES per initializer.
 * ---------------------------------------------------------------------------------------------- */

const PIECE = 4096 * 16;
const BAND_BYTES = 64 * 1024 * 1024;

const numel = (w: WeightSpec): number => w.dims.reduce((a, b) => a * b, 1);
const bytesOf = (a: Float32Array | Uint8Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** The flat torch values of `w`, in order, in aligned pieces. */
function* valuePieces(s: DecoderSpec, w: WeightSpec): Generator<Float32Array> {
  const n = numel(w);
  for (let st = 0; st < n; st += PIECE) yield weightValues(s, w, st, Math.min(PIECE, n - st));
}

/** Torch rows of `ws` concatenated along dim 0 (all share the row length dims[1]), in batches of whole rows. */
function* rowBatches(s: DecoderSpec, ws: WeightSpec[], maxRows: number): Generator<Float32Array> {
  const rowLen = ws[0]!.dims[1]!;
  const buf = new Float32Array(Math.max(1, maxRows) * rowLen);
  let fill = 0;
  for (const w of ws) {
    for (const piece of valuePieces(s, w)) {
      let off = 0;
      while (off < piece.length) {
        const n = Math.min(piece.length - off, buf.length - fill);
        buf.set(piece.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill === buf.length) {
          yield buf.slice();
          fill = 0;
        }
      }
    }
  }
  if (fill > 0) yield buf.slice(0, fill);
}

/** A float32 initializer holding w's torch values unchanged (embeddings: [V, H] is already Gather's layout). */
export function plainTensor(s: DecoderSpec, name: string, w: WeightSpec): LazyTensor {
  return { name, dims: w.dims, dataType: DataType.FLOAT, byteLength: numel(w) * 4, chunks: () => mapIter(valuePieces(s, w), bytesOf) };
}

function* mapIter<A, B>(it: Iterable<A>, f: (a: A) => B): Generator<B> {
  for (const a of it) yield f(a);
}

/**
 * The builder's float MatMul weight: torch Linear weights [out_j, in] concatenated along out (packed
 * q/k/v) and transposed to [in, sum out_j] (`make_matmul_float`: `matmul.weight.T`). Streamed in
 * bands of input rows; each band re-generates the torch values and keeps those that fall in it.
 */
export function transposedTensor(s: DecoderSpec, name: string, ws: WeightSpec[], bandBytes = BAND_BYTES): LazyTensor {
  const IN = ws[0]!.dims[1]!;
  const OUT = ws.reduce((a, w) => a + w.dims[0]!, 0);
  const bandRows = Math.max(1, Math.min(IN, Math.floor(bandBytes / (OUT * 4))));
  function* chunks(): Generator<Uint8Array> {
    for (let k0 = 0; k0 < IN; k0 += bandRows) {
      const k1 = Math.min(IN, k0 + bandRows);
      const band = new Float32Array((k1 - k0) * OUT);
      let nOff = 0;
      for (const w of ws) {
        let idx = 0;
        for (const piece of valuePieces(s, w)) {
          for (let p = 0; p < piece.length; p++, idx++) {
            const k = idx % IN;
            if (k >= k0 && k < k1) band[(k - k0) * OUT + nOff + (idx - k) / IN] = piece[p]!;
          }
        }
        nOff += w.dims[0]!;
      }
      yield bytesOf(band);
    }
  }
  return { name, dims: [IN, OUT], dataType: DataType.FLOAT, byteLength: IN * OUT * 4, chunks };
}

/**
 * The two initializers MatMulNBitsQuantizer writes for one MatMul whose float weight was
 * `transposedTensor(ws)`: `${base}_Q4` uint8 [N, kBlocks, 16] and `${base}_scales` float32 [N*kBlocks].
 */
export function q4Tensors(s: DecoderSpec, base: string, ws: WeightSpec[], batchBytes = BAND_BYTES): { weight: LazyTensor; scales: LazyTensor; K: number; N: number } {
  const K = ws[0]!.dims[1]!;
  const N = ws.reduce((a, w) => a + w.dims[0]!, 0);
  const nb = kBlocksOf(K);
  const blob = Q4_BLOCK / 2;
  const rowsPerBatch = Math.max(1, Math.floor(batchBytes / (K * 4)));
  function* quantized(part: 'weight' | 'scales'): Generator<Uint8Array> {
    for (const rows of rowBatches(s, ws, rowsPerBatch)) {
      const r = rows.length / K;
      const packed = new Uint8Array(r * nb * blob);
      const scales = new Float32Array(r * nb);
      for (let i = 0; i < r; i++) quantizeColumnQ4(rows.subarray(i * K, (i + 1) * K), packed, i * nb * blob, scales, i * nb);
      yield part === 'weight' ? packed : bytesOf(scales);
    }
  }
  return {
    weight: { name: `${base}_Q4`, dims: [N, nb, blob], dataType: DataType.UINT8, byteLength: N * nb * blob, chunks: () => quantized('weight') },
    scales: { name: `${base}_scales`, dims: [N * nb], dataType: DataType.FLOAT, byteLength: N * nb * 4, chunks: () => quantized('scales') },
    K,
    N,
  };
}
