import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { RecdistillError } from '../errors.js';
import type { ItemInfo, PreparedDataset } from './types.js';

/**
 * A prepared dataset on disk, for inspection and for other tools (pandas: read_json(lines=True)):
 *   dataset.json  name, fingerprint, options, stats, split rule, source files
 *   items.jsonl   one item per line, ids 1..N: {id, rawId, title, year?, genres, extra?}
 *   users.jsonl   one user per line in dense order: {id, rawId, items: [dense ids in time order]}
 * Written into a temp directory and renamed into place: a failed run leaves nothing behind.
 */
export const PREPARED_FORMAT = 'recdistill-prepared-v1';

export interface PreparedMeta {
  format: string;
  name: string;
  fingerprint: string;
  options: Record<string, unknown>;
  stats: PreparedDataset['stats'];
  split: string;
  files: string[];
}

export function writePrepared(d: PreparedDataset, dir: string, files: string[] = []): void {
  if (existsSync(dir) && readdirSync(dir).length > 0 && !existsSync(join(dir, 'dataset.json'))) {
    throw new RecdistillError('E_USAGE', `${dir} exists and is not a prepared dataset (no dataset.json); refusing to replace it.`);
  }
  mkdirSync(dirname(dir), { recursive: true });
  const tmp = join(dirname(dir), `.${basename(dir)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    mkdirSync(tmp);
    const meta: PreparedMeta = {
      format: PREPARED_FORMAT,
      name: d.name,
      fingerprint: d.fingerprint,
      options: d.options,
      stats: d.stats,
      split: 'leave-one-out per user: last item = test, second-to-last = validation, the rest = training (users with < 3 items: training only)',
      files,
    };
    writeFileSync(join(tmp, 'dataset.json'), JSON.stringify(meta, null, 2) + '\n');
    writeFileSync(join(tmp, 'items.jsonl'), d.items.slice(1).map((it) => JSON.stringify(it)).join('\n') + '\n');
    writeFileSync(join(tmp, 'users.jsonl'), d.users.map((u, i) => JSON.stringify({ id: i, rawId: u.rawId, items: [...u.items] })).join('\n') + '\n');
    // Replace an older export only once the new one is complete.
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function readLines<T>(file: string): T[] {
  if (!existsSync(file)) throw new RecdistillError('E_NOT_FOUND', `${file} not found: expected a file of a prepared dataset.`);
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l, i) => {
    try {
      return JSON.parse(l) as T;
    } catch {
      throw new RecdistillError('E_INPUT', `${file} line ${i + 1}: expected one JSON object per line.`);
    }
  });
}

/** Read an export back (round trip of writePrepared). */
export function readPrepared(dir: string): PreparedDataset {
  const metaFile = join(dir, 'dataset.json');
  if (!existsSync(metaFile)) throw new RecdistillError('E_NOT_FOUND', `${metaFile} not found: ${dir} is not a prepared dataset.`);
  const meta = JSON.parse(readFileSync(metaFile, 'utf8')) as PreparedMeta;
  if (meta.format !== PREPARED_FORMAT) throw new RecdistillError('E_MISMATCH', `${metaFile}: format ${JSON.stringify(meta.format)}, expected ${PREPARED_FORMAT}.`);
  const items: ItemInfo[] = [{ id: 0, rawId: '', title: '<pad>', genres: [] }, ...readLines<ItemInfo>(join(dir, 'items.jsonl'))];
  items.forEach((it, i) => {
    if (it.id !== i) throw new RecdistillError('E_INPUT', `${join(dir, 'items.jsonl')} line ${i}: expected id ${i}, got ${it.id}.`);
  });
  const users = readLines<{ rawId: string; items: number[] }>(join(dir, 'users.jsonl')).map((u) => ({ rawId: u.rawId, items: Int32Array.from(u.items) }));
  return { name: meta.name, fingerprint: meta.fingerprint, options: meta.options, items, users, stats: meta.stats };
}
