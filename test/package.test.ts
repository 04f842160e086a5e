/**
 * The published package as a user gets it: `npm pack` (which builds dist/ through `prepare`), then
 * `npm install <tarball>` into an empty project outside the repository, with postinstall downloads disabled the
 * documented way (ONNXRUNTIME_NODE_INSTALL=skip): every dependency resolves from the registry (or npm's cache),
 * nothing from the repository's node_modules. Then the README's library example runs verbatim in that project.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCmd } from './bench/fixtures.js';

const ROOT = resolve(import.meta.dirname, '..');
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
const work = mkdtempSync(join(tmpdir(), 'recdistill-package-test-'));
const consumer = join(work, 'consumer');
const run = join(work, 'run');
// The README example's history is MovieLens raw ids '50', '172', '133': a synthetic catalogue of 200 items whose
// raw ids are '1'..'200', with enough users that every item occurs, has them.
const DATA = { dataset: 'synthetic', syntheticUsers: 400, syntheticItems: 200, syntheticMinLen: 5, syntheticMaxLen: 12, syntheticSeed: 3 };
let files: string[] = [];

beforeAll(async () => {
  const env = { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' };
  execFileSync('npm', ['pack', '--pack-destination', work, '--silent'], { cwd: ROOT, stdio: 'pipe', env });
  const tgz = readdirSync(work).find((f) => f.endsWith('.tgz'))!;
  files = execFileSync('tar', ['tzf', join(work, tgz)], { encoding: 'utf8' }).split('\n').filter(Boolean);
  mkdirSync(consumer, { recursive: true });
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', type: 'module', private: true }));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel', 'error', join(work, tgz)], { cwd: consumer, stdio: 'pipe', env });
  await runCmd(() => import('../src/cli/commands/student-train.js'), { ...DATA, epochs: 1, dims: 16, blocks: 1, ffnDims: 16, maxLen: 8, out: run });
}, 600_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the npm package', () => {
  it('ships compiled code, types, the bin and the prompts; not the tests', () => {
    expect(files).toContain('package/dist/index.js');
    expect(files).toContain('package/dist/index.d.ts');
    expect(files).toContain('package/bin/recdistill.js');
    expect(files).toContain('package/prompts/history.md');
    expect(files.some((f) => f.startsWith('package/test/') || f.startsWith('package/src/'))).toBe(false);
  });

  it('installs one onnxruntime-node: the version @huggingface/transformers pins', () => {
    // Two copies of the native library in one process fail at import (libonnxruntime.so.1: version 'VERS_x' not found).
    const tjs = JSON.parse(readFileSync(join(consumer, 'node_modules', '@huggingface', 'transformers', 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    expect(PKG.dependencies['onnxruntime-node']).toBe(tjs.dependencies['onnxruntime-node']);
    const ls = JSON.parse(execFileSync('npm', ['ls', 'onnxruntime-node', '--all', '--json'], { cwd: consumer, encoding: 'utf8' })) as object;
    const versions = new Set([...JSON.stringify(ls).matchAll(/"onnxruntime-node":\{"version":"([^"]+)"/g)].map((m) => m[1]));
    expect([...versions]).toEqual([tjs.dependencies['onnxruntime-node']]);
    // Build tools are not runtime dependencies.
    expect(PKG.dependencies).not.toHaveProperty('typescript');
    expect(PKG.dependencies).not.toHaveProperty('tsx');
  });

  it('the README example, run verbatim in a consumer that installed the tarball, prints what `recommend` prints', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const example = /```js\n(import \{ loadRecommender \} from 'recdistill';[\s\S]*?)```/.exec(readme)?.[1];
    expect(example, "README's loadRecommender example").toContain("['50', '172', '133']");
    writeFileSync(join(consumer, 'example.mjs'), example!);
    const out = execFileSync(process.execPath, ['example.mjs', run], { cwd: consumer, encoding: 'utf8' });
    const cli = (await runCmd(() => import('../src/cli/commands/recommend.js'), { student: run, history: '50,172,133', k: 5 })) as { items: { id: string; title: string; score: number }[] };
    expect(cli.items).toHaveLength(5);
    expect(out.trim().split('\n')).toEqual(cli.items.map((it) => `${it.id} ${it.title} ${it.score.toFixed(3)}`));
  });

  it('its types resolve for a TypeScript consumer, and a wrong call is a type error', () => {
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'); // the repository's compiler; the package under test is the consumer's
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
