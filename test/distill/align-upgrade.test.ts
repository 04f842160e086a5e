import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { datasetFromFlags } from '../../src/data/options.js';
import { upgradeAlignProvenance } from '../../src/distill/align.js';
import { runStudentStage, studentStageConfig } from '../../src/distill/stage.js';
import { runToContinue } from '../../src/student/model/run-folder.js';
import { upgradeIdentity } from '../../src/student/training/resume.js';

/**
 * Blocks count from 0 everywhere; runs distilled when --align counted student blocks from 1 (provenance without
 * `alignFrom`) still resume and continue, and an old config.json whose --align would now mean other blocks is refused
 * with the alignment rewritten.
 */
const tmp = mkdtempSync(join(tmpdir(), 'align-upgrade-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const OLD_PROVENANCE = { cache: '/c', cacheKey: 'abc', lambdas: { cos: 1 }, align: '1:3,2:7', standardise: false };
const NEW_PROVENANCE = { cache: '/c', cacheKey: 'abc', lambdas: { cos: 1 }, align: '0:3,1:7', alignFrom: 0, standardise: false };
const IDENTITY = { format: 1, dataset: 'synthetic', fingerprint: 'fp', options: { dataset: 'synthetic', dims: 8 } };

function oldRun(name: string, align: string): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  const cfg = { ...IDENTITY, distill: OLD_PROVENANCE, model: {}, train: { dataset: 'synthetic', dims: 8, cache: '/c', lambdaCos: 1, align } };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
  return join(dir, 'config.json');
}

describe('runs from before blocks counted from 0', () => {
  it('a checkpoint identity with a 1-based align compares equal to the same run today', () => {
    const stored = { ...IDENTITY, distill: OLD_PROVENANCE };
    expect(upgradeIdentity(stored, { upgradeProvenance: upgradeAlignProvenance })).toEqual({ ...IDENTITY, distill: NEW_PROVENANCE });
    expect(upgradeIdentity({ ...IDENTITY, distill: null }, { upgradeProvenance: upgradeAlignProvenance })).toEqual({ ...IDENTITY, distill: null });
  });

  it('--config OLD/config.json continues the old run (same alignment), and would not without the upgrade', () => {
    const file = oldRun('auto-align', '');
    expect(runToContinue(file, { ...IDENTITY, distill: NEW_PROVENANCE }, upgradeAlignProvenance)).toEqual({ dir: join(tmp, 'auto-align') });
    expect(runToContinue(file, { ...IDENTITY, distill: NEW_PROVENANCE }).differs).toBe('distill');
  });

  it('an old config.json with an explicit --align is refused with the alignment as blocks count now', async () => {
    const file = oldRun('explicit-align', '1:-4,2:-1');
    const data = { dataset: 'synthetic', syntheticUsers: 20, syntheticItems: 15, syntheticMinLen: 5, syntheticMaxLen: 8 };
    const ds = await datasetFromFlags(data);
    const config = studentStageConfig({ ...data, cache: '/nowhere', lambdaCos: 1, align: '1:-4,2:-1', backend: 'cpu' });
    await expect(runStudentStage(config, { log: () => {}, backend: 'cpu', dataset: ds, configFile: file }))
      .rejects.toThrow(/explicit-align\/config\.json was written when --align counted student blocks from 1: its "align" "1:-4,2:-1" is "0:-4,1:-1" now.*--align 0:-4,1:-1/);
  });
});
