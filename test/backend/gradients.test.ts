import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { compareGrads, dot64, genFor, numericGrads, toF64, type Gen } from './fd.js';

/**
 * Finite-difference check, on the wasm and the cpu backend, of the gradient of every kernel the student's
 * training differentiates through (tfjs's own gradients, loaded by src/backend/gradients.ts) and of every
 * gradient the project registers over them. One table row per (kernel, shapes, attributes); for each row, the vector-Jacobian product
 * w^T J (tf.grads of op(x) with output gradient w, random w) is compared with central differences of
 * sum(w * op(x)) in float64 over the float32 forward pass. Integer / boolean inputs (indices, conditions) are
 * constants; only float inputs are differentiated.
 *
 * Coverage is enforced: every gradient src/backend/gradients.ts registers (read from its source) has a row,
 * every kernel with a row has a gradient in tfjs's registry, and each row asserts that the gradient of its
 * kernel was actually called by the tape (so a row cannot silently test a different kernel).
 */

const TOL = 1e-2;

interface Built {
  /** Float inputs to differentiate. */
  xs: tf.Tensor[];
  /** The op under test (constants are closed over). */
  f: (xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[];
}
interface Row {
  kernel: string;
  name: string;
  build: (g: Gen) => Built;
  /** Finite-difference step (default 5e-3). */
  h?: number;
}

const i32 = (v: number[], shape?: number[]) => tf.tensor(v, shape ?? [v.length], 'int32');

// --------------------------------------------------------------------------------------------------------
// The table.

const binaryRows = (
  kernel: string,
  op: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor,
  shapes: Array<[number[], number[]]>,
  make: (g: Gen, sa: number[], sb: number[]) => [tf.Tensor, tf.Tensor] = (g, sa, sb) => [g.uniform(sa), g.uniform(sb)],
): Row[] =>
  shapes.map(([sa, sb]) => ({
    kernel,
    name: `${kernel} [${sa}] op [${sb}]`,
    build: (g) => ({ xs: make(g, sa, sb), f: ([a, b]) => op(a!, b!) }),
  }));

/** Two inputs whose elements are all pairwise distinct (>= 0.1 apart): no ties for maximum / minimum. */
const distinctPair = (g: Gen, sa: number[], sb: number[]): [tf.Tensor, tf.Tensor] => {
  const na = sa.reduce((p, c) => p * c, 1);
  const nb = sb.reduce((p, c) => p * c, 1);
  const all = g.distinct([na + nb], 0.15);
  const [a, b] = tf.split(all, [na, nb]);
  return [tf.reshape(a!, sa), tf.reshape(b!, sb)];
};

const unaryRow = (kernel: string, op: (x: tf.Tensor) => tf.Tensor, make: (g: Gen) => tf.Tensor, note = ''): Row => ({
  kernel,
  name: `${kernel}${note}`,
  build: (g) => ({ xs: [make(g)], f: ([x]) => op(x!) }),
});

const reduceRows = (kernel: string, op: (x: tf.Tensor, axis?: number | number[], keep?: boolean) => tf.Tensor, make: (g: Gen, s: number[]) => tf.Tensor): Row[] =>
  (
    [
      [[2, 3], undefined, false],
      [[2, 3], 1, false],
      [[2, 3], 0, false],
      [[2, 3, 2], [0, 2], false],
      [[2, 3, 2], -1, true],
      [[3, 4], [0, 1], true],
    ] as Array<[number[], number | number[] | undefined, boolean]>
  ).map(([shape, axis, keep]) => ({
    kernel,
    name: `${kernel} [${shape}] axis ${JSON.stringify(axis)}${keep ? ' keepDims' : ''}`,
    build: (g) => ({ xs: [make(g, shape)], f: ([x]) => op(x!, axis, keep) }),
  }));

const S = [2, 3];

const ROWS: Row[] = [
  ...binaryRows(tf.Add, tf.add, [[S, S], [S, [3]], [[2, 1], [1, 3]], [S, []], [[3], [2, 2, 3]]]),
  ...binaryRows(tf.Sub, tf.sub, [[S, S], [[3], S], [[2, 1], [1, 3]], [S, []]]),
  ...binaryRows(tf.Multiply, tf.mul, [[S, S], [S, [2, 1]], [[2, 2, 3], [3]], [[], S]]),
  ...binaryRows(tf.RealDiv, tf.div, [[S, S], [S, [3]], [[3], S], [[2, 1], [1, 3]]], (g, sa, sb) => [g.uniform(sa), g.away(sb, 0.5, 2)]),
  ...binaryRows(tf.Maximum, tf.maximum, [[S, S], [S, [3]], [[2, 1], [1, 3]]], distinctPair),
  ...binaryRows(tf.Minimum, tf.minimum, [[S, S], [S, [3]], [[2, 1], [1, 3]]], distinctPair),
  ...binaryRows(tf.SquaredDifference, tf.squaredDifference, [[S, S], [S, [3]], [[2, 1], [1, 3]]]),
  { kernel: tf.AddN, name: 'AddN of 3 [2,3]', build: (g) => ({ xs: [g.uniform(S), g.uniform(S), g.uniform(S)], f: (xs) => tf.addN(xs) }) },
  ...[2, 3].flatMap((rank) =>
    [false, true].flatMap((ta) =>
      [false, true].map((tb): Row => {
        const batch = rank === 3 ? [2] : [];
        return {
          kernel: tf.BatchMatMul,
          name: `BatchMatMul rank ${rank} transposeA=${ta} transposeB=${tb}`,
          build: (g) => ({
            xs: [g.uniform([...batch, ...(ta ? [4, 3] : [3, 4])]), g.uniform([...batch, ...(tb ? [5, 4] : [4, 5])])],
            f: ([a, b]) => tf.matMul(a!, b!, ta, tb),
          }),
        };
      }),
    ),
  ),
  {
    kernel: tf.BatchMatMul,
    name: 'BatchMatMul rank 4 [2,2,3,4] x [2,2,5,4] transposeB (attention scores)',
    build: (g) => ({ xs: [g.uniform([2, 2, 3, 4]), g.uniform([2, 2, 5, 4])], f: ([a, b]) => tf.matMul(a!, b!, false, true) }),
  },
  // matMul broadcasts batch dims; each gradient must be summed back over the dims its input was broadcast along.
  ...(
    [
      [[2, 3, 4], [4, 5], false, false],
      [[2, 3, 4], [5, 4], false, true],
      [[4, 3], [2, 4, 5], true, false],
      [[1, 3, 4], [2, 4, 5], false, false],
      [[2, 2, 3, 4], [5, 4], false, true],
      // (Not [2,1,3,4] x [3,5,4]: tfjs's forward kernels, wasm and cpu, return 45 values for its 90-element
      // [2,3,3,5] output; only "one side's batch is 1" broadcasting works in the forward pass.)
    ] as Array<[number[], number[], boolean, boolean]>
  ).map(
    ([sa, sb, ta, tb]): Row => ({
      kernel: tf.BatchMatMul,
      name: `BatchMatMul broadcast [${sa}] x [${sb}] transposeA=${ta} transposeB=${tb}`,
      build: (g) => ({ xs: [g.uniform(sa), g.uniform(sb)], f: ([a, b]) => tf.matMul(a!, b!, ta, tb) }),
    }),
  ),
  {
    kernel: tf.GatherV2,
    name: 'GatherV2 [5,3] axis 0, repeated ids',
    build: (g) => ({ xs: [g.uniform([5, 3])], f: ([x]) => tf.gather(x!, i32([3, 1, 3, 0])) }),
  },
  {
    kernel: tf.GatherV2,
    name: 'GatherV2 [2,5,3] axis 1, 2-D ids',
    build: (g) => ({ xs: [g.uniform([2, 5, 3])], f: ([x]) => tf.gather(x!, i32([4, 0, 4, 2], [2, 2]), 1) }),
  },
  {
    kernel: tf.GatherV2,
    name: 'GatherV2 [2,4] axis -1',
    build: (g) => ({ xs: [g.uniform([2, 4])], f: ([x]) => tf.gather(x!, i32([3, 3, 1]), -1) }),
  },
  {
    kernel: tf.GatherV2,
    name: 'GatherV2 flat [12] (gatherRows pattern)',
    build: (g) => ({ xs: [g.uniform([12])], f: ([x]) => tf.gather(x!, i32([11, 0, 5, 5, 7])) }),
  },
  ...reduceRows(tf.Sum, tf.sum, (g, s) => g.uniform(s)),
  ...reduceRows(tf.Mean, tf.mean, (g, s) => g.uniform(s)),
  ...reduceRows(tf.Max, tf.max, (g, s) => g.distinct(s, 0.1)),
  unaryRow(tf.Log, tf.log, (g) => g.uniform(S, 0.3, 2)),
  unaryRow(tf.Log1p, tf.log1p, (g) => g.uniform(S, -0.6, 2)),
  unaryRow(tf.Sqrt, tf.sqrt, (g) => g.uniform(S, 0.3, 2)),
  unaryRow(tf.Rsqrt, tf.rsqrt, (g) => g.uniform(S, 0.3, 2)),
  unaryRow(tf.Square, tf.square, (g) => g.uniform(S, -2, 2)),
  unaryRow(tf.Relu, tf.relu, (g) => g.away(S)),
  unaryRow(tf.Abs, tf.abs, (g) => g.away(S)),
  unaryRow(tf.Softplus, tf.softplus, (g) => g.uniform(S, -3, 3)),
  unaryRow(tf.Reciprocal, tf.reciprocal, (g) => g.away(S, 0.4, 2)),
  unaryRow(tf.Erf, tf.erf, (g) => g.uniform(S, -1.5, 1.5)),
  unaryRow(tf.Exp, tf.exp, (g) => g.uniform(S, -1.5, 1.5)),
  unaryRow(tf.Sigmoid, tf.sigmoid, (g) => g.uniform(S, -3, 3)),
  unaryRow(tf.Tanh, tf.tanh, (g) => g.uniform(S, -2, 2)),
  unaryRow(tf.Neg, tf.neg, (g) => g.uniform(S)),
  unaryRow(tf.Identity, tf.clone, (g) => g.uniform(S), ' (tf.clone)'),
  unaryRow(tf.Cast, (x) => tf.cast(x, 'float32'), (g) => g.uniform(S), ' float32 -> float32'),
  unaryRow(tf.Reshape, (x) => tf.reshape(x, [3, 4]), (g) => g.uniform([2, 3, 2]), ' [2,3,2] -> [3,4]'),
  unaryRow(tf.ExpandDims, (x) => tf.expandDims(x, 1), (g) => g.uniform(S), ' axis 1'),
  unaryRow(tf.Transpose, (x) => tf.transpose(x), (g) => g.uniform([3, 4]), ' 2-D'),
  unaryRow(tf.Transpose, (x) => tf.transpose(x, [1, 2, 0]), (g) => g.uniform([2, 3, 4]), ' perm [1,2,0] (not its own inverse)'),
  unaryRow(tf.Transpose, (x) => tf.transpose(x, [0, 2, 1, 3]), (g) => g.uniform([2, 3, 2, 2]), ' perm [0,2,1,3] (heads split)'),
  unaryRow(tf.Softmax, tf.softmax, (g) => g.uniform([3, 5], -2, 2), ' [3,5]'),
  unaryRow(tf.Softmax, tf.softmax, (g) => g.uniform([2, 2, 4], -2, 2), ' [2,2,4]'),
  // No backend has a LogSoftmax kernel (tf.logSoftmax is a composite with its own customGrad), so the row
  // dispatches the kernel itself; the test registers a JS forward kernel (see beforeAll) so the tape records it.
  unaryRow(tf.LogSoftmax, (x) => tf.engine().runKernel(tf.LogSoftmax, { logits: x }, { axis: -1 }) as tf.Tensor, (g) => g.uniform([3, 5], -2, 2), ' [3,5] axis -1'),
  unaryRow(tf.LogSoftmax, (x) => tf.engine().runKernel(tf.LogSoftmax, { logits: x }, { axis: 2 }) as tf.Tensor, (g) => g.uniform([2, 2, 4], -2, 2), ' [2,2,4] axis 2'),
  {
    kernel: tf.Select,
    name: 'Select (tf.where) [2,3], bool condition constant',
    build: (g) => {
      const c = tf.tensor([1, 0, 0, 1, 1, 0], S, 'bool');
      return { xs: [g.uniform(S), g.uniform(S)], f: ([t, e]) => tf.where(c, t!, e!) };
    },
  },
  unaryRow(tf.Slice, (x) => tf.slice(x, [1, 2], [2, -1]), (g) => g.uniform([4, 5]), ' [4,5] begin [1,2] size [2,-1]'),
  unaryRow(tf.Slice, (x) => tf.slice(x, [0, 1, 1], [2, 2, 2]), (g) => g.uniform([2, 3, 4]), ' [2,3,4] begin [0,1,1] size [2,2,2]'),
  unaryRow(tf.Slice, (x) => tf.slice(x, [0, 1], [-1, -1]), (g) => g.uniform([3, 4]), ' padding column dropped (itemCrossEntropy pattern)'),
  {
    kernel: tf.Concat,
    name: 'Concat axis 1, widths 3,1,2',
    build: (g) => ({ xs: [g.uniform([2, 3]), g.uniform([2, 1]), g.uniform([2, 2])], f: (xs) => tf.concat(xs, 1) }),
  },
  { kernel: tf.Concat, name: 'Concat axis 0, rows 1,2', build: (g) => ({ xs: [g.uniform([1, 3]), g.uniform([2, 3])], f: (xs) => tf.concat(xs, 0) }) },
  { kernel: tf.Concat, name: 'Concat axis -1, rank 3', build: (g) => ({ xs: [g.uniform([2, 2, 1]), g.uniform([2, 2, 3])], f: (xs) => tf.concat(xs, -1) }) },
  ...[0, 1, 2].map(
    (axis): Row => ({ kernel: tf.Pack, name: `Pack (tf.stack) 3 x [2,3] axis ${axis}`, build: (g) => ({ xs: [g.uniform(S), g.uniform(S), g.uniform(S)], f: (xs) => tf.stack(xs, axis) }) }),
  ),
  { kernel: tf.Unpack, name: 'Unpack (tf.unstack) [3,2,2] axis 0', build: (g) => ({ xs: [g.uniform([3, 2, 2])], f: ([x]) => tf.unstack(x!, 0) }) },
  { kernel: tf.Unpack, name: 'Unpack (tf.unstack) [2,3] axis 1', build: (g) => ({ xs: [g.uniform(S)], f: ([x]) => tf.unstack(x!, 1) }) },
  {
    kernel: tf.ClipByValue,
    name: 'ClipByValue [-0.5, 0.5], values inside and outside, none on a bound',
    build: (g) => {
      const v = [-1.2, -0.8, -0.3, -0.1, 0.2, 0.35, 0.7, 1.1].map((x) => x + 0.05 * (g.rng.next() - 0.5));
      return { xs: [tf.tensor(v, [2, 4])], f: ([x]) => tf.clipByValue(x!, -0.5, 0.5) };
    },
  },
];

// --------------------------------------------------------------------------------------------------------
// Which gradients are registered.

const SOURCE = fileURLToPath(new URL('../../src/backend/gradients.ts', import.meta.url));

/** Kernel names the project registers in src/backend/gradients.ts, read from its source (kernelName: tf.X). */
function registeredInSource(): string[] {
  const src = readFileSync(SOURCE, 'utf8');
  const names = [...src.matchAll(/\bbinary\(tf\.(\w+)|kernelName: tf\.(\w+)/g)].map((m) => {
    const ident = (m[1] ?? m[2])!;
    const name = (tf as unknown as Record<string, unknown>)[ident];
    if (typeof name !== 'string') throw new Error(`gradients.ts registers tf.${ident}, which is not a kernel name`);
    return name;
  });
  return [...new Set(names)].sort();
}

/** tfjs's own gradient registry (a global Map kept by tfjs-core's getGlobal), when reachable. */
function registryKernels(): string[] | undefined {
  const globals = (globalThis as { _tfGlobals?: Map<string, unknown> })._tfGlobals;
  const reg = globals?.get('gradRegistry');
  return reg instanceof Map ? [...(reg.keys() as Iterable<string>)].sort() : undefined;
}

// Record which kernels' gradients the tape calls: wrap each registered gradFunc once.
const called = new Set<string>();
function instrument(kernels: string[]): void {
  for (const k of kernels) {
    const cfg = tf.getGradient(k) as (tf.GradConfig & { __wrapped?: boolean }) | undefined;
    if (!cfg || cfg.__wrapped) continue;
    const orig = cfg.gradFunc;
    cfg.gradFunc = ((...args: Parameters<typeof orig>) => {
      called.add(k);
      return orig(...args);
    }) as typeof orig;
    cfg.__wrapped = true;
  }
}

/**
 * JS forward kernel for LogSoftmax (last axis) on a backend that lacks one, so the tape can record the kernel
 * and call its registered gradient. Values: x - max - log(sum(exp(x - max))), computed in float64.
 */
function registerLogSoftmaxForward(backendName: string): void {
  if (tf.getKernel(tf.LogSoftmax, backendName)) return;
  tf.registerKernel({
    kernelName: tf.LogSoftmax,
    backendName,
    kernelFunc: ({ inputs, backend, attrs }) => {
      const x = (inputs as { logits: tf.TensorInfo }).logits;
      const axis = (attrs as unknown as { axis: number }).axis;
      if (axis !== -1 && axis !== x.shape.length - 1) throw new Error('test LogSoftmax kernel: last axis only');
      const b = backend as unknown as {
        readSync(id: object): Float32Array;
        makeTensorInfo?: (s: number[], d: string, v: Float32Array) => tf.TensorInfo;
        makeOutput?: (s: number[], d: string, off: undefined, v: Float32Array) => tf.TensorInfo;
      };
      const v = b.readSync(x.dataId);
      const C = x.shape[x.shape.length - 1]!;
      const out = new Float32Array(v.length);
      for (let r = 0; r < v.length / C; r++) {
        let m = -Infinity;
        for (let c = 0; c < C; c++) m = Math.max(m, v[r * C + c]!);
        let s = 0;
        for (let c = 0; c < C; c++) s += Math.exp(v[r * C + c]! - m);
        for (let c = 0; c < C; c++) out[r * C + c] = v[r * C + c]! - m - Math.log(s);
      }
      return b.makeTensorInfo ? b.makeTensorInfo(x.shape, 'float32', out) : b.makeOutput!(x.shape, 'float32', undefined, out);
    },
  });
}

// --------------------------------------------------------------------------------------------------------

const asArray = (y: tf.Tensor | tf.Tensor[]) => (Array.isArray(y) ? y : [y]);

/** Analytic VJP and its finite-difference estimate for one row on the active backend. */
function checkRow(row: Row) {
  const g = genFor(row.name);
  const { xs, f } = row.build(g);
  const outs = asArray(f(xs));
  const ws = outs.map((o) => Float32Array.from({ length: o.size }, () => 2 * g.rng.next() - 1));
  called.clear();
  let analytic: tf.Tensor[];
  if (outs.length === 1) {
    // The output gradient is w itself: nothing but the op under test is differentiated.
    analytic = tf.grads((...a: tf.Tensor[]) => f(a) as tf.Tensor)(xs, tf.tensor(ws[0]!, outs[0]!.shape, 'float32'));
  } else {
    analytic = tf.grads((...a: tf.Tensor[]) => tf.addN(asArray(f(a)).map((o, i) => tf.sum(tf.mul(o, tf.tensor(ws[i]!, o.shape, 'float32'))))))(xs);
  }
  const gradCalled = called.has(row.kernel);
  analytic.forEach((a, i) => expect(a.shape, `gradient shape of input ${i}`).toEqual(xs[i]!.shape));
  const numeric = numericGrads((a) => asArray(f(a)).reduce((s, o, i) => s + dot64(o, ws[i]!), 0), xs, row.h);
  return { gradCalled, ...compareGrads(analytic.map(toF64), numeric) };
}

const registered = registeredInSource();
// (No row for gather with batchDims > 0: nothing in the project uses it, and tfjs 4.22's gradient for it fails.)
const rowKernels = [...new Set(ROWS.map((r) => r.kernel))].sort();

describe('registered gradients: coverage', () => {
  it('every gradient the project registers has a finite-difference row', () => {
    expect(registered).toEqual([tf.BatchMatMul, tf.Maximum, tf.Minimum, tf.SquaredDifference].sort()); // the parse found the overrides
    expect(registered.filter((k) => !rowKernels.includes(k)), 'project gradients without a finite-difference row').toEqual([]);
  });

  it("tfjs's gradient registry is loaded and has a gradient for every kernel with a row", async () => {
    await initBackend('wasm');
    const reg = registryKernels();
    expect(reg, "tfjs's global gradient registry").toBeDefined();
    expect(reg!.length).toBeGreaterThanOrEqual(100); // tfjs-core 4.22 registers 101
    expect(rowKernels.filter((k) => !tf.getGradient(k)), 'kernels with a row but no gradient').toEqual([]);
    // The project's overrides are the ones registered (loaded after tfjs's).
    for (const k of registered) expect(String(tf.getGradient(k)!.gradFunc), k).toContain('unbroadcast');
  });
});

const worstByRow = new Map<string, number>();

for (const backend of ['wasm', 'cpu'] as const) {
  describe(`finite-difference check of the registered gradients on ${backend}`, () => {
    beforeAll(async () => {
      expect(await initBackend(backend)).toBe(backend);
      registerLogSoftmaxForward(backend);
      instrument(rowKernels);
    });

    it.each(ROWS.map((r) => [r.name, r] as const))('%s', (_name, row) => {
      const r = tf.tidy(() => checkRow(row));
      expect(r.gradCalled, `the tape did not call the registered ${row.kernel} gradient`).toBe(true);
      worstByRow.set(`${backend} ${row.name}`, Math.max(worstByRow.get(`${backend} ${row.name}`) ?? 0, r.worst));
      expect(r.worst, r.where).toBeLessThan(TOL);
    });
  });
}

describe('the checker has teeth', () => {
  it('flags a gradient that is 3% off, and one that is transposed', async () => {
    await initBackend('wasm');
    const x = genFor('teeth').uniform([3, 3]);
    const numeric = numericGrads(([a]) => dot64(tf.square(a!), new Float32Array(9).fill(1)), [x]);
    const right = toF64(tf.mul(x, 2));
    expect(compareGrads([right], numeric).worst).toBeLessThan(TOL);
    expect(compareGrads([toF64(tf.mul(x, 2.06))], numeric).worst).toBeGreaterThan(TOL);
    expect(compareGrads([toF64(tf.transpose(tf.mul(x, 2)))], numeric).worst).toBeGreaterThan(TOL);
  });
});

afterAll(() => {
  if (process.env.FD_REPORT) {
    const rows = [...worstByRow].sort((a, b) => b[1] - a[1]);
    console.log(rows.map(([n, w]) => `${w.toExponential(2)}  ${n}`).join('\n'));
  }
});
