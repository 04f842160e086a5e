import { BACKEND_CHOICES, type BackendName } from '../../backend/index.js';
import { comparisonRows, textTable, type BenchReport } from '../../bench/report.js';
import { runBench } from '../../bench/run.js';
import { defineOptions } from '../../config/options.js';
import { datasetOptions, type DatasetFlags } from '../../data/options.js';
import { defineCommand } from '../command.js';

/** bench's summary: the headline figures and where the report went. */
export type BenchSummary = Pick<BenchReport, 'teacher' | 'student' | 'speedup'> & { dataset: string; report: BenchReport['files'] };

const { dataset: _dataset, ...datasetRest } = datasetOptions;

const options = defineOptions({
  student: { type: 'string', help: 'student:train run folder (model.safetensors, config.json, metrics.json)', required: true },
  cache: { type: 'string', help: 'teacher cache folder (manifest.json, head.safetensors): its teacher is benchmarked', required: true },
  out: { type: 'string', help: 'report folder (default: <student>/bench)' },
  requests: { type: 'int', help: 'single requests timed for the student (test users spread evenly)', default: 500 },
  teacherRequests: { type: 'int', help: 'single requests timed for the teacher (an evenly spaced subset of the same requests)', default: 100 },
  warmup: { type: 'int', help: 'untimed warm-up requests before timing (teacher: at most 5)', default: 50 },
  batch: { type: 'int', help: 'requests answered together for the throughput figure', default: 64 },
  batchRounds: { type: 'int', help: 'student: batches timed for the throughput figure (teacher: one batch)', default: 8 },
  k: { type: 'int', help: 'items per answer (top-k)', default: 10 },
  backend: { type: 'string', help: 'tfjs backend of the student (auto = node > wasm > cpu)', default: 'auto', choices: BACKEND_CHOICES },
  teacherModel: { type: 'string', help: 'teacher model folder (seqrec: run folder) when it moved since teacher:cache (default: the manifest\'s path)' },
  teacherMicroBatch: { type: 'int', help: 'LLM teacher: at most this many requests padded into one ONNX run in the throughput test', default: 8 },
  threads: { type: 'int', help: 'onnxruntime intra-op threads of the LLM teacher (0 = all cores)', default: 0 },
  device: { type: 'string', help: 'LLM teacher: onnxruntime execution provider (cpu, cuda, tensorrt, dml, coreml, webgpu, qnn); default RECDISTILL_DEVICE, else cpu' },
  runtime: { type: 'string', help: 'student runtime: tfjs, onnx (the exported graph on onnxruntime-node) or both (the faster is the headline figure)', default: 'both', choices: ['both', 'onnx', 'tfjs'] },
  dataset: { type: 'string', help: 'dataset (default: the one the student run was trained on, from its config.json; then the dataset flags below apply)' },
  ...datasetRest,
});

export default defineCommand({
  description: 'teacher vs student on the same test requests: latency p50/p95/p99, throughput, params, bytes, peak RSS, NDCG/HR@10; writes report.json/.md and an SVG chart',
  options,
  async run(o, ctx) {
    const { student, cache, out, requests, teacherRequests, warmup, batch, batchRounds, k, backend, threads, teacherMicroBatch, teacherModel, runtime, dataset, device, ...rest } = o;
    const r = await runBench({
      student,
      cache,
      out,
      requests,
      teacherRequests,
      warmup,
      batch,
      batchRounds,
      k,
      backend: backend as BackendName,
      threads,
      teacherMicroBatch,
      teacherModel,
      device,
      runtime: runtime as 'both' | 'onnx' | 'tfjs',
      dataset: dataset ? ({ ...rest, dataset } as Partial<DatasetFlags> & Pick<DatasetFlags, 'dataset'>) : undefined,
      log: ctx.log,
    });
    return { teacher: r.teacher, student: r.student, speedup: r.speedup, dataset: r.dataset.name, report: r.files };
  },
  format(r: BenchSummary) {
    const { header, rows } = comparisonRows(r);
    return [textTable(header, rows), '', `speed-up (teacher p50 / student p50): ${r.speedup.toFixed(1)}x`, `report: ${r.report.md}`, `        ${r.report.json}`, `chart:  ${r.report.svg}`].join('\n');
  },
});
