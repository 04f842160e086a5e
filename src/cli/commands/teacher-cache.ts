import { BACKEND_CHOICES, initBackend } from '../../backend/index.js';
import { createRequire } from 'node:module';
import { runTeacherCache, type CacheSummary } from '../../cache/run.js';
import { expandSliceOut, shardFromEnv } from '../../cache/shard-env.js';
import { defineOptions } from '../../config/options.js';
import { datasetFromFlags, datasetOptions } from '../../data/options.js';
import { RecdistillError } from '../../errors.js';
import { HEAD_DEFAULTS } from '../../teacher/head.js';
import { llmTeacherOptions } from '../../teacher/llm/options.js';
import { formatSummary } from '../format.js';
import { defineCommand } from '../command.js';

const options = defineOptions({
  ...datasetOptions,
  teacher: { type: 'string', help: 'teacher kind: llm (ONNX LM over textified histories) or seqrec (a trained student-format run)', default: 'llm', choices: ['llm', 'seqrec'] },
  studentRun: { type: 'string', help: 'seqrec teacher: the student:train run folder (--layers then names its blocks)' },
  ...llmTeacherOptions,
  cacheRoot: { type: 'string', help: 'caches go to <root>/<dataset>/<teacher>/<key>/', default: 'teacher-cache' },
  out: { type: 'string', help: 'explicit cache directory (instead of <cache-root>/<dataset>/<teacher>/<key>); with --shard, {index} and {count} are replaced by the slice' },
  shard: { type: 'string', help: 'compute only slice i of N of the users ("i/N", 0-based), or "auto": i from JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID (Slurm array); join slices with teacher:merge' },
  shardCount: { type: 'int', help: '--shard auto: the number of slices N (Kubernetes: the Job\'s completions; default RECDISTILL_SHARD_COUNT, or the Slurm array size)' },
  usersPerShard: { type: 'int', help: 'users per shard file (contiguous user ranges)', default: 128 },
  usersInFlight: { type: 'int', help: 'users encoded concurrently (p-limit)', default: 4 },
  hiddenDtype: { type: 'string', help: 'stored precision of hidden states', default: 'f32', choices: ['f32', 'f16'] },
  topK: { type: 'int', help: 'soft labels: top-K items kept per position', default: 50 },
  temperature: { type: 'number', help: 'soft labels: softmax temperature T', default: 1 },
  head: { type: 'string', help: 'soft-label head (llm): linear (fitted on cached features) or zeroshot (h . item embedding)', default: 'linear', choices: ['linear', 'zeroshot'] },
  headLayer: { type: 'int', help: 'index into the tapped layers the head reads (-1 = last)', default: -1 },
  headEpochs: { type: 'int', help: 'linear head: max epochs (early stop on validation NDCG@10)', default: HEAD_DEFAULTS.epochs },
  headRowsPerEpoch: { type: 'int', help: 'linear head: training positions sampled per epoch (0 = all)', default: HEAD_DEFAULTS.rowsPerEpoch },
  headLr: { type: 'number', help: 'linear head: Adam learning rate', default: HEAD_DEFAULTS.lr },
  headBatch: { type: 'int', help: 'linear head: batch size', default: HEAD_DEFAULTS.batchSize },
  headPatience: { type: 'int', help: 'linear head: epochs without a better validation NDCG@10 before stopping', default: HEAD_DEFAULTS.patience },
  seed: { type: 'int', help: 'seed of the head training (shuffles)', default: 42 },
  backend: { type: 'string', help: 'tfjs backend for the head / seqrec teacher', default: 'auto', choices: BACKEND_CHOICES },
  overheadSample: { type: 'int', help: 'llm teacher: users re-run as a plain session.run loop to measure pipeline overhead (0 = skip)', default: 32 },
});

export default defineCommand({
  description: 'run the teacher over every history; cache hidden states per prefix, item embeddings and soft labels',
  options,
  async run(o, ctx) {
    const ds = await datasetFromFlags(o);
    ctx.log(`teacher:cache: dataset ${ds.name} (${ds.users.length} users, ${ds.items.length - 1} items, fingerprint ${ds.fingerprint.slice(0, 12)})`);
    const backend = await initBackend(o.backend);
    if (o.shardCount !== undefined && !o.shard) throw new RecdistillError('E_USAGE', '--shard-count goes with --shard auto (or i/N).');
    const assigned = o.shard ? shardFromEnv(o.shard, process.env, o.shardCount) : undefined;
    const slice = assigned ? { index: assigned.index, count: assigned.count } : undefined;
    if (assigned && assigned.source !== 'explicit') ctx.log(`teacher:cache: --shard auto: slice ${assigned.index}/${assigned.count} (${assigned.source}: ${assigned.detail})`);
    const out = o.out !== undefined ? expandSliceOut(o.out, slice) : undefined;
    const common = {
      root: o.cacheRoot,
      out,
      usersPerShard: o.usersPerShard,
      hiddenDtype: o.hiddenDtype === 'f16' ? ('F16' as const) : ('F32' as const),
      concurrency: o.usersInFlight,
      slice,
      k: o.topK,
      temperature: o.temperature,
      backend,
      log: ctx.log,
    };
    const head = { layer: o.headLayer, epochs: o.headEpochs, lr: o.headLr, batchSize: o.headBatch, patience: o.headPatience, seed: o.seed, rowsPerEpoch: o.headRowsPerEpoch };
    if (o.teacher === 'seqrec') {
      if (!o.studentRun) throw new RecdistillError('E_USAGE', '--teacher seqrec needs --student-run DIR (a student:train run folder).');
      const { loadSeqrecTeacher } = await import('../../teacher/seqrec.js');
      const t = await loadSeqrecTeacher(o.studentRun, ds, { layers: o.layers });
      try {
        return await runTeacherCache(t.encoder, ds, { ...common, head: { ...head, kind: 'teacher', epochs: 0 }, teacherOptions: t.options, teacherScores: t.scores });
      } finally {
        await t.encoder.dispose();
      }
    }
    const llm = await import('../../teacher/llm/index.js');
    const lo = llm.llmOptionsFromFlags(o);
    const encoder = await llm.loadLlmTeacher({ ...lo, revision: o.revision, log: ctx.log }, ds);
    try {
      // Options that change the states but are not in TeacherInfo go into the cache key.
      const teacherOptions = { maxPromptTokens: lo.maxPromptTokens, truncate: lo.truncate, tapPattern: lo.tapPattern ?? null, batch: lo.batch };
      const summary = await runTeacherCache(encoder, ds, {
        ...common,
        head: { ...head, kind: o.head === 'zeroshot' ? 'zeroshot' : 'linear', epochs: o.head === 'zeroshot' ? 0 : o.headEpochs },
        teacherOptions,
        plainLoop: (h) => encoder.measurePlainLoop(h),
        overheadSample: o.overheadSample,
        runtime: { device: encoder.device, executionProviders: encoder.executionProviders, ...(assigned ? { shard: { index: assigned.index, count: assigned.count, source: assigned.source } } : {}), onnxruntime: onnxruntimeVersion() },
      });
      return { ...summary, device: encoder.device };
    } finally {
      await encoder.dispose();
    }
  },
  format(s) {
    const { valid, test, ...rest } = s as CacheSummary;
    const m = (x?: Record<string, number>) => (x ? `hr@10 ${x['hr@10']?.toFixed(4)}  ndcg@10 ${x['ndcg@10']?.toFixed(4)}  mrr ${x.mrr?.toFixed(4)}` : 'n/a');
    return `${formatSummary(rest)}\nteacher valid: ${m(valid)}\nteacher test:  ${m(test)}`;
  },
});

/** The installed onnxruntime-node version, for the manifest's `runtime` provenance. */
function onnxruntimeVersion(): string {
  try {
    return (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
