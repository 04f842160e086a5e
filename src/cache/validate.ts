import { isAbsolute } from 'node:path';
import { RecdistillError } from '../errors.js';
import type { CacheManifest } from './manifest.js';

/**
 * Structural checks of a teacher-cache manifest, run by readManifest before anything trusts a number in it
 * (nothing is allocated from the manifest's figures before they pass): JSON types, ranges, and consistency
 * (numShards vs users / usersPerShard, every shard's user range is the one its index implies, K <= items,
 * sane layer / hidden sizes, rows <= interactions, file names plain names inside the cache folder).
 * Every failure names manifest.json and the field.
 */

/** Largest user / item / row count a cache can hold: ids are Int32. */
const MAX_ID = 2 ** 31 - 1;
/** Generous sanity bounds; real teachers have H <= 16k and a few dozen tapped layers. */
const MAX_HIDDEN = 1 << 16;
const MAX_LAYERS = 1024;
/** The manifest itself is read whole: refuse an absurd one before reading it. */
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

type Obj = Record<string, unknown>;

const HEX64 = /^[0-9a-f]{64}$/;

class Checker {
  constructor(readonly path: string) {}

  fail(field: string, got: unknown, expected: string): never {
    throw new RecdistillError('E_INPUT', `${this.path}: field "${field}" is ${show(got)}, expected ${expected}.`);
  }

  obj(v: unknown, field: string): Obj {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) this.fail(field, v, 'an object');
    return v as Obj;
  }

  str(v: unknown, field: string): string {
    if (typeof v !== 'string') this.fail(field, v, 'a string');
    return v;
  }

  bool(v: unknown, field: string): boolean {
    if (typeof v !== 'boolean') this.fail(field, v, 'true or false');
    return v;
  }

  int(v: unknown, field: string, min: number, max: number): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) this.fail(field, v, `an integer in [${min}, ${max}]`);
    return v;
  }

  num(v: unknown, field: string, what: string, ok: (n: number) => boolean): number {
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) this.fail(field, v, what);
    return v;
  }

  oneOf<T extends string>(v: unknown, field: string, choices: readonly T[]): T {
    if (typeof v !== 'string' || !choices.includes(v as T)) this.fail(field, v, `one of ${choices.map((c) => JSON.stringify(c)).join(', ')}`);
    return v as T;
  }

  sha(v: unknown, field: string): string {
    if (typeof v !== 'string' || !HEX64.test(v)) this.fail(field, v, 'a sha256 (64 lowercase hex digits)');
    return v;
  }

  /** A file name in the manifest: a plain name inside the cache folder. */
  file(v: unknown, field: string): string {
    const name = this.str(v, field);
    const why = unsafeFileName(name);
    if (why) this.fail(field, name, `a plain file name inside the cache folder (${why})`);
    return name;
  }

  fileRef(v: unknown, field: string): { file: string; sha256: string } {
    const o = this.obj(v, field);
    return { file: this.file(o.file, `${field}.file`), sha256: this.sha(o.sha256, `${field}.sha256`) };
  }
}

/** Why `name` is not a plain file name inside the cache folder, or undefined when it is. */
function unsafeFileName(name: string): string | undefined {
  if (name === '' || name === '.' || name === '..') return 'empty, "." or ".."';
  if (isAbsolute(name) || /^[A-Za-z]:/.test(name)) return 'absolute path';
  if (/[\\/]/.test(name)) return 'contains a path separator';
  if (name.includes('\0')) return 'contains a NUL byte';
  if (name === 'manifest.json' || name.startsWith('.')) return 'reserved or hidden name';
  return undefined;
}

function show(v: unknown): string {
  if (v === undefined) return 'missing';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * Validate a parsed manifest in place (returns it typed). Accepts every stage a build leaves behind: pass 1
 * under way (some shards, no items yet), a --shard slice, a merged pass-1 cache, a complete cache.
 */
export function validateManifest(raw: unknown, path: string): CacheManifest {
  const c = new Checker(path);
  const m = c.obj(raw, '(top level)');
  c.str(m.key, 'key');
  if ((m.key as string).length === 0 || (m.key as string).length > 128) c.fail('key', m.key, 'a cache key (1..128 characters)');
  c.bool(m.complete, 'complete');
  const stage = c.oneOf(m.stage, 'stage', ['hidden', 'complete'] as const);
  if ((stage === 'complete') !== m.complete) c.fail('stage', stage, `"${m.complete ? 'complete' : 'hidden'}" (field "complete" is ${m.complete})`);

  const ds = c.obj(m.dataset, 'dataset');
  c.str(ds.name, 'dataset.name');
  c.str(ds.fingerprint, 'dataset.fingerprint');
  const users = c.int(ds.users, 'dataset.users', 0, MAX_ID);
  const items = c.int(ds.items, 'dataset.items', 1, MAX_ID - 1);
  const interactions = c.int(ds.interactions, 'dataset.interactions', 0, Number.MAX_SAFE_INTEGER);

  const t = c.obj(m.teacher, 'teacher');
  c.oneOf(t.kind, 'teacher.kind', ['llm', 'seqrec'] as const);
  c.str(t.model, 'teacher.model');
  c.str(t.dtype, 'teacher.dtype');
  c.str(t.weightsHash, 'teacher.weightsHash');
  c.str(t.pooling, 'teacher.pooling');
  if (t.revision !== undefined) c.str(t.revision, 'teacher.revision');
  if (t.commit !== undefined) c.str(t.commit, 'teacher.commit');
  if (t.prompt !== undefined) {
    const p = c.obj(t.prompt, 'teacher.prompt');
    c.str(p.path, 'teacher.prompt.path');
    c.str(p.sha256, 'teacher.prompt.sha256');
  }
  c.obj(t.options, 'teacher.options');
  if (!Array.isArray(t.layers) || t.layers.length < 1 || t.layers.length > MAX_LAYERS) c.fail('teacher.layers', t.layers, `an array of 1..${MAX_LAYERS} layer indices`);
  const layers = t.layers as unknown[];
  layers.forEach((l, i) => c.int(l, `teacher.layers[${i}]`, 0, 1_000_000));
  const H = c.int(t.hiddenSize, 'teacher.hiddenSize', 1, MAX_HIDDEN);

  const lay = c.obj(m.layout, 'layout');
  const per = c.int(lay.usersPerShard, 'layout.usersPerShard', 1, MAX_ID);
  const numShards = c.int(lay.numShards, 'layout.numShards', 1, MAX_ID);
  const wantShards = Math.max(1, Math.ceil(users / per));
  if (numShards !== wantShards) c.fail('layout.numShards', numShards, `${wantShards} (ceil(dataset.users ${users} / layout.usersPerShard ${per}))`);
  c.oneOf(lay.hiddenDtype, 'layout.hiddenDtype', ['F32', 'F16'] as const);
  c.str(lay.positions, 'layout.positions');

  const sl = c.obj(m.softLabels, 'softLabels');
  c.int(sl.k, 'softLabels.k', 1, items);
  c.num(sl.temperature, 'softLabels.temperature', 'a finite number > 0', (x) => x > 0);
  const softHead = c.oneOf(sl.head, 'softLabels.head', ['linear', 'zeroshot', 'teacher'] as const);
  c.str(sl.probabilities, 'softLabels.probabilities');
  c.str(sl.mask, 'softLabels.mask');

  const head = c.obj(m.head, 'head');
  const headKind = c.oneOf(head.kind, 'head.kind', ['linear', 'zeroshot', 'teacher'] as const);
  if (headKind !== softHead) c.fail('head.kind', headKind, `"${softHead}" (softLabels.head)`);
  c.int(head.layer, 'head.layer', -MAX_LAYERS, MAX_LAYERS); // its range against the layers is a usage error of pass 2
  if (head.file !== undefined || head.sha256 !== undefined) {
    c.file(head.file, 'head.file');
    c.sha(head.sha256, 'head.sha256');
  }

  if (m.items !== undefined) {
    c.fileRef(m.items, 'items');
    const shape = (m.items as Obj).shape;
    if (!Array.isArray(shape) || shape.length !== 2 || shape[0] !== items + 1 || shape[1] !== H) c.fail('items.shape', shape, `[${items + 1}, ${H}] (dataset.items + 1, teacher.hiddenSize)`);
  }
  if (m.stats !== undefined) c.fileRef(m.stats, 'stats');
  if (m.timings !== undefined) c.obj(m.timings, 'timings');
  if (m.metrics !== undefined) c.obj(m.metrics, 'metrics');
  if (m.backend !== undefined) c.str(m.backend, 'backend');

  let range: [number, number] = [0, numShards];
  if (m.slice !== undefined) {
    const s = c.obj(m.slice, 'slice');
    const count = c.int(s.count, 'slice.count', 1, MAX_ID);
    const index = c.int(s.index, 'slice.index', 0, count - 1);
    const a = Math.floor((index * numShards) / count);
    const b = Math.floor(((index + 1) * numShards) / count);
    if (s.shardStart !== a) c.fail('slice.shardStart', s.shardStart, `${a} (slice ${index} of ${count} over ${numShards} shards)`);
    if (s.shardEnd !== b) c.fail('slice.shardEnd', s.shardEnd, `${b} (slice ${index} of ${count} over ${numShards} shards)`);
    if (!m.complete) range = [a, b];
  }

  if (!Array.isArray(m.shards)) c.fail('shards', m.shards, 'an array');
  const shards = m.shards as unknown[];
  if (shards.length > range[1] - range[0]) c.fail('shards', `${shards.length} entries`, `at most ${range[1] - range[0]} (shards ${range[0]}..${range[1] - 1})`);
  let prev = -1;
  let totalRows = 0;
  const names = new Set<string>();
  const uniqueName = (name: string, field: string) => {
    if (names.has(name)) c.fail(field, name, 'a file name no other manifest entry uses');
    names.add(name);
  };
  if (m.items !== undefined) uniqueName((m.items as Obj).file as string, 'items.file');
  if (m.stats !== undefined) uniqueName((m.stats as Obj).file as string, 'stats.file');
  if (head.file !== undefined) uniqueName(head.file as string, 'head.file');
  shards.forEach((raw, i) => {
    const f = `shards[${i}]`;
    const s = c.obj(raw, f);
    const index = c.int(s.index, `${f}.index`, range[0], range[1] - 1);
    if (index <= prev) c.fail(`${f}.index`, index, `> ${prev} (shards sorted by index, each once)`);
    prev = index;
    const u0 = index * per;
    const u1 = Math.min((index + 1) * per, users);
    if (s.userStart !== u0) c.fail(`${f}.userStart`, s.userStart, `${u0} (shard ${index} x usersPerShard ${per})`);
    if (s.userEnd !== u1) c.fail(`${f}.userEnd`, s.userEnd, `${u1} (shard ${index} holds users [${u0}, ${u1}) of dataset.users ${users})`);
    const rows = c.int(s.rows, `${f}.rows`, 0, Math.min(MAX_ID, interactions));
    totalRows += rows;
    if (totalRows > interactions) c.fail(`${f}.rows`, rows, `a count that keeps the total rows <= dataset.interactions ${interactions} (one row per interaction at most)`);
    uniqueName(c.file(s.file, `${f}.file`), `${f}.file`);
    c.sha(s.sha256, `${f}.sha256`);
    if (s.soft !== undefined) uniqueName(c.fileRef(s.soft, `${f}.soft`).file, `${f}.soft.file`);
  });
  return raw as CacheManifest;
}

/**
 * Shard indices in [a, b) that `have` (sorted, unique) lacks: how many, and the first `limit` of them.
 * Never materialises the whole range (numShards can be large).
 */
export function missingShards(have: number[], a: number, b: number, limit = 10): { count: number; first: number[] } {
  const inRange = have.filter((i) => i >= a && i < b);
  const present = new Set(inRange);
  const first: number[] = [];
  for (let i = a; i < b && first.length < limit; i++) if (!present.has(i)) first.push(i);
  return { count: b - a - present.size, first };
}

export function formatMissing(x: { count: number; first: number[] }): string {
  return x.count > x.first.length ? `${x.first.join(', ')}, ... (${x.count} in all)` : x.first.join(', ');
}
