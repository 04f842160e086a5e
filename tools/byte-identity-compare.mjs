#!/usr/bin/env node
// Compares two byte-identity folders (tools/byte-identity.sh): binary files byte for byte; safetensors files by
// their tensor bytes and tensor table byte for byte, their metadata (a checkpoint's state: timings) as JSON; JSON
// and JSONL with timing, memory and host keys removed; each folder's own path replaced by <OUT> and its cache key
// (a hash that covers the teacher run's path) by <KEY>. Prints one line per file; exits 1 when any file differs.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';

const [refArg, outArg] = process.argv.slice(2);
if (!refArg || !outArg) {
  console.error('usage: byte-identity-compare.mjs REF OUT');
  process.exit(2);
}
const [ref, out] = [resolve(refArg), resolve(outArg)];
// Keys whose values are measurements of this machine at that moment, not results.
const VOLATILE = /^(timings|memory|msPerStep|ms|threads|seconds|secondsPerEpoch|wallClock)$|Seconds$|MiB$|^p(50|95|99)/;
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

/** The folder's own path and its cache key (derived from that path), replaced in every string. */
function rooted(root) {
  let key;
  try {
    key = JSON.parse(readFileSync(join(root, 'cache', 'manifest.json'), 'utf8')).key;
  } catch {}
  return (s) => (key ? s.split(key).join('<KEY>') : s).split(root).join('<OUT>');
}

function strip(v, root) {
  if (Array.isArray(v)) return v.map((x) => strip(x, root));
  if (v && typeof v === 'object') {
    const o = {};
    for (const [k, x] of Object.entries(v)) if (!VOLATILE.test(k)) o[k] = strip(x, root);
    return o;
  }
  if (typeof v !== 'string') return v;
  const t = v.trim();
  // metadata strings that hold JSON (a checkpoint's state and identity) are compared as JSON
  if ((t.startsWith('{') || t.startsWith('[')) && t.length > 1) {
    try {
      return strip(JSON.parse(t), root);
    } catch {}
  }
  return rooted(root)(v);
}

/** safetensors: the tensor bytes and the tensor table exactly, the metadata through strip(). */
function safetensors(path, root) {
  const b = readFileSync(path);
  const n = Number(b.readBigUInt64LE(0));
  const header = JSON.parse(b.subarray(8, 8 + n).toString('utf8'));
  const { __metadata__: meta, ...tensors } = header;
  return { data: b.subarray(8 + n), table: JSON.stringify(tensors), meta: JSON.stringify(strip(meta ?? {}, root)) };
}

function sameSafetensors(a, ra, b, rb) {
  const [x, y] = [safetensors(a, ra), safetensors(b, rb)];
  return Buffer.compare(x.data, y.data) === 0 && x.table === y.table && x.meta === y.meta;
}

function normal(path, root) {
  const text = readFileSync(path, 'utf8');
  if (path.endsWith('.json')) return JSON.stringify(strip(JSON.parse(text), root), null, 1);
  if (path.endsWith('.jsonl')) return text.split('\n').filter(Boolean).map((l) => JSON.stringify(strip(JSON.parse(l), root))).join('\n');
  return rooted(root)(text);
}

let bad = 0;
for (const f of files(ref)) {
  if (f.endsWith('.log')) continue;
  const [a, b] = [join(ref, f), join(out, f)];
  let same;
  try {
    same = TEXT.test(f) ? normal(a, ref) === normal(b, out)
      : f.endsWith('.safetensors') ? sameSafetensors(a, ref, b, out)
      : Buffer.compare(readFileSync(a), readFileSync(b)) === 0;
  } catch (e) {
    same = false;
    console.log(`MISSING   ${f} (${e.code ?? e.message})`);
    bad++;
    continue;
  }
  const how = TEXT.test(f) ? (f.endsWith('.json') || f.endsWith('.jsonl') ? 'json minus timings' : 'text, paths replaced')
    : f.endsWith('.safetensors') ? 'tensor bytes + table; metadata minus timings' : 'bytes';
  const bytes = same && !TEXT.test(f) && Buffer.compare(readFileSync(a), readFileSync(b)) === 0;
  console.log(`${same ? 'identical' : 'DIFFERS  '} ${f} (${bytes ? 'cmp: byte for byte' : how})`);
  if (!same) bad++;
}
for (const f of files(out)) if (!f.endsWith('.log') && !files(ref).includes(f)) { console.log(`EXTRA     ${f}`); bad++; }
console.log(bad ? `${bad} file(s) differ` : 'all files identical');
process.exit(bad ? 1 : 0);
