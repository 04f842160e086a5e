import { RecdistillError } from '../errors.js';
import { parseSlice } from './format.js';

/**
 * `teacher:cache --shard auto`: which slice this process computes, from the environment of the engine that
 * started it. Pure (env passed in), so every case is unit-tested without a cluster.
 *
 *   explicit     --shard i/N
 *   kubernetes   Indexed Job: JOB_COMPLETION_INDEX (0-based); the count is not in a pod's environment, so it
 *                comes from --shard-count N or RECDISTILL_SHARD_COUNT (= the Job's completions)
 *   slurm        job array: SLURM_ARRAY_TASK_ID; count SLURM_ARRAY_TASK_COUNT, else derived from
 *                SLURM_ARRAY_TASK_MIN / _MAX / _STEP; index = (ID - MIN) / STEP, so --array=1-4 works too
 *
 * A count given by the caller (--shard-count) must agree with the engine's own when both exist: an edited
 * `--array` without an edited N would otherwise silently compute the wrong slices.
 */
export type ShardSource = 'explicit' | 'kubernetes' | 'slurm';

export interface ShardAssignment {
  index: number;
  count: number;
  source: ShardSource;
  /** Human-readable origin, e.g. "JOB_COMPLETION_INDEX=2, RECDISTILL_SHARD_COUNT=3". */
  detail: string;
}

export type Env = Record<string, string | undefined>;

const usage = (msg: string): never => {
  throw new RecdistillError('E_USAGE', msg);
};

/** A non-negative integer written in decimal digits (no sign, no fraction, no exponent). */
function intOf(name: string, raw: string, min: number): number {
  const s = raw.trim();
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(n) || n < min) usage(`--shard auto: ${name}=${JSON.stringify(raw)} is not an integer >= ${min}.`);
  return n;
}

const isSet = (v: string | undefined): v is string => v !== undefined && v.trim() !== '';

function checkCount(index: number, count: number, detail: string): void {
  if (index >= count) usage(`--shard auto: shard index ${index} is not below the shard count ${count} (${detail}).`);
}

/**
 * Resolve `--shard <spec>` (`auto` or `i/N`) with `--shard-count` (`count`, optional) against `env`.
 * Throws E_USAGE with the variables it read when nothing is set or the values disagree.
 */
export function shardFromEnv(spec: string, env: Env, count?: number): ShardAssignment {
  if (count !== undefined && (!Number.isSafeInteger(count) || count < 1)) usage(`--shard-count must be an integer >= 1, got ${count}.`);
  if (spec.trim() !== 'auto') {
    const s = parseSlice(spec);
    if (count !== undefined && count !== s.count) usage(`--shard ${spec} says ${s.count} shards but --shard-count says ${count}.`);
    return { ...s, source: 'explicit', detail: `--shard ${s.index}/${s.count}` };
  }
  const k8s = env.JOB_COMPLETION_INDEX;
  const slurm = env.SLURM_ARRAY_TASK_ID;
  if (isSet(k8s) && isSet(slurm)) {
    usage(`--shard auto: both JOB_COMPLETION_INDEX (${k8s}, Kubernetes Indexed Job) and SLURM_ARRAY_TASK_ID (${slurm}, Slurm job array) are set; unset one, or pass --shard i/N.`);
  }
  if (isSet(k8s)) {
    const index = intOf('JOB_COMPLETION_INDEX', k8s, 0);
    const envCount = isSet(env.RECDISTILL_SHARD_COUNT) ? intOf('RECDISTILL_SHARD_COUNT', env.RECDISTILL_SHARD_COUNT, 1) : undefined;
    if (count !== undefined && envCount !== undefined && count !== envCount) {
      usage(`--shard auto: --shard-count ${count} and RECDISTILL_SHARD_COUNT=${envCount} disagree.`);
    }
    const n = count ?? envCount;
    if (n === undefined) {
      usage(`--shard auto: JOB_COMPLETION_INDEX=${index} (Kubernetes Indexed Job) gives the index but not the count: pass --shard-count N or set RECDISTILL_SHARD_COUNT=N (N = the Job's spec.completions).`);
    }
    const detail = `JOB_COMPLETION_INDEX=${index}, ${count !== undefined ? `--shard-count ${count}` : `RECDISTILL_SHARD_COUNT=${n}`}`;
    checkCount(index, n!, detail);
    return { index, count: n!, source: 'kubernetes', detail };
  }
  if (isSet(slurm)) {
    const id = intOf('SLURM_ARRAY_TASK_ID', slurm, 0);
    const min = isSet(env.SLURM_ARRAY_TASK_MIN) ? intOf('SLURM_ARRAY_TASK_MIN', env.SLURM_ARRAY_TASK_MIN, 0) : 0;
    const step = isSet(env.SLURM_ARRAY_TASK_STEP) ? intOf('SLURM_ARRAY_TASK_STEP', env.SLURM_ARRAY_TASK_STEP, 1) : 1;
    const max = isSet(env.SLURM_ARRAY_TASK_MAX) ? intOf('SLURM_ARRAY_TASK_MAX', env.SLURM_ARRAY_TASK_MAX, 0) : undefined;
    const taskCount = isSet(env.SLURM_ARRAY_TASK_COUNT) ? intOf('SLURM_ARRAY_TASK_COUNT', env.SLURM_ARRAY_TASK_COUNT, 1) : undefined;
    if (id < min) usage(`--shard auto: SLURM_ARRAY_TASK_ID=${id} is below SLURM_ARRAY_TASK_MIN=${min}.`);
    if ((id - min) % step !== 0) usage(`--shard auto: SLURM_ARRAY_TASK_ID=${id} is not on the array's grid (MIN ${min}, STEP ${step}).`);
    if (max !== undefined && max < min) usage(`--shard auto: SLURM_ARRAY_TASK_MAX=${max} is below SLURM_ARRAY_TASK_MIN=${min}.`);
    const index = (id - min) / step;
    const derived = max !== undefined ? Math.floor((max - min) / step) + 1 : undefined;
    // A list array (--array=1,3,7) has COUNT 3 but MIN..MAX spanning 7: the slices would not be contiguous.
    if (taskCount !== undefined && derived !== undefined && taskCount !== derived) {
      usage(`--shard auto: SLURM_ARRAY_TASK_COUNT=${taskCount} but MIN ${min}..MAX ${max} (step ${step}) spans ${derived} tasks: use a contiguous range (#SBATCH --array=0-${taskCount - 1}), or pass --shard i/N.`);
    }
    const envCount = taskCount ?? derived;
    if (count !== undefined && envCount !== undefined && count !== envCount) {
      usage(`--shard auto: --shard-count ${count} but the Slurm array has ${envCount} tasks (SLURM_ARRAY_TASK_COUNT / MIN..MAX); make #SBATCH --array=0-${count - 1} match.`);
    }
    const n = count ?? envCount;
    if (n === undefined) usage(`--shard auto: SLURM_ARRAY_TASK_ID=${id} is set but not SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX: pass --shard-count N.`);
    const detail = `SLURM_ARRAY_TASK_ID=${id}${min ? ` - MIN ${min}` : ''}${step > 1 ? ` / STEP ${step}` : ''}, ${count !== undefined ? `--shard-count ${count}` : taskCount !== undefined ? `SLURM_ARRAY_TASK_COUNT=${taskCount}` : `MIN ${min}..MAX ${max}`}`;
    checkCount(index, n!, detail);
    return { index, count: n!, source: 'slurm', detail };
  }
  return usage(
    '--shard auto: no shard index in the environment: expected JOB_COMPLETION_INDEX (Kubernetes Indexed Job, with --shard-count N or RECDISTILL_SHARD_COUNT) or SLURM_ARRAY_TASK_ID (Slurm job array, sbatch --array=0-(N-1)); outside those, pass --shard i/N.',
  );
}

/** `--out` of a sliced run may name the slice: `{index}` and `{count}` are replaced (e.g. /cache/ml/slice-{index}-of-{count}). */
export function expandSliceOut(out: string, slice: { index: number; count: number } | undefined): string {
  if (!/\{(index|count)\}/.test(out)) return out;
  if (!slice) usage(`--out ${out} has {index}/{count} placeholders, which only a --shard run fills in.`);
  return out.replaceAll('{index}', String(slice!.index)).replaceAll('{count}', String(slice!.count));
}
