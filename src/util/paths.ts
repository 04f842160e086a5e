import { resolve } from 'node:path';

/** A local path made absolute (URLs and empty strings stay as they are), so a recorded path works from any folder. */
export function absPath(p: unknown): unknown {
  return typeof p === 'string' && p !== '' && !/^[a-z][a-z0-9+.-]*:\/\//i.test(p) ? resolve(p) : p;
}
