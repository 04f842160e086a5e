import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * src/ reads top-down (cli -> stages -> util): folders in layers (LAYERS), no import that goes up a layer, no import
 * cycle, and nothing outside src/cli imports src/cli.
 * Every import counts: static, type-only, re-exports, `import()` and `import('...').T`, because a type-only
 * cycle is still two modules that cannot be understood (or moved) one without the other.
 */
const SRC = fileURLToPath(new URL('../src', import.meta.url));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** module (path relative to src/) -> the src modules it imports. */
function importGraph(root = SRC): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sourceFiles(root)) {
    const deps = new Set<string>();
    for (const { fileName } of ts.preProcessFile(readFileSync(file, 'utf8'), true, true).importedFiles) {
      if (!fileName.startsWith('.')) continue;
      const base = resolve(dirname(file), fileName);
      const target = [base.replace(/\.js$/, '.ts'), `${base}.ts`, join(base, 'index.ts')].find((p) => existsSync(p) && p.endsWith('.ts'));
      if (target) deps.add(relative(root, target));
    }
    graph.set(relative(root, file), [...deps].sort());
  }
  return graph;
}

/** Strongly connected components with more than one module (or a module importing itself): Tarjan. */
function cycles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || graph.get(v)!.includes(v)) out.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out;
}

/**
 * The folders of src/, bottom (0) to top. A module may import its own layer and those below, never one above.
 * The student's model and serving parts sit below the teacher: a seqrec teacher is a trained student (it loads one),
 * and the cache reads a seqrec teacher's block count from its model file; training sits above the cache it distils
 * from. Longest prefix wins; a module in no listed folder fails the test, so a new folder must be placed here.
 */
const LAYERS: Array<[prefix: string, layer: number]> = [
  ['errors.ts', 0], ['env.ts', 0], ['util/', 0], ['config/', 0], ['backend/', 0],
  ['data/', 1],
  ['prompt/', 2], ['eval/', 2],
  ['student/model/', 3],
  ['student/serving/', 4],
  ['teacher/', 5],
  ['cache/', 6],
  ['student/training/', 7],
  ['distill/', 8],
  ['bench/', 9], ['serve/', 9],
  ['cli/', 10],
  ['index.ts', 11],
];

function layerOf(module: string): number | undefined {
  const hits = LAYERS.filter(([p]) => module === p || (p.endsWith('/') && module.startsWith(p)));
  return hits.sort((a, b) => b[0].length - a[0].length)[0]?.[1];
}

/** Imports that go up a layer ("a (3) -> b (5)"), and modules in no layer ("a: no layer"). */
function layerViolations(graph: Map<string, string[]>): string[] {
  const out: string[] = [];
  for (const [m, deps] of graph) {
    const lm = layerOf(m);
    if (lm === undefined) {
      out.push(`${m}: no layer`);
      continue;
    }
    for (const d of deps) {
      const ld = layerOf(d);
      if (ld !== undefined && ld > lm) out.push(`${m} (${lm}) -> ${d} (${ld})`);
    }
  }
  return out.sort();
}

describe('module structure of src/', () => {
  const graph = importGraph();

  it('sees the modules and their imports', () => {
    // the graph itself is checked against known edges, so an empty or broken graph cannot pass the tests below
    expect(graph.size).toBeGreaterThan(100);
    expect(graph.get('cli/main.ts')).toContain('cli/command.ts');
    expect(graph.get('student/model/model.ts')).toContain('student/model/init.ts');
    expect(graph.get('cache/format.ts')).toContain('cache/validate.ts');
  });

  it('finds a cycle when there is one', () => {
    const g = new Map([['a.ts', ['b.ts']], ['b.ts', ['c.ts']], ['c.ts', ['a.ts']], ['d.ts', ['a.ts']], ['e.ts', ['e.ts']]]);
    expect(cycles(g)).toEqual([['a.ts', 'b.ts', 'c.ts'], ['e.ts']]);
  });

  it('finds an import that goes up a layer, and a module in no layer', () => {
    const g = new Map([['teacher/a.ts', ['student/training/t.ts', 'util/u.ts']], ['student/model/m.ts', ['data/d.ts']], ['stray/x.ts', []]]);
    expect(layerViolations(g)).toEqual(['stray/x.ts: no layer', 'teacher/a.ts (5) -> student/training/t.ts (7)']);
  });

  it('has every module in a layer and no import that goes up a layer', () => {
    expect(layerViolations(graph)).toEqual([]);
  });

  it('has no import cycle', () => {
    expect(cycles(graph)).toEqual([]);
  });

  it('has no import of src/cli from outside src/cli', () => {
    const up = [...graph].flatMap(([m, deps]) => (m.startsWith('cli/') ? [] : deps.filter((d) => d.startsWith('cli/')).map((d) => `${m} -> ${d}`)));
    expect(up).toEqual([]);
  });
});
