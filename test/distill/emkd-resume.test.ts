/**
 * A K = 2 EMKD run of the small synthetic model killed (SIGKILL) between epochs resumes from its checkpoint
 * (networks 2..K, the mask rows and the attribute heads are hook variables in it) to the same bytes as an
 * uninterrupted run; and the ensemble served from that run averages its members' scores.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../src/backend/index.js';
import { ensembleScorer, evaluateEnsemble, exportEnsemble, memberDir } from '../../src/distill/emkd/ensemble.js';
import { DEFAULT_KS, evaluableUsers, evaluateRanking, historyFor, type ScoreBatch } from '../../src/eval/evaluate.js';
import { readTensors } from '../../src/student/model/checkpoint.js';
import { readRunConfig } from '../../src/student/model/run-folder.js';
import { usersByLength } from '../../src/student/serving/scorer.js';
import { loadStudent } from '../../src/student/serving/serve.js';
import { killAfterEpoch, runToEnd } from '../helpers/children.js';
import { smallDataset } from '../student/fixtures/small.js';

const tmp = mkdtempSync(join(tmpdir(), 'recdistill-emkd-resume-'));
const script = join(import.meta.dirname, '..', 'student', 'fixtures', 'train-child.ts');
const EMKD2 = JSON.stringify({ emkd: 2, lambdaEmkdMask: 1 }); // every causal term (L1 is off by default)
const killed = join(tmp, 'killed');
const straight = join(tmp, 'straight');

beforeAll(async () => {
  await initBackend('wasm');
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('a K = 2 EMKD run killed between epochs', () => {
  it('resumes to the same bytes as an uninterrupted run (network 1 and networks 2..K)', async () => {
    await killAfterEpoch(script, [killed, '4', '1500', EMKD2], 2);
    const mid = readTensors(join(killed, 'checkpoint.safetensors'));
    expect(JSON.parse(mid.metadata.state!).epoch).toBe(2);
    expect(Object.keys(mid.tensors).some((k) => k.startsWith('model/hook.'))).toBe(true); // network 2 is in it
    await runToEnd(script, [killed, '4', '0', EMKD2]);
    await runToEnd(script, [straight, '4', '0', EMKD2]);
    const last = (dir: string) => JSON.parse(readFileSync(join(dir, 'history.jsonl'), 'utf8').trim().split('\n').pop()!);
    expect(Object.keys(last(straight).loss).sort()).toEqual(['ce', 'emkd_attr', 'emkd_ce', 'emkd_inter', 'emkd_intra', 'emkd_kl', 'emkd_mask']);
    expect(last(killed).loss).toEqual(last(straight).loss);
    expect(readFileSync(join(killed, 'model.safetensors')).equals(readFileSync(join(straight, 'model.safetensors')))).toBe(true);
    exportEnsemble(killed);
    exportEnsemble(straight);
    for (const n of [1, 2]) {
      const file = (dir: string) => readFileSync(join(memberDir(dir, n), 'model.safetensors'));
      expect(file(killed).equals(file(straight)), `ensemble-${n}`).toBe(true);
    }
  }, 900_000); // a safety net: four child trainings, on a machine that may be under heavy load
});

describe('EMKD ensemble serving', () => {
  it('members are the checkpoint\'s best-epoch networks in the student format; the ensemble averages their scores', async () => {
    if (!existsSync(join(straight, 'model.safetensors'))) await runToEnd(script, [straight, '4', '0', EMKD2]);
    const ds = await smallDataset();
    exportEnsemble(straight);
    // Member files hold exactly the checkpoint's tensors: network 1's model/<name>, network 2's hook variables.
    const ck = readTensors(join(straight, 'checkpoint.safetensors')).tensors;
    const emkd = (readRunConfig(straight).distill as { emkd: { firstHookVariable: number; layout: { networkParams: string[] } } }).emkd;
    const m1 = readTensors(join(memberDir(straight, 1), 'model.safetensors')).tensors;
    const m2 = readTensors(join(memberDir(straight, 2), 'model.safetensors')).tensors;
    expect(Object.keys(m1).sort()).toEqual(Object.keys(m2).sort());
    // Best validated epoch: network 1's member is the trainer's own model.safetensors; network 2 its best/ copy.
    const own = readTensors(join(straight, 'model.safetensors')).tensors;
    for (const name of Object.keys(m1)) expect(Array.from(m1[name]!.data as Float32Array)).toEqual(Array.from(own[name]!.data as Float32Array));
    for (const name of Object.keys(m1)) expect(Array.from(m1[name]!.data as Float32Array)).toEqual(Array.from(ck[`best/${name}`]!.data as Float32Array));
    emkd.layout.networkParams.forEach((name, j) => expect(Array.from(m2[name]!.data as Float32Array)).toEqual(Array.from(ck[`best/hook.${emkd.firstHookVariable + j}`]!.data as Float32Array)));
    expect(readTensors(join(memberDir(straight, 2), 'model.safetensors')).metadata.weights).toBe('best validated epoch');
    expect(Array.from(m2.item_emb!.data as Float32Array)).not.toEqual(Array.from(m1.item_emb!.data as Float32Array)); // different networks

    const a = await loadStudent(memberDir(straight, 1));
    const b = await loadStudent(memberDir(straight, 2));
    const users = evaluableUsers(ds).slice(0, 7);
    const histories = users.map((u) => historyFor(ds, u, 'test'));
    const sa = a.scoreBatch(histories);
    const sb = b.scoreBatch(histories);
    const byHand = new Float32Array(sa.length);
    for (let i = 0; i < sa.length; i++) byHand[i] = (sa[i]! + sb[i]!) / 2;
    const got = await ensembleScorer([a, b], ds)(users, 'test');
    expect(Array.from(got)).toEqual(Array.from(byHand));

    // The ensemble's metrics are the full-ranking evaluator's on those averaged scores.
    const handScorer: ScoreBatch = async (us, split) => {
      const hs = us.map((u) => historyFor(ds, u, split));
      const [x, y] = [a.scoreBatch(hs), b.scoreBatch(hs)];
      return Float32Array.from(x, (v, i) => (v + y[i]!) / 2);
    };
    const r = await evaluateEnsemble(straight, ds);
    // Same users in the same order (the trainer's: by history length), so the metric sums are the same bytes.
    const common = { ks: DEFAULT_KS, excludeHistory: true, batchSize: 64, users: usersByLength(ds, evaluableUsers(ds)) };
    expect(r.test).toEqual(await evaluateRanking(ds, handScorer, { ...common, split: 'test' }));
    expect(r.valid).toEqual(await evaluateRanking(ds, handScorer, { ...common, split: 'valid' }));
    const alone: ScoreBatch = async (us, split) => a.scoreBatch(us.map((u) => historyFor(ds, u, split)));
    expect(r.members[0]).toEqual(await evaluateRanking(ds, alone, { ...common, split: 'test' }));
    expect(r.members).toHaveLength(2);
    expect(JSON.parse(readFileSync(join(straight, 'ensemble.json'), 'utf8')).test).toEqual(r.test);
    a.dispose();
    b.dispose();
  }, 900_000);
});
