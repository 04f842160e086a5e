/**
 * Micro-benchmark of the attention products on the wasm backend (findings; nothing here is
 * registered by the library; the view kernel now is, from src/backend/batch-matmul.ts).
 *
 * tfjs-backend-wasm 4.22 sends a matmul to XNNPACK only when it is 2-D in effect (batch 1) and has no transpose
 * flag (batch_mat_mul_impl.cc); every batched product — attention's [B, L, D] x [B, D, L] and [B, L, L] x
 * [B, L, D], forward and backward — takes `slow_batch_matmul`, a scalar triple loop (~1-2 GFLOP/s), single
 * threaded. Compared here, for the four product shapes of attention forward + backward:
 * - stock:   tf.matMul on the batched tensors (today).
 * - perseq:  tf.unstack, B 2-D tf.matMuls (explicit transposes), tf.stack: the "per-sequence 2-D matmuls" idea
 *            with public ops.
 * - view:    ONE kernel call that runs B 2-D XNNPACK matmuls on views into the wasm heap: each batch item of a,
 *            b and the output is registered as a temporary tensor id pointing inside the batched buffer
 *            (register_tensor(id, size, offset)), then the wasm BatchMatMul is called with shapes [1, M, K] x
 *            [1, K, N] (its XNNPACK path), then the ids are released (which also frees the XNNPACK operator
 *            cached on them). Transpose flags become one explicit Transpose of the operand first.
 * and, with `--step`, ms/step of the default student (batch 32, maxLen 200, d 64, 1682 items) with the stock
 * BatchMatMul kernel and with `view` registered in its place, alternating A/B in one process.
 *
 *   RECDISTILL_THREADS=1 npx tsx tools/attention-bench.ts [--reps 5] [--step] [--rounds 3] [--num-items 1682]
 */
import * as tf from '@tensorflow/tfjs-core';
import { loadavg } from 'node:os';
import { pathToFileURL } from 'node:url';
import { unregisterViewBatchMatMul, viewBatchMatMul } from '../src/backend/batch-matmul.js';
import { initBackend, wasmThreads } from '../src/backend/index.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}

const median = (xs: number[]) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  unregisterViewBatchMatMul(); // 'stock' below means the package's kernel
  await initBackend('wasm');
  const reps = Number(arg('reps', '5'));
  const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');
  console.log(`attention-bench: wasm, ${wasmThreads()} thread(s), load average ${load()}`);
  const B = 32;
  const L = 200;
  const D = 64;
  const q = tf.randomUniform([B, L, D], -1, 1, 'float32', 1) as tf.Tensor3D;
  const k = tf.randomUniform([B, L, D], -1, 1, 'float32', 2) as tf.Tensor3D;
  const s = tf.randomUniform([B, L, L], 0, 1, 'float32', 3) as tf.Tensor3D;
  const view = (x: tf.Tensor, y: tf.Tensor, ta: boolean, tb: boolean) =>
    tf.engine().makeTensorFromTensorInfo(viewBatchMatMul({ inputs: { a: x, b: y }, backend: tf.backend(), attrs: { transposeA: ta, transposeB: tb } }));
  const perseq = (x: tf.Tensor3D, y: tf.Tensor3D, ta: boolean, tb: boolean) => {
    const xs = tf.unstack(x) as tf.Tensor2D[];
    const ys = tf.unstack(y) as tf.Tensor2D[];
    return tf.stack(xs.map((xi, i) => tf.matMul(ta ? tf.transpose(xi) : xi, tb ? tf.transpose(ys[i]!) : ys[i]!)));
  };
  // The four product shapes of attention forward and backward (S = Q K^T and C = S V, then their gradients).
  const cases: Array<[string, tf.Tensor3D, tf.Tensor3D, boolean, boolean]> = [
    ['Q K^T   [B,L,D] x [B,L,D]^T', q, k, false, true],
    ['S V     [B,L,L] x [B,L,D]  ', s, k, false, false],
    ['S^T dC  [B,L,L]^T x [B,L,D]', s, k, true, false],
    ['Q^T dS  [B,L,D]^T x [B,L,L]', q, s, true, false],
  ];
  const impls: Record<string, (x: tf.Tensor3D, y: tf.Tensor3D, ta: boolean, tb: boolean) => tf.Tensor> = {
    stock: (x, y, ta, tb) => tf.matMul(x, y, ta, tb),
    perseq,
    view,
  };
  for (const [name, x, y, ta, tb] of cases) {
    const flops = 2 * B * (ta ? x.shape[2] : x.shape[1]) * (ta ? x.shape[1] : x.shape[2]) * (tb ? y.shape[1] : y.shape[2]);
    const ref = tf.matMul(x, y, ta, tb);
    const cols: string[] = [];
    for (const [m, f] of Object.entries(impls)) {
      tf.tidy(() => void f(x, y, ta, tb).dataSync());
      const times: number[] = [];
      for (let r = 0; r < reps; r++) {
        const t0 = performance.now();
        tf.tidy(() => void f(x, y, ta, tb).dataSync());
        times.push(performance.now() - t0);
      }
      const ms = median(times);
      const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(f(x, y, ta, tb), ref))).dataSync()[0]!);
      cols.push(`${m} ${ms.toFixed(1).padStart(6)} ms ${(flops / ms / 1e6).toFixed(1).padStart(5)} GFLOP/s (max|d| ${diff.toExponential(1)})`);
    }
    ref.dispose();
    console.log(`${name} | ${cols.join(' | ')}`);
  }
  if (process.argv.includes('--step')) await stepBench(Number(arg('rounds', '3')), Number(arg('num-items', '1682')));
  console.log(`load average after ${load()}`);
}

/** ms/step of the default student, stock BatchMatMul vs viewBatchMatMul registered in its place, alternating. */
async function stepBench(rounds: number, numItems: number): Promise<void> {
  const { benchStudent } = await import('../src/student/training/bench.js');
  unregisterViewBatchMatMul(); // the library registers the view kernel at load; A/B needs the stock one
  const stock = tf.getKernel(tf.BatchMatMul, 'wasm')!;
  const use = (impl: 'stock' | 'view') => {
    tf.unregisterKernel(tf.BatchMatMul, 'wasm');
    tf.registerKernel({ kernelName: tf.BatchMatMul, backendName: 'wasm', kernelFunc: impl === 'stock' ? stock.kernelFunc : (viewBatchMatMul as tf.KernelFunc) });
  };
  const cfg = { numItems, maxLen: 200, dims: 64, blocks: 2, heads: 1, ffnDims: 64, dropout: 0.2, attnDropout: 0, batchSize: 32, steps: 3, requests: 20 };
  const res: Record<string, number[]> = { stock: [], view: [] };
  const serve: Record<string, number[]> = { stock: [], view: [] };
  for (let r = 0; r < rounds; r++) {
    for (const impl of (r % 2 ? ['view', 'stock'] : ['stock', 'view']) as Array<'stock' | 'view'>) {
      use(impl);
      const out = benchStudent(cfg);
      res[impl]!.push(out.msPerStep);
      serve[impl]!.push(out.serveMsMedian);
      console.log(`step round ${r + 1} ${impl}: ${out.msPerStep.toFixed(0)} ms/step, serve ${out.serveMsMedian.toFixed(2)} ms`);
    }
  }
  use('stock');
  const s = median(res.stock!);
  const v = median(res.view!);
  console.log(`step (${numItems} items, ${wasmThreads()} thread(s)): stock ${s.toFixed(0)} ms/step, view ${v.toFixed(0)} ms/step (${(v / s).toFixed(2)}x); serve stock ${median(serve.stock!).toFixed(2)} ms, view ${median(serve.view!).toFixed(2)} ms`);
}

// Run only as a script (importing the module for viewBatchMatMul must not start the benchmark).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
