import { describe, expect, it } from 'vitest';
import { decodeSafetensors, encodeSafetensors } from '../src/util/safetensors.js';

describe('safetensors', () => {
  it('round-trips tensors and metadata, byte-identical for the same input', () => {
    const tensors = {
      w: { dtype: 'F32' as const, shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6.5]) },
      idx: { dtype: 'I32' as const, shape: [3], data: Int32Array.from([7, -1, 9]) },
    };
    const a = encodeSafetensors(tensors, { fingerprint: 'abc' });
    const b = encodeSafetensors({ idx: tensors.idx, w: tensors.w }, { fingerprint: 'abc' });
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    const d = decodeSafetensors(a);
    expect(d.metadata).toEqual({ fingerprint: 'abc' });
    expect(Array.from(d.tensors.w!.data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6.5]);
    expect(d.tensors.w!.shape).toEqual([2, 3]);
    expect(Array.from(d.tensors.idx!.data as Int32Array)).toEqual([7, -1, 9]);
    // header length is a multiple of 8 and names are laid out in sorted order: idx first
    const n = Number(new DataView(a.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const header = JSON.parse(Buffer.from(a.slice(8, 8 + n)).toString());
    expect(header.idx.data_offsets).toEqual([0, 12]);
    expect(header.w.data_offsets).toEqual([12, 36]);
  });

  it('decodes from a Node Buffer that is a view at a non-zero offset (as readFileSync pools small files)', () => {
    const a = encodeSafetensors({ x: { dtype: 'F32', shape: [3], data: Float32Array.from([1.5, -2, 3]) } });
    const pool = Buffer.alloc(a.length + 13);
    pool.set(a, 13);
    const view = pool.subarray(13);
    expect(view.byteOffset).toBe(13);
    expect(Array.from(decodeSafetensors(view).tensors.x!.data as Float32Array)).toEqual([1.5, -2, 3]);
  });

  it('rejects truncated files with a message naming the file', () => {
    const a = encodeSafetensors({ x: { dtype: 'F32', shape: [4], data: new Float32Array(4) } });
    expect(() => decodeSafetensors(a.slice(0, a.length - 3), 'shard-0001.safetensors')).toThrow(/shard-0001.safetensors: not a valid safetensors file/);
  });
});
