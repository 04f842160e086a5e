import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { prepareDataset, PREPARE_DEFAULTS, type PrepareOptions } from '../../src/data/prepare.js';
import { splitUser } from '../../src/data/split.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'rd-seq-'));
const prep = (o: Partial<PrepareOptions> & { dataset: string; source: string }) => prepareDataset({ ...PREPARE_DEFAULTS, ...o });
const SHARED = resolve(import.meta.dirname, '../../../shared/data');

describe('sequence files (S3Rec layout) and pairs files (SASRec layout)', () => {
  it('sequences: the line order is the time order; attributes become the items\' categories', () => {
    const dir = tmp();
    // Items written in an order unrelated to their ids, to see that time = position in the line.
    writeFileSync(join(dir, 'seq.txt'), '2 30 10 20\n1 20 30 10 40\n');
    writeFileSync(join(dir, 'attrs.json'), JSON.stringify({ 10: [7, 3, 3], 20: [], 30: [12], 40: [1], 99: [5] }));
    const d = prep({ dataset: 'sequences', source: join(dir, 'seq.txt'), itemsFile: join(dir, 'attrs.json') });
    expect([d.stats.users, d.stats.items, d.stats.interactions]).toEqual([2, 4, 7]);
    // Dense ids in raw-id order: 10 -> 1, 20 -> 2, 30 -> 3, 40 -> 4; users in raw-id order: '1', '2'.
    expect(d.items.slice(1).map((i) => [i.rawId, i.title, i.genres])).toEqual([
      ['10', '10', ['3', '7']],
      ['20', '20', []],
      ['30', '30', ['12']],
      ['40', '40', ['1']],
    ]);
    expect(d.users.map((u) => [u.rawId, [...u.items]])).toEqual([
      ['1', [2, 3, 1, 4]],
      ['2', [3, 1, 2]],
    ]);
    expect(splitUser(d.users[0]!.items)).toMatchObject({ valid: 1, test: 4 });
  });

  it('pairs: one "user item" per line, users interleaved, each user\'s lines in file order', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'pairs.txt'), '1 5\n2 6\n1 4\n2\t5\n1 6\n');
    const d = prep({ dataset: 'pairs', source: join(dir, 'pairs.txt') });
    expect(d.users.map((u) => [...u.items].map((i) => d.items[i]!.rawId))).toEqual([
      ['5', '4', '6'],
      ['6', '5'],
    ]);
  });

  it('bad lines and bad attribute files are errors naming the file and line', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'seq.txt'), '1 2 3\n7\n');
    expect(() => prep({ dataset: 'sequences', source: join(dir, 'seq.txt') })).toThrow(/seq\.txt line 2: expected "user item item/);
    expect(prep({ dataset: 'sequences', source: join(dir, 'seq.txt'), onBadRow: 'skip' }).skippedRows).toBe(1);
    writeFileSync(join(dir, 'pairs.txt'), '1 2\n1 2 3\n');
    expect(() => prep({ dataset: 'pairs', source: join(dir, 'pairs.txt') })).toThrow(/pairs\.txt line 2: expected "user item"/);
    writeFileSync(join(dir, 'ok.txt'), '1 2 3 4\n');
    writeFileSync(join(dir, 'a.json'), '[1, 2]');
    expect(() => prep({ dataset: 'sequences', source: join(dir, 'ok.txt'), itemsFile: join(dir, 'a.json') })).toThrow(/a\.json: expected a JSON object/);
    writeFileSync(join(dir, 'b.json'), '{"2": [1, {"x": 1}]}');
    expect(() => prep({ dataset: 'sequences', source: join(dir, 'ok.txt'), itemsFile: join(dir, 'b.json') })).toThrow(/b\.json: item "2" must map to an array of attribute ids/);
    writeFileSync(join(dir, 'c.json'), '{"2": [1,');
    expect(() => prep({ dataset: 'sequences', source: join(dir, 'ok.txt'), itemsFile: join(dir, 'c.json') })).toThrow(/c\.json: not valid JSON/);
    expect(() => prep({ dataset: 'amazon-beauty', source: dir })).toThrow(/Beauty\.txt not found/);
  });

  it('the attributes file changes the fingerprint; the same files give the same one', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'seq.txt'), '1 2 3 4\n');
    writeFileSync(join(dir, 'a.json'), '{"2": [1]}');
    const a = prep({ dataset: 'sequences', source: join(dir, 'seq.txt') }).fingerprint;
    const b = prep({ dataset: 'sequences', source: join(dir, 'seq.txt'), itemsFile: join(dir, 'a.json') }).fingerprint;
    expect(a).not.toBe(b);
    expect(prep({ dataset: 'sequences', source: join(dir, 'seq.txt') }).fingerprint).toBe(a);
  });

  it('amazon-beauty and amazon-toys read the published files with their published counts', () => {
    const beauty = prep({ dataset: 'amazon-beauty', source: join(SHARED, 'amazon-beauty') });
    expect([beauty.stats.users, beauty.stats.items, beauty.stats.interactions]).toEqual([22363, 12101, 198502]);
    const toys = prep({ dataset: 'amazon-toys', source: join(SHARED, 'amazon-toys') });
    expect([toys.stats.users, toys.stats.items, toys.stats.interactions]).toEqual([19412, 11924, 167597]);
    // Read as a generic sequences file, Beauty.txt gives the same sequences (the attributes are extra).
    const plain = prep({ dataset: 'sequences', source: join(SHARED, 'amazon-beauty', 'Beauty.txt') });
    expect(plain.users.map((u) => [...u.items])).toEqual(beauty.users.map((u) => [...u.items]));
    expect(beauty.items.filter((i) => i.genres.length > 0).length).toBeGreaterThan(12000);
  });
});

describe('an LLM teacher on items with no text', () => {
  it('is refused with a message naming the missing item text; a dataset with titles passes', async () => {
    const { requireItemText } = await import('../../src/cache/config.js');
    const dir = tmp();
    writeFileSync(join(dir, 'seq.txt'), '1 10 20 30\n2 20 30 10\n');
    const d = prep({ dataset: 'sequences', source: join(dir, 'seq.txt') });
    expect(() => requireItemText(d)).toThrow(/dataset sequences has no item text \(every item's title is its id, e\.g\. "10"\).*--teacher seqrec/);
    const titled = { ...d, items: d.items.map((it, i) => (i === 2 ? { ...it, title: 'Rose Face Cream' } : it)) };
    expect(() => requireItemText(titled)).not.toThrow();
  });
});
