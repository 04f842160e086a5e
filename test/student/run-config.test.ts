import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkRunConfig, readRunConfig, runDatasetFlags, runDatasetRecord, runToContinue, trainedOptions } from '../../src/student/model/run-folder.js';

/** The one typed reader of a run folder's config.json: every field it returns is checked. */
const tmp = mkdtempSync(join(tmpdir(), 'run-config-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const GOOD = { format: 1, dataset: 'ml-100k', fingerprint: 'f'.repeat(64), options: { dataset: 'ml-100k', dims: 8 }, distill: null, model: { dims: 8 }, train: { dataset: 'ml-100k', source: '/data/ml', dims: 8 }, backend: 'wasm' };

function runDir(name: string, cfg: unknown): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  return dir;
}

describe('run folder config.json reader', () => {
  it('returns the typed fields of a student:train config.json', () => {
    const cfg = readRunConfig(runDir('good', GOOD));
    expect(cfg).toEqual(GOOD);
    expect(trainedOptions(cfg)).toEqual({ dataset: 'ml-100k', source: '/data/ml', dims: 8 });
    expect(runDatasetRecord(join(tmp, 'good'))).toEqual({ name: 'ml-100k', options: { source: '/data/ml' } });
  });

  it('refuses a field of the wrong type, naming the file and the field', () => {
    expect(() => checkRunConfig({ ...GOOD, model: [1] }, 'R/config.json')).toThrow(/R\/config\.json: "model" must be an object/);
    expect(() => checkRunConfig({ ...GOOD, train: 'x' }, 'R/config.json')).toThrow(/"train" must be an object/);
    expect(() => checkRunConfig({ ...GOOD, distill: 3 }, 'R/config.json')).toThrow(/"distill" must be an object or null/);
    expect(() => checkRunConfig({ ...GOOD, backend: 1 }, 'R/config.json')).toThrow(/"backend" must be a string/);
    expect(() => checkRunConfig({ ...GOOD, format: 2 }, 'R/config.json')).toThrow(/"format" is 2, expected 1/);
  });

  it('reads the dataset flags through the dataset option spec: a bad value names config.json', () => {
    const dir = runDir('bad-flag', { options: { dataset: 'ml-100k', minRating: 'high' } });
    expect(() => runDatasetFlags(dir)).toThrow(/bad-flag\/config\.json: option "min-rating" expects a number, got "high"/);
  });

  it('a --config file that is not a run config.json continues nothing', () => {
    const file = join(tmp, 'plain.json');
    writeFileSync(file, JSON.stringify({ dims: 8 }));
    expect(runToContinue(file, { format: 1 })).toEqual({});
  });
});
