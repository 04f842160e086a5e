import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readPrepared, writePrepared } from '../../src/data/export.js';
import { prepareDataset, PREPARE_DEFAULTS } from '../../src/data/prepare.js';

describe('prepared dataset export', () => {
  it('round-trips exactly and is readable as JSON lines', () => {
    const d = prepareDataset({ ...PREPARE_DEFAULTS, dataset: 'synthetic', source: '', synthetic: { users: 40, items: 50, seed: 5 }, kCore: 3 });
    const root = mkdtempSync(join(tmpdir(), 'rd-exp-'));
    const out = join(root, 'prep');
    writePrepared(d, out, ['x']);
    expect(readdirSync(root)).toEqual(['prep']); // no temp dir left
    const back = readPrepared(out);
    expect(back.fingerprint).toBe(d.fingerprint);
    expect(back.items).toEqual(d.items.map((it) => JSON.parse(JSON.stringify(it)))); // undefined year dropped by JSON
    expect(back.users).toEqual(d.users);
    expect(back.stats).toEqual(d.stats);
    const first = JSON.parse(readFileSync(join(out, 'users.jsonl'), 'utf8').split('\n')[0]!);
    expect(first).toEqual({ id: 0, rawId: d.users[0]!.rawId, items: [...d.users[0]!.items] });
    // --dataset prepared reads it back with the original name and fingerprint; filters cannot be re-applied.
    const again = prepareDataset({ ...PREPARE_DEFAULTS, dataset: 'prepared', source: out });
    expect([again.name, again.fingerprint, again.stats]).toEqual([d.name, d.fingerprint, d.stats]);
    expect(() => prepareDataset({ ...PREPARE_DEFAULTS, dataset: 'prepared', source: out, kCore: 2 })).toThrow(/--k-core\/--max-history must stay 0/);
    expect(() => prepareDataset({ ...PREPARE_DEFAULTS, dataset: 'prepared', source: out, tieOrder: 'item' })).toThrow(/its filters are fixed .* and --tie-order file/);
    expect(() => prepareDataset({ ...PREPARE_DEFAULTS, dataset: 'prepared', source: root })).toThrow(/dataset\.json not found/);
    // A second write replaces the export; a foreign non-empty directory is refused.
    writePrepared(d, out);
    const foreign = join(root, 'mine');
    mkdirSync(foreign);
    writeFileSync(join(foreign, 'notes.txt'), 'keep me');
    expect(() => writePrepared(d, foreign)).toThrow(/exists and is not a prepared dataset/);
    expect(existsSync(join(foreign, 'notes.txt'))).toBe(true);
  });
});
