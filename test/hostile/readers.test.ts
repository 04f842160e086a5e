/**
 * Hostile input for the generic readers and data loaders: every input is small and built here, so a
 * regression (e.g. allocating from an unchecked length) fails fast instead of eating memory.
 */
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import yazl from 'yazl';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseArgv } from '../../src/cli/argv.js';
import { main } from '../../src/cli/main.js';
import { readConfigFile, resolveOptions } from '../../src/config/options.js';
import { COMPLETE_MARKER, datasetsCacheDir, ensureDownloaded } from '../../src/data/download.js';
import { readPrepared, writePrepared } from '../../src/data/export.js';
import { writeError } from '../../src/data/io.js';
import { datasetOptions, loadDataset } from '../../src/data/options.js';
import { prepareDataset, PREPARE_DEFAULTS } from '../../src/data/prepare.js';
import { env } from '../../src/env.js';
import { RecdistillError } from '../../src/errors.js';
import { decodeSafetensors, encodeSafetensors, readSafetensorsFile } from '../../src/util/safetensors.js';

const tmp = (p = 'rd-hostile-') => mkdtempSync(join(tmpdir(), p));
const quiet = () => {};

/** The RecdistillError `fn` throws (or rejects with); fails the test when it does not throw one. */
function caught(fn: () => unknown): RecdistillError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(RecdistillError);
    return e as RecdistillError;
  }
  throw new Error('expected a RecdistillError, nothing was thrown');
}
async function rejected(p: Promise<unknown>): Promise<RecdistillError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(RecdistillError);
    return e as RecdistillError;
  }
  throw new Error('expected a RecdistillError, the promise resolved');
}

// ---------------------------------------------------------------------------------------------------
// 1. safetensors
// ---------------------------------------------------------------------------------------------------

/** A safetensors file with a hand-written header (any JSON text) and `data` bytes. */
function stFile(header: unknown, data = new Uint8Array(0), rawLength?: bigint): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, rawLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

describe('1. safetensors: header validated before any allocation; errors name file and tensor', () => {
  const F = 'shard-0007.safetensors';
  const cases: [string, unknown, RegExp][] = [
    ['array header', [], /header is not a JSON object/],
    ['tensor not an object', { w: 5 }, /tensor "w": expected an object/],
    ['unknown dtype', { w: { dtype: 'F64', shape: [1], data_offsets: [0, 8] } }, /tensor "w" has unsupported dtype "F64"/],
    ['missing dtype', { w: { shape: [1], data_offsets: [0, 4] } }, /tensor "w" has unsupported dtype undefined/],
    ['shape not an array', { w: { dtype: 'F32', shape: 'abc', data_offsets: [0, 4] } }, /tensor "w": shape "abc" is not an array of non-negative integers/],
    ['negative dim', { w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, /tensor "w": shape \[-1\]/],
    ['fractional dim', { w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, /tensor "w": shape \[1.5\]/],
    ['offsets missing', { w: { dtype: 'F32', shape: [1] } }, /tensor "w": data_offsets undefined is not two non-negative integers/],
    ['negative offset', { w: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, /tensor "w": data_offsets \[-4,0\]/],
    ['begin > end', { w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, /tensor "w": data_offsets \[8, 4\] has begin > end/],
    ['past the data', { w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, /tensor "w": data_offsets \[0, 16\] run past the 8 data bytes/],
    ['size mismatch', { w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, /tensor "w": data_offsets \[0, 8\] hold 8 bytes, shape \[3\] F32 needs 12/],
    ['huge shape', { w: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, /tensor "w": shape \[.*\] is too large/],
    ['overlap', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, /tensor "b" data_offsets \[4, 8\] overlap tensor "a" \[0, 8\]/],
    ['bad metadata', { __metadata__: { k: 1 } }, /"__metadata__"."k" is not a string/],
    ['__proto__ tensor', '{"__proto__": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', /tensor "__proto__" is not a usable tensor name/],
  ];
  for (const [name, header, re] of cases) {
    it(name, () => {
      const e = caught(() => decodeSafetensors(stFile(header, new Uint8Array(8)), F));
      expect(e.code).toBe('E_INPUT');
      expect(e.message).toContain(`${F}: not a valid safetensors file`);
      expect(e.message).toMatch(re);
    });
  }

  it('a header length over the limit or past the file end fails before reading it (crafted 16-byte file)', () => {
    const huge = caught(() => decodeSafetensors(stFile('{}', new Uint8Array(6), 2n ** 62n), F));
    expect(huge.message).toMatch(/shard-0007\.safetensors: .*header length \d+ is over the 100000000-byte limit/);
    const past = caught(() => decodeSafetensors(stFile('{}', new Uint8Array(6), 50_000_000n), F));
    expect(past.message).toMatch(/header length 50000000 runs past the end of the file \(16 bytes\)/);
    const notJson = caught(() => decodeSafetensors(stFile('{"a":', new Uint8Array(0)), F));
    expect(notJson.message).toMatch(/header is not UTF-8 JSON/);
  });

  it('readSafetensorsFile checks against the real file size before reading the data', () => {
    const dir = tmp();
    const ok = join(dir, 'ok.safetensors');
    writeFileSync(ok, encodeSafetensors({ x: { dtype: 'I32', shape: [2], data: Int32Array.from([3, -4]) } }, { m: 'v' }));
    const d = readSafetensorsFile(ok);
    expect([Array.from(d.tensors.x!.data as Int32Array), d.metadata]).toEqual([[3, -4], { m: 'v' }]);
    // Offsets that claim 4 GB of data in a file of a few dozen bytes.
    const lying = join(dir, 'lying.safetensors');
    writeFileSync(lying, stFile({ big: { dtype: 'U8', shape: [2 ** 32], data_offsets: [0, 2 ** 32] } }, new Uint8Array(4)));
    const e = caught(() => readSafetensorsFile(lying));
    expect(e.code).toBe('E_INPUT');
    expect(e.message).toMatch(/lying\.safetensors: not a valid safetensors file \(tensor "big": data_offsets \[0, 4294967296\] run past the 4 data bytes/);
    const hugeHeader = join(dir, 'huge-header.safetensors');
    writeFileSync(hugeHeader, stFile('{}', new Uint8Array(0), 99_000_000n));
    expect(caught(() => readSafetensorsFile(hugeHeader)).message).toMatch(/huge-header\.safetensors: .*header length 99000000 runs past the end of the file/);
    expect(caught(() => readSafetensorsFile(join(dir, 'missing.safetensors'))).code).toBe('E_NOT_FOUND');
  });
});

// ---------------------------------------------------------------------------------------------------
// 2 + 6. prepared exports: content-checked fingerprint, item ids, dataset.json structure
// ---------------------------------------------------------------------------------------------------

const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

describe('2/6. prepared exports', () => {
  const d = prepareDataset({ ...PREPARE_DEFAULTS, dataset: 'synthetic', source: '', synthetic: { users: 12, items: 15, seed: 3, minLen: 3, maxLen: 6 } });
  const fresh = () => {
    const out = join(tmp(), 'prep');
    writePrepared(d, out);
    return out;
  };
  const readMeta = (out: string) => JSON.parse(readFileSync(join(out, 'dataset.json'), 'utf8')) as Record<string, unknown>;
  const writeMeta = (out: string, m: unknown) => writeFileSync(join(out, 'dataset.json'), JSON.stringify(m));

  it('an edited users.jsonl is refused naming the file (the fingerprint would no longer describe it)', () => {
    const out = fresh();
    expect(readPrepared(out).fingerprint).toBe(d.fingerprint);
    const lines = readFileSync(join(out, 'users.jsonl'), 'utf8').split('\n');
    const u = JSON.parse(lines[0]!) as { items: number[] };
    u.items.reverse();
    lines[0] = JSON.stringify(u);
    writeFileSync(join(out, 'users.jsonl'), lines.join('\n'));
    for (const read of [() => readPrepared(out), () => prepareDataset({ ...PREPARE_DEFAULTS, dataset: 'prepared', source: out })]) {
      const e = caught(read);
      expect(e.code).toBe('E_CHECKSUM');
      expect(e.message).toMatch(/prep\/users\.jsonl: sha256 [0-9a-f]{64} does not match [0-9a-f]{64} recorded in .*dataset\.json: the file was changed after data:prepare wrote it/);
    }
  });

  it('an export without recorded hashes (older or stripped) is refused', () => {
    const out = fresh();
    const m = readMeta(out);
    delete m.sha256;
    writeMeta(out, m);
    const e = caught(() => readPrepared(out));
    expect([e.code, e.message]).toEqual(['E_MISMATCH', expect.stringMatching(/dataset\.json: no "sha256" of the data files/)]);
  });

  it('item ids outside 1..items are refused naming users.jsonl and the line (even with matching hashes)', () => {
    const out = fresh();
    const N = d.items.length - 1;
    for (const bad of [0, N + 1, -3, 1.5, '2']) {
      const lines = readFileSync(join(out, 'users.jsonl'), 'utf8').split('\n');
      const u = JSON.parse(lines[2]!) as { items: unknown[] };
      u.items[1] = bad;
      const text = [lines[0], lines[1], JSON.stringify(u), ...lines.slice(3)].join('\n');
      const m = readMeta(fresh());
      const out2 = join(tmp(), 'prep');
      writePrepared(d, out2);
      writeFileSync(join(out2, 'users.jsonl'), text);
      writeMeta(out2, { ...m, sha256: { ...(m.sha256 as object), 'users.jsonl': sha(text) } });
      const e = caught(() => readPrepared(out2));
      expect(e.code).toBe('E_INPUT');
      expect(e.message).toContain(`${join(out2, 'users.jsonl')} line 3: expected {id, rawId, items: [item ids 1..${N}]}; item ${JSON.stringify(bad)} at position 1 is not an item id in 1..${N}`);
    }
  });

  it('structurally bad dataset.json / items.jsonl name the file and the field', () => {
    const out = fresh();
    const m = readMeta(out);
    const cases: [unknown, RegExp][] = [
      [[], /dataset\.json: field "\(top level\)" must be a JSON object; got \[\]/],
      [{ ...m, name: 5 }, /dataset\.json: field "name" must be a non-empty string; got 5/],
      [{ ...m, fingerprint: 'abc' }, /dataset\.json: field "fingerprint" must be a sha256/],
      [{ ...m, stats: 'many' }, /dataset\.json: field "stats" must be an object; got "many"/],
      [{ ...m, stats: { ...(m.stats as object), users: -1 } }, /dataset\.json: field "stats\.users" must be a non-negative integer; got -1/],
      [{ ...m, stats: { ...(m.stats as object), users: 999 } }, /dataset\.json: field "stats\.users" is 999, but the data files hold 12/],
      [{ ...m, options: null }, /dataset\.json: field "options" must be an object; got null/],
      [{ ...m, sha256: { 'items.jsonl': 'x' } }, /dataset\.json: field "sha256\.items\.jsonl" must be a sha256/],
    ];
    for (const [meta, re] of cases) {
      writeMeta(out, meta);
      const e = caught(() => readPrepared(out));
      expect(e.code).toBe('E_INPUT');
      expect(e.message).toMatch(re);
    }
    writeFileSync(join(out, 'dataset.json'), '{"format": ');
    expect(caught(() => readPrepared(out)).message).toMatch(/dataset\.json: not valid JSON/);
    // items.jsonl: a title that is not a string, with matching hashes.
    const items = readFileSync(join(out, 'items.jsonl'), 'utf8').replace(/"title":"[^"]*"/, '"title":{"x":1}');
    writeFileSync(join(out, 'items.jsonl'), items);
    writeMeta(out, { ...m, sha256: { ...(m.sha256 as object), 'items.jsonl': sha(items) } });
    expect(caught(() => readPrepared(out)).message).toMatch(/prep\/items\.jsonl line 1: expected \{id, rawId, title, genres, year\?, extra\?\}; "title" is not a string/);
  });

  it('stale temp dirs of killed data:prepare runs (dead pid, over a day old) are removed; others kept', () => {
    const root = tmp();
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    const old = (Date.now() - 3 * 24 * 3600 * 1000) / 1000;
    const mk = (name: string, age?: number, files: Record<string, string> = { 'items.jsonl': '' }) => {
      mkdirSync(join(root, name));
      for (const [f, t] of Object.entries(files)) writeFileSync(join(root, name, f), t);
      if (age) utimesSync(join(root, name), age, age);
    };
    mk(`.prep.${dead}.0badc0de.tmp`, old);
    mk(`.prep.${dead}.1badc0de.tmp`); // recent: its run may be on another host / pid namespace
    mk(`.prep.${process.pid}.2badc0de.tmp`, old); // alive
    mk(`.prep.${dead}.3badc0de.tmp`, old, { 'notes.txt': 'not ours' }); // holds foreign files
    writePrepared(d, join(root, 'prep'));
    expect(readdirSync(root).sort()).toEqual([`.prep.${process.pid}.2badc0de.tmp`, `.prep.${dead}.1badc0de.tmp`, `.prep.${dead}.3badc0de.tmp`, 'prep'].sort());
  });
});

// ---------------------------------------------------------------------------------------------------
// 3. MovieLens loaders
// ---------------------------------------------------------------------------------------------------

describe('3. MovieLens: strict ids and timestamps, duplicates, encodings', () => {
  const ITEMS = '1|A (1995)||||0|1\n2|B (1995)||||1|0\n3|C (1995)||||1|0\n';
  const ml100k = (data: string, items: string | Buffer = ITEMS) => {
    const dir = tmp();
    writeFileSync(join(dir, 'u.data'), data);
    writeFileSync(join(dir, 'u.item'), items);
    return dir;
  };
  const prep = (dataset: string, source: string, o: object = {}) => prepareDataset({ ...PREPARE_DEFAULTS, dataset, source, ...o });
  const GOOD = '1\t1\t5\t10\n1\t2\t4\t20\n2\t3\t3\t30\n';

  for (const [what, line, field] of [
    ['user id abc', 'abc\t1\t5\t10', 'the user id here is "abc"'],
    ['user id 196.0', '196.0\t1\t5\t10', 'the user id here is "196.0"'],
    ['quoted item id', '2\t"3"\t5\t10', 'the item id here is "\\"3\\""'],
    ['hex timestamp', '2\t3\t5\t0x10', 'the timestamp here is "0x10"'],
    ['float timestamp', '2\t3\t5\t1e9', 'the timestamp here is "1e9"'],
    ['hex rating', '2\t3\t0x4\t10', ''],
  ] as const) {
    it(`${what}: file:line error; --on-bad-row skip skips and counts`, () => {
      const dir = ml100k(GOOD + line + '\n');
      const e = caught(() => prep('ml-100k', dir));
      expect(e.code).toBe('E_INPUT');
      expect(e.message).toContain(`${join(dir, 'u.data')} line 4: expected 4 tab-separated fields: user id, item id, rating, unix timestamp`);
      if (field) expect(e.message).toContain(field);
      const s = prep('ml-100k', dir, { onBadRow: 'skip' });
      expect([s.skippedRows, s.stats.interactions]).toEqual([1, 3]);
    });
  }

  it('ratings.csv / movies.csv / movies.dat ids are strict too', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'ratings.csv'), 'userId,movieId,rating,timestamp\n1,1,4.5,10\n1,2,3,0x20\n');
    writeFileSync(join(dir, 'movies.csv'), 'movieId,title,genres\n1,A (1995),Drama\n2,B (1995),Drama\n');
    expect(caught(() => prep('ml-latest-small', dir)).message).toMatch(/ratings\.csv line 3: .*the timestamp here is "0x20"/);
    writeFileSync(join(dir, 'ratings.csv'), 'userId,movieId,rating,timestamp\n1,1,4.5,10\n');
    writeFileSync(join(dir, 'movies.csv'), 'movieId,title,genres\n1.0,A (1995),Drama\n');
    expect(caught(() => prep('ml-latest-small', dir)).message).toMatch(/movies\.csv line 2: expected movieId,title,genres with an integer id/);
    const dat = tmp();
    writeFileSync(join(dat, 'ratings.dat'), '1::1::5::10\n');
    writeFileSync(join(dat, 'movies.dat'), 'x1::A (1995)::Drama\n');
    expect(caught(() => prep('ml-1m', dat)).message).toMatch(/movies\.dat line 1: expected 3 "::"-separated fields/);
  });

  it('duplicate (user, item, timestamp) rows: first kept, the count reported in the log', () => {
    const dir = ml100k(GOOD + '1\t1\t5\t10\n1\t1\t5\t10\n1\t1\t2\t99\n');
    const logs: string[] = [];
    const d = prepareDataset({ ...PREPARE_DEFAULTS, dataset: 'ml-100k', source: dir }, (l) => logs.push(l));
    expect(d.stats.interactions).toBe(4); // 3 + the re-rating at another time
    expect([...d.users[0]!.items]).toEqual([1, 2, 1]);
    expect(logs.join('\n')).toMatch(/\(2 duplicate \(user, item, timestamp\) rows dropped, the first of each kept\)/);
  });

  it('u.item in UTF-8 is read as UTF-8; latin-1 still as latin-1', () => {
    const utf8 = prep('ml-100k', ml100k(GOOD, Buffer.from('1|Misérables, Les (1995)||||0|1\n2|Amélie (2001)||||1|0\n3|C (1995)||||1|0\n', 'utf8')));
    expect(utf8.items.slice(1, 3).map((i) => i.title)).toEqual(['Misérables, Les (1995)', 'Amélie (2001)']);
    const latin1 = prep('ml-100k', ml100k(GOOD, Buffer.from('1|Misérables, Les (1995)||||0|1\n2|B (1995)||||1|0\n3|C (1995)||||1|0\n', 'latin1')));
    expect(latin1.items[1]!.title).toBe('Misérables, Les (1995)');
  });
});

// ---------------------------------------------------------------------------------------------------
// 4. downloads: zip bombs, stalls, stale temps
// ---------------------------------------------------------------------------------------------------

function buildZip(entries: [string, Buffer][]): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const [name, buf] of entries) zip.addBuffer(buf, name);
  zip.end();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    zip.outputStream.on('data', (c: Buffer) => chunks.push(c));
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
    zip.outputStream.on('error', reject);
  });
}

/** Rewrite the central directory's uncompressed size of every entry (a lying header). */
function lieAboutSizes(zip: Buffer, size: number): Buffer {
  const out = Buffer.from(zip);
  for (let i = out.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02])); i !== -1; i = out.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]), i + 4)) {
    out.writeUInt32LE(size, i + 24);
  }
  return out;
}

describe('4. downloads', () => {
  let server: Server;
  let base = '';
  const files = new Map<string, Buffer>();
  const U_DATA = Buffer.from('1\t1\t5\t10\n1\t2\t4\t20\n2\t1\t3\t5\n');
  const U_ITEM = Buffer.from('1|A (1995)||||0|1\n2|B (1995)||||1|0\n');

  beforeAll(async () => {
    // 8 MB of zeros deflates to ~8 kB: ratio ~1000:1 (the 0.35 MB -> 300 MB bomb, scaled down).
    files.set('/bomb/ml-100k.zip', await buildZip([['ml-100k/u.data', U_DATA], ['ml-100k/u.item', U_ITEM], ['ml-100k/zeros.bin', Buffer.alloc(8e6)]]));
    // Honest sizes, incompressible: 3 MB of random bytes (over a 2 MB total limit).
    files.set('/big/ml-100k.zip', await buildZip([['ml-100k/u.data', U_DATA], ['ml-100k/u.item', U_ITEM], ['ml-100k/noise.bin', randomBytes(3e6)]]));
    // The central directory claims 1000 bytes; the entry inflates to 8 MB.
    files.set('/liar/ml-100k.zip', lieAboutSizes(await buildZip([['ml-100k/zeros.bin', Buffer.alloc(8e6)]]), 1000));
    files.set('/ok/ml-100k.zip', await buildZip([['ml-100k/u.data', U_DATA], ['ml-100k/u.item', U_ITEM]]));
    server = createServer((req, res) => {
      const body = files.get(req.url ?? '');
      if (body) {
        res.writeHead(200, { 'content-type': 'application/zip', 'content-length': body.length });
        res.end(body);
      } else if (req.url === '/stall/ml-100k.zip') {
        // Headers and a few bytes, then silence (connection kept open).
        res.writeHead(200, { 'content-length': 1000 });
        res.write(Buffer.alloc(10));
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    delete process.env.RECDISTILL_DATASETS_URL;
    delete process.env.RECDISTILL_MAX_EXTRACT_MB;
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  beforeEach(() => {
    env.cacheDir = tmp('rd-hostile-dl-');
    env.offline = false;
  });

  const load = (prefix: string, o: object = {}) => {
    process.env.RECDISTILL_DATASETS_URL = `${base}/${prefix}`;
    const zip = files.get(`/${prefix}/ml-100k.zip`)!;
    return loadDataset({ ...PREPARE_DEFAULTS, dataset: 'ml-100k', source: '', sha256: sha(zip), ...o }, quiet);
  };
  const cacheIsEmpty = () => expect(readdirSync(datasetsCacheDir())).toEqual([]);

  it('a zip bomb (entry ratio ~1000:1) is refused from its central directory; nothing left behind', async () => {
    const e = await rejected(load('bomb'));
    expect(e.code).toBe('E_INPUT');
    expect(e.message).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/bomb\/ml-100k\.zip \(the downloaded archive\): entry "ml-100k\/zeros\.bin" inflates 0\.0 MB to 8\.0 MB \(ratio \d+:1, limit 100:1\); this looks like a zip bomb/);
    cacheIsEmpty();
  });

  it('an archive over the total size limit is refused (RECDISTILL_MAX_EXTRACT_MB)', async () => {
    process.env.RECDISTILL_MAX_EXTRACT_MB = '2';
    try {
      const e = await rejected(load('big'));
      expect(e.message).toMatch(/extracts to 3\.0 MB, over the limit of 2\.0 MB for this dataset; refusing to extract it/);
    } finally {
      delete process.env.RECDISTILL_MAX_EXTRACT_MB;
    }
    cacheIsEmpty();
    // Within the default limit for ml-100k (4x its 16 MB) the same archive is fine.
    expect((await load('big')).stats.interactions).toBe(3);
  });

  it('a lying central directory is caught while inflating; nothing left behind', async () => {
    const e = await rejected(load('liar'));
    expect(e.code).toBe('E_INPUT');
    expect(e.message).toMatch(/\/liar\/ml-100k\.zip \(the downloaded archive\): entry "ml-100k\/zeros\.bin"/);
    expect(e.message).toMatch(/inflates past the 1000 bytes its header declares; the archive is corrupt or hostile/);
    cacheIsEmpty();
  });

  it('a stalled download prints stall lines and fails naming the URL; nothing left behind', async () => {
    const logs: string[] = [];
    const url = `${base}/stall/ml-100k.zip`;
    const t0 = Date.now();
    const e = await rejected(ensureDownloaded({ url, dest: join(datasetsCacheDir(), 'ml-100k'), log: (l) => logs.push(l), stallMs: 1200, progressMs: 400 }));
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(e.code).toBe('E_NETWORK');
    expect(e.message).toMatch(new RegExp(`download of ${url.replace(/[.]/g, '\\.')} stalled: no data for 1\\.2s after 10 bytes`));
    expect(logs.some((l) => l.startsWith(`download ${url}: 0.0/0.0 MB, no data for`))).toBe(true);
    cacheIsEmpty();
  });

  it('temp dirs of killed downloads of any dataset (dead pid, over a day old) are swept; recent or live kept', async () => {
    const dir = datasetsCacheDir();
    mkdirSync(dir, { recursive: true });
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    const old = (Date.now() - 2 * 24 * 3600 * 1000) / 1000;
    const names = [`.ml-1m.${dead}.0badc0de.extract`, `.url-abc.${dead}.1badc0de.download`, `.ml-1m.${dead}.2badc0de.extract`, `.ml-1m.${process.pid}.3badc0de.extract`];
    names.forEach((n, i) => {
      mkdirSync(join(dir, n));
      if (i !== 2) utimesSync(join(dir, n), old, old);
    });
    await load('ok');
    expect(readdirSync(dir).sort()).toEqual([names[2], names[3], 'ml-100k'].sort());
  });

  it('a corrupt completion marker names the file and field (no raw TypeError)', async () => {
    const dest = join(datasetsCacheDir(), 'ml-100k');
    mkdirSync(dest, { recursive: true });
    for (const [marker, re] of [
      ['[1]', /field "\(top level\)" must be a JSON object/],
      ['{"url": "x", "sha256": 5}', /field "sha256" must be a sha256/],
      [JSON.stringify({ url: 'x', sha256: 'a'.repeat(64), file: '../../etc/passwd' }), /field "file" must be a file name inside the directory/],
      ['{', /not valid JSON/],
    ] as const) {
      writeFileSync(join(dest, COMPLETE_MARKER), marker);
      const e = await rejected(load('ok', { sha256: 'a'.repeat(64) }));
      expect(e.code).toBe('E_INPUT');
      expect(e.message).toContain(join(dest, COMPLETE_MARKER));
      expect(e.message).toMatch(re);
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// 5. options and write errors
// ---------------------------------------------------------------------------------------------------

describe('5. options: Object.prototype names are unknown options; write errors name the path', () => {
  it('--constructor, --__proto__, --toString on the command line are refused', () => {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      const p = parseArgv(['data:prepare', `--${name}`, 'x']);
      const e = caught(() => resolveOptions(datasetOptions, { flags: p.flags }));
      expect(e.code).toBe('E_USAGE');
      expect(e.message).toContain(`command line: unknown option "${name}"`);
    }
  });

  it('__proto__ / constructor keys in a --config file are refused naming the file', () => {
    const dir = tmp();
    for (const text of ['{"__proto__": {"dataset": "ml-100k"}}', '{"constructor": "x"}', '{"valueOf": 1}']) {
      const path = join(dir, 'cfg.json');
      writeFileSync(path, text);
      const e = caught(() => resolveOptions(datasetOptions, { file: readConfigFile(path), filePath: path }));
      expect(e.code).toBe('E_USAGE');
      expect(e.message).toMatch(new RegExp(`config file ${path.replace(/[.]/g, '\\.')}: unknown option "(__proto__|constructor|valueOf)"`));
    }
  });

  it('the CLI refuses them too (exit code 2), and an Object.prototype member is not a command', async () => {
    const err: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (err.push(String(s)), true)) as typeof process.stderr.write;
    try {
      expect(await main(['data:prepare', '--constructor', '1'])).toBe(2);
      expect(await main(['constructor'])).toBe(2);
    } finally {
      process.stderr.write = write;
    }
    expect(err.join('')).toMatch(/unknown option "constructor"/);
    expect(err.join('')).toMatch(/unknown command "constructor"/);
  });

  it('ENOSPC / EROFS / EACCES become errors naming the path; other errors pass through', () => {
    for (const code of ['ENOSPC', 'EROFS', 'EACCES', 'EDQUOT']) {
      const raw = Object.assign(new Error(`${code}: raw`), { code });
      const e = writeError(raw, '/data/out/users.jsonl') as RecdistillError;
      expect(e).toBeInstanceOf(RecdistillError);
      expect(e.message).toMatch(new RegExp(`^cannot write /data/out/users\\.jsonl: .*\\(${code}\\)`));
    }
    const other = new TypeError('bug');
    expect(writeError(other, '/x')).toBe(other);
  });

  it('an export into an unwritable place names the path and leaves nothing', () => {
    const d = prepareDataset({ ...PREPARE_DEFAULTS, dataset: 'synthetic', source: '', synthetic: { users: 5, items: 8, seed: 1, minLen: 3, maxLen: 4 } });
    let out: string;
    if (process.getuid?.() === 0) {
      // root ignores permission bits; sysfs refuses new directories (EPERM / EROFS).
      if (!existsSync('/sys/kernel')) return;
      out = '/sys/kernel/rd-hostile/prep';
    } else {
      const ro = tmp();
      chmodSync(ro, 0o500);
      out = join(ro, 'prep');
    }
    const e = caught(() => writePrepared(d, out));
    expect(e.code).toBe('E_USAGE');
    expect(e.message).toMatch(/^cannot write \S+: (permission denied|operation not permitted|read-only file system)/);
    expect(e.message).toContain(out.split('/').slice(0, -1).join('/'));
    expect(existsSync(out)).toBe(false);
  });
});
