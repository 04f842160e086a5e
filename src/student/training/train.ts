import { existsSync, mkdirSync } from 'node:fs';
import { wasmThreads } from '../../backend/index.js';
import { lockCacheDir } from '../../util/lock.js';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { PreparedDataset } from '../../data/types.js';
import { RecdistillError } from '../../errors.js';
import { DEFAULT_KS, requireEvaluableUsers, evaluateRanking, type RankingMetrics } from '../../eval/evaluate.js';
import { writeFileAtomic, writeJsonAtomic } from '../../util/atomic.js';
import { writeItemMap } from '../serving/items.js';
import { formatSeconds, type LogFn } from '../../util/progress.js';
import { buildWindows, epochBatches, makeBatch, windowSteps, type WindowMode } from '../model/batches.js';
import { LEGACY_RUN_VALUES, RUN_KEYS, validateStudentOptions, type StudentOptions } from './config.js';
import { checkTrainMemory, emkdMemoryInput } from './memory.js';
import { absoluteIdentity, checkRunOut, withAbsolutePaths, type RunState } from '../model/run-folder.js';
import { learningCurveSvg, type CurvePoint } from './curves.js';
import { lossLine, type TrainHooks } from './hooks.js';
import { createSasrec, modelVariables, type ModelConfig } from '../model/model.js';
import { hasFilter } from '../model/params.js';
import { createEma, disposeEma, updateEma, withShadow } from './ema.js';
import { createAdam, scheduledLr, type LrSchedule } from './optim.js';
import { makeRng, mixSeed } from '../../util/rng.js';
import { studentScorer, usersByLength } from '../serving/scorer.js';
import { lossSetup, type LossSetup } from './step.js';
import { finishRun, type Divergence, type TrainResult } from './finish.js';
import { checkpointPath, Diverged, loadCheckpoint, saveCheckpoint } from './resume.js';
import { trainStep } from './update.js';

/**
 * The training loop: Adam, epochs of length-bucketed batches, validation NDCG@10 after every `evalEvery`
 * epochs with early stopping (patience), best weights kept, an atomic checkpoint after every epoch
 * (weights + Adam moments + step + epoch + best weights + history in one safetensors file). Every random
 * stream is derived from (seed, epoch, step), so a resumed run replays exactly what an uninterrupted one does.
 *
 * Distillation hook (src/student/training/hooks.ts): `hooks.variables()` are trained with the model;
 * `hooks.extraTerms(ctx)` adds named unweighted terms to `ce`, combined with `hooks.weights(step)`;
 * `hooks.balance` receives per-term gradients on the shared variables every `every` steps;
 * `hooks.epochInfo()` goes into history.jsonl; `hooks.provenance()` into config.json.
 */
export interface TrainSetup {
  ds: PreparedDataset;
  opts: StudentOptions;
  outDir: string;
  backend: string;
  hooks?: TrainHooks;
  log: LogFn;
  /** Options recorded in config.json's "train" beside the student's (e.g. the distillation flags), so --config reruns it. */
  recordOptions?: Record<string, unknown>;
  /** Test hook: called after each finished epoch (checkpoint written). */
  onEpoch?(epoch: number): void;
}

/** Names of the variables holding a NaN/Inf (checked on the device: one boolean read back per variable). */
function nonFiniteVariables(named: Array<[string, tf.Variable]>): string[] {
  const bad: string[] = [];
  for (const [n, v] of named) {
    const ok = tf.tidy(() => tf.all(tf.isFinite(v)));
    if (!ok.dataSync()[0]) bad.push(n);
    ok.dispose();
  }
  return bad;
}

export function modelConfigFrom(ds: PreparedDataset, o: StudentOptions): ModelConfig {
  const legacy = LEGACY_RUN_VALUES as { norm: 'pre'; init: 'default'; embScale: boolean; padKeys: 'mask'; attnOutDropout: boolean };
  return {
    numItems: ds.items.length - 1, maxLen: o.maxLen, dims: o.dims, blocks: o.blocks, heads: o.heads, dropout: o.dropout, attnDropout: o.attnDropout, ffnDims: o.ffnDims,
    norm: (o.norm ?? legacy.norm) as 'pre' | 'post', init: (o.init ?? legacy.init) as 'default' | 'xavier', embScale: o.embScale ?? legacy.embScale,
    ...((o.padKeys ?? legacy.padKeys) === legacy.padKeys ? {} : { padKeys: o.padKeys as 'attend' }),
    ...((o.attnOutDropout ?? legacy.attnOutDropout) === legacy.attnOutDropout ? {} : { attnOutDropout: false }),
    ...(o.attention === 'bidirectional' ? { attention: 'bidirectional' as const } : {}),
    ...(hasFilter(o) ? { filterAlpha: o.filterAlpha, filterBins: o.filterBins ?? 3, ...(o.filterSpan === 'window' ? { filterSpan: 'window' as const } : {}) } : {}),
  };
}

/**
 * What defines the run (resume refuses a checkpoint whose identity differs). A key of LEGACY_RUN_VALUES holding
 * that value is left out, so runs that predate the key keep their identity (and default --out). A cosine
 * schedule decays over the --epochs budget, so there --epochs defines the run too.
 */
export function runIdentity(ds: PreparedDataset, o: StudentOptions, hooks?: TrainHooks): Record<string, unknown> {
  const keys: Record<string, unknown> = {};
  for (const k of RUN_KEYS) {
    const v = (o as Record<string, unknown>)[k];
    if (k in LEGACY_RUN_VALUES && (v === undefined || v === LEGACY_RUN_VALUES[k])) continue;
    keys[k] = v;
  }
  if (o.lrSchedule === 'cosine') keys.epochs = o.epochs;
  return absoluteIdentity({ format: 1, dataset: ds.name, fingerprint: ds.fingerprint, options: keys, distill: hooks?.provenance?.() ?? null });
}

/**
 * The wasm runtime aborts (RuntimeError "Aborted()") when an allocation does not fit its 4 GiB heap; the up-front
 * estimate (memory.ts) counts the live tensors, not the allocator's fragmentation, so a run close to the limit can
 * still abort.
 * Turned into an error that says what happened and what to change; the last epoch's checkpoint is kept.
 */
export function wasmAbortError(e: unknown, backend: string, epoch: number, o: StudentOptions, hooks?: TrainHooks): RecdistillError | undefined {
  if (backend !== 'wasm' || !(e instanceof Error) || !/^Aborted\(/.test(e.message)) return undefined;
  const emkd = (hooks?.provenance?.() as { emkd?: { K?: number } } | undefined)?.emkd?.K;
  return new RecdistillError(
    'E_USAGE',
    `the wasm backend aborted in epoch ${epoch + 1} (${e.message.split('.')[0]}), which happens when a step needs more than its 4 GiB memory` +
      `${emkd ? ` (--emkd ${emkd} keeps ${emkd} networks' full-softmax passes alive per step)` : ''}. Lower --batch-size (now ${o.batchSize}) or --max-len (now ${o.maxLen}), or use --loss sampled; ` +
      `the checkpoint of the last finished epoch is kept, but a changed option starts a new run (another --out).`,
    { cause: e },
  );
}

export async function trainStudent(setup: TrainSetup): Promise<TrainResult> {
  const { ds, opts: o, outDir, hooks } = setup;
  validateStudentOptions(o);
  checkRunOut(outDir);
  const validUsers = usersByLength(ds, requireEvaluableUsers(ds, 'select epochs on or evaluate'));
  const windows = buildWindows(ds, o.maxLen, o.windows as WindowMode);
  if (windows.length === 0) {
    throw new RecdistillError('E_EMPTY', `${ds.name}: no training step (every user has at most 3 interactions: after holding out the validation and test items, no training history has 2 items).`);
  }
  const longest = windows.reduce((m, w) => Math.max(m, w.length), 1);
  const estimate = checkTrainMemory({
    emkd: emkdMemoryInput(hooks?.provenance?.()),
    numItems: ds.items.length - 1, dims: o.dims, maxLen: o.maxLen, blocks: o.blocks, heads: o.heads, ffnDims: o.ffnDims,
    loss: o.loss, negatives: o.negatives, evalBatch: o.evalBatch, batchRows: Math.min(o.batchSize, windows.length), batchLen: o.padKeys === 'attend' ? o.maxLen : longest, backend: setup.backend,
  });
  try {
    mkdirSync(outDir, { recursive: true });
  } catch (e) {
    throw new RecdistillError('E_USAGE', `cannot create the run folder --out ${outDir}: ${(e as Error).message}`);
  }
  // One writer per run folder (the teacher cache's lock: pid@host, stale locks of killed runs are taken over).
  const unlock = lockCacheDir(outDir);
  try {
    return await trainLocked(setup, windows, validUsers, estimate.bytes);
  } finally {
    unlock();
  }
}

async function trainLocked(setup: TrainSetup, windows: ReturnType<typeof buildWindows>, validUsers: number[], estimateBytes: number): Promise<TrainResult> {
  const { ds, opts: o, outDir, hooks, log } = setup;
  const identity = runIdentity(ds, o, hooks);
  if (o.attention === 'bidirectional' && (hooks?.weights(0).ce ?? 1) !== 0) {
    // A bidirectional network sees the next item: next-item training would teach it to copy its input.
    throw new RecdistillError('E_USAGE', '--attention bidirectional trains by cloze (masked items), not by next-item prediction: add --emkd K (K >= 1; --emkd 1 trains a single BERT4Rec-style network), or use --attention causal.');
  }
  const model = createSasrec(modelConfigFrom(ds, o), mixSeed(o.seed, 1));
  const hookVars = hooks?.variables() ?? [];
  const vars = [...modelVariables(model), ...hookVars];
  const adam = createAdam(vars, { lr: o.lr, beta1: o.beta1 ?? 0.9, beta2: o.beta2, eps: 1e-8, weightDecay: o.weightDecay });
  const modelVars = modelVariables(model);
  const ema = (o.ema ?? 0) > 0 ? createEma(modelVars, o.ema) : undefined;
  let state: RunState = { epoch: 0, step: 0, best: -Infinity, bestEpoch: 0, sinceBest: 0, trainSeconds: 0, stepsTimed: 0, stepSeconds: 0, history: [], done: false };
  let best = new Map<string, Float32Array>();
  let bestHooks: Float32Array[] = [];
  let resumedFrom: number | undefined;
  if (o.resume && existsSync(checkpointPath(outDir))) {
    let hookState: Record<string, unknown> | undefined;
    ({ state, best, bestHooks, hookState } = loadCheckpoint(outDir, model, hookVars, adam, identity, ema, hooks));
    if (hookState) hooks?.restoreState?.(hookState);
    resumedFrom = state.epoch;
    log(`student:train: resuming ${outDir} after epoch ${state.epoch} (best valid ndcg@10 ${state.best.toFixed(4)} at epoch ${state.bestEpoch})`);
  }
  // Paths absolute, so the run's config.json reads the same data and cache from any folder and works as --config;
  // no --out: `--config RUN/config.json` continues RUN itself when nothing else changed (student-train.ts).
  const { out: _out, ...train } = withAbsolutePaths({ ...o, ...setup.recordOptions });
  writeJsonAtomic(join(outDir, 'config.json'), { ...identity, model: model.config, train, backend: setup.backend });
  writeItemMap(outDir, ds); // raw ids, titles, texts: what a served model answers with
  const loss = lossSetup(ds, o.loss as LossSetup['kind'], o.negatives, o.sampler as 'uniform' | 'popularity', o.labelSmoothing ?? 0);
  // epochBatches makes ceil(windows / batchSize) batches every epoch: the schedule's step budget.
  const batchesPerEpoch = Math.ceil(windows.length / o.batchSize);
  const lrAt = (step: number) => scheduledLr((o.lrSchedule ?? 'constant') as LrSchedule, o.lr, step, o.warmupSteps ?? 0, o.epochs * batchesPerEpoch);
  const scorer = studentScorer(model, ds);
  // What validation selects the best epoch on: what the run serves (hooks.selectionScorer, e.g. an EMKD ensemble),
  // else the student itself.
  const selectScorer = hooks?.selectionScorer?.(model, ds) ?? scorer;
  const positions = windowSteps(windows);
  const meanStepsPerBatch = positions / batchesPerEpoch; // --step-weight token divides by it
  log(`student:train: ${ds.name} ${ds.users.length} users, ${ds.items.length - 1} items; ${windows.length} windows, ${positions} positions/epoch; backend ${setup.backend}${setup.backend === 'wasm' && wasmThreads() ? ` (${wasmThreads()} thread${wasmThreads() === 1 ? '' : 's'})` : ''}; loss ${lossLine(o.loss, hooks)}`);

  let diverged: Divergence | undefined;
  try {
    while (!state.done && state.epoch < o.epochs) {
      const epoch = state.epoch + 1;
      const t0 = performance.now();
      const batches = epochBatches(windows, o.batchSize, makeRng(mixSeed(o.seed, epoch)), o.batching as 'length' | 'random');
      const sums: Record<string, number> = {};
      let lastLog = t0;
      for (let i = 0; i < batches.length; i++) {
        const s0 = performance.now();
        const batch = makeBatch(ds, batches[i]!);
        const scale = o.stepWeight === 'token' ? windowSteps(batches[i]!) / meanStepsPerBatch : 1;
        const values = trainStep(model, vars, adam, batch, loss, o.seed, epoch, state.step, hooks, state, lrAt(state.step), scale);
        if (ema) updateEma(ema, modelVars);
        state.step += 1;
        state.stepsTimed += 1;
        state.stepSeconds += (performance.now() - s0) / 1000;
        for (const [k, v] of Object.entries(values)) sums[k] = (sums[k] ?? 0) + v;
        if (performance.now() - lastLog > 10000) {
          lastLog = performance.now();
          const rate = (i + 1) / ((lastLog - t0) / 1000);
          log(`  epoch ${epoch}: step ${i + 1}/${batches.length} ${rate.toFixed(2)} steps/s ETA ${formatSeconds((batches.length - i - 1) / rate)}${Object.entries(sums).slice(0, 2).map(([k, v]) => ` ${k} ${(v / (i + 1)).toFixed(4)}`).join('')}`);
        }
      }
      const trainSecs = (performance.now() - t0) / 1000;
      const lossMeans = Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / Math.max(1, batches.length)]));
      // Finite losses do not prove finite weights (Adam's second moment overflows first): check before validating.
      const varNames = [...model.params.keys(), ...hookVars.map((_, i) => `hook.${i}`)];
      const poisoned = nonFiniteVariables(varNames.flatMap((n, i) => [[`model/${n}`, vars[i]!], [`adam.m/${n}`, adam.m[i]!], [`adam.v/${n}`, adam.v[i]!]] as Array<[string, tf.Variable]>));
      if (poisoned.length) {
        const shown = Object.entries(lossMeans).map(([k, x]) => `${k}=${x.toPrecision(4)}`).join(', ');
        throw new Diverged({ epoch, step: state.step, loss: lossMeans, reason: `training diverged in epoch ${epoch}: ${poisoned.length} tensors hold NaN/Inf after its last step (${poisoned.slice(0, 3).join(', ')}${poisoned.length > 3 ? ', ...' : ''}; mean loss ${shown}); this epoch's weights were not checkpointed.` });
      }
      let valid: RankingMetrics | undefined;
      if (epoch % o.evalEvery === 0 || epoch === o.epochs) {
        const validate = () => evaluateRanking(ds, selectScorer, { split: 'valid', ks: DEFAULT_KS, excludeHistory: o.excludeHistory, batchSize: o.evalBatch, users: validUsers });
        valid = ema ? await withShadow(ema, modelVars, validate) : await validate();
        const score = valid['ndcg@10']!;
        if (score > state.best) {
          state.best = score;
          state.bestEpoch = epoch;
          state.sinceBest = 0;
          // With --ema the validated (and so the kept) weights are the averaged ones.
          best = new Map([...model.params.keys()].map((n, i) => [n, new Float32Array((ema ? ema.shadow[i]! : modelVars[i]!).dataSync() as Float32Array)]));
          if (hooks?.keepBest) bestHooks = hookVars.map((v) => new Float32Array(v.dataSync() as Float32Array));
        } else state.sinceBest += 1;
      }
      const epochSecs = (performance.now() - t0) / 1000;
      state.trainSeconds += epochSecs;
      const entry = { epoch, loss: lossMeans, valid, trainSeconds: trainSecs, epochSeconds: epochSecs, elapsedSeconds: Number(state.trainSeconds.toFixed(2)), msPerStep: (trainSecs * 1000) / Math.max(1, batches.length), ...(hooks?.epochInfo?.() ?? {}) };
      state.history.push(entry);
      state.epoch = epoch;
      if (state.sinceBest >= o.patience) state.done = true;
      const v = valid ? ` valid ndcg@10 ${valid['ndcg@10']!.toFixed(4)} hr@10 ${valid['hr@10']!.toFixed(4)}${state.bestEpoch === epoch ? ' *' : ''}` : '';
      log(`epoch ${epoch}: ${Object.entries(lossMeans).map(([k, x]) => `${k} ${x.toFixed(4)}`).join(' ')}${v} | ${trainSecs.toFixed(1)}s train, ${epochSecs.toFixed(1)}s epoch, ${entry.msPerStep.toFixed(0)} ms/step`);
      writeRunFiles(outDir, state);
      saveCheckpoint(outDir, model, hookVars, adam, best, state, identity, hooks?.saveState?.(), bestHooks, ema);
      setup.onEpoch?.(epoch);
    }
  } catch (e) {
    if (!(e instanceof Diverged)) {
      adam.dispose();
      disposeEma(ema);
      for (const v of modelVariables(model)) v.dispose();
      throw wasmAbortError(e, setup.backend, state.epoch, o, hooks) ?? e;
    }
    diverged = e.info;
  }
  try {
    if (diverged) {
      const lower = `Rerun with a lower --lr (now ${o.lr}; e.g. ${Number((o.lr / 10).toPrecision(3))})${hooks ? ' or check the distillation terms and weights' : ''}, with --no-resume or another --out (a resume replays the same steps).`;
      if (best.size === 0) {
        throw new RecdistillError('E_NUMERIC', `${diverged.reason} No epoch was validated before the divergence, so there are no weights worth keeping: ${join(outDir, 'model.safetensors')} was not written${existsSync(checkpointPath(outDir)) ? ` (the last good checkpoint, ${checkpointPath(outDir)}, is kept)` : ''}. ${lower}`);
      }
      const bestEpoch = state.bestEpoch;
      await finishRun({ ds, opts: o, outDir, backend: setup.backend, model, best, state, log, scorer, validUsers, resumedFrom, hooks, diverged, estimateBytes });
      throw new RecdistillError('E_NUMERIC', `${diverged.reason} The run stopped; the best weights so far (epoch ${bestEpoch}, valid ndcg@10 ${state.best.toFixed(4)}) are in ${join(outDir, 'model.safetensors')}, their metrics in ${join(outDir, 'metrics.json')}; the last good checkpoint is kept. ${lower}`);
    }
    return await finishRun({ ds, opts: o, outDir, backend: setup.backend, model, best, state, log, scorer, validUsers, resumedFrom, hooks, estimateBytes });
  } finally {
    adam.dispose();
    disposeEma(ema);
    for (const v of modelVariables(model)) v.dispose();
  }
}

function writeRunFiles(outDir: string, state: RunState): void {
  writeFileAtomic(join(outDir, 'history.jsonl'), state.history.map((h) => JSON.stringify(h)).join('\n') + '\n');
  const pts: CurvePoint[] = state.history.map((h) => ({ epoch: h.epoch as number, loss: h.loss as Record<string, number>, valid: h.valid as Record<string, number> | undefined }));
  writeFileAtomic(join(outDir, 'curves.svg'), learningCurveSvg(pts, state.bestEpoch || undefined));
}

