/** teacher:cache rejects a prompt budget or head layer that cannot work before it writes anything. */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeReplicaModel } from '../../src/teacher/replica/index.js';
import { runCmd } from '../bench/fixtures.js';

const root = mkdtempSync(join(tmpdir(), 'recdistill-hostile-teacher-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const model = writeReplicaModel({ out: join(root, 'lm'), layout: 'optimum', dtype: 'fp32', seed: 1, layers: 2, hidden: 32, heads: 2, kvHeads: 1, merges: 200, maxPositions: 512, externalDataChunks: 0 });
const S = { dataset: 'synthetic', syntheticUsers: 40, syntheticItems: 30, topK: 10, model: model.out, dtype: 'fp32', offline: true, overheadSample: 0 };

describe('teacher:cache options checked up front', () => {
  it('--max-prompt-tokens too small for the fixed prompt and one item line: an error naming the minimum, nothing written', async () => {
    const out = join(root, 'c1');
    await expect(runCmd(() => import('../../src/cli/commands/teacher-cache.js'), { ...S, maxPromptTokens: 5, out })).rejects.toThrow(/--max-prompt-tokens 5 leaves -?\d+ tokens .* raise --max-prompt-tokens to at least \d+/);
    expect(existsSync(out)).toBe(false);
  });

  it('--head-layer outside the tapped layers: an error with the valid range, nothing written', async () => {
    const out = join(root, 'c2');
    await expect(runCmd(() => import('../../src/cli/commands/teacher-cache.js'), { ...S, layers: '-2,-1', headLayer: 5, maxPromptTokens: 512, out })).rejects.toThrow(/--head-layer 5 is out of range for the 2 tapped layers \(valid: 0\.\.1 or -2\.\.-1\)/);
    expect(existsSync(out)).toBe(false);
  });
});

describe('teacher:cache without evaluable users', () => {
  it('every user has 2 interactions: E_EMPTY saying why, nothing written', async () => {
    const { writeFileSync } = await import('node:fs');
    const csv = join(root, 'two.csv');
    writeFileSync(csv, 'user_id,item_id,timestamp\n' + Array.from({ length: 30 }, (_, u) => `${u},${u % 10},1\n${u},${(u + 1) % 10},2\n`).join(''));
    // Item titles, so the teacher has text to read (an LLM teacher refuses items without any) and the check reached is the split's.
    const items = join(root, 'two-items.csv');
    writeFileSync(items, 'item_id,title\n' + Array.from({ length: 10 }, (_, i) => `${i},Item ${i}\n`).join(''));
    const out = join(root, 'c3');
    await expect(runCmd(() => import('../../src/cli/commands/teacher-cache.js'), { ...S, dataset: 'generic', source: csv, itemsFile: items, topK: 5, maxPromptTokens: 512, out })).rejects.toThrow(/no user has a validation item .* leave-one-out needs 3/);
    expect(existsSync(out)).toBe(false);
  });
});
