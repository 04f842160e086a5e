import { RecdistillError } from '../errors.js';

/**
 * Fields of values that loosely typed APIs hand over (tfjs kernel attrs and backend internals, onnxruntime
 * sessions, tokenizers, JSON results of child processes), read with a check at run time instead of a cast.
 */

/** `x[key]` when x is an object (or function) that has it, else undefined. */
export function field(x: unknown, key: string): unknown {
  if (x === null || (typeof x !== 'object' && typeof x !== 'function')) return undefined;
  return Object.hasOwn(x, key) || key in x ? (x as Record<string, unknown>)[key] : undefined;
}

/** A number field; anything else is an internal error naming `where` (the API changed under us). */
export function numberField(x: unknown, key: string, where: string): number {
  const v = field(x, key);
  if (typeof v !== 'number') throw new RecdistillError('E_INTERNAL', `${where}: "${key}" is ${JSON.stringify(v)}, expected a number.`);
  return v;
}

/** A boolean field (absent = false, as tfjs's optional kernel flags). */
export function flagField(x: unknown, key: string, where: string): boolean {
  const v = field(x, key);
  if (v !== undefined && typeof v !== 'boolean') throw new RecdistillError('E_INTERNAL', `${where}: "${key}" is ${JSON.stringify(v)}, expected a boolean.`);
  return v === true;
}
