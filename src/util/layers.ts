/**
 * Layer numbering: the one parser of layer lists and the one resolver of negative indices.
 *
 * Every index is 0-based; a negative index counts from the end (-1 = last), and is resolved here only.
 * Which list an index points into depends on the flag (each keeps the meaning it always had):
 *
 * | where                        | indexes                                    | stored as                          |
 * |------------------------------|--------------------------------------------|------------------------------------|
 * | `--layers` (teacher:cache, ablate) | the teacher model's blocks (llm: decoder layers, seqrec: SASRec blocks) | manifest `teacher.layers`: absolute block numbers, in the order given |
 * | `--head-layer` (llm teacher) | the tapped list, i.e. manifest `teacher.layers` | manifest `head.layer`: as given (may be negative) |
 * | `--align B:T,...` (student:train) | B: the student's blocks; T: the tapped list | provenance `align`: B (absolute) and T's absolute teacher block (`teacher.layers[T]`); `alignFrom: 0` (runs without it counted B from 1) |
 *
 * Empty parts ("1,,2", "1,"), "-0", non-integers, out-of-range indices and an index named twice (also
 * "-1" and its absolute twin) are usage errors naming the flag.
 */
import { RecdistillError } from '../errors.js';

/** Split a comma-separated list; an empty list or an empty part is an error naming `flag`. */
export function splitList(spec: string, flag: string, example = '-4,-1'): string[] {
  const parts = spec.split(',').map((s) => s.trim());
  if (spec.trim() === '') throw new RecdistillError('E_USAGE', `${flag}: give at least one entry (e.g. "${example}").`);
  const empty = parts.indexOf('');
  if (empty >= 0) throw new RecdistillError('E_USAGE', `${flag} "${spec}": entry ${empty + 1} is empty (write comma-separated integers like "${example}").`);
  return parts;
}

/** One integer index; "-0" is refused (neither the first nor the last). */
export function parseIndex(part: string, flag: string, spec = part): number {
  const s = part.trim();
  if (!/^[+-]?\d+$/.test(s)) throw new RecdistillError('E_USAGE', `${flag} "${spec}": "${s}" is not an integer (write comma-separated integers like "-4,-1").`);
  const v = Number(s);
  if (Object.is(v, -0)) throw new RecdistillError('E_USAGE', `${flag} "${spec}": "${s}" is ambiguous; write 0 for the first or -1 for the last.`);
  return v;
}

/** "-4, -1" -> [-4, -1] (unresolved: negatives stay negative). */
export function parseLayerList(spec: string, flag: string): number[] {
  return splitList(spec, flag).map((p) => parseIndex(p, flag, spec));
}

/** What an index is resolved against, for messages: "--layers", "a model with 4 blocks". */
export interface IndexSpace {
  flag: string;
  /** e.g. "the model's 4 blocks", "the cache's 2 tapped layers". */
  of: string;
  /** E_USAGE (default) for a flag, E_INPUT for a stored file. */
  code?: 'E_USAGE' | 'E_INPUT';
}

/** One index into a list of `count`: negative counts from the end. */
export function resolveIndex(index: number, count: number, space: IndexSpace, spec = Object.is(index, -0) ? '-0' : String(index)): number {
  const a = index < 0 ? count + index : index;
  if (!Number.isInteger(index) || Object.is(index, -0) || a < 0 || a >= count) {
    const valid = count > 0 ? `valid: 0..${count - 1} or -${count}..-1` : 'there are none';
    const shown = Object.is(index, -0) ? '-0' : String(index);
    const where = spec === shown ? `${space.flag} ${shown}` : `${space.flag} "${spec}": ${shown}`;
    throw new RecdistillError(space.code ?? 'E_USAGE', `${where} is out of range for ${space.of} (${valid}).`);
  }
  return a;
}

/** Every index resolved; the same position named twice (e.g. 3 and -1 of 4) is an error. */
export function resolveIndices(indices: number[], count: number, space: IndexSpace, spec = indices.join(',')): number[] {
  if (!indices.length) throw new RecdistillError('E_USAGE', `${space.flag}: give at least one entry (e.g. "-1").`);
  const seen = new Map<number, number>();
  return indices.map((i) => {
    const a = resolveIndex(i, count, space, spec);
    const before = seen.get(a);
    if (before !== undefined) {
      const what = before === i ? `${i} appears twice` : `${before} and ${i} are the same entry (${a})`;
      throw new RecdistillError('E_USAGE', `${space.flag} "${spec}": ${what} of ${space.of}; name each once.`);
    }
    seen.set(a, i);
    return a;
  });
}

/** Parse and resolve a `--layers`-style list against `count` entries, in the order given. */
export function resolveLayerList(spec: string, count: number, space: IndexSpace): number[] {
  return resolveIndices(parseLayerList(spec, space.flag), count, space, spec);
}
