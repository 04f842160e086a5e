import * as tf from '@tensorflow/tfjs-core';

/**
 * Gradient functions for the kernels the project differentiates through.
 * Why here: @tensorflow/tfjs-core's Node bundle ships no gradient registry (the `tfjs` umbrella package
 * registers `dist/register_all_gradients`, an extensionless ESM file Node cannot load), so without this
 * `tf.grad` fails with "gradient function not found for Sum". These follow tfjs-core's own
 * src/gradients/*_grad.ts one to one (Apache-2.0), written against the public API.
 */
type Grads = Record<string, () => tf.Tensor> | Array<() => tf.Tensor>;
type GradFn = (dy: tf.Tensor, saved: tf.Tensor[], attrs: Record<string, unknown>) => Grads;
const bu = tf.backend_util;

/** Sum dy over the axes `shape` was broadcast along, then reshape to `shape`. */
function unbroadcast(g: tf.Tensor, shape: number[], outShape: number[]): tf.Tensor {
  const axes = bu.getReductionAxes(shape, outShape);
  return tf.reshape(axes.length ? tf.sum(g, axes) : g, shape);
}

function binary(kernelName: string, derA: (dy: tf.Tensor, a: tf.Tensor, b: tf.Tensor) => tf.Tensor, derB: (dy: tf.Tensor, a: tf.Tensor, b: tf.Tensor) => tf.Tensor) {
  return {
    kernelName,
    inputsToSave: ['a', 'b'],
    gradFunc: ((dy, [a, b]) => {
      const out = bu.assertAndGetBroadcastShape(a!.shape, b!.shape);
      return { a: () => unbroadcast(derA(dy, a!, b!), a!.shape, out), b: () => unbroadcast(derB(dy, a!, b!), b!.shape, out) };
    }) as GradFn,
  };
}

function unary(kernelName: string, der: (dy: tf.Tensor, x: tf.Tensor) => tf.Tensor) {
  return { kernelName, inputsToSave: ['x'], gradFunc: ((dy, [x]) => ({ x: () => der(dy, x!) })) as GradFn };
}

/** Unary grads that use the op's output y instead of its input. */
function unaryOut(kernelName: string, der: (dy: tf.Tensor, y: tf.Tensor) => tf.Tensor) {
  return { kernelName, outputsToSave: [true], gradFunc: ((dy, [y]) => ({ x: () => der(dy, y!) })) as GradFn };
}

function reduceExpand(dy: tf.Tensor, x: tf.Tensor, axis: unknown): tf.Tensor {
  const axes = tf.util.parseAxisParam(axis as number | number[], x.shape);
  const shape = x.shape.slice();
  for (const a of axes) shape[a] = 1;
  return tf.mul(tf.reshape(dy, shape), tf.ones(x.shape, 'float32'));
}

// Casting a float32 tensor to float32 copies it on wasm: skip the no-op cast.
const f32 = (t: tf.Tensor) => (t.dtype === 'float32' ? t : tf.cast(t, 'float32'));

const configs: Array<{ kernelName: string; inputsToSave?: string[]; outputsToSave?: boolean[]; saveAllInputs?: boolean; gradFunc: GradFn }> = [
  binary(tf.Add, (dy) => dy, (dy) => dy),
  binary(tf.Sub, (dy) => dy, (dy) => tf.neg(dy)),
  binary(tf.Multiply, (dy, _a, b) => tf.mul(dy, f32(b)), (dy, a) => tf.mul(dy, f32(a))),
  binary(tf.RealDiv, (dy, _a, b) => tf.div(dy, f32(b)), (dy, a, b) => tf.neg(tf.div(tf.mul(dy, f32(a)), tf.square(f32(b))))),
  binary(tf.Maximum, (dy, a, b) => tf.mul(dy, f32(tf.greaterEqual(a, b))), (dy, a, b) => tf.mul(dy, f32(tf.less(a, b)))),
  binary(tf.Minimum, (dy, a, b) => tf.mul(dy, f32(tf.lessEqual(a, b))), (dy, a, b) => tf.mul(dy, f32(tf.greater(a, b)))),
  binary(tf.SquaredDifference, (dy, a, b) => tf.mul(dy, tf.mul(tf.scalar(2), tf.sub(a, b))), (dy, a, b) => tf.mul(dy, tf.mul(tf.scalar(2), tf.sub(b, a)))),
  {
    kernelName: tf.AddN,
    saveAllInputs: true,
    gradFunc: ((dy, saved) => saved.map(() => () => tf.clone(dy))) as GradFn,
  },
  {
    kernelName: tf.BatchMatMul,
    inputsToSave: ['a', 'b'],
    gradFunc: ((dy, [a, b], attrs) => {
      const { transposeA: ta, transposeB: tb } = attrs as { transposeA: boolean; transposeB: boolean };
      // mm(x, y, tx, ty) = op(x) @ op(y). On wasm a 2-D matmul with a transpose flag is ~7x slower than an
      // explicit transpose followed by a plain matmul (XNNPACK path), so rank-2 products transpose explicitly.
      const mm = (x: tf.Tensor, y: tf.Tensor, tx: boolean, ty: boolean): tf.Tensor =>
        x.rank === 2 && y.rank === 2 ? tf.matMul(tx ? tf.transpose(x) : x, ty ? tf.transpose(y) : y) : tf.matMul(x, y, tx, ty);
      // matMul broadcasts the batch dims ([2, 3, 4] x [4, 5], [1, 3, 4] x [2, 4, 5]): sum each gradient over the
      // batch dims its input was broadcast along (tfjs-core's own gradient omits this and fails the shape check).
      const fit = (g: tf.Tensor, shape: number[]) => (tf.util.arraysEqual(g.shape, shape) ? g : unbroadcast(g, shape, g.shape));
      const grads = (ga: () => tf.Tensor, gb: () => tf.Tensor) => ({ a: () => fit(ga(), a!.shape), b: () => fit(gb(), b!.shape) });
      if (!ta && !tb) return grads(() => mm(dy, b!, false, true), () => mm(a!, dy, true, false));
      if (!ta && tb) return grads(() => mm(dy, b!, false, false), () => mm(dy, a!, true, false));
      if (ta && !tb) return grads(() => mm(b!, dy, false, true), () => mm(a!, dy, false, false));
      return grads(() => mm(b!, dy, true, true), () => mm(dy, a!, true, true));
    }) as GradFn,
  },
  {
    kernelName: tf.GatherV2,
    inputsToSave: ['x', 'indices'],
    gradFunc: ((dy, [x, indices], attrs) => {
      const { axis, batchDims } = attrs as { axis: number; batchDims: number };
      if (batchDims) throw new Error('gather gradient: batchDims > 0 is not supported by recdistill.');
      const ax = tf.util.parseAxisParam(axis, x!.shape)[0]!;
      const derX = () => {
        const outer = x!.shape.slice(0, ax);
        const inner = x!.shape.slice(ax + 1);
        const n = indices!.size;
        const values = tf.reshape(dy, [...outer, n, ...inner]);
        const perm = [outer.length, ...outer.map((_, i) => i), ...inner.map((_, i) => outer.length + 1 + i)];
        const summed = tf.unsortedSegmentSum(tf.transpose(values, perm), tf.reshape(indices!, [n]) as tf.Tensor1D, x!.shape[ax]!);
        return tf.transpose(summed, bu.getUndoAxesPermutation(perm));
      };
      return { x: derX, indices: () => indices! };
    }) as GradFn,
  },
  { kernelName: tf.Sum, inputsToSave: ['x'], gradFunc: ((dy, [x], attrs) => ({ x: () => reduceExpand(dy, x!, attrs.axis) })) as GradFn },
  {
    kernelName: tf.Mean,
    inputsToSave: ['x'],
    gradFunc: ((dy, [x], attrs) => {
      const axes = tf.util.parseAxisParam(attrs.axis as number | number[], x!.shape);
      const n = axes.reduce((p, a) => p * x!.shape[a]!, 1);
      return { x: () => tf.div(reduceExpand(dy, x!, attrs.axis), n) };
    }) as GradFn,
  },
  {
    kernelName: tf.Max,
    inputsToSave: ['x'],
    outputsToSave: [true],
    gradFunc: ((dy, [x, y], attrs) => {
      const axes = tf.util.parseAxisParam(attrs.reductionIndices as number | number[], x!.shape);
      const keep = bu.expandShapeToKeepDim(y!.shape, axes);
      const yk = y!.rank < x!.rank ? tf.reshape(y!, keep) : y!;
      const dyk = dy.rank < x!.rank ? tf.reshape(dy, keep) : dy;
      return { x: () => tf.mul(dyk, f32(tf.equal(x!, yk))) };
    }) as GradFn,
  },
  unary(tf.Log, (dy, x) => tf.div(dy, f32(x))),
  unary(tf.Log1p, (dy, x) => tf.div(dy, tf.add(x, 1))),
  unary(tf.Sqrt, (dy, x) => tf.div(dy, tf.mul(tf.sqrt(f32(x)), 2))),
  unary(tf.Rsqrt, (dy, x) => tf.neg(tf.div(dy, tf.mul(tf.pow(x, 1.5), 2)))),
  unary(tf.Square, (dy, x) => tf.mul(dy, tf.mul(f32(x), 2))),
  unary(tf.Relu, (dy, x) => tf.mul(dy, f32(tf.step(x)))),
  unary(tf.Abs, (dy, x) => tf.mul(dy, tf.step(f32(x), -1))),
  unary(tf.Softplus, (dy, x) => tf.mul(dy, tf.sigmoid(x))),
  unary(tf.Reciprocal, (dy, x) => tf.div(dy, tf.neg(tf.square(x)))),
  unary(tf.Erf, (dy, x) => tf.mul(dy, tf.mul(tf.exp(tf.neg(tf.square(x))), 2 / Math.sqrt(Math.PI)))),
  unaryOut(tf.Exp, (dy, y) => tf.mul(dy, y)),
  unaryOut(tf.Sigmoid, (dy, y) => tf.mul(dy, tf.mul(y, tf.sub(tf.scalar(1), y)))),
  unaryOut(tf.Tanh, (dy, y) => tf.mul(tf.sub(tf.scalar(1), tf.square(y)), dy)),
  { kernelName: tf.Neg, gradFunc: ((dy) => ({ x: () => tf.neg(dy) })) as GradFn },
  { kernelName: tf.Identity, gradFunc: ((dy) => ({ x: () => f32(dy) })) as GradFn },
  { kernelName: tf.Cast, gradFunc: ((dy) => ({ x: () => tf.clone(dy) })) as GradFn },
  { kernelName: tf.Reshape, inputsToSave: ['x'], gradFunc: ((dy, [x]) => ({ x: () => tf.reshape(dy, x!.shape) })) as GradFn },
  { kernelName: tf.ExpandDims, inputsToSave: ['input'], gradFunc: ((dy, [x]) => ({ input: () => tf.reshape(dy, x!.shape) })) as GradFn },
  {
    kernelName: tf.Transpose,
    gradFunc: ((dy, _s, attrs) => ({ x: () => tf.transpose(dy, bu.getUndoAxesPermutation(attrs.perm as number[])) })) as GradFn,
  },
  {
    kernelName: tf.Softmax,
    outputsToSave: [true],
    gradFunc: ((dy, [y], attrs) => {
      const dyy = tf.mul(dy, y!);
      return { logits: () => tf.sub(dyy, tf.mul(tf.sum(dyy, [attrs.dim as number], true), y!)) };
    }) as GradFn,
  },
  {
    kernelName: tf.LogSoftmax,
    outputsToSave: [true],
    gradFunc: ((dy, [y], attrs) => ({ logits: () => tf.sub(dy, tf.mul(tf.sum(dy, attrs.axis as number, true), tf.exp(y!))) })) as GradFn,
  },
  {
    kernelName: tf.Select,
    inputsToSave: ['condition'],
    gradFunc: ((dy, [c]) => ({
      condition: () => f32(tf.zerosLike(c!)),
      t: () => tf.mul(dy, tf.cast(c!, dy.dtype)),
      e: () => tf.mul(dy, tf.cast(tf.logicalNot(c!), dy.dtype)),
    })) as GradFn,
  },
  {
    kernelName: tf.Slice,
    inputsToSave: ['x'],
    gradFunc: ((dy, [x], attrs) => {
      const [begin, size] = tf.slice_util.parseSliceParams(x!, attrs.begin as number[], attrs.size as number[]) as [number[], number[]];
      const pads = x!.shape.map((d, i) => [begin[i]!, d - begin[i]! - size[i]!] as [number, number]);
      return { x: () => tf.pad(dy, pads) };
    }) as GradFn,
  },
  {
    kernelName: tf.Concat,
    saveAllInputs: true,
    gradFunc: ((dy, saved, attrs) => {
      const axis = tf.util.parseAxisParam(attrs.axis as number, saved[0]!.shape)[0]!;
      return tf.split(dy, saved.map((t) => t.shape[axis]!), axis).map((t) => () => t);
    }) as GradFn,
  },
  { kernelName: tf.Pack, saveAllInputs: true, gradFunc: ((dy, _s, attrs) => tf.unstack(dy, attrs.axis as number).map((t) => () => t)) as GradFn },
  { kernelName: tf.Unpack, gradFunc: ((dy, _s, attrs) => ({ value: () => tf.stack(dy as unknown as tf.Tensor[], attrs.axis as number) })) as GradFn },
  {
    kernelName: tf.ClipByValue,
    inputsToSave: ['x'],
    gradFunc: ((dy, [x], attrs) => ({
      x: () => tf.where(tf.logicalAnd(tf.greaterEqual(x!, attrs.clipValueMin as number), tf.lessEqual(x!, attrs.clipValueMax as number)), dy, tf.zerosLike(dy)),
    })) as GradFn,
  },
];

let done = false;

/** Register the gradients above unless some other copy of tfjs already did (idempotent). */
export function registerGradients(): void {
  if (done) return;
  done = true;
  for (const c of configs) {
    if (!tf.getGradient(c.kernelName)) tf.registerGradient(c as unknown as tf.GradConfig);
  }
}
