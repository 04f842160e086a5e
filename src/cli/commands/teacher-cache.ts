import { initBackend } from '../../backend/index.js';
import { resolveCacheConfig, runCacheStage } from '../../cache/config.js';
import { cacheOptions } from '../../cache/options.js';
import type { PromptTokenCount } from '../../cache/count.js';
import { sliceUsers } from '../../cache/format.js';
import type { CacheSummary } from '../../cache/run.js';
import { expandSliceOut, shardFromEnv } from '../../cache/shard-env.js';
import { defineOptions } from '../../config/options.js';
import { env } from '../../env.js';
import { datasetFromFlags, datasetOptions } from '../../data/options.js';
import { RecdistillError } from '../../errors.js';
import { formatSummary } from '../format.js';
import { defineCommand } from '../command.js';

const options = defineOptions({
  ...datasetOptions,
  teacher: { type: 'string', help: 'teacher kind: llm (ONNX LM over textified histories) or seqrec (a trained student-format run)', default: 'llm', choices: ['llm', 'seqrec'] },
  studentRun: { type: 'string', help: 'seqrec teacher: the student:train run folder (--layers then names its blocks)' },
  // The cache stage's own flags (src/cache/config.ts): ablate spreads the same table.
  ...cacheOptions,
  out: { type: 'string', help: 'explicit cache directory (instead of <cache-root>/<dataset>/<teacher>/<key>); with --shard, {index} and {count} are replaced by the slice' },
  shard: { type: 'string', help: 'compute only slice i of N of the users ("i/N", 0-based), or "auto": i from JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID (Slurm array); join slices with teacher:merge' },
  countOnly: { type: 'boolean', help: 'llm teacher: count the prompt tokens pass 1 would encode (every user, or the --shard slice) with the model folder\'s tokenizer, the prompt and the budget, without loading or running the model; prints per-user and per-item figures and writes nothing', default: false },
  shardCount: { type: 'int', help: '--shard auto: the number of slices N (Kubernetes: the Job\'s completions; default RECDISTILL_SHARD_COUNT, or the Slurm array size)' },
});

export default defineCommand({
  description: 'run the teacher over every history; cache hidden states per prefix, item embeddings and soft labels',
  options,
  async run(o, ctx) {
    if (o.teacher === 'seqrec' && !o.studentRun) throw new RecdistillError('E_USAGE', '--teacher seqrec needs --student-run DIR (a student:train run folder).');
    const ds = await datasetFromFlags(o);
    ctx.log(`teacher:cache: dataset ${ds.name} (${ds.users.length} users, ${ds.items.length - 1} items, fingerprint ${ds.fingerprint.slice(0, 12)})`);
    const backend = await initBackend(o.backend);
    if (o.shardCount !== undefined && !o.shard) throw new RecdistillError('E_USAGE', '--shard-count goes with --shard auto (or i/N).');
    const assigned = o.shard ? shardFromEnv(o.shard, process.env, o.shardCount) : undefined;
    const slice = assigned ? { index: assigned.index, count: assigned.count } : undefined;
    if (slice) warnIfEmpty(slice, ds.users.length, o.usersPerShard, ctx.log);
    if (assigned && assigned.source !== 'explicit') ctx.log(`teacher:cache: --shard auto: slice ${assigned.index}/${assigned.count} (${assigned.source}: ${assigned.detail})`);
    if (o.countOnly) {
      if (o.teacher !== 'llm') throw new RecdistillError('E_USAGE', '--count-only counts an llm teacher\'s prompt tokens; a seqrec teacher reads item ids, not text.');
      const { countPromptTokens } = await import('../../cache/count.js');
      const offline = o.offline || env.offline;
      return await countPromptTokens(ds, { ...o, offline, truncate: o.truncate as 'windows' | 'recent', slice, log: ctx.log });
    }
    const config = resolveCacheConfig({ ...o, run: o.studentRun });
    return await runCacheStage(config, ds, {
      backend,
      log: ctx.log,
      out: o.out !== undefined ? expandSliceOut(o.out, slice) : undefined,
      slice,
      runtime: assigned ? { shard: { index: assigned.index, count: assigned.count, source: assigned.source } } : undefined,
    });
  },
  format(s: CacheSummary | PromptTokenCount) {
    if (isCount(s)) return formatCount(s);
    const { valid, test, ...rest } = s;
    const m = (x?: Record<string, number>) => (x ? `hr@10 ${x['hr@10']?.toFixed(4)}  ndcg@10 ${x['ndcg@10']?.toFixed(4)}  mrr ${x.mrr?.toFixed(4)}` : 'n/a');
    return `${formatSummary(rest)}\nteacher valid: ${m(valid)}\nteacher test:  ${m(test)}`;
  },
});

/** A slice of whole shards can be empty (more slices than shards): say so before the run reports 0 tokens/s. */
function warnIfEmpty(slice: { index: number; count: number }, users: number, perShard: number, log: (l: string) => void): void {
  const [a, b] = sliceUsers(users, perShard, slice);
  if (a < b) return;
  const shards = Math.ceil(users / perShard);
  log(`teacher:cache: warning: slice ${slice.index}/${slice.count} holds no users (${users} users in ${shards} shards of --users-per-shard ${perShard}); with --users-per-shard ${Math.max(1, Math.floor(users / slice.count))} or less every slice gets users.`);
}

function isCount(s: CacheSummary | PromptTokenCount): s is PromptTokenCount {
  return (s as PromptTokenCount).countOnly === true;
}

function formatCount(s: PromptTokenCount): string {
  const f = (x: number) => Math.round(x).toLocaleString('en-US');
  const u = s.tokensPerUser;
  return [
    `prompt tokens ${f(s.tokens)} over ${s.encodedUsers} users (${f(s.encodedItems)} encoded items, ${f(s.passes)} passes; tokenizer of ${f(s.tokenizerSize)} tokens${s.chatTemplate ? ', chat template' : ''})`,
    `per user: mean ${f(u.mean)}, median ${f(u.median)}, p90 ${f(u.p90)}, max ${f(u.max)}; ${s.passesPerUser.toFixed(2)} passes`,
    `per encoded item ${s.tokensPerEncodedItem.toFixed(1)}; item line ${s.lineTokens.toFixed(1)}; item text mean ${s.itemTextTokens.mean.toFixed(1)} (max ${s.itemTextTokens.max}); prompt head ${s.headTokens} (sent every pass), tail ${s.tailTokens} (budgeted, not sent)`,
    `as whole strings: ${f(s.wholeTextTokens)} tokens (${((s.wholeTextTokens / Math.max(1, s.tokens) - 1) * 100).toFixed(1)}%)`,
  ].join('\n');
}
