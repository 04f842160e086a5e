import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { PreparedDataset } from '../../data/types.js';
import { RecdistillError } from '../../errors.js';
import { DEFAULT_KS, evaluableUsers, evaluateRanking, historyFor, type RankingMetrics, type ScoreBatch } from '../../eval/evaluate.js';
import { writeJsonAtomic } from '../../util/atomic.js';
import type { STTensor } from '../../util/safetensors.js';
import { readTensors, writeTensors } from '../../student/model/checkpoint.js';
import { isObject, readRunConfig } from '../../student/model/run-folder.js';
import { usersByLength } from '../../student/serving/scorer.js';
import type { RunReportContext } from '../../student/training/hooks.js';
import { loadStudent, type LoadedStudent } from '../../student/serving/serve.js';
import { averageScores, writeServePlan } from '../../student/serving/serve-plan.js';

export { averageScores };

/**
 * Serving an EMKD run, as one member or as the ensemble (`student:train --emkd K --serve member|ensemble`):
 * - member (the default): the run folder's model.safetensors, network 1 at its best validation epoch (the
 *   trainer's own file);
 * - ensemble: the K networks' scores averaged. Each network is written as <run>/ensemble-<n>/model.safetensors in
 *   the student's format (so loadStudent / readStudentFile read each one as a run folder's model), from the run's
 *   checkpoint: network 1 from its model/ tensors, networks 2..K from the hook variables the EMKD provenance in
 *   config.json locates. The weights are those of the best validated epoch (network 1's best/ tensors; the EMKD
 *   hooks ask the trainer to keep best/hook.<i> copies of networks 2..K, `keepBest`), so member and ensemble come
 *   from the same epoch; a checkpoint without best/hook.* tensors gives every network's final-epoch weights.
 * student:train does both when an EMKD run finishes (reportEnsemble, the hooks' `report`): the members are exported
 * and evaluated, metrics.json reports member and ensemble side by side (distill.emkd.serving), and serve.json
 * (src/student/serving/serve-plan.ts) says which one the folder serves, so loadStudent(run), `eval --student`, bench and the
 * HTTP server serve the ensemble with `--serve ensemble`. With K > 1, `--serve ensemble` also makes validation
 * select the best epoch (and early stopping) on the ensemble (TrainHooks.selectionScorer), so it is part of the run's
 * identity then; `--serve member` is not (runs written before keep their identity).
 */

interface EmkdLayout {
  K: number;
  firstHookVariable: number;
  networkParams: string[];
}

function layoutOf(runDir: string): { layout: EmkdLayout; model: Record<string, unknown>; dataset: string; fingerprint: string } {
  const cfg = readRunConfig(runDir);
  const where = join(runDir, 'config.json');
  const distill = cfg.distill;
  const emkd = isObject(distill) ? distill.emkd : undefined;
  if (!isObject(emkd)) throw new RecdistillError('E_USAGE', `${runDir} is not an EMKD run (${where} has no distill.emkd): train it with --emkd K.`);
  const lay = emkd.layout;
  const K = emkd.K;
  const first = emkd.firstHookVariable;
  if (typeof K !== 'number' || !Number.isInteger(K) || K < 1 || typeof first !== 'number' || !Number.isInteger(first) || first < 0 || !isObject(lay) || !Array.isArray(lay.networkParams) || !lay.networkParams.every((n) => typeof n === 'string')) {
    throw new RecdistillError('E_INPUT', `${where}: distill.emkd must hold K, firstHookVariable and layout.networkParams.`);
  }
  if (K > 1 && lay.networkParams.length === 0) throw new RecdistillError('E_INPUT', `${where}: distill.emkd.layout.networkParams is empty for K = ${K}.`);
  if (!isObject(cfg.model)) throw new RecdistillError('E_INPUT', `${where}: "model" (the model config) is missing.`);
  return { layout: { K, firstHookVariable: first, networkParams: lay.networkParams as string[] }, model: cfg.model, dataset: cfg.dataset, fingerprint: cfg.fingerprint };
}

const memberName = (n: number) => `ensemble-${n}`;
export const memberDir = (runDir: string, n: number) => join(runDir, memberName(n));

/** Write <run>/ensemble-<n>/model.safetensors for n = 1..K from the run's checkpoint; returns the folders. */
export function exportEnsemble(runDir: string): string[] {
  const { layout, model, dataset, fingerprint } = layoutOf(runDir);
  const path = join(runDir, 'checkpoint.safetensors');
  const { tensors, metadata } = readTensors(path);
  const epoch = String((JSON.parse(metadata.state ?? '{}') as { epoch?: number }).epoch ?? 0);
  const P = layout.networkParams.length;
  const get = (key: string): STTensor => {
    const t = tensors[key];
    if (!t) throw new RecdistillError('E_MISMATCH', `${path}: tensor "${key}" is missing (config.json's distill.emkd layout does not match this checkpoint).`);
    return t;
  };
  // The best validated epoch's weights of every network when the checkpoint has them (the trainer keeps hook
  // variables' best copies for EMKD); a checkpoint without them (written before) gives the final epoch's.
  const state = JSON.parse(metadata.state ?? '{}') as { epoch?: number; bestEpoch?: number };
  // Networks 2..K need their best/hook.* copies; a run of one network (no hook variables) needs network 1's only.
  const hasBest = layout.K > 1 ? Object.keys(tensors).some((k) => k.startsWith('best/hook.')) : Object.keys(tensors).some((k) => k.startsWith('best/') && !k.startsWith('best/hook.'));
  const prefix = hasBest ? 'best/' : 'model/';
  const dirs: string[] = [];
  for (let n = 1; n <= layout.K; n++) {
    const out: Record<string, STTensor> = {};
    if (n === 1) {
      for (const [key, t] of Object.entries(tensors)) if (key.startsWith(prefix) && !key.startsWith(`${prefix}hook.`)) out[key.slice(prefix.length)] = t;
    } else {
      layout.networkParams.forEach((name, j) => (out[name] = get(`${prefix}hook.${layout.firstHookVariable + (n - 2) * P + j}`)));
    }
    const dir = memberDir(runDir, n);
    writeTensors(join(dir, 'model.safetensors'), out, { format: 'recdistill-sasrec-1', config: JSON.stringify(model), dataset, fingerprint, bestEpoch: hasBest ? String(state.bestEpoch ?? 0) : epoch, emkdNetwork: String(n), weights: hasBest ? 'best validated epoch' : 'final epoch' });
    dirs.push(dir);
  }
  return dirs;
}


/** The evaluation contract (src/eval/evaluate.ts) for loaded members: their scores averaged. */
export function ensembleScorer(members: LoadedStudent[], ds: PreparedDataset): ScoreBatch {
  const fns = members.map((m) => (h: Int32Array[]) => m.scoreBatch(h));
  return async (users, split) => averageScores(fns, users.map((u) => historyFor(ds, u, split)));
}

export interface EnsembleResult {
  K: number;
  valid: RankingMetrics;
  test: RankingMetrics;
  /** Each network alone (the weights exportEnsemble wrote), test split. */
  members: RankingMetrics[];
}

/**
 * Full-ranking evaluation (the trainer's protocol: history excluded, pessimistic ties) of the average of the K
 * networks' scores. Exports the member files from the checkpoint when they are missing (or with `refresh`);
 * writes <run>/ensemble.json.
 */
export async function evaluateEnsemble(runDir: string, ds: PreparedDataset, o: { excludeHistory?: boolean; batchSize?: number; refresh?: boolean } = {}): Promise<EnsembleResult> {
  const { layout, fingerprint } = layoutOf(runDir);
  if (fingerprint !== ds.fingerprint) throw new RecdistillError('E_MISMATCH', `${runDir} was trained on dataset fingerprint ${fingerprint}, not ${ds.fingerprint}.`);
  if (o.refresh || !Array.from({ length: layout.K }, (_, i) => existsSync(join(memberDir(runDir, i + 1), 'model.safetensors'))).every(Boolean)) exportEnsemble(runDir);
  const members: LoadedStudent[] = [];
  try {
    for (let n = 1; n <= layout.K; n++) members.push(await loadStudent(memberDir(runDir, n)));
    const common = { ks: DEFAULT_KS, excludeHistory: o.excludeHistory ?? true, batchSize: o.batchSize ?? 256, users: usersByLength(ds, evaluableUsers(ds)) };
    const scorer = ensembleScorer(members, ds);
    const valid = await evaluateRanking(ds, scorer, { ...common, split: 'valid' });
    const test = await evaluateRanking(ds, scorer, { ...common, split: 'test' });
    const each: RankingMetrics[] = [];
    for (const m of members) each.push(await evaluateRanking(ds, ensembleScorer([m], ds), { ...common, split: 'test' }));
    const result: EnsembleResult = { K: layout.K, valid, test, members: each };
    writeJsonAtomic(join(runDir, 'ensemble.json'), { ...result, weights: 'ensemble-<n>/model.safetensors (their metadata "weights": the best validated epoch, or the final one for a checkpoint written before best-epoch copies)', protocol: { ranking: 'full', excludeHistory: common.excludeHistory, scores: 'mean of the K networks\' scores' } });
    return result;
  } finally {
    for (const m of members) m.dispose();
  }
}

/**
 * The finish step of an EMKD run (its hooks' `report`, called by src/student/training/finish.ts once model.safetensors and
 * the last checkpoint are written): the members exported afresh and the ensemble evaluated on the trainer's
 * protocol (ensemble.json), serve.json written for `serve`, and both ways of serving reported for metrics.json's
 * distill.emkd.serving: member = network 1 (the student's metrics), ensemble = the K networks' scores averaged.
 * The run's identity does not include `serve`: rerunning a finished run with the other --serve only redoes this.
 */
export async function reportEnsemble(run: RunReportContext, serve: 'member' | 'ensemble'): Promise<Record<string, unknown>> {
  const r = await evaluateEnsemble(run.outDir, run.ds, { excludeHistory: run.excludeHistory, batchSize: run.evalBatch, refresh: true });
  writeServePlan(run.outDir, serve === 'ensemble' ? { serve, members: Array.from({ length: r.K }, (_, i) => memberName(i + 1)) } : { serve });
  const f = (m: Record<string, number>) => m['ndcg@10']!.toFixed(4);
  run.log(`student:train: EMKD K=${r.K}: test ndcg@10 member (network 1) ${f(run.student.test)}, ensemble ${f(r.test)}; the run serves ${serve === 'ensemble' ? `the ensemble (${join(run.outDir, 'serve.json')})` : 'network 1 (model.safetensors)'}`);
  return {
    emkd: {
      serving: {
        serve,
        member: { network: 1, ...run.student },
        ensemble: { K: r.K, valid: r.valid, test: r.test },
        // Each network alone, test NDCG@10 (network 1 first).
        networksTestNdcg10: r.members.map((m) => m['ndcg@10']),
      },
    },
  };
}
