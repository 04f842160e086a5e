import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { prepareOptionsFrom } from '../../src/data/options.js';
import { prepareDataset, PREPARE_DEFAULTS, type PrepareOptions } from '../../src/data/prepare.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'rd-fmt-'));
const prep = (o: Partial<PrepareOptions> & { dataset: string; source: string }) => prepareDataset({ ...PREPARE_DEFAULTS, ...o });
const jl = (xs: object[]) => xs.map((x) => JSON.stringify(x)).join('\n') + '\n';

describe('Amazon reviews', () => {
  it('2018: reviewerID/asin/unixReviewTime + meta title/category, gzip', () => {
    const dir = tmp();
    const reviews = jl([
      { overall: 5.0, reviewerID: 'A1', asin: 'B02', unixReviewTime: 1400000100, reviewText: 'great, "really"' },
      { overall: 2.0, reviewerID: 'A1', asin: 'B01', unixReviewTime: 1400000000 },
      { overall: 4.0, reviewerID: 'A2', asin: 'B01', unixReviewTime: 1300000000 },
    ]);
    writeFileSync(join(dir, 'Beauty_5.json.gz'), gzipSync(reviews));
    writeFileSync(join(dir, 'meta_Beauty.json'), jl([
      { asin: 'B01', title: 'Rose Face Cream, 50 ml', category: ['Beauty', 'Skin Care'], main_cat: 'All Beauty' },
      { asin: 'B99', title: 'Never reviewed' },
    ]));
    const d = prep({ dataset: 'amazon-2018', source: join(dir, 'Beauty_5.json.gz'), itemsFile: join(dir, 'meta_Beauty.json') });
    expect([d.stats.users, d.stats.items, d.stats.interactions]).toEqual([2, 2, 3]);
    expect(d.items.slice(1).map((i) => [i.rawId, i.title, i.genres])).toEqual([
      ['B01', 'Rose Face Cream, 50 ml', ['All Beauty', 'Beauty', 'Skin Care']],
      ['B02', 'B02', []], // no meta row: the id stands in for the title
    ]);
    expect([...d.users[0]!.items]).toEqual([1, 2]); // A1: B01 (t=...000) before B02 (t=...100)
    expect(prep({ dataset: 'amazon-2018', source: join(dir, 'Beauty_5.json.gz'), minRating: 4 }).stats.interactions).toBe(2);
  });

  it('2023: user_id/parent_asin/timestamp (ms) + meta main_category, gzip meta', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'All_Beauty.jsonl'), jl([
      { rating: 5, title: 'x', asin: 'V1', parent_asin: 'P1', user_id: 'U1', timestamp: 1588687728923 },
      { rating: 4, asin: 'V2', parent_asin: 'P1', user_id: 'U2', timestamp: 1588615855070 },
      { rating: 3, asin: 'V3', parent_asin: 'P2', user_id: 'U1', timestamp: 1588687728922 },
    ]));
    writeFileSync(join(dir, 'meta_All_Beauty.jsonl.gz'), gzipSync(jl([
      { main_category: 'All Beauty', title: 'Howard LC0008 Leather Conditioner, 8-Ounce', categories: [], parent_asin: 'P1' },
      { main_category: 'All Beauty', title: 'Yes To Tomatoes "Detoxifying" Mask', categories: ['Face', 'Masks'], parent_asin: 'P2' },
    ])));
    const d = prep({ dataset: 'amazon-2023', source: join(dir, 'All_Beauty.jsonl'), itemsFile: join(dir, 'meta_All_Beauty.jsonl.gz') });
    expect(d.items.slice(1).map((i) => [i.rawId, i.title, i.genres, i.extra])).toEqual([
      ['P1', 'Howard LC0008 Leather Conditioner, 8-Ounce', ['All Beauty'], { main_category: 'All Beauty' }],
      ['P2', 'Yes To Tomatoes "Detoxifying" Mask', ['All Beauty', 'Face', 'Masks'], { main_category: 'All Beauty' }],
    ]);
    expect([...d.users[0]!.items]).toEqual([2, 1]); // U1: P2 one millisecond before P1
  });

  it('a broken JSON line names file and line; skip counts it; the wrong field names fail', () => {
    const dir = tmp();
    const f = join(dir, 'r.jsonl');
    writeFileSync(f, '{"user_id":"U1","parent_asin":"P1","timestamp":1}\n\n{"user_id":"U1","parent_asin":\n{"user_id":"U1","parent_asin":"P2","timestamp":2}\n');
    expect(() => prep({ dataset: 'amazon-2023', source: f })).toThrow(/r\.jsonl line 3: expected a JSON object with "user_id" \(string\), "parent_asin" \(string\) and "timestamp" \(number\)/);
    const d = prep({ dataset: 'amazon-2023', source: f, onBadRow: 'skip' });
    expect([d.stats.interactions, d.skippedRows]).toEqual([2, 1]);
    expect(() => prep({ dataset: 'amazon-2018', source: f })).toThrow(/line 1: expected a JSON object with "reviewerID"/);
    expect(() => prep({ dataset: 'amazon-2023', source: '' })).toThrow(/--source is required for dataset "amazon-2023"/);
    expect(() => prep({ dataset: 'ml-1m', source: dir, itemsFile: f })).toThrow(/--items-file is not used by dataset "ml-1m"; it is read by amazon-2018, amazon-2023, sequences, pairs, generic/);
    expect(() => prep({ dataset: 'synthetic', source: f })).toThrow(/"synthetic" is generated and takes no --source/);
    expect(() => prep({ dataset: 'ml-2m', source: dir })).toThrow(/unknown dataset "ml-2m"\. Valid: ml-100k, ml-1m, .*synthetic/);
  });

  it('a corrupt .gz and invalid UTF-8 are clear errors', () => {
    const dir = tmp();
    // gzip magic but a truncated stream: an error; no magic at all: read as plain text (already decompressed).
    writeFileSync(join(dir, 'bad.jsonl.gz'), gzipSync('{"user_id":"U1","parent_asin":"P1","timestamp":1}\n'.repeat(50)).subarray(0, 30));
    expect(() => prep({ dataset: 'amazon-2023', source: join(dir, 'bad.jsonl.gz') })).toThrow(/bad\.jsonl\.gz: not a valid gzip file/);
    writeFileSync(join(dir, 'plain.jsonl.gz'), '{"user_id":"U1","parent_asin":"P1","timestamp":1}\n');
    expect(prep({ dataset: 'amazon-2023', source: join(dir, 'plain.jsonl.gz') }).stats.interactions).toBe(1);
    writeFileSync(join(dir, 'latin.jsonl'), Buffer.concat([Buffer.from('{"user_id":"U1","parent_asin":"P1","timestamp":1}\n{"user_id":"'), Buffer.from('Zoë', 'latin1'), Buffer.from('","parent_asin":"P1","timestamp":2}\n')]));
    expect(() => prep({ dataset: 'amazon-2023', source: join(dir, 'latin.jsonl') })).toThrow(/latin\.jsonl line 2: invalid UTF-8/);
  });
});

describe('generic CSV/TSV', () => {
  const opts = (o: Record<string, unknown>) => prepareOptionsFrom({ dataset: 'generic', ...o });

  it('CSV with chosen columns, ISO dates, ratings, and a quoted items file with extra text columns', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'log.csv'), 'uid,when,sku,stars\nu1,2024-01-02T00:00:00Z,i2,5\nu1,2024-01-01T00:00:00Z,i1,4\nu2,2024-01-03T00:00:00Z,i1,2\n');
    writeFileSync(join(dir, 'items.csv'), 'sku,name,cats,blurb\ni1,"Kettle, steel ""XL""",Home|Kitchen,"Boils water,\nfast"\ni2,Mug,Kitchen,\n');
    const d = prepareDataset(opts({ source: join(dir, 'log.csv'), userCol: 'uid', itemCol: 'sku', timeCol: 'when', ratingCol: 'stars', itemsFile: join(dir, 'items.csv'), titleCol: 'name', genreCol: 'cats', textCols: 'blurb' }));
    expect(d.items.slice(1).map((i) => [i.rawId, i.title, i.genres, i.extra])).toEqual([
      ['i1', 'Kettle, steel "XL"', ['Home', 'Kitchen'], { blurb: 'Boils water,\nfast' }],
      ['i2', 'Mug', ['Kitchen'], undefined], // no extra text: no extra field
    ]);
    expect([...d.users[0]!.items]).toEqual([1, 2]);
    const f = prepareDataset(opts({ source: join(dir, 'log.csv'), userCol: 'uid', itemCol: 'sku', timeCol: 'when', ratingCol: 'stars', minRating: 3 }));
    expect(f.stats.interactions).toBe(2);
    // Column choices are part of the fingerprint; the items file's bytes too.
    expect(f.fingerprint).not.toBe(prepareDataset(opts({ source: join(dir, 'log.csv'), userCol: 'sku', itemCol: 'uid', timeCol: 'when', minRating: 3, ratingCol: 'stars' })).fingerprint);
  });

  it('TSV without header (0-based columns), gzip, file order when there is no time column', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'log.tsv.gz'), gzipSync('a\tx\t\nb\ty\t\na\tz\t\n'));
    const d = prepareDataset(opts({ source: join(dir, 'log.tsv.gz'), header: false, userCol: '0', itemCol: '1', timeCol: '' }));
    expect(d.users.map((u) => [u.rawId, [...u.items]])).toEqual([['a', [1, 3]], ['b', [2]]]);
  });

  it('unknown columns list the header; bad rows name the line; a wrong column count is a bad row', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'log.csv'), 'user_id,item_id,timestamp\nu1,i1,10\n');
    expect(() => prepareDataset(opts({ source: join(dir, 'log.csv'), userCol: 'user' }))).toThrow(/--user-col "user" is not a column\. Columns: "user_id", "item_id", "timestamp"/);
    writeFileSync(join(dir, 'log.csv'), 'user_id,item_id,timestamp\nu1,i1,10\nu2,i1\nu1,i2,soon\n');
    expect(() => prepareDataset(opts({ source: join(dir, 'log.csv') }))).toThrow(/log\.csv line 3: expected the same number of columns as the header \(3, delimiter ","\), got 2/);
    writeFileSync(join(dir, 'log.csv'), 'user_id,item_id,timestamp\nu1,i1,10\nu1,i2,soon\n');
    expect(() => prepareDataset(opts({ source: join(dir, 'log.csv') }))).toThrow(/log\.csv line 3: expected non-empty user \(column 0\) and item \(column 1\), a numeric or ISO-date time \(column 2\)/);
    writeFileSync(join(dir, 'log.csv'), 'user_id,item_id,timestamp\nu1,i1,10\nu1,i2,soon\nu2,i1\nu2,i3,12\n');
    const d = prepareDataset(opts({ source: join(dir, 'log.csv'), onBadRow: 'skip' }));
    expect([d.stats.interactions, d.skippedRows]).toEqual([2, 2]);
    writeFileSync(join(dir, 'empty.csv'), 'user_id,item_id,timestamp\n');
    expect(() => prepareDataset(opts({ source: join(dir, 'empty.csv') }))).toThrow(/no interactions found in .*empty\.csv/);
    expect(() => prepareDataset(opts({ source: join(dir, 'missing.csv') }))).toThrow(/missing\.csv not found: expected an interactions file/);
    expect(() => prepareDataset(opts({ source: join(dir, 'log.csv'), delimiter: '::' }))).toThrow(/--delimiter must be one character/);
  });
});
