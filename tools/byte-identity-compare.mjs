#!/usr/bin/env node
// Compares two byte-identity folders (tools/byte-identity.sh): binary files byte for byte, JSON/JSONL with timing,
// memory and host keys removed and each folder's own path replaced by <OUT>, other text with the paths replaced.
// Prints one line per file and exits 1 when any file differs or is missing.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';

const [refArg, outArg] = process.argv.slice(2);
if (!refArg || !outArg) {
  console.error('usage: byte-identity-compare.mjs REF OUT');
  process.exit(2);
}
const [ref, out] = [resolve(refArg), resolve(outArg)];
// Keys whose values are measurements of this machine at that moment, not results.
const VOLATILE = /seconds|Seconds|msPerStep|^ms$|\.ms$|p50|p95|p99|memory|peakRss|wasmHeap|MiB|timings|wallClock|createdAt|startedAt|finishedAt|updatedAt|date|prompts\/s|tokens\/s|perSecond|host|pid|threads/;
const TEXT = /\.(json|jsonl|md|svg|txt|csv)$/;

function files(dir) {
  const acc = [];
  const walk = (d) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else acc.push(relative(dir, p));
    }
  };
  walk(dir);
  return acc.filter((f) => !f.endsWith('.log')).sort();
}

function strip(v, root) {
  if (Array.isArray(v)) return v.map((x) => strip(x, root));
  if (v && typeof v === 'object') {
    const o = {};
    for (const [k, x] of Object.entries(v)) if (!VOLATILE.test(k)) o[k] = strip(x, root);
    return o;
  }
  return typeof v === 'string' ? v.split(root).join('<OUT>') : v;
}

function normal(path, root) {
  const text = readFileSync(path, 'utf8');
  if (path.endsWith('.json')) return JSON.stringify(strip(JSON.parse(text), root), null, 1);
  if (path.endsWith('.jsonl')) return text.split('\n').filter(Boolean).map((l) => JSON.stringify(strip(JSON.parse(l), root))).join('\n');
  return text.split(root).join('<OUT>');
}

let bad = 0;
for (const f of files(ref)) {
  if (f.endsWith('.log')) continue;
  const [a, b] = [join(ref, f), join(out, f)];
  let same;
  try {
    same = TEXT.test(f) ? normal(a, ref) === normal(b, out) : Buffer.compare(readFileSync(a), readFileSync(b)) === 0;
  } catch (e) {
    same = false;
    console.log(`MISSING   ${f} (${e.code ?? e.message})`);
    bad++;
    continue;
  }
  const how = TEXT.test(f) ? (f.endsWith('.json') || f.endsWith('.jsonl') ? 'json minus timings' : 'text, paths replaced') : 'bytes';
  console.log(`${same ? 'identical' : 'DIFFERS  '} ${f} (${how})`);
  if (!same) bad++;
}
for (const f of files(out)) if (!f.endsWith('.log') && !files(ref).includes(f)) { console.log(`EXTRA     ${f}`); bad++; }
console.log(bad ? `${bad} file(s) differ` : 'all files identical');
process.exit(bad ? 1 : 0);
