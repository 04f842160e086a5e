#!/usr/bin/env node
// The CLI entry: the compiled JavaScript in dist/ (npm run build; an installed package always has it).
// A source checkout without a build runs the TypeScript through tsx instead.
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const compiled = join(root, 'dist', 'cli', 'main.js');
if (existsSync(compiled)) {
  const { main } = await import(pathToFileURL(compiled).href);
  process.exit(await main(process.argv.slice(2)));
} else {
  const require = createRequire(import.meta.url);
  const r = spawnSync(process.execPath, [require.resolve('tsx/cli'), join(root, 'src/cli/main.ts'), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
