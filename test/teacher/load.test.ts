import { createHash } from 'node:crypto';
import { lstatSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { teacherInfoOf } from '../../src/cache/build.js';
import { CACHE_FORMAT, CACHE_VERSION, cacheKey, type KeyInputs } from '../../src/cache/format.js';
import { RecdistillError } from '../../src/errors.js';
import { AUTO_DTYPE_ORDER, DTYPES, onnxFileFor, resolveDtype, resolveLocalModel, resolveModelFiles } from '../../src/teacher/llm/load.js';
import { loadLlmTeacher } from '../../src/teacher/llm/index.js';
import { llmTeacherOptions } from '../../src/teacher/llm/options.js';
import { sha256, stableStringify } from '../../src/util/hash.js';
import { tinyDataset, tinyModelDir } from './fixtures.js';
import { folderFiles, lfsOid, startMockHub, type MockHub } from './mock-hub.js';

const m = tinyModelDir({ layers: 2, hidden: 32, heads: 2 });
const ds = tinyDataset();

describe('dtype -> file', () => {
  it('maps every dtype to the transformers.js file name', () => {
    expect(Object.fromEntries(DTYPES.map((d) => [d, onnxFileFor(d)]))).toEqual({
      fp32: 'onnx/model.onnx',
      fp16: 'onnx/model_fp16.onnx',
      q8: 'onnx/model_quantized.onnx',
      int8: 'onnx/model_int8.onnx',
      uint8: 'onnx/model_uint8.onnx',
      q4: 'onnx/model_q4.onnx',
      q4f16: 'onnx/model_q4f16.onnx',
      bnb4: 'onnx/model_bnb4.onnx',
      q2: 'onnx/model_q2.onnx',
      q2f16: 'onnx/model_q2f16.onnx',
      q1: 'onnx/model_q1.onnx',
      q1f16: 'onnx/model_q1f16.onnx',
    });
    expect(() => onnxFileFor('q3')).toThrow(/not one of fp32, fp16, q8, int8, uint8, q4, q4f16, bnb4, q2, q2f16, q1, q1f16/);
    expect([...AUTO_DTYPE_ORDER].sort()).toEqual([...DTYPES].sort()); // every dtype is reachable by auto
  });

  it('a missing dtype file names the file and lists what is on disk', () => {
    let err: unknown;
    try {
      resolveLocalModel(m.dir, 'q4');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RecdistillError);
    expect((err as RecdistillError).code).toBe('E_NOT_FOUND');
    expect((err as Error).message).toMatch(/has no onnx\/model_q4\.onnx for --dtype q4\. On disk: model\.onnx \(--dtype fp32\)/);
    expect(() => resolveLocalModel(join(m.dir, 'nope'), 'fp32')).toThrow(/does not exist/);
    expect(resolveLocalModel(m.dir, 'fp32').onnxPath).toBe(join(m.dir, 'onnx', 'model.onnx'));
  });

  it('auto: q4 for a hub id; for a local folder the first variant on disk; explicit dtypes pass through', () => {
    expect(resolveDtype('onnx-community/Qwen2.5-0.5B-Instruct', 'auto')).toBe('q4');
    expect(resolveDtype(m.dir, 'auto')).toBe('fp32'); // model:tiny writes only onnx/model.onnx
    expect(resolveDtype(m.dir, 'q8')).toBe('q8');
    expect(resolveDtype(join(m.dir, 'tokenizer.json'), 'auto')).toBe('q4'); // no onnx files: the error will name q4
  });
});

const sha1 = (s: string) => createHash('sha1').update(s).digest('hex');
const SHA_MAIN = sha1('main commit');
const SHA_V1 = sha1('v1.0 commit');
const TOKEN = 'hf_test_secret_token';
const ENV_KEYS = ['HF_HUB_CACHE', 'HF_ENDPOINT', 'HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN'] as const;

/** The tiny model with its two largest weights moved into onnx/model.onnx_data (as exporters do for big models). */
function withExternalData(files: Map<string, Buffer>): Map<string, Buffer> {
  const { onnx } = onnxProto;
  const model = onnx.ModelProto.decode(files.get('onnx/model.onnx')!);
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const t of model.graph!.initializer!) {
    if (t.name !== 'lm_head.weight' && t.name !== 'model.embed_tokens.weight') continue;
    const raw = Buffer.from(t.rawData!);
    t.externalData = [
      { key: 'location', value: 'model.onnx_data' },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(raw.length) },
    ].map((e) => onnx.StringStringEntryProto.create(e));
    t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    t.rawData = new Uint8Array(0);
    chunks.push(raw);
    offset += raw.length;
  }
  const out = new Map(files);
  out.set('onnx/model.onnx', Buffer.from(onnx.ModelProto.encode(model).finish()));
  out.set('onnx/model.onnx_data', Buffer.concat(chunks));
  return out;
}

describe('hub ids through @huggingface/hub (a mock hub on 127.0.0.1)', () => {
  const files = folderFiles(m.dir);
  const repo = (o: { token?: string; files?: Map<string, Buffer> } = {}) => ({ refs: { main: SHA_MAIN, 'v1.0': SHA_V1 }, files: o.files ?? files, token: o.token });
  const saved = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
  let hub: MockHub;
  let cache: string;
  let logs: string[];
  const log = (l: string) => void logs.push(l);
  const repoDir = (id = 'test-org/tiny-lm') => join(cache, `models--${id.replace('/', '--')}`);

  beforeAll(async () => {
    hub = await startMockHub({ 'test-org/tiny-lm': repo(), 'test-org/private-lm': repo({ token: TOKEN }), 'test-org/ext-lm': repo({ files: withExternalData(files) }) });
  });
  beforeEach(() => {
    cache = mkdtempSync(join(tmpdir(), 'recdistill-hf-hub-'));
    process.env.HF_HUB_CACHE = cache;
    process.env.HF_ENDPOINT = hub.url;
    delete process.env.HF_TOKEN;
    delete process.env.HUGGING_FACE_HUB_TOKEN;
    hub.requests.length = 0;
    hub.slow.minBytes = Infinity;
    logs = [];
  });
  afterEach(() => rmSync(cache, { recursive: true, force: true }));
  afterAll(async () => {
    for (const k of ENV_KEYS) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    await hub.close();
    m.cleanup();
  });

  it('downloads into the standard hub cache ($HF_HUB_CACHE/models--org--name/snapshots/<commit>) at the served commit', async () => {
    const f = await resolveModelFiles('test-org/tiny-lm', 'fp32', false, log);
    const snap = join(repoDir(), 'snapshots', SHA_MAIN);
    expect(f).toEqual({ dir: snap, onnxPath: join(snap, 'onnx', 'model.onnx'), externalData: [], source: 'hub', revision: 'main', commit: SHA_MAIN });
    expect(readFileSync(join(repoDir(), 'refs', 'main'), 'utf8')).toBe(SHA_MAIN);
    for (const [p, bytes] of files) expect(readFileSync(join(snap, p)).equals(bytes), p).toBe(true);
    // The graph is a symlink to blobs/<sha256 of its bytes> (its LFS oid), as huggingface_hub lays it out.
    expect(lstatSync(f.onnxPath).isSymbolicLink()).toBe(true);
    expect(realpathSync(f.onnxPath)).toBe(join(realpathSync(repoDir()), 'blobs', lfsOid(files.get('onnx/model.onnx')!)));
    expect(hub.requests[0]!.url).toMatch(/^\/api\/models\/test-org\/tiny-lm\/revision\/main\?/);
    expect(hub.requests.some((r) => r.url === `/test-org/tiny-lm/resolve/${SHA_MAIN}/onnx/model.onnx` && !r.range)).toBe(true);
    expect(hub.requests.every((r) => r.authorization === undefined)).toBe(true); // no token set, none sent
    // Online again: only the revision is asked; nothing is downloaded twice.
    const before = hub.requests.length;
    expect((await resolveModelFiles('test-org/tiny-lm', 'fp32', false, log)).commit).toBe(SHA_MAIN);
    expect(hub.requests.slice(before).map((r) => r.url.split('?')[0])).toEqual(['/api/models/test-org/tiny-lm/revision/main']);
  });

  it('--revision reaches the hub and picks the snapshot; a cached commit sha needs no network', async () => {
    const f = await resolveModelFiles('test-org/tiny-lm', 'fp32', false, log, { revision: 'v1.0' });
    expect(hub.requests[0]!.url).toMatch(/^\/api\/models\/test-org\/tiny-lm\/revision\/v1\.0\?/);
    expect(f).toMatchObject({ dir: join(repoDir(), 'snapshots', SHA_V1), revision: 'v1.0', commit: SHA_V1 });
    expect(readFileSync(join(repoDir(), 'refs', 'v1.0'), 'utf8')).toBe(SHA_V1);
    const before = hub.requests.length;
    expect(await resolveModelFiles('test-org/tiny-lm', 'fp32', false, log, { revision: SHA_V1 })).toMatchObject({ dir: f.dir, commit: SHA_V1, revision: SHA_V1 });
    expect(hub.requests.length).toBe(before);
  });

  it('sends HF_TOKEN (or HUGGING_FACE_HUB_TOKEN) as a bearer token; a 401 says to set HF_TOKEN', async () => {
    await expect(resolveModelFiles('test-org/private-lm', 'fp32', false, log)).rejects.toMatchObject({ code: 'E_AUTH', message: expect.stringMatching(/HTTP 401.*needs a token: set HF_TOKEN/) });
    process.env.HF_TOKEN = 'hf_wrong';
    await expect(resolveModelFiles('test-org/private-lm', 'fp32', false, log)).rejects.toMatchObject({ code: 'E_AUTH', message: expect.stringMatching(/token given \(HF_TOKEN\) has no access/) });
    process.env.HF_TOKEN = TOKEN;
    hub.requests.length = 0;
    const f = await resolveModelFiles('test-org/private-lm', 'fp32', false, log);
    expect(f.commit).toBe(SHA_MAIN);
    expect(hub.requests.length).toBeGreaterThan(4);
    expect(hub.requests.every((r) => r.authorization === `Bearer ${TOKEN}`)).toBe(true);
    delete process.env.HF_TOKEN;
    process.env.HUGGING_FACE_HUB_TOKEN = TOKEN;
    hub.requests.length = 0;
    expect((await resolveModelFiles('test-org/private-lm', 'fp32', false, log)).commit).toBe(SHA_MAIN);
    expect(hub.requests.map((r) => r.authorization)).toEqual([`Bearer ${TOKEN}`]);
    process.env.HF_TOKEN = 'not-a-token';
    await expect(resolveModelFiles('test-org/private-lm', 'fp32', false, log)).rejects.toMatchObject({ code: 'E_USAGE' });
  });

  it('404s: an unknown repo or revision vs a file the repo lacks (listing what it has and every dtype)', async () => {
    await expect(resolveModelFiles('test-org/nope', 'fp32', false, log)).rejects.toMatchObject({ code: 'E_NOT_FOUND', message: expect.stringMatching(/has no model test-org\/nope at revision main \(HTTP 404/) });
    await expect(resolveModelFiles('test-org/tiny-lm', 'fp32', false, log, { revision: 'v9' })).rejects.toMatchObject({ code: 'E_NOT_FOUND', message: expect.stringMatching(/at revision v9 .*--revision/) });
    await expect(resolveModelFiles('test-org/tiny-lm', 'q4', false, log)).rejects.toMatchObject({
      code: 'E_NOT_FOUND',
      message: expect.stringMatching(/test-org\/tiny-lm@main \(commit [0-9a-f]{12}\) has no onnx\/model_q4\.onnx for --dtype q4\. The repo has: model\.onnx \(--dtype fp32\)\. Valid dtypes name these files: .*bnb4 -> onnx\/model_bnb4\.onnx/),
    });
  });

  it('big files get progress lines (MB, MB/s, ETA) and a summary', async () => {
    const size = files.get('onnx/model.onnx')!.length;
    hub.slow.minBytes = size;
    hub.slow.delayMs = 25; // 10 chunks: about 250 ms
    await resolveModelFiles('test-org/tiny-lm', 'fp32', false, log, { progressBytes: size, progressIntervalMs: 20 });
    const lines = logs.filter((l) => l.startsWith('model: onnx/model.onnx:'));
    const total = `${(size / 1e3).toFixed(1)} kB`; // under 1 MB: kB (the rate stays in MB/s)
    expect(lines.length).toBeGreaterThanOrEqual(3); // at least two while downloading (one per 20 ms over ~250 ms), then the summary
    for (const l of lines.slice(0, -1)) expect(l).toMatch(new RegExp(`^model: onnx/model\\.onnx: \\d+\\.\\d kB / ${total} \\(\\d+\\.\\d%\\) \\d+\\.\\d MB/s ETA \\S+$`));
    expect(lines.at(-1)).toMatch(new RegExp(`^model: onnx/model\\.onnx: ${total} in \\d+\\.\\ds \\(\\d+\\.\\d MB/s\\)$`));
    expect(logs.some((l) => l.startsWith('model: tokenizer.json:'))).toBe(false); // below the threshold: no progress
    expect(logs).toContain(`model: downloading onnx/model.onnx from test-org/tiny-lm@${SHA_MAIN.slice(0, 12)} (${total})`);
  });

  it('external data is downloaded and hard-linked into the snapshot (onnxruntime refuses data outside the folder)', async () => {
    const ext = withExternalData(files);
    const f = await resolveModelFiles('test-org/ext-lm', 'fp32', false, log);
    const data = join(repoDir('test-org/ext-lm'), 'snapshots', SHA_MAIN, 'onnx', 'model.onnx_data');
    expect(f.externalData).toEqual([data]);
    expect(lstatSync(data).isSymbolicLink()).toBe(false);
    expect(readFileSync(data).equals(ext.get('onnx/model.onnx_data')!)).toBe(true);
    expect(statSync(data).ino).toBe(statSync(join(repoDir('test-org/ext-lm'), 'blobs', lfsOid(ext.get('onnx/model.onnx_data')!))).ino);
  });

  it('the hubUrl option wins over HF_ENDPOINT', async () => {
    process.env.HF_ENDPOINT = 'http://127.0.0.1:9';
    expect((await resolveModelFiles('test-org/tiny-lm', 'fp32', false, log, { hubUrl: hub.url })).commit).toBe(SHA_MAIN);
  });

  it('with the hub gone: offline resolves main through refs/main; online falls back to the cache; otherwise E_NETWORK that says what to do', async () => {
    const gone = await startMockHub({ 'test-org/tiny-lm': repo() });
    process.env.HF_ENDPOINT = gone.url;
    const online = await resolveModelFiles('test-org/tiny-lm', 'fp32', false, log);
    await gone.close();
    const offline = await resolveModelFiles('test-org/tiny-lm', 'fp32', true, log);
    expect(offline).toEqual(online);
    expect(offline.commit).toBe(SHA_MAIN);
    expect(readFileSync(offline.onnxPath).equals(files.get('onnx/model.onnx')!)).toBe(true);

    expect(await resolveModelFiles('test-org/tiny-lm', 'fp32', false, log)).toEqual(online);
    expect(logs.at(-1)).toMatch(/is unreachable; using the cached test-org\/tiny-lm@main/);

    await expect(resolveModelFiles('test-org/tiny-lm', 'q4', true, log)).rejects.toMatchObject({
      code: 'E_NETWORK',
      message: expect.stringMatching(/not in the hub cache .* offline mode is on\. Run once with network .*--model\. Cached there: [0-9a-f]{12}: model\.onnx \(--dtype fp32\)/),
    });
    await expect(resolveModelFiles('test-org/tiny-lm', 'fp32', true, log, { revision: 'v1.0' })).rejects.toMatchObject({ code: 'E_NETWORK' });
    await expect(resolveModelFiles('test-org/other', 'fp32', false, log)).rejects.toMatchObject({
      code: 'E_NETWORK',
      message: expect.stringMatching(/cannot reach http:\/\/127\.0\.0\.1:\d+ .*Run once with network .*--model/),
    });

    // The teacher loads from the cache offline, gives the local folder's states and carries revision + commit.
    const opts = { dtype: 'fp32', layers: [-1], maxPromptTokens: 256, log };
    const [a, b] = [await loadLlmTeacher({ ...opts, model: m.dir }, ds), await loadLlmTeacher({ ...opts, model: 'test-org/tiny-lm', offline: true }, ds)];
    try {
      expect(Array.from((await b.encodeHistory(ds.users[2]!.items)).states)).toEqual(Array.from((await a.encodeHistory(ds.users[2]!.items)).states));
      expect(teacherInfoOf(b)).toMatchObject({ model: 'test-org/tiny-lm', revision: 'main', commit: SHA_MAIN, weightsHash: a.weightsHash });
      expect('commit' in teacherInfoOf(a) || 'revision' in teacherInfoOf(a)).toBe(false);
    } finally {
      await a.dispose();
      await b.dispose();
    }
  });
});

describe('revision and commit in the teacher cache key', () => {
  const teacher = { kind: 'llm' as const, model: 'm', dtype: 'fp32', weightsHash: 'h'.repeat(64), layers: [1], hiddenSize: 4, pooling: 'last-token-of-item', options: {} };
  const inputs = { fingerprint: 'f', teacher, hiddenDtype: 'F32', usersPerShard: 8, softLabels: { k: 5, temperature: 1, head: 'linear' }, head: { kind: 'linear', layer: -1 } } as unknown as KeyInputs;
  it('a local model (neither field) keys as before; a hub model keys by commit, not by the revision name', () => {
    expect(cacheKey(inputs)).toBe(sha256(stableStringify({ format: CACHE_FORMAT, version: CACHE_VERSION, ...inputs })).slice(0, 12));
    const hub = (revision: string, commit: string) => cacheKey({ ...inputs, teacher: { ...teacher, revision, commit } });
    expect(hub('main', SHA_MAIN)).toBe(hub(SHA_MAIN, SHA_MAIN));
    expect(hub('main', SHA_MAIN)).not.toBe(hub('main', SHA_V1));
    expect(hub('main', SHA_MAIN)).not.toBe(cacheKey(inputs));
  });
  it('teacher:cache (and ablate) have --revision', () => {
    expect(llmTeacherOptions.revision).toMatchObject({ type: 'string' });
  });
});
