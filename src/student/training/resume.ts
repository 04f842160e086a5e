import * as tf from '@tensorflow/tfjs-core';
import { join } from 'node:path';
import { RecdistillError } from '../../errors.js';
import { stableStringify } from '../../util/hash.js';
import { assignFrom, readTensors, tensorsOf, writeTensors } from '../model/checkpoint.js';
import type { Sasrec } from '../model/model.js';
import { absoluteIdentity, isObject, parseJson, type RunState } from '../model/run-folder.js';
import { modelVariables } from '../model/model.js';
import { LEGACY_RUN_VALUES } from './config.js';
import type { Ema } from './ema.js';
import type { TrainHooks } from './hooks.js';
import type { Adam } from './optim.js';
import type { Divergence } from './finish.js';

/**
 * A run's checkpoint.safetensors: weights, Adam moments, the best weights, the hooks' variables and state, and in
 * its metadata the run's progress ("state") and identity. Saved after every epoch; a resume refuses a checkpoint
 * of another run (naming what differs) or one written after training diverged.
 */
/** Training diverged (non-finite or exploding loss, non-finite weights): the run ends with its best weights. */
export class Diverged extends RecdistillError {
  constructor(readonly info: Divergence) {
    super('E_NUMERIC', info.reason);
  }
}

/** Index and value of the first non-finite entry, or undefined. */
function firstNonFinite(data: ArrayLike<number>): { index: number; value: number } | undefined {
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) return { index: i, value: data[i]! };
  return undefined;
}

export function checkpointPath(dir: string): string {
  return join(dir, 'checkpoint.safetensors');
}

export function saveCheckpoint(dir: string, model: Sasrec, hookVars: tf.Variable[], adam: Adam, best: Map<string, Float32Array>, state: RunState, identity: Record<string, unknown>, hookState?: Record<string, unknown>, bestHooks: Float32Array[] = [], ema?: Ema): void {
  const vars = [...modelVariables(model), ...hookVars];
  const names = [...model.params.keys(), ...hookVars.map((_, i) => `hook.${i}`)];
  const pairs: Array<[string, tf.Tensor]> = [];
  names.forEach((n, i) => {
    pairs.push([`model/${n}`, vars[i]!], [`adam.m/${n}`, adam.m[i]!], [`adam.v/${n}`, adam.v[i]!]);
  });
  if (ema) [...model.params.keys()].forEach((n, i) => pairs.push([`ema/${n}`, ema.shadow[i]!]));
  const tensors = tensorsOf(pairs);
  for (const [n, data] of best) tensors[`best/${n}`] = { dtype: 'F32', shape: model.params.get(n)!.shape.slice(), data };
  bestHooks.forEach((data, i) => (tensors[`best/hook.${i}`] = { dtype: 'F32', shape: hookVars[i]!.shape.slice(), data }));
  // Last line of defence (the epoch end already checked on the device): a checkpoint holds finite numbers only,
  // so the last committed one is always resumable.
  for (const [n, t] of Object.entries(tensors)) {
    const bad = firstNonFinite(t.data as Float32Array);
    if (bad) throw new Diverged({ epoch: state.epoch, step: state.step, loss: {}, reason: `tensor "${n}" holds ${bad.value} at index ${bad.index} after epoch ${state.epoch}; the checkpoint was not written` });
  }
  writeTensors(checkpointPath(dir), tensors, { state: JSON.stringify({ ...state, adamT: adam.t }), identity: stableStringify(identity), ...(hookState ? { hooks: JSON.stringify(hookState) } : {}) });
}

export function loadCheckpoint(dir: string, model: Sasrec, hookVars: tf.Variable[], adam: Adam, identity: Record<string, unknown>, ema?: Ema, hooks?: TrainHooks): { state: RunState; best: Map<string, Float32Array>; bestHooks: Float32Array[]; hookState?: Record<string, unknown> } {
  const path = checkpointPath(dir);
  const { tensors, metadata } = readTensors(path);
  const want = stableStringify(identity);
  let have: Record<string, unknown> = {};
  if (metadata.identity !== want && typeof metadata.identity === 'string') {
    const parsed = parseJson(metadata.identity, `${path} (metadata "identity")`, 'run identity');
    // paths stored as typed by older versions; the hooks' provenance as they write it today
    if (isObject(parsed)) have = absoluteIdentity(upgradeIdentity(parsed, hooks));
  }
  if (metadata.identity !== want && stableStringify(have) !== want) {
    const diff = diffKeys(have, identity);
    throw new RecdistillError('E_MISMATCH', `${path} was written by a different run (${diff}). Use another --out, or --no-resume to start over.`);
  }
  const state = checkState(metadata.state, path);
  const names = [...model.params.keys(), ...hookVars.map((_, i) => `hook.${i}`)];
  const vars = [...modelVariables(model), ...hookVars];
  // Refuse a poisoned checkpoint (written by an older version after training diverged) before assigning anything.
  for (const [name, t] of Object.entries(tensors)) {
    const bad = firstNonFinite(t.data as ArrayLike<number>);
    if (bad) {
      throw new RecdistillError('E_NUMERIC', `${path}: tensor "${name}" holds ${bad.value} at index ${bad.index}: the checkpoint was written after training diverged and cannot be resumed. Start over with --no-resume and a lower --lr (now ${String((identity.options as Record<string, unknown>)?.lr)}), or use another --out.`);
    }
  }
  const byName = (list: tf.Variable[]) => new Map(names.map((n, i) => [n, list[i]!] as [string, tf.Variable]));
  assignFrom(byName(vars), tensors, path, 'model/');
  assignFrom(byName(adam.m), tensors, path, 'adam.m/');
  assignFrom(byName(adam.v), tensors, path, 'adam.v/');
  if (ema) assignFrom(new Map([...model.params.keys()].map((n, i) => [n, ema.shadow[i]!] as [string, tf.Variable])), tensors, path, 'ema/');
  adam.t = state.adamT;
  const best = new Map<string, Float32Array>();
  for (const [n, v] of model.params) {
    const t = tensors[`best/${n}`];
    if (!t) continue;
    if (t.shape.join(',') !== v.shape.join(',') || t.data.length !== v.size || !(t.data instanceof Float32Array)) {
      throw new RecdistillError('E_MISMATCH', `${path}: tensor "best/${n}" has shape [${t.shape}] (${t.dtype}), the model expects F32 [${v.shape}].`);
    }
    best.set(n, t.data);
  }
  if (best.size > 0 && best.size !== model.params.size) throw new RecdistillError('E_INPUT', `${path}: holds ${best.size} of the model's ${model.params.size} "best/" tensors; the checkpoint is incomplete.`);
  // Hook variables at the best epoch (hooks with keepBest, e.g. EMKD's other networks): all of them or none.
  const bestHooks: Float32Array[] = [];
  for (const [i, v] of hookVars.entries()) {
    const t = tensors[`best/hook.${i}`];
    if (!t) break;
    if (t.shape.join(',') !== v.shape.join(',') || !(t.data instanceof Float32Array)) throw new RecdistillError('E_MISMATCH', `${path}: tensor "best/hook.${i}" has shape [${t.shape}] (${t.dtype}), the hook variable is F32 [${v.shape}].`);
    bestHooks.push(t.data);
  }
  if (bestHooks.length > 0 && bestHooks.length !== hookVars.length) throw new RecdistillError('E_INPUT', `${path}: holds ${bestHooks.length} of the ${hookVars.length} "best/hook." tensors; the checkpoint is incomplete.`);
  let hookState: Record<string, unknown> | undefined;
  if (typeof metadata.hooks === 'string') {
    const parsed = parseJson(metadata.hooks, `${path} (metadata "hooks")`, 'hook state');
    if (!isObject(parsed)) throw new RecdistillError('E_INPUT', `${path}: metadata "hooks" must be a JSON object.`);
    hookState = parsed;
  }
  return { state, best, bestHooks, hookState };
}

/** Parse and validate the checkpoint's `state` metadata (numbers in range, history an array of objects). */
function checkState(raw: string | undefined, path: string): RunState & { adamT: number } {
  const where = `${path} (metadata "state")`;
  if (typeof raw !== 'string') throw new RecdistillError('E_INPUT', `${where} is missing: not a student:train checkpoint.`);
  const v = parseJson(raw, where, 'training state');
  if (isObject(v) && v.best === null) v.best = -Infinity; // -Infinity (nothing validated yet) is written as null
  assertState(v, where);
  return v;
}

/** Every field of a checkpoint's state checked: numbers in range, history an array of objects, one per epoch. */
function assertState(v: unknown, where: string): asserts v is RunState & { adamT: number } {
  const bad = (what: string): never => {
    throw new RecdistillError('E_INPUT', `${where}: ${what}. The checkpoint is damaged: use --no-resume to start over, or another --out.`);
  };
  if (!isObject(v)) return bad('expected a JSON object');
  const count = (k: string) => {
    const x = v[k];
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) bad(`"${k}" must be a non-negative integer, got ${JSON.stringify(x)}`);
  };
  const seconds = (k: string) => {
    const x = v[k];
    if (typeof x !== 'number' || !Number.isFinite(x) || x < 0) bad(`"${k}" must be a non-negative number, got ${JSON.stringify(x)}`);
  };
  for (const k of ['epoch', 'step', 'bestEpoch', 'sinceBest', 'stepsTimed', 'adamT']) count(k);
  for (const k of ['trainSeconds', 'stepSeconds']) seconds(k);
  if (typeof v.best !== 'number' || Number.isNaN(v.best)) bad(`"best" must be a number, got ${JSON.stringify(v.best)}`);
  if (typeof v.done !== 'boolean') bad(`"done" must be a boolean, got ${JSON.stringify(v.done)}`);
  if (!Array.isArray(v.history) || !v.history.every((h) => isObject(h))) bad('"history" must be an array of objects');
  if ((v.history as unknown[]).length !== v.epoch) bad(`"history" has ${(v.history as unknown[]).length} entries for ${String(v.epoch)} epochs`);
  if ((v.bestEpoch as number) > (v.epoch as number)) bad(`"bestEpoch" ${String(v.bestEpoch)} is after "epoch" ${String(v.epoch)}`);
  if (v.refLoss !== undefined && (!isObject(v.refLoss) || !Object.values(v.refLoss).every((x) => typeof x === 'number' && Number.isFinite(x)))) bad('"refLoss" must be an object of finite numbers');
}

/** A stored identity with its distillation provenance as the hooks write it today (upgradeProvenance). */
export function upgradeIdentity(stored: Record<string, unknown>, hooks?: Pick<TrainHooks, 'upgradeProvenance'>): Record<string, unknown> {
  if (!hooks?.upgradeProvenance || stored.distill === undefined || stored.distill === null) return stored;
  return { ...stored, distill: hooks.upgradeProvenance(stored.distill) };
}

function diffKeys(a: Record<string, unknown>, b: Record<string, unknown>): string {
  const flat = (o: Record<string, unknown>) => ({ ...LEGACY_RUN_VALUES, ...o, ...((o.options as Record<string, unknown>) ?? {}), options: undefined });
  const fa = flat(a) as Record<string, unknown>;
  const fb = flat(b) as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(fa), ...Object.keys(fb)])].filter((k) => stableStringify(fa[k]) !== stableStringify(fb[k]));
  return keys.map((k) => `${k}: checkpoint ${stableStringify(fa[k])} vs now ${stableStringify(fb[k])}`).join('; ') || 'unknown difference';
}
