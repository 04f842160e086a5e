import * as tf from '@tensorflow/tfjs-core';

/** A zero-batch term still has to touch its variables (the optimiser wants a path to every variable). */
export function connect(term: tf.Tensor, ws: tf.Variable[]): tf.Scalar {
  let t = term as tf.Scalar;
  for (const w of ws) t = tf.add(t, tf.mul(tf.sum(w), 0));
  return t;
}

export function indicesOf(mask: Uint8Array): Int32Array {
  const out: number[] = [];
  for (let s = 0; s < mask.length; s++) if (mask[s]) out.push(s);
  return Int32Array.from(out);
}

export function gatherRowsJs(m: Float32Array, width: number, ids: Int32Array): Float32Array {
  const out = new Float32Array(ids.length * width);
  ids.forEach((id, i) => out.set(m.subarray(id * width, (id + 1) * width), i * width));
  return out;
}

/** Aligned pairs as provenance and messages show them: "<student block>:<teacher layer>", comma-separated, from 0. */
export function fmtPairs(pairs: Array<{ block: number; tapped: number }>, layers: readonly number[]): string {
  return pairs.map((p) => `${p.block}:${layers[p.tapped]}`).join(',');
}
