import { describe, expect, it } from 'vitest';
import { expandSliceOut, shardFromEnv } from '../../src/cache/shard-env.js';
import { executionProvidersFor, type OrtBuild } from '../../src/teacher/llm/index.js';

const fail = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected an error');
};

describe('shardFromEnv', () => {
  it('explicit i/N; --shard-count must agree', () => {
    expect(shardFromEnv('2/5', {})).toMatchObject({ index: 2, count: 5, source: 'explicit' });
    expect(shardFromEnv('0/1', {}, 1)).toMatchObject({ index: 0, count: 1 });
    expect(fail(() => shardFromEnv('1/3', {}, 4))).toMatch(/says 3 shards but --shard-count says 4/);
    expect(fail(() => shardFromEnv('3/3', {}))).toMatch(/0 <= i < N/);
    expect(fail(() => shardFromEnv('1.5/3', {}))).toMatch(/0 <= i < N/);
  });

  it('Kubernetes Indexed Job: JOB_COMPLETION_INDEX with --shard-count or RECDISTILL_SHARD_COUNT', () => {
    expect(shardFromEnv('auto', { JOB_COMPLETION_INDEX: '2' }, 3)).toMatchObject({ index: 2, count: 3, source: 'kubernetes' });
    expect(shardFromEnv('auto', { JOB_COMPLETION_INDEX: '0', RECDISTILL_SHARD_COUNT: '4' })).toMatchObject({ index: 0, count: 4 });
    expect(shardFromEnv('auto', { JOB_COMPLETION_INDEX: '1', RECDISTILL_SHARD_COUNT: '4' }, 4).detail).toBe('JOB_COMPLETION_INDEX=1, --shard-count 4');
    expect(fail(() => shardFromEnv('auto', { JOB_COMPLETION_INDEX: '1' }))).toMatch(/gives the index but not the count: pass --shard-count N or set RECDISTILL_SHARD_COUNT/);
    expect(fail(() => shardFromEnv('auto', { JOB_COMPLETION_INDEX: '3', RECDISTILL_SHARD_COUNT: '3' }))).toMatch(/index 3 is not below the shard count 3/);
    expect(fail(() => shardFromEnv('auto', { JOB_COMPLETION_INDEX: '1', RECDISTILL_SHARD_COUNT: '3' }, 4))).toMatch(/--shard-count 4 and RECDISTILL_SHARD_COUNT=3 disagree/);
    for (const bad of ['-1', '1.0', 'x', '1e2', ' 2a']) expect(fail(() => shardFromEnv('auto', { JOB_COMPLETION_INDEX: bad }, 3))).toMatch(/JOB_COMPLETION_INDEX=.* is not an integer >= 0/);
    for (const bad of ['0', '2.5', 'three']) expect(fail(() => shardFromEnv('auto', { JOB_COMPLETION_INDEX: '0', RECDISTILL_SHARD_COUNT: bad }))).toMatch(/RECDISTILL_SHARD_COUNT=.* is not an integer >= 1/);
    expect(fail(() => shardFromEnv('auto', { JOB_COMPLETION_INDEX: '0' }, 0))).toMatch(/--shard-count must be an integer >= 1/);
  });

  it('Slurm job array: TASK_ID with TASK_COUNT, or MIN/MAX (index relative to MIN, STEP honoured)', () => {
    expect(shardFromEnv('auto', { SLURM_ARRAY_TASK_ID: '2', SLURM_ARRAY_TASK_COUNT: '3' })).toMatchObject({ index: 2, count: 3, source: 'slurm' });
    expect(shardFromEnv('auto', { SLURM_ARRAY_TASK_ID: '5', SLURM_ARRAY_TASK_MIN: '4', SLURM_ARRAY_TASK_MAX: '7' })).toMatchObject({ index: 1, count: 4 });
    expect(shardFromEnv('auto', { SLURM_ARRAY_TASK_ID: '4', SLURM_ARRAY_TASK_MIN: '0', SLURM_ARRAY_TASK_MAX: '6', SLURM_ARRAY_TASK_STEP: '2', SLURM_ARRAY_TASK_COUNT: '4' })).toMatchObject({ index: 2, count: 4 });
    expect(shardFromEnv('auto', { SLURM_ARRAY_TASK_ID: '1', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_MAX: '3', SLURM_ARRAY_TASK_COUNT: '3' }, 3)).toMatchObject({ index: 0, count: 3 });
    // --shard-count alone (no count in the environment) is enough.
    expect(shardFromEnv('auto', { SLURM_ARRAY_TASK_ID: '1' }, 2)).toMatchObject({ index: 1, count: 2 });
    expect(fail(() => shardFromEnv('auto', { SLURM_ARRAY_TASK_ID: '1' }))).toMatch(/not SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX: pass --shard-count N/);
    expect(fail(() => shardFromEnv('auto', { SLURM_ARRAY_TASK_ID: '3', SLURM_ARRAY_TASK_COUNT: '4' }, 3))).toMatch(/--shard-count 3 but the Slurm array has 4 tasks/);
    expect(fail(() => shardFromEnv('auto', { SLURM_ARRAY_TASK_ID: '7', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_MAX: '7', SLURM_ARRAY_TASK_COUNT: '3' }))).toMatch(/use a contiguous range/);
    expect(fail(() => shardFromEnv('auto', { SLURM_ARRAY_TASK_ID: '0', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_MAX: '3' }))).toMatch(/below SLURM_ARRAY_TASK_MIN=1/);
    expect(fail(() => shardFromEnv('auto', { SLURM_ARRAY_TASK_ID: '3', SLURM_ARRAY_TASK_COUNT: '3' }))).toMatch(/index 3 is not below the shard count 3/);
    expect(fail(() => shardFromEnv('auto', { SLURM_ARRAY_TASK_ID: '1.5', SLURM_ARRAY_TASK_COUNT: '3' }))).toMatch(/SLURM_ARRAY_TASK_ID="1.5" is not an integer/);
  });

  it('nothing set, or both engines at once: a clear error', () => {
    expect(fail(() => shardFromEnv('auto', {}))).toMatch(/no shard index in the environment: expected JOB_COMPLETION_INDEX .* or SLURM_ARRAY_TASK_ID/);
    expect(fail(() => shardFromEnv('auto', { JOB_COMPLETION_INDEX: '', SLURM_ARRAY_TASK_ID: ' ' }))).toMatch(/no shard index/);
    expect(fail(() => shardFromEnv('auto', { JOB_COMPLETION_INDEX: '0', SLURM_ARRAY_TASK_ID: '0' }, 2))).toMatch(/both JOB_COMPLETION_INDEX .* and SLURM_ARRAY_TASK_ID/);
  });

  it('--out placeholders', () => {
    expect(expandSliceOut('/cache/x/slice-{index}-of-{count}', { index: 1, count: 3 })).toBe('/cache/x/slice-1-of-3');
    expect(expandSliceOut('/cache/x', { index: 1, count: 3 })).toBe('/cache/x');
    expect(fail(() => expandSliceOut('/cache/{index}', undefined))).toMatch(/only a --shard run/);
  });
});

describe('--device: executionProvidersFor', () => {
  const linux = (have: string[] = []): OrtBuild => ({
    platform: 'linux',
    arch: 'x64',
    backends: [{ name: 'cpu', bundled: true }, { name: 'webgpu', bundled: true }, { name: 'cuda', bundled: false }, { name: 'tensorrt', bundled: false }],
    binDir: '/ort/bin',
    exists: (p) => have.some((f) => p.endsWith(f)),
  });
  it('cpu always; cuda only with its provider libraries on disk', () => {
    expect(executionProvidersFor('cpu', linux())).toEqual(['cpu']);
    expect(executionProvidersFor('CUDA', linux(['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so']))).toEqual(['cuda']);
    const m = fail(() => executionProvidersFor('cuda', linux()));
    expect(m).toMatch(/CUDA execution provider is not in this onnxruntime-node install/);
    expect(m).toMatch(/libonnxruntime_providers_cuda\.so/);
    expect(m).toMatch(/ONNXRUNTIME_NODE_INSTALL=skip, or no network/);
    expect(m).toMatch(/CUDA 12/);
    expect(fail(() => executionProvidersFor('tensorrt', linux(['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so'])))).toMatch(/libonnxruntime_providers_tensorrt\.so missing/);
  });
  it('a provider this platform build lacks, or an unknown name', () => {
    expect(fail(() => executionProvidersFor('dml', linux()))).toMatch(/DirectML execution provider is not in this onnxruntime-node build for linux\/x64 .*Windows only/);
    expect(fail(() => executionProvidersFor('coreml', linux()))).toMatch(/macOS only/);
    expect(fail(() => executionProvidersFor('tpu', linux()))).toMatch(/unknown; onnxruntime-node execution providers are cpu, cuda/);
  });
});
