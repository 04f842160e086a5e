import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { env as hfEnv } from '@huggingface/transformers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { env } from '../../src/env.js';
import { RecdistillError } from '../../src/errors.js';
import { DTYPES, onnxFileFor, resolveDtype, resolveLocalModel } from '../../src/teacher/llm/load.js';
import { loadLlmTeacher } from '../../src/teacher/llm/index.js';
import { tinyDataset, tinyModelDir } from './fixtures.js';

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
    });
    expect(() => onnxFileFor('q3')).toThrow(/not one of fp32, fp16, q8, int8, uint8, q4, q4f16/);
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

describe('hub ids (served from 127.0.0.1)', () => {
  let server: Server;
  let cache: string;
  const saved = { cacheDir: env.cacheDir, host: hfEnv.remoteHost, requests: [] as string[] };
  beforeAll(async () => {
    cache = mkdtempSync(join(tmpdir(), 'recdistill-hub-test-'));
    env.cacheDir = cache;
    server = createServer((req, res) => {
      saved.requests.push(req.url ?? '');
      const prefix = '/test-org/tiny-lm/resolve/main/';
      const file = req.url?.startsWith(prefix) ? join(m.dir, req.url.slice(prefix.length)) : '';
      if (file && existsSync(file)) res.end(readFileSync(file));
      else res.writeHead(404).end('not found');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    hfEnv.remoteHost = `http://127.0.0.1:${port}/`;
  });
  afterAll(async () => {
    env.cacheDir = saved.cacheDir;
    hfEnv.remoteHost = saved.host;
    await new Promise((r) => server.close(r));
    rmSync(cache, { recursive: true, force: true });
    m.cleanup();
  });

  it('downloads into the cache once, then loads offline from it', async () => {
    const opts = { model: 'test-org/tiny-lm', dtype: 'fp32', layers: [-1], maxPromptTokens: 256, log: () => {} };
    const a = await loadLlmTeacher(opts, ds);
    expect(saved.requests).toContain('/test-org/tiny-lm/resolve/main/onnx/model.onnx');
    expect(existsSync(join(cache, 'models', 'test-org', 'tiny-lm', 'onnx', 'model.onnx'))).toBe(true);
    const sa = await a.encodeHistory(ds.users[2]!.items);
    await a.dispose();
    const before = saved.requests.length;
    const b = await loadLlmTeacher({ ...opts, offline: true }, ds);
    expect(saved.requests.length).toBe(before); // nothing fetched
    expect(Array.from((await b.encodeHistory(ds.users[2]!.items)).states)).toEqual(Array.from(sa.states));
    expect(b.weightsHash).toBe(a.weightsHash);
    await b.dispose();
  });

  it('offline and not cached: a network error that says what to do', async () => {
    await expect(loadLlmTeacher({ model: 'test-org/tiny-lm', dtype: 'q4', layers: [-1], maxPromptTokens: 256, offline: true, log: () => {} }, ds)).rejects.toThrow(
      /not in the cache .* offline mode is on.*Cached there: model\.onnx \(--dtype fp32\)/,
    );
  });

  it('online but the repo has no file for that dtype: not found, naming the file', async () => {
    await expect(loadLlmTeacher({ model: 'test-org/tiny-lm', dtype: 'q4', layers: [-1], maxPromptTokens: 256, log: () => {} }, ds)).rejects.toMatchObject({
      code: 'E_NOT_FOUND',
      message: expect.stringMatching(/test-org\/tiny-lm has no onnx\/model_q4\.onnx .*HTTP 404/),
    });
  });

  it('unreachable host: E_NETWORK', async () => {
    const host = hfEnv.remoteHost;
    hfEnv.remoteHost = 'http://127.0.0.1:9/';
    try {
      await expect(loadLlmTeacher({ model: 'test-org/other', dtype: 'fp32', layers: [-1], maxPromptTokens: 256, log: () => {} }, ds)).rejects.toMatchObject({ code: 'E_NETWORK' });
    } finally {
      hfEnv.remoteHost = host;
    }
  });
});
