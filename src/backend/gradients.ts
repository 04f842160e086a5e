import * as tf from '@tensorflow/tfjs-core';
import { flagField } from '../util/fields.js';

/**
 * Gradients: tfjs's own registry, plus the project's gradients for the four kernels where tfjs's is wrong or
 * slow on wasm (BatchMatMul, Maximum, Minimum, SquaredDifference), registered over it.
 *
 * tfjs-core's Node entry (dist/tf-core.node.js) registers no gradients: its registry
 * (dist/register_all_gradients.js) ships only as extensionless ESM that Node cannot load
 * ("Cannot find module .../dist/gradients/Abs_grad"). The Node bundle of @tensorflow/tfjs-layers (a peer of
 * tfjs-core with no other dependency) registers all of them when imported, as the `@tensorflow/tfjs` umbrella
 * package does, so we load that instead of the umbrella (which also brings converter, data and webgl).
 */

type Grads = Record<string, () => tf.Tensor>;
const bu = tf.backend_util;

/** Sum g over the axes `shape` was broadcast along, then reshape to `shape`. */
function unbroadcast(g: tf.Tensor, shape: number[], outShape: number[]): tf.Tensor {
  const axes = bu.getReductionAxes(shape, outShape);
  return tf.reshape(axes.length ? tf.sum(g, axes) : g, shape);
}

/**
 * Binary ops with broadcasting: tfjs-core 4.22's Maximum, Minimum and SquaredDifference gradients return the
 * broadcast output's shape ([2, 1] vs [1, 3] fails "gradient of input 'a' has shape '2,3'"); these sum each
 * gradient back to its input's shape.
 */
function binary(kernelName: string, derA: (dy: tf.Tensor, a: tf.Tensor, b: tf.Tensor) => tf.Tensor, derB: (dy: tf.Tensor, a: tf.Tensor, b: tf.Tensor) => tf.Tensor): tf.GradConfig {
  return {
    kernelName,
    inputsToSave: ['a', 'b'],
    gradFunc: (dys: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]): Grads => {
      const dy = single(dys, kernelName);
      const [a, b] = saved as [tf.Tensor, tf.Tensor];
      const out = bu.assertAndGetBroadcastShape(a.shape, b.shape);
      return { a: () => unbroadcast(derA(dy, a, b), a.shape, out), b: () => unbroadcast(derB(dy, a, b), b.shape, out) };
    },
  };
}

const f32 = (t: tf.Tensor) => tf.cast(t, 'float32');

/** The upstream gradient of a kernel with one output (these four have one). */
function single(dy: tf.Tensor | tf.Tensor[], kernel: string): tf.Tensor {
  if (Array.isArray(dy)) throw new Error(`${kernel} gradient: expected one upstream gradient, got ${dy.length}.`);
  return dy;
}

/**
 * BatchMatMul, replacing tfjs's for two reasons:
 * - speed: on wasm a rank-2 matmul with a transpose flag is ~7x slower than an explicit transpose followed by
 *   a plain matmul (XNNPACK path), and tfjs's gradient passes the flags; rank-2 products transpose explicitly.
 * - correctness: matMul broadcasts batch dims ([2, 3, 4] x [4, 5], [1, 3, 4] x [2, 4, 5]); each gradient must
 *   be summed over the batch dims its input was broadcast along (tfjs-core's gradient omits this and fails
 *   the gradient shape check).
 */
const batchMatMulGrad: tf.GradConfig = {
  kernelName: tf.BatchMatMul,
  inputsToSave: ['a', 'b'],
  gradFunc: (dys: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap): Grads => {
    const dy = single(dys, tf.BatchMatMul);
    const [a, b] = saved as [tf.Tensor, tf.Tensor];
    const [ta, tb] = [flagField(attrs, 'transposeA', 'BatchMatMul attrs'), flagField(attrs, 'transposeB', 'BatchMatMul attrs')];
    // mm(x, y, tx, ty) = op(x) @ op(y).
    const mm = (x: tf.Tensor, y: tf.Tensor, tx: boolean, ty: boolean): tf.Tensor =>
      x.rank === 2 && y.rank === 2 ? tf.matMul(tx ? tf.transpose(x) : x, ty ? tf.transpose(y) : y) : tf.matMul(x, y, tx, ty);
    const fit = (g: tf.Tensor, shape: number[]) => (tf.util.arraysEqual(g.shape, shape) ? g : unbroadcast(g, shape, g.shape));
    const grads = (ga: () => tf.Tensor, gb: () => tf.Tensor) => ({ a: () => fit(ga(), a.shape), b: () => fit(gb(), b.shape) });
    if (!ta && !tb) return grads(() => mm(dy, b, false, true), () => mm(a, dy, true, false));
    if (!ta && tb) return grads(() => mm(dy, b, false, false), () => mm(dy, a, true, false));
    if (ta && !tb) return grads(() => mm(b, dy, false, true), () => mm(a, dy, false, false));
    return grads(() => mm(b, dy, true, true), () => mm(dy, a, true, true));
  },
};

/** The gradients the project registers over tfjs's (the test checks each by finite differences). */
const overrides = [
  batchMatMulGrad,
  binary(tf.Maximum, (dy, a, b) => tf.mul(dy, f32(tf.greaterEqual(a, b))), (dy, a, b) => tf.mul(dy, f32(tf.less(a, b)))),
  binary(tf.Minimum, (dy, a, b) => tf.mul(dy, f32(tf.lessEqual(a, b))), (dy, a, b) => tf.mul(dy, f32(tf.greater(a, b)))),
  binary(tf.SquaredDifference, (dy, a, b) => tf.mul(dy, tf.mul(tf.scalar(2), tf.sub(a, b))), (dy, a, b) => tf.mul(dy, tf.mul(tf.scalar(2), tf.sub(b, a)))),
];

let loading: Promise<void> | undefined;

/**
 * Load tfjs's gradient registry, then register the project's overrides over it (idempotent). Order matters:
 * registering tfjs's registry later (importing tfjs-layers or @tensorflow/tfjs afterwards) would put tfjs's
 * BatchMatMul gradient back. Each override unregisters tfjs's gradient first, so tfjs's "Overriding the
 * gradient" warning (printed in DEBUG mode) does not fire.
 */
export function registerGradients(): Promise<void> {
  loading ??= (async () => {
    await import('@tensorflow/tfjs-layers');
    for (const c of overrides) {
      if (tf.getGradient(c.kernelName)) tf.unregisterGradient(c.kernelName);
      tf.registerGradient(c);
    }
  })();
  return loading;
}
