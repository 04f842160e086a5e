import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { prepareDataset, PREPARE_DEFAULTS } from '../../src/data/prepare.js';

const ML100K = resolve(__dirname, '../../../shared/data/ml-100k');
const ROOT = resolve(__dirname, '../..');
const tmp = () => mkdtempSync(join(tmpdir(), 'rd-ml-'));
const prep = (dataset: string, source: string, extra = {}) => prepareDataset({ dataset, source, ...PREPARE_DEFAULTS, ...extra });

describe('MovieLens 100K', () => {
  it('the real data: 943 users, 1682 items, 100000 interactions', () => {
    const d = prep('ml-100k', ML100K);
    expect([d.stats.users, d.stats.items, d.stats.interactions]).toEqual([943, 1682, 100000]);
    expect(d.items[1]).toMatchObject({ rawId: '1', title: 'Toy Story (1995)', year: 1995, genres: ['Animation', "Children's", 'Comedy'] });
  });

  it('reads latin-1 titles and genre flags from small files; accepts the archive directory one level up', () => {
    const dir = tmp();
    mkdirSync(join(dir, 'ml-100k'));
    writeFileSync(join(dir, 'ml-100k/u.data'), '1\t10\t5\t100\n1\t11\t3\t90\n2\t10\t4\t50\n');
    const item = Buffer.concat([
      Buffer.from('10|'),
      Buffer.from('Misérables, Les (1995)', 'latin1'),
      Buffer.from('|01-Jan-1995||http://x|0|1|1\n11|Heat (1995)|||http://y|1|0|0\n'),
    ]);
    writeFileSync(join(dir, 'ml-100k/u.item'), item);
    writeFileSync(join(dir, 'ml-100k/u.genre'), 'unknown|0\nAction|1\nDrama|2\n');
    const d = prep('ml-100k', dir);
    expect(d.items.slice(1).map((i) => [i.rawId, i.title, i.year, i.genres])).toEqual([
      ['10', 'Misérables, Les (1995)', 1995, ['Action', 'Drama']],
      ['11', 'Heat (1995)', 1995, ['unknown']],
    ]);
    expect([...d.users[0]!.items]).toEqual([2, 1]); // time 90 before 100
  });

  it('a malformed line 5 in a copy of u.data fails naming u.data and line 5 (CLI), and --on-bad-row skip counts it', () => {
    const dir = tmp();
    const lines = readFileSync(join(ML100K, 'u.data'), 'utf8').split('\n');
    lines[4] = '186\t302\tthree\t891717742';
    writeFileSync(join(dir, 'u.data'), lines.join('\n'));
    copyFileSync(join(ML100K, 'u.item'), join(dir, 'u.item'));
    const tsx = join(ROOT, 'node_modules/.bin/tsx');
    const out = join(dir, 'prepared');
    const r = spawnSync(tsx, ['src/cli/main.ts', 'data:prepare', '--dataset', 'ml-100k', '--source', dir, '--out', out, '--json'], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(existsSync(out)).toBe(false); // nothing written on failure
    expect(r.stderr).toMatch(/error \[E_INPUT\]: \S*u\.data line 5: expected 4 tab-separated fields: user id, item id, rating, unix timestamp; got "186\\t302\\tthree\\t891717742"/);
    expect(r.stdout).toBe('');
    const ok = execFileSync(tsx, ['src/cli/main.ts', 'data:prepare', '--dataset', 'ml-100k', '--source', dir, '--on-bad-row', 'skip', '--json'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const s = JSON.parse(ok.trim().split('\n').pop()!) as Record<string, number>;
    expect([s.interactions, s.skippedRows, s.users]).toEqual([99999, 1, 943]);
  });

  it('a missing file is its own error', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'u.data'), '1\t1\t5\t1\n');
    expect(() => prep('ml-100k', dir)).toThrow(/u\.item not found: expected the MovieLens 100K file u\.item/);
    expect(() => prep('ml-100k', join(dir, 'nope'))).toThrow(/nope not found/);
  });
});

describe('MovieLens 1M / 10M (.dat)', () => {
  it('parses :: files with latin-1 titles (1M) and UTF-8 titles inside ml-10M100K/ (10M)', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'ratings.dat'), '1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\r\n');
    writeFileSync(join(dir, 'movies.dat'), Buffer.from("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Jérôme (1996)::Animation|Children's|Musical\n", 'latin1'));
    const d = prep('ml-1m', dir);
    expect([d.stats.users, d.stats.items, d.stats.interactions]).toEqual([2, 2, 3]);
    expect(d.items.slice(1).map((i) => [i.rawId, i.title, i.genres])).toEqual([
      ['661', 'Jérôme (1996)', ['Animation', "Children's", 'Musical']],
      ['1193', "One Flew Over the Cuckoo's Nest (1975)", ['Drama']],
    ]);
    const ten = tmp();
    mkdirSync(join(ten, 'ml-10M100K'));
    writeFileSync(join(ten, 'ml-10M100K/ratings.dat'), '5::122::4.5::838985046\n5::185::5::838983525\n');
    writeFileSync(join(ten, 'ml-10M100K/movies.dat'), '122::Boomerang (1992)::Comedy|Romance\n185::Amélie (2001)::(no genres listed)\n');
    const t = prep('ml-10m', ten);
    expect(t.items.slice(1).map((i) => [i.title, i.genres])).toEqual([['Boomerang (1992)', ['Comedy', 'Romance']], ['Amélie (2001)', []]]);
    expect([...t.users[0]!.items]).toEqual([2, 1]);
  });

  it('names file and line of a malformed row', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'ratings.dat'), '1::1::5::9\n1::2::5\n');
    writeFileSync(join(dir, 'movies.dat'), '1::A (1990)::Drama\n2::B (1991)::Drama\n');
    expect(() => prep('ml-1m', dir)).toThrow(/ratings\.dat line 2: expected 4 "::"-separated fields/);
  });
});

describe('MovieLens 20M+ (.csv)', () => {
  const movies = [
    'movieId,title,genres',
    '1,Toy Story (1995),Adventure|Animation',
    '11,"American President, The (1995)",Comedy|Drama|Romance',
    '12,"Dracula: Dead and Loving It (1995)",Comedy|Horror',
    '13,"Film ""Quoted"", With Commas, (2001)",(no genres listed)',
  ].join('\r\n');

  it('RFC-4180 quoted titles with commas and doubled quotes', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'ratings.csv'), 'userId,movieId,rating,timestamp\n1,11,4.0,964982703\n1,13,3.5,964981247\n2,1,5.0,964982224\n2,12,1.0,964982931\n');
    writeFileSync(join(dir, 'movies.csv'), movies);
    for (const name of ['ml-20m', 'ml-25m', 'ml-32m', 'ml-latest', 'ml-latest-small']) {
      const d = prep(name, dir);
      expect(d.stats.interactions).toBe(4);
      expect(d.items.slice(1).map((i) => [i.rawId, i.title, i.year, i.genres])).toEqual([
        ['1', 'Toy Story (1995)', 1995, ['Adventure', 'Animation']],
        ['11', 'American President, The (1995)', 1995, ['Comedy', 'Drama', 'Romance']],
        ['12', 'Dracula: Dead and Loving It (1995)', 1995, ['Comedy', 'Horror']],
        ['13', 'Film "Quoted", With Commas, (2001)', 2001, []],
      ]);
    }
    const d = prep('ml-latest-small', dir, { minRating: 3.5 });
    expect(d.stats.interactions).toBe(3);
  });

  it('bad quoting, bad header and invalid UTF-8 are clear errors', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'ratings.csv'), 'userId,movieId,rating,timestamp\n1,1,4.0,964982703\n');
    writeFileSync(join(dir, 'movies.csv'), 'movieId,title,genres\n1,"Unclosed (1995),Drama\n');
    expect(() => prep('ml-20m', dir)).toThrow(/movies\.csv line \d+: expected well-formed RFC-4180 quoting/);
    writeFileSync(join(dir, 'movies.csv'), 'id,name,genres\n1,A,Drama\n');
    expect(() => prep('ml-20m', dir)).toThrow(/movies\.csv line 1: expected the header movieId,title,genres/);
    writeFileSync(join(dir, 'movies.csv'), Buffer.concat([Buffer.from('movieId,title,genres\n1,A (1990),Drama\n2,'), Buffer.from('Amélie (2001)', 'latin1'), Buffer.from(',Comedy\n')]));
    expect(() => prep('ml-20m', dir)).toThrow(/movies\.csv line 3: invalid UTF-8; this file must be UTF-8/);
  });
});
