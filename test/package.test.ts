/**
 * The published package: `npm pack` (which builds dist/ through `prepare`), the tarball extracted as a
 * consumer's node_modules/recdistill, then imported *by name* from a consumer project, in JavaScript and in
 * TypeScript (types through package.json `exports`). The consumer lives under the repository so its
 * dependencies resolve from the repository's node_modules: no registry is needed, and the packed files
 * are exactly what a user's `npm install recdistill-<version>.tgz` unpacks.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadStudent } from '../src/student/serve.js';
import { runCmd, TINY_DATA } from './bench/fixtures.js';

const ROOT = resolve(import.meta.dirname, '..');
mkdirSync(join(ROOT, '.recdistill'), { recursive: true });
const work = mkdtempSync(join(ROOT, '.recdistill', 'package-test-'));
const consumer = join(work, 'consumer');
const run = join(work, 'run');
let files: string[] = [];

beforeAll(async () => {
  execFileSync('npm', ['pack', '--pack-destination', work, '--silent'], { cwd: ROOT, stdio: 'pipe', env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' } });
  const tgz = readdirSync(work).find((f) => f.endsWith('.tgz'))!;
  files = execFileSync('tar', ['tzf', join(work, tgz)], { encoding: 'utf8' }).split('\n').filter(Boolean);
  const dest = join(consumer, 'node_modules', 'recdistill');
  mkdirSync(dest, { recursive: true });
  execFileSync('tar', ['xzf', join(work, tgz), '-C', dest, '--strip-components', '1']);
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', type: 'module', private: true }));
  await runCmd(() => import('../src/cli/commands/student-train.js'), { ...TINY_DATA, epochs: 1, dims: 16, blocks: 1, ffnDims: 16, maxLen: 8, out: run });
}, 180_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the npm package', () => {
  it('ships compiled code, types, the bin and the prompts; not the tests', () => {
    expect(files).toContain('package/dist/index.js');
    expect(files).toContain('package/dist/index.d.ts');
    expect(files).toContain('package/bin/recdistill.js');
    expect(files).toContain('package/prompts/history.md');
    expect(files.some((f) => f.startsWith('package/test/') || f.startsWith('package/src/'))).toBe(false);
  });

  it('the README example, run from a consumer that imports the package by name, prints what `recommend` prints', async () => {
    // The README's example verbatim (raw MovieLens-style ids '50', '172', '133' become ids of the test data).
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const example = /```js\n(import \{ loadRecommender \} from 'recdistill';[\s\S]*?)```/.exec(readme)?.[1];
    expect(example, "README's loadRecommender example, with the history the next line swaps for the test data's ids").toContain("['50', '172', '133']");
    writeFileSync(join(consumer, 'example.mjs'), example!.replace("['50', '172', '133']", "['3', '7', '12']"));
    const out = execFileSync(process.execPath, ['example.mjs', run], { cwd: consumer, encoding: 'utf8' });
    const cli = (await runCmd(() => import('../src/cli/commands/recommend.js'), { student: run, history: '3,7,12', k: 5 })) as { items: { id: string; title: string; score: number }[] };
    expect(out.trim().split('\n')).toEqual(cli.items.map((it) => `${it.id} ${it.title} ${it.score.toFixed(3)}`));
    // The dense-id model underneath answers the same.
    const s = await loadStudent(run);
    try {
      expect(s.recommend([3, 7, 12], 5).items.map(String)).toEqual(cli.items.map((it) => it.id)); // synthetic raw ids equal dense ids
    } finally {
      s.dispose();
    }
  });

  it('its types resolve for a TypeScript consumer, and a wrong call is a type error', () => {
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const opts = ['--noEmit', '--strict', '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--target', 'ES2022', '--skipLibCheck', '--types', 'node', '--typeRoots', join(ROOT, 'node_modules', '@types')];
    writeFileSync(join(consumer, 'ok.ts'), `import { loadRecommender, loadStudent, type LoadedStudent, type Recommendation } from 'recdistill';\nconst s: LoadedStudent = await loadStudent('run');\nconst r: { items: number[]; scores: number[] } = s.recommend([1, 2], 10);\nconst rec = await loadRecommender('run', { runtime: 'onnx' });\nconst a: Recommendation = await rec.recommend(['1', 2], 3);\nexport { r, a };\n`);
    execFileSync(process.execPath, [tsc, ...opts, 'ok.ts'], { cwd: consumer, stdio: 'pipe' });
    writeFileSync(join(consumer, 'bad.ts'), `import { loadStudent } from 'recdistill';\nconst s = await loadStudent(42);\nexport { s };\n`);
    expect(() => execFileSync(process.execPath, [tsc, ...opts, 'bad.ts'], { cwd: consumer, stdio: 'pipe' })).toThrow();
  });

  it('the installed bin runs the compiled CLI', () => {
    const out = execFileSync(process.execPath, [join(consumer, 'node_modules', 'recdistill', 'bin', 'recdistill.js'), '--help'], { cwd: consumer, encoding: 'utf8' });
    expect(out).toMatch(/student:export/);
  });
});
