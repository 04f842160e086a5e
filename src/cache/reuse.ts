import { copyFileSync, existsSync, linkSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { tempPathFor } from '../util/atomic.js';
import { sha256 } from '../util/hash.js';
import {
  ITEMS_FILE,
  MANIFEST_FILE,
  pass1Key,
  readManifest,
  shardFile,
  type CacheManifest,
} from './format.js';

/**
 * Resuming a cache next to a finished sibling: shards another run of the same key already wrote are hard-linked
 * (or copied) in after their sha256 checks, instead of being encoded again.
 */

/** Timing keys that describe pass 1 (copied along with reused shards). */
const PASS1_TIMINGS = ['hiddenSeconds', 'encodedUsers', 'promptsPerSec', 'tokens', 'tokensPerSec', 'itemSeconds', 'plainTokensPerSec', 'overhead'];
/** Hard-link (or copy) a file atomically: temp name, then rename. */
function linkAtomic(src: string, dst: string): void {
  const tmp = tempPathFor(dst);
  try {
    try {
      linkSync(src, tmp);
    } catch {
      copyFileSync(src, tmp);
    }
    renameSync(tmp, dst);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * Look in the cache directory's siblings for a cache with the same pass-1 key and link its finished
 * hidden shards (and items) into `dir`, checking each file's sha256 against that cache's manifest.
 * Returns how many shards were reused.
 */
export function reuseSiblingFiles(dir: string, m: CacheManifest, s0: number, s1: number, log: (l: string) => void): number {
  const want = pass1Key(m);
  const parent = dirname(resolve(dir));
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch {
    return 0;
  }
  let reused = 0;
  for (const name of names) {
    const other = join(parent, name);
    if (other === resolve(dir) || !existsSync(join(other, MANIFEST_FILE))) continue;
    let om: CacheManifest;
    try {
      om = readManifest(other);
    } catch {
      continue;
    }
    if (pass1Key(om) !== want) continue;
    const ok = (file: string, sha: string) => existsSync(join(other, file)) && !existsSync(join(dir, file)) && sha256(readFileSync(join(other, file))) === sha;
    if (om.items && !existsSync(join(dir, ITEMS_FILE)) && ok(om.items.file, om.items.sha256)) linkAtomic(join(other, om.items.file), join(dir, ITEMS_FILE));
    for (const s of om.shards) {
      if (s.index < s0 || s.index >= s1 || !ok(s.file, s.sha256)) continue;
      linkAtomic(join(other, s.file), join(dir, shardFile(s.index)));
      reused++;
    }
    if (reused && m.timings.promptsPerSec === undefined) {
      for (const k of PASS1_TIMINGS) if (om.timings[k] !== undefined) m.timings[k] = om.timings[k]!;
    }
    if (reused) log(`teacher:cache: reused ${reused} pass-1 shard(s) from ${other} (same teacher and dataset; only soft-label options differ)`);
  }
  return reused;
}
