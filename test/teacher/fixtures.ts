import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ItemInfo, PreparedDataset } from '../../src/data/types.js';
import { writeTinyModel } from '../../src/teacher/tiny/index.js';

/** A small model (2 blocks, hidden 32) written by model:tiny into a fresh temp folder. */
export function tinyModelDir(opts: { layers?: number; hidden?: number; heads?: number; seed?: number; kvCache?: boolean } = {}): { dir: string; cleanup: () => void } {
  const root = mkdtempSync(join(tmpdir(), 'recdistill-tiny-test-'));
  const dir = join(root, 'tiny');
  writeTinyModel({ out: dir, layers: opts.layers ?? 2, hidden: opts.hidden ?? 32, heads: opts.heads ?? 2, seed: opts.seed ?? 1, merges: 300, maxPositions: 512, kvCache: opts.kvCache });
  return { dir, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

const TITLES: [string, number | undefined, string[]][] = [
  ['Toy Story (1995)', 1995, ['Animation', "Children's", 'Comedy']],
  ['Misérables, Les (1995)', 1995, ['Drama', 'Musical']],
  ['GoldenEye', 1995, ['Action', 'Thriller']],
  ['Amélie', 2001, ['Comedy', 'Romance']],
  ['Fargo (1996)', 1996, ['Crime', 'Drama', 'Thriller']],
  ['Star Wars (1977)', 1977, ['Action', 'Adventure', 'Sci-Fi', 'War']],
  ['Twelve Monkeys (1995)', 1995, ['Drama', 'Sci-Fi']],
  ['Babe (1995)', 1995, ["Children's", 'Comedy', 'Drama']],
  ['Dead Man Walking (1995)', 1995, ['Drama']],
  ['Richard III (1995)', 1995, ['Drama', 'War']],
  ['Seven (Se7en) (1995)', 1995, ['Crime', 'Thriller']],
  ['Usual Suspects, The (1995)', 1995, ['Crime', 'Thriller']],
];

/** 12 items, 3 users; user 0 has a long history (every item twice). */
export function tinyDataset(): PreparedDataset {
  const items: ItemInfo[] = [{ id: 0, rawId: '', title: '', genres: [] }];
  TITLES.forEach(([title, year, genres], i) => items.push({ id: i + 1, rawId: String(i + 1), title, year, genres }));
  const seq = (a: number[]) => ({ rawId: String(a[0]), items: Int32Array.from(a) });
  const long = [...Array.from({ length: 12 }, (_, i) => i + 1), ...Array.from({ length: 12 }, (_, i) => 12 - i)];
  return {
    name: 'tiny-test',
    fingerprint: 'f'.repeat(64),
    options: {},
    items,
    users: [seq(long), seq([2, 4, 6, 8, 10]), seq([1, 3])],
    stats: { users: 3, items: 12, interactions: 31, meanSeqLen: 31 / 3, medianSeqLen: 5, density: 31 / 36 },
  };
}
