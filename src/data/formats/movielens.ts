import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { RecdistillError } from '../../errors.js';
import { sha256 } from '../../util/hash.js';
import type { RawDataset, RawInteraction } from '../types.js';

export type BadRowPolicy = 'error' | 'skip';

export interface LoadContext {
  onBadRow: BadRowPolicy;
  /** Incremented for every skipped row when onBadRow = 'skip'. */
  skipped: { count: number };
}

function readRequired(dir: string, name: string): Buffer {
  const p = join(dir, name);
  if (!existsSync(p)) throw new RecdistillError('E_NOT_FOUND', `${p} not found: expected the MovieLens file ${name} in ${dir}.`);
  return readFileSync(p);
}

export function badRow(ctx: LoadContext, file: string, line: number, expected: string, text: string): void {
  if (ctx.onBadRow === 'skip') {
    ctx.skipped.count++;
    return;
  }
  const shown = text.length > 80 ? text.slice(0, 80) + '...' : text;
  throw new RecdistillError(
    'E_INPUT',
    `${file} line ${line}: expected ${expected}; got ${JSON.stringify(shown)} (use --on-bad-row skip to skip such rows).`,
  );
}

/** "Toy Story (1995)" -> 1995; undefined when the title has no trailing year. */
export function yearFromTitle(title: string): number | undefined {
  const m = /\((\d{4})\)\s*$/.exec(title);
  return m ? Number(m[1]) : undefined;
}

/** MovieLens 100K: u.data (user \t item \t rating \t time), u.item (| separated, latin-1, 19 genre flags). */
export function loadMl100k(dir: string, ctx: LoadContext): RawDataset {
  const dataBuf = readRequired(dir, 'u.data');
  const itemBuf = readRequired(dir, 'u.item');
  const genreBuf = existsSync(join(dir, 'u.genre')) ? readFileSync(join(dir, 'u.genre')) : undefined;
  const dataFile = join(dir, 'u.data');
  const interactions: RawInteraction[] = [];
  const lines = dataBuf.toString('utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.replace(/\r$/, '');
    if (raw === '') continue;
    const f = raw.split('\t');
    const rating = Number(f[2]);
    const time = Number(f[3]);
    if (f.length !== 4 || !f[0] || !f[1] || !Number.isFinite(rating) || !Number.isFinite(time)) {
      badRow(ctx, 'u.data', i + 1, '4 tab-separated fields: user id, item id, rating, unix timestamp', raw);
      continue;
    }
    interactions.push({ user: f[0], item: f[1], rating, time, order: interactions.length });
  }
  const genreNames = genreBuf
    ? genreBuf.toString('latin1').split('\n').map((l) => l.split('|')[0]!).filter((g) => g !== '')
    : [];
  const items = new Map<string, { title: string; year?: number; genres: string[] }>();
  const itemLines = itemBuf.toString('latin1').split('\n');
  for (let i = 0; i < itemLines.length; i++) {
    const raw = itemLines[i]!.replace(/\r$/, '');
    if (raw === '') continue;
    const f = raw.split('|');
    if (f.length < 5 || !f[0]) {
      badRow(ctx, 'u.item', i + 1, '"|"-separated fields: id|title|release date|video date|url|genre flags', raw);
      continue;
    }
    const title = f[1]!.trim();
    const flags = f.slice(5);
    const genres = flags.flatMap((v, g) => (v === '1' ? [genreNames[g] ?? `genre${g}`] : []));
    items.set(f[0], { title, year: yearFromTitle(title), genres });
  }
  void dataFile;
  const rawHash = sha256(Buffer.concat([Buffer.from(sha256(dataBuf)), Buffer.from(sha256(itemBuf))]));
  return { interactions, items, rawHash, files: [join(dir, 'u.data'), join(dir, 'u.item')] };
}
