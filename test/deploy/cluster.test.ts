import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { readManifest } from '../../src/cache/format.js';
import { ortBuild } from '../../src/teacher/llm/index.js';
import { writeReplicaModel } from '../../src/teacher/replica/index.js';

/**
 * The cluster recipes, offline: N = 3 local processes given the environment a Kubernetes Indexed Job or a
 * Slurm array sets, then teacher:merge, equal one whole run byte for byte; the deploy/ files say what the
 * README says; --device cuda without the CUDA provider fails with the message naming what is missing.
 */
const ROOT = process.cwd();
const tmp = mkdtempSync(join(tmpdir(), 'recdistill-deploy-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const model = join(tmp, 'model');
const DATA = ['--dataset', 'synthetic', '--synthetic-users', '60', '--synthetic-items', '40'];
const COMMON = [...DATA, '--model', model, '--dtype', 'fp32', '--top-k', '10', '--max-prompt-tokens', '512', '--users-per-shard', '8', '--overhead-sample', '0', '--head-epochs', '2', '--backend', 'cpu'];
const N = 3;

/** The environment of this process minus any engine variables (the tests may themselves run under Slurm). */
const ENGINE = /^(JOB_COMPLETION_INDEX|RECDISTILL_SHARD_COUNT|RECDISTILL_DEVICE|SLURM_.*)$/;
const baseEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !ENGINE.test(k)));

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), ...args], { cwd: ROOT, env: { ...baseEnv(), ...env, RECDISTILL_OFFLINE: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
const digests = (dir: string) => Object.fromEntries(readdirSync(dir).filter((f) => f.endsWith('.safetensors')).sort().map((f) => [f, sha(join(dir, f))]));

describe('cluster runs: --shard auto from the engine environment', () => {
  const full = join(tmp, 'full');
  beforeAll(async () => {
    writeReplicaModel({ out: model, layout: 'optimum', dtype: 'fp32', seed: 1, layers: 2, hidden: 32, heads: 2, kvHeads: 1, merges: 200, maxPositions: 512, externalDataChunks: 0 });
    // The whole run and both engines' slices at once (7 processes); then the two merges.
    const runs = [
      cli(['teacher:cache', ...COMMON, '--out', full]),
      ...Array.from({ length: N }, (_, i) => cli(['teacher:cache', ...COMMON, '--shard', 'auto', '--out', join(tmp, 'k8s', 'slice-{index}-of-{count}')], { JOB_COMPLETION_INDEX: String(i), RECDISTILL_SHARD_COUNT: String(N) })),
      ...Array.from({ length: N }, (_, i) => cli(['teacher:cache', ...COMMON, '--shard', 'auto', '--out', join(tmp, 'slurm', 'slice-{index}-of-{count}')], { SLURM_ARRAY_TASK_ID: String(i), SLURM_ARRAY_TASK_COUNT: String(N), SLURM_ARRAY_TASK_MIN: '0', SLURM_ARRAY_TASK_MAX: String(N - 1) })),
    ];
    for (const r of await Promise.all(runs)) expect(r.code, r.stderr).toBe(0);
    const merges = ['k8s', 'slurm'].map((e) => cli(['teacher:merge', ...DATA, '--backend', 'cpu', '--out', join(tmp, e, 'merged'), '--from', Array.from({ length: N }, (_, i) => join(tmp, e, `slice-${i}-of-${N}`)).join(',')]));
    for (const r of await Promise.all(merges)) expect(r.code, r.stderr).toBe(0);
  }, 900_000);

  for (const engine of ['k8s', 'slurm'] as const) {
    it(`${engine}: ${N} slices + teacher:merge equal the single run byte for byte`, () => {
      const merged = join(tmp, engine, 'merged');
      const want = digests(full);
      expect(Object.keys(want).length).toBeGreaterThan(2 * 8); // items, stats, head, hidden + soft per shard
      expect(digests(merged)).toEqual(want);
      const a = readManifest(full);
      const b = readManifest(merged);
      expect(b.complete).toBe(true);
      expect(b.key).toBe(a.key);
      expect(b.shards).toEqual(a.shards);
      for (let i = 0; i < N; i++) {
        const s = readManifest(join(tmp, engine, `slice-${i}-of-${N}`)) as ReturnType<typeof readManifest> & { runtime?: Record<string, unknown> };
        expect(s.slice).toMatchObject({ index: i, count: N });
        expect(s.runtime).toMatchObject({ device: 'cpu', shard: { index: i, count: N, source: engine === 'k8s' ? 'kubernetes' : 'slurm' } });
      }
      // The device is provenance, not part of the key.
      expect((a as unknown as { runtime: { device: string } }).runtime.device).toBe('cpu');
      expect(JSON.stringify(a.teacher)).not.toMatch(/device/);
    });
  }

  it('--shard auto with no engine variables, or an index past the count, is refused before any work', async () => {
    const none = await cli(['teacher:cache', ...COMMON, '--shard', 'auto', '--out', join(tmp, 'none')]);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/no shard index in the environment: expected JOB_COMPLETION_INDEX/);
    const past = await cli(['teacher:cache', ...COMMON, '--shard', 'auto', '--shard-count', '3', '--out', join(tmp, 'past')], { SLURM_ARRAY_TASK_ID: '3', SLURM_ARRAY_TASK_COUNT: '4' });
    expect(past.code).not.toBe(0);
    expect(past.stderr).toMatch(/--shard-count 3 but the Slurm array has 4 tasks/);
  }, 900_000);

  it.skipIf(ortBuild().exists(join(ortBuild().binDir, 'libonnxruntime_providers_cuda.so')))('--device cuda without the CUDA provider: a clear error naming what is missing and how to get it', async () => {
    const r = await cli(['teacher:cache', ...COMMON, '--device', 'cuda', '--out', join(tmp, 'cuda')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--device cuda: the CUDA execution provider is not in this onnxruntime-node/);
    expect(r.stderr).toMatch(/ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node/);
  }, 900_000);
});

describe('deploy/ files match docs/cluster.md', () => {
  const read = (p: string) => readFileSync(join(ROOT, p), 'utf8');
  const readme = read('docs/cluster.md');
  const job = parse(read('deploy/k8s/teacher-cache-job.yaml'));
  const merge = parse(read('deploy/k8s/teacher-merge-job.yaml'));
  const c = job.spec.template.spec.containers[0];
  const image: string = c.image;
  const argAfter = (args: string[], flag: string) => args[args.indexOf(flag) + 1];

  it('the Indexed Job runs teacher:cache --shard auto over N = completions = parallelism, with the volumes', () => {
    expect(job.kind).toBe('Job');
    expect(job.spec.completionMode).toBe('Indexed');
    const n = job.spec.completions;
    expect(job.spec.parallelism).toBe(n);
    expect(c.args[0]).toBe('teacher:cache');
    expect(argAfter(c.args, '--shard')).toBe('auto');
    expect(Number(argAfter(c.args, '--shard-count'))).toBe(n);
    expect(argAfter(c.args, '--out')).toMatch(/^\/cache\/.*\{index\}.*\{count\}/);
    expect(c.volumeMounts.map((v: { mountPath: string }) => v.mountPath).sort()).toEqual(['/cache', '/data', '/models']);
    expect(job.spec.template.spec.securityContext.runAsNonRoot).toBe(true);
    expect(readme).toContain(image);
    expect(readme).toContain(`--shard-count ${n}`);
    // The merge job joins exactly the N slices the indexed job writes, with the same image.
    const m = merge.spec.template.spec.initContainers[0];
    expect(m.image).toBe(image);
    expect(m.args[0]).toBe('teacher:merge');
    const out = argAfter(c.args, '--out') as string;
    expect(argAfter(m.args, '--from')).toBe(Array.from({ length: n }, (_, i) => out.replace('{index}', String(i)).replace('{count}', String(n))).join(','));
    expect(merge.spec.template.spec.containers[0].args.slice(0, 1)).toEqual(['teacher:verify']);
    for (const cmd of ['kubectl apply -f deploy/k8s/teacher-cache-job.yaml', `kubectl wait --for=condition=complete job/${job.metadata.name}`, 'kubectl apply -f deploy/k8s/teacher-merge-job.yaml', `docker build -f deploy/Dockerfile -t ${image}`, `docker push ${image}`]) {
      expect(readme, cmd).toContain(cmd);
    }
  });

  it('the Slurm array size matches N and the merge depends on it', () => {
    const cache = read('deploy/slurm/teacher-cache.sbatch');
    const mergeS = read('deploy/slurm/teacher-merge.sbatch');
    const arr = /^#SBATCH --array=0-(\d+)$/m.exec(cache);
    expect(arr).not.toBeNull();
    const n = Number(arr![1]) + 1;
    expect(Number(/^N=(\d+)/m.exec(cache)![1])).toBe(n);
    expect(Number(/^N=(\d+)/m.exec(mergeS)![1])).toBe(n);
    expect(cache).toMatch(/teacher:cache .*--shard auto --shard-count "\$N"/s);
    expect(mergeS).toMatch(/teacher:merge/);
    expect(cache).toContain(`docker://${image}`);
    for (const cmd of ['sbatch --parsable deploy/slurm/teacher-cache.sbatch', 'sbatch --dependency=afterok:']) expect(readme, cmd).toContain(cmd);
  });

  it('the Dockerfile: node:20-slim, non-root, npm ci --omit=dev, offline, the recdistill bin as entrypoint', () => {
    const d = read('deploy/Dockerfile');
    expect(d).toMatch(/^FROM node:20-slim/m);
    expect(d).toMatch(/npm ci --omit=dev/);
    expect(d).toMatch(/^USER node$/m);
    for (const e of ['RECDISTILL_OFFLINE=1', 'HF_HUB_OFFLINE=1', 'ONNXRUNTIME_NODE_INSTALL=skip']) expect(d).toContain(e);
    expect(d).toMatch(/^VOLUME \["\/models", "\/data", "\/cache"\]$/m);
    expect(d).toMatch(/^ENTRYPOINT \["recdistill"\]$/m);
    expect(d).toMatch(/ln -s \/app\/bin\/recdistill\.js \/usr\/local\/bin\/recdistill/);
  });
});
