import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { RecdistillError } from '../errors.js';
import { alive } from '../util/process.js';
import type { LogFn } from '../util/progress.js';

/** errno codes of a write that failed because of the target (full, read-only, not permitted), not a bug. */
const WRITE_CODES: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
};

/**
 * A write error as a RecdistillError naming `path` (what was being written) and the way out; other errors
 * (bugs, already-typed errors) are returned unchanged. Use as `throw writeError(e, path, hint)`.
 */
export function writeError(e: unknown, path: string, hint = 'free some space or fix the permissions, or choose another location'): unknown {
  if (e instanceof RecdistillError) return e;
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  if (!code || !Object.hasOwn(WRITE_CODES, code)) return e;
  return new RecdistillError('E_USAGE', `cannot write ${path}: ${WRITE_CODES[code]} (${code}); ${hint}. Nothing was kept.`, { cause: e });
}


/** A temp entry older than this whose owning process is dead is debris of a killed run. */
const STALE_AGE_MS = 24 * 3600 * 1000;

/**
 * Remove entries of `dir` whose name matches `re` (group 1 = the owning pid) when that pid is dead and
 * the entry was last modified more than `maxAgeMs` ago, and `accept(path)` agrees. Returns the names removed.
 */
export function removeStaleEntries(dir: string, re: RegExp, accept: (path: string) => boolean = () => true, maxAgeMs = STALE_AGE_MS): string[] {
  if (!existsSync(dir)) return [];
  const removed: string[] = [];
  const now = Date.now();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  for (const name of names) {
    const m = re.exec(name);
    if (!m || alive(Number(m[1]))) continue;
    const path = join(dir, name);
    try {
      if (now - statSync(path).mtimeMs < maxAgeMs || !accept(path)) continue;
      rmSync(path, { recursive: true, force: true });
      removed.push(name);
    } catch {
      // Vanished or not removable: leave it; this is housekeeping, not the task at hand.
    }
  }
  return removed;
}

/** Remove temp files/dirs of `base` left by killed downloads (their process is gone). */
export function removeStaleTemps(parent: string, base: string, log: LogFn): number {
  if (!existsSync(parent)) return 0;
  const re = new RegExp(`^\\.${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(\\d+)\\.[0-9a-f]+\\.(download|extract)$`);
  let n = 0;
  for (const name of readdirSync(parent)) {
    const m = re.exec(name);
    if (!m || alive(Number(m[1]))) continue;
    rmSync(join(parent, name), { recursive: true, force: true });
    n++;
  }
  if (n) log(`removed ${n} leftover temp file(s) of an interrupted ${base} download`);
  return n;
}
