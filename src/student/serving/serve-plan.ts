import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { RecdistillError } from '../../errors.js';
import { writeJsonAtomic } from '../../util/atomic.js';
import { isObject, readJsonFile } from '../model/run-folder.js';

/**
 * What a run folder serves, from its serve.json (no tfjs here: the onnx serving path reads it too):
 * - no serve.json, or `{ "serve": "member" }`: its own model.safetensors (one network);
 * - `{ "serve": "ensemble", "members": ["ensemble-1", ...] }`: the average of the scores of the member folders'
 *   model.safetensors (folders inside the run folder, named relative to it so the run can move). An EMKD run
 *   writes it (`student:train --emkd K --serve ensemble`, src/distill/emkd/ensemble.ts).
 * loadStudent (serve.ts), `eval --student`, bench and the HTTP server (src/serve/recommender.ts) follow it.
 */
export const SERVE_FILE = 'serve.json';

export type ServePlan = { serve: 'member' } | { serve: 'ensemble'; members: string[] };

/** A member folder name: one path segment inside the run folder. */
const MEMBER_NAME = /^(?!\.\.?$)[A-Za-z0-9._-]+$/;

export function readServePlan(dir: string): ServePlan {
  const path = join(dir, SERVE_FILE);
  if (!existsSync(path)) return { serve: 'member' };
  const v = readJsonFile(path, 'what the run serves');
  if (isObject(v) && v.serve === 'member') return { serve: 'member' };
  if (isObject(v) && v.serve === 'ensemble' && Array.isArray(v.members) && v.members.length > 0 && v.members.every((m) => typeof m === 'string' && MEMBER_NAME.test(m))) {
    return { serve: 'ensemble', members: v.members as string[] };
  }
  throw new RecdistillError('E_INPUT', `${path}: expected {"serve": "member"} or {"serve": "ensemble", "members": [folder names inside ${dir}]}, got ${JSON.stringify(v).slice(0, 200)}.`);
}

export function writeServePlan(dir: string, plan: ServePlan): void {
  if (plan.serve === 'ensemble' && !(plan.members.length > 0 && plan.members.every((m) => MEMBER_NAME.test(m)))) throw new RecdistillError('E_INTERNAL', `writeServePlan: bad member names ${JSON.stringify(plan.members)}.`);
  const scores = plan.serve === 'ensemble' ? 'the mean of the members\' scores' : 'model.safetensors';
  writeJsonAtomic(join(dir, SERVE_FILE), { ...plan, scores });
}

/** sum += s, in float64 (created from the first s). */
function addInto(sum: Float64Array | undefined, s: Float32Array): Float64Array {
  if (!sum) return Float64Array.from(s);
  if (s.length !== sum.length) throw new RecdistillError('E_MISMATCH', `ensemble members score ${sum.length} and ${s.length} values for the same histories.`);
  for (let i = 0; i < s.length; i++) sum[i]! += s[i]!;
  return sum;
}

function meanOf(sum: Float64Array | undefined, n: number): Float32Array {
  if (!sum) throw new RecdistillError('E_INTERNAL', 'averageScores: no scorer.');
  return Float32Array.from(sum, (x) => x / n);
}

/** The average of several scorers' [B, N + 1] scores (an ensemble's scores), summed in float64, one scorer at a time. */
export function averageScores(scoreFns: Array<(histories: Int32Array[]) => Float32Array>, histories: Int32Array[]): Float32Array {
  let sum: Float64Array | undefined;
  for (const f of scoreFns) sum = addInto(sum, f(histories));
  return meanOf(sum, scoreFns.length);
}

/** averageScores for asynchronous scorers (onnxruntime sessions), run one after the other. */
export async function averageScoresAsync(scoreFns: Array<(histories: Int32Array[]) => Promise<Float32Array>>, histories: Int32Array[]): Promise<Float32Array> {
  let sum: Float64Array | undefined;
  for (const f of scoreFns) sum = addInto(sum, await f(histories));
  return meanOf(sum, scoreFns.length);
}
