import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import yazl from 'yazl';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { COMPLETE_MARKER, datasetsCacheDir } from '../../src/data/download.js';
import { loadDataset } from '../../src/data/options.js';
import { prepareDataset, PREPARE_DEFAULTS } from '../../src/data/prepare.js';
import { env } from '../../src/env.js';

/** A zip laid out like the official ml-100k.zip (top folder ml-100k/), built in memory with yazl. */
function buildZip(entries: Record<string, string>): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  for (const [name, text] of Object.entries(entries)) zip.addBuffer(Buffer.from(text, 'latin1'), name);
  zip.end();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    zip.outputStream.on('data', (c: Buffer) => chunks.push(c));
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)));
    zip.outputStream.on('error', reject);
  });
}

let server: Server;
let base = '';
let zip: Buffer;
let zipSha = '';
const hits: string[] = [];

beforeAll(async () => {
  zip = await buildZip({
    'ml-100k/u.data': '1\t1\t5\t10\n1\t2\t4\t20\n2\t1\t3\t5\n2\t3\t4\t6\n2\t2\t1\t7\n',
    'ml-100k/u.item': '1|Toy Story (1995)||||0|1\n2|GoldenEye (1995)||||1|0\n3|Four Rooms (1995)||||1|0\n',
    'ml-100k/README': 'test archive',
  });
  zipSha = createHash('sha256').update(zip).digest('hex');
  server = createServer((req, res) => {
    hits.push(req.url ?? '');
    if (req.url === '/ml-100k.zip' || req.url === '/ml-10m.zip') {
      res.writeHead(200, { 'content-type': 'application/zip', 'content-length': zip.length });
      res.end(zip);
    } else if (req.url === '/cut/ml-100k.zip') {
      // Promise more bytes than are sent, then drop the connection: a killed download.
      res.writeHead(200, { 'content-length': zip.length * 2 });
      res.write(zip.subarray(0, 100), () => res.destroy());
    } else if (req.url === '/logs/events.csv') {
      res.writeHead(200, { 'content-type': 'text/csv' });
      res.end('user_id,item_id,timestamp\na,x,1\na,y,2\nb,x,3\n');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  process.env.RECDISTILL_DATASETS_URL = base;
});

afterAll(async () => {
  delete process.env.RECDISTILL_DATASETS_URL;
  await new Promise((r) => server.close(r));
});

beforeEach(() => {
  env.cacheDir = mkdtempSync(join(tmpdir(), 'rd-dl-'));
  env.offline = false;
  hits.length = 0;
});

const opts = (o: { dataset: string; source?: string; sha256?: string }) => ({ ...PREPARE_DEFAULTS, source: '', ...o });
const quiet = () => {};

describe('dataset download', () => {
  it('a wrong checksum is an error and leaves nothing behind', async () => {
    // The test zip is not the official archive, so the built-in official sha256 must reject it.
    await expect(loadDataset(opts({ dataset: 'ml-100k' }), quiet)).rejects.toThrow(/sha256 mismatch for http:\/\/127\.0\.0\.1:\d+\/ml-100k\.zip: expected 50d2a982c669.*got [0-9a-f]{64}/);
    expect(hits).toEqual(['/ml-100k.zip']);
    expect(readdirSync(datasetsCacheDir())).toEqual([]);
    // ml-10m has no known sha256: its published md5 is checked instead.
    await expect(loadDataset(opts({ dataset: 'ml-10m' }), quiet)).rejects.toThrow(/md5 mismatch for .*ml-10m\.zip: expected ce571fd55effeba0271552578f2648bd/);
    expect(readdirSync(datasetsCacheDir())).toEqual([]);
  });

  it('downloads, verifies, extracts atomically; the second run skips the download', async () => {
    const d = await loadDataset(opts({ dataset: 'ml-100k', sha256: zipSha }), quiet);
    expect([d.stats.users, d.stats.items, d.stats.interactions]).toEqual([2, 3, 5]);
    expect(d.items[2]!.title).toBe('GoldenEye (1995)');
    const dir = join(datasetsCacheDir(), 'ml-100k');
    expect(readdirSync(datasetsCacheDir())).toEqual(['ml-100k']); // no temp files left
    expect(existsSync(join(dir, COMPLETE_MARKER))).toBe(true);
    expect(existsSync(join(dir, 'ml-100k/u.data'))).toBe(true);
    const again = await loadDataset(opts({ dataset: 'ml-100k', sha256: zipSha }), quiet);
    expect(again.fingerprint).toBe(d.fingerprint);
    expect(hits).toEqual(['/ml-100k.zip']); // one request in total
    // The synchronous path finds the downloaded copy too.
    expect(prepareDataset(opts({ dataset: 'ml-100k' })).fingerprint).toBe(d.fingerprint);
    // Offline is fine once the data is present (the built-in sha256 is not re-checked on reuse) ...
    env.offline = true;
    expect((await loadDataset(opts({ dataset: 'ml-100k' }), quiet)).stats.interactions).toBe(5);
    // ... but an explicit --sha256 that the cached copy does not have is an error.
    await expect(loadDataset(opts({ dataset: 'ml-100k', sha256: 'ab'.repeat(32) }), quiet)).rejects.toThrow(/cached copy in .*ml-100k has sha256/);
  });

  it('a download cut short is an error and leaves nothing that looks complete', async () => {
    process.env.RECDISTILL_DATASETS_URL = `${base}/cut`;
    try {
      await expect(loadDataset(opts({ dataset: 'ml-100k', sha256: zipSha }), quiet)).rejects.toThrow(/download of .*ml-100k\.zip (broke off|failed)/);
    } finally {
      process.env.RECDISTILL_DATASETS_URL = base;
    }
    expect(readdirSync(datasetsCacheDir())).toEqual([]);
  });

  it('temp files of a killed download (dead pid) are removed by the next download; a live one is kept', async () => {
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!; // exited: its pid is not running
    const dir = datasetsCacheDir();
    mkdirSync(join(dir, `.ml-100k.${dead}.0badc0de.extract/ml-100k`), { recursive: true });
    writeFileSync(join(dir, `.ml-100k.${dead}.0badc0de.download`), 'partial');
    writeFileSync(join(dir, `.ml-100k.${process.pid}.00000001.download`), 'in progress elsewhere');
    await loadDataset(opts({ dataset: 'ml-100k', sha256: zipSha }), quiet);
    expect(readdirSync(dir).sort()).toEqual([`.ml-100k.${process.pid}.00000001.download`, 'ml-100k']);
  });

  it('offline with nothing cached, HTTP errors and not-yet-downloaded sync use are clear errors', async () => {
    env.offline = true;
    await expect(loadDataset(opts({ dataset: 'ml-100k' }), quiet)).rejects.toThrow(/offline \(RECDISTILL_OFFLINE=1\).*not in the cache/);
    expect(hits).toEqual([]);
    env.offline = false;
    await expect(loadDataset(opts({ dataset: 'ml-latest-small' }), quiet)).rejects.toThrow(/HTTP 404/);
    expect(() => prepareDataset(opts({ dataset: 'ml-100k' }))).toThrow(/ml-100k is not downloaded yet/);
  });

  it('a local zip as --source is extracted once into the cache and gives the same fingerprint', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rd-zip-'));
    writeFileSync(join(dir, 'ml-100k.zip'), zip);
    const a = await loadDataset(opts({ dataset: 'ml-100k', source: join(dir, 'ml-100k.zip') }), quiet);
    expect(a.stats.interactions).toBe(5);
    const b = prepareDataset(opts({ dataset: 'ml-100k', source: join(dir, 'ml-100k.zip') })); // sync path finds the extraction
    expect(b.fingerprint).toBe(a.fingerprint);
    expect(readdirSync(datasetsCacheDir()).filter((n) => n.startsWith('.'))).toEqual([]);
    // Already extracted, but not the archive the caller expects: an error, not a silent reuse.
    await expect(loadDataset(opts({ dataset: 'ml-100k', source: join(dir, 'ml-100k.zip'), sha256: '0'.repeat(64) }), quiet)).rejects.toThrow(/cached copy in .* has sha256 [0-9a-f]{64}, not the expected 0{64}/);
    writeFileSync(join(dir, 'other.zip'), zip);
    env.cacheDir = mkdtempSync(join(tmpdir(), 'rd-dl-'));
    await expect(loadDataset(opts({ dataset: 'ml-100k', source: join(dir, 'other.zip'), sha256: '0'.repeat(64) }), quiet)).rejects.toThrow(/sha256 mismatch for .*other\.zip/);
    expect(hits).toEqual([]);
  });

  it('a URL as --source is downloaded once (trusted on first use) and loaded', async () => {
    const logs: string[] = [];
    const d = await loadDataset(opts({ dataset: 'generic', source: `${base}/logs/events.csv` }), (l) => logs.push(l));
    expect([d.stats.users, d.stats.items, d.stats.interactions]).toEqual([2, 2, 3]);
    expect(logs.some((l) => /no known sha256 .* trusting this download \(sha256 [0-9a-f]{64}\)/.test(l))).toBe(true);
    await loadDataset(opts({ dataset: 'generic', source: `${base}/logs/events.csv` }), quiet);
    expect(hits).toEqual(['/logs/events.csv']);
  });
});
