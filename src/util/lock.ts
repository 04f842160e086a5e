import { closeSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { RecdistillError } from '../errors.js';
import { alive } from './process.js';

/**
 * One writer per cache directory: `.lock` holds "pid@host". A lock whose process is gone (killed run) is
 * taken over, so resuming after SIGKILL just works; a live one is refused with its pid. Taking the lock
 * removes temp files a killed writer left behind.
 */
export function lockCacheDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, '.lock');
  const me = `${process.pid}@${hostname()}`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, me);
      closeSync(fd);
      // Temp files of a killed writer (atomic writes: .<name>.<pid>.<rand>.tmp) are garbage now.
      for (const f of readdirSync(dir)) if (f.startsWith('.') && f.endsWith('.tmp')) rmSync(join(dir, f), { force: true });
      return () => rmSync(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let holder = '';
      try {
        holder = readFileSync(path, 'utf8').trim();
      } catch {
        continue; // removed meanwhile: try again
      }
      const [pid, host] = holder.split('@');
      if (host === hostname() && alive(Number(pid))) {
        throw new RecdistillError('E_USAGE', `${dir} is being written by another process (pid ${pid}); wait for it or use another --out.`);
      }
      rmSync(path, { force: true }); // stale: its process is gone
    }
  }
  throw new RecdistillError('E_INTERNAL', `could not lock ${dir} (${path}).`);
}

