import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { RecdistillError } from '../errors.js';
import { sha256 } from '../util/hash.js';
import { removeStaleEntries, writeError } from './io.js';
import type { DatasetStats, ItemInfo, PreparedDataset } from './types.js';

/**
 * A prepared dataset on disk, for inspection and for other tools (pandas: read_json(lines=True)):
 *   dataset.json  name, fingerprint, options, stats, split rule, source files, sha256 of the two files below
 *   items.jsonl   one item per line, ids 1..N: {id, rawId, title, year?, genres, extra?}
 *   users.jsonl   one user per line in dense order: {id, rawId, items: [dense ids in time order]}
 * Written into a temp directory and renamed into place: a failed run leaves nothing behind.
 * The fingerprint describes the content: reading an export recomputes the sha256 of items.jsonl and
 * users.jsonl and refuses one that was edited after it was written.
 */
const PREPARED_FORMAT = 'recdistill-prepared-v1';
const DATA_FILES = ['items.jsonl', 'users.jsonl'] as const;

export interface PreparedMeta {
  format: string;
  name: string;
  fingerprint: string;
  options: Record<string, unknown>;
  stats: PreparedDataset['stats'];
  /** The split rule in words (every export writes it). */
  split?: string;
  /** The source files read (absent in exports of synthetic data). */
  files?: string[];
  /** sha256 (hex) of each data file's bytes. */
  sha256: Record<(typeof DATA_FILES)[number], string>;
}

/** Temp dirs of writePrepared: .<name>.<pid>.<8 hex>.tmp next to the export. */
const tempRe = (name: string) => new RegExp(`^\\.${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(\\d+)\\.[0-9a-f]{8}\\.tmp$`);

/** Only a directory holding nothing but export files is ours to remove. */
const looksLikeExportTemp = (path: string): boolean =>
  statSync(path).isDirectory() && readdirSync(path).every((f) => f === 'dataset.json' || (DATA_FILES as readonly string[]).includes(f));

export function writePrepared(d: PreparedDataset, dir: string, files: string[] = []): void {
  if (existsSync(dir) && readdirSync(dir).length > 0 && !existsSync(join(dir, 'dataset.json'))) {
    throw new RecdistillError('E_USAGE', `${dir} exists and is not a prepared dataset (no dataset.json); refusing to replace it.`);
  }
  const parent = dirname(dir);
  const hint = 'free some space or fix the permissions, or choose another --out';
  try {
    mkdirSync(parent, { recursive: true });
  } catch (e) {
    throw writeError(e, parent, hint);
  }
  // Temp dirs of killed runs (dead pid, over a day old) are debris.
  removeStaleEntries(parent, tempRe(basename(dir)), looksLikeExportTemp);
  const tmp = join(parent, `.${basename(dir)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let current = tmp;
  try {
    mkdirSync(tmp);
    const itemsText = d.items.slice(1).map((it) => JSON.stringify(it)).join('\n') + '\n';
    const usersText = d.users.map((u, i) => JSON.stringify({ id: i, rawId: u.rawId, items: [...u.items] })).join('\n') + '\n';
    const meta: PreparedMeta = {
      format: PREPARED_FORMAT,
      name: d.name,
      fingerprint: d.fingerprint,
      options: d.options,
      stats: d.stats,
      split: 'leave-one-out per user: last item = test, second-to-last = validation, the rest = training (users with < 3 items: training only)',
      files,
      sha256: { 'items.jsonl': sha256(itemsText), 'users.jsonl': sha256(usersText) },
    };
    for (const [name, text] of [['items.jsonl', itemsText], ['users.jsonl', usersText], ['dataset.json', JSON.stringify(meta, null, 2) + '\n']] as const) {
      current = join(tmp, name);
      writeFileSync(current, text);
    }
    // Replace an older export only once the new one is complete.
    current = dir;
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  } catch (e) {
    throw writeError(e, current === dir ? dir : `${current} (the export to ${dir})`, hint);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isHex64 = (v: unknown): v is string => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);

/** One JSON value per non-empty line, with its 1-based line number. */
function readLines(file: string, text: string): { value: unknown; line: number }[] {
  const out: { value: unknown; line: number }[] = [];
  text.split('\n').forEach((raw, i) => {
    const l = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (l === '') return;
    try {
      out.push({ value: JSON.parse(l), line: i + 1 });
    } catch {
      throw new RecdistillError('E_INPUT', `${file} line ${i + 1}: expected one JSON object per line.`);
    }
  });
  return out;
}

/** dataset.json, checked field by field (a hand-edited or foreign file gets an error naming the field). */
function readMeta(metaFile: string): PreparedMeta {
  const meta = parseMeta(metaFile);
  checkMeta(meta, metaFile);
  return meta;
}

function parseMeta(metaFile: string): unknown {
  let meta: unknown;
  try {
    meta = JSON.parse(readFileSync(metaFile, 'utf8'));
  } catch (e) {
    throw new RecdistillError('E_INPUT', `${metaFile}: not valid JSON (${(e as Error).message}).`);
  }
  return meta;
}

/** Every field of dataset.json this reader uses, checked (a hand-edited or truncated file names the bad field). */
function checkMeta(meta: unknown, metaFile: string): asserts meta is PreparedMeta {
  const bad = (field: string, expected: string, got: unknown): never => {
    throw new RecdistillError('E_INPUT', `${metaFile}: field "${field}" must be ${expected}; got ${JSON.stringify(got) ?? 'nothing'}.`);
  };
  if (!isObject(meta)) return bad('(top level)', 'a JSON object', meta);
  if (meta.format !== PREPARED_FORMAT) throw new RecdistillError('E_MISMATCH', `${metaFile}: format ${JSON.stringify(meta.format)}, expected ${PREPARED_FORMAT}.`);
  if (typeof meta.name !== 'string' || meta.name === '') bad('name', 'a non-empty string', meta.name);
  if (!isHex64(meta.fingerprint)) bad('fingerprint', 'a sha256 (64 lowercase hex digits)', meta.fingerprint);
  if (!isObject(meta.options)) bad('options', 'an object', meta.options);
  if (!isObject(meta.stats)) return bad('stats', 'an object', meta.stats);
  for (const k of ['users', 'items', 'interactions'] as const) if (!isCount(meta.stats[k])) bad(`stats.${k}`, 'a non-negative integer', meta.stats[k]);
  for (const k of ['meanSeqLen', 'medianSeqLen', 'density'] as const) {
    if (typeof meta.stats[k] !== 'number' || !Number.isFinite(meta.stats[k])) bad(`stats.${k}`, 'a finite number', meta.stats[k]);
  }
  if (meta.files !== undefined && (!Array.isArray(meta.files) || !meta.files.every((f) => typeof f === 'string'))) bad('files', 'an array of strings', meta.files);
  if (meta.sha256 === undefined) {
    throw new RecdistillError(
      'E_MISMATCH',
      `${metaFile}: no "sha256" of the data files, so its content cannot be checked against its fingerprint (an export from an older recdistill, or edited); run data:prepare --out again.`,
    );
  }
  if (!isObject(meta.sha256)) return bad('sha256', 'an object of file name: sha256', meta.sha256);
  for (const f of DATA_FILES) if (!isHex64(meta.sha256[f])) bad(`sha256.${f}`, 'a sha256 (64 lowercase hex digits)', meta.sha256[f]);
  if (meta.split !== undefined && typeof meta.split !== 'string') bad('split', 'a string (the split rule)', meta.split);
}

/** A data file's text, after its bytes matched the sha256 dataset.json recorded for it. */
function readChecked(dir: string, name: (typeof DATA_FILES)[number], meta: PreparedMeta): { file: string; text: string } {
  const file = join(dir, name);
  if (!existsSync(file)) throw new RecdistillError('E_NOT_FOUND', `${file} not found: expected a file of a prepared dataset.`);
  const buf = readFileSync(file);
  const got = sha256(buf);
  if (got !== meta.sha256[name]) {
    throw new RecdistillError(
      'E_CHECKSUM',
      `${file}: sha256 ${got} does not match ${meta.sha256[name]} recorded in ${join(dir, 'dataset.json')}: the file was changed after data:prepare wrote it, so fingerprint ${meta.fingerprint.slice(0, 12)} no longer describes it; run data:prepare --out again.`,
    );
  }
  return { file, text: buf.toString('utf8') };
}

function parseItem(v: unknown, file: string, line: number): ItemInfo {
  checkItem(v, file, line);
  return v;
}

/** One line of items.jsonl: every ItemInfo field checked, the line's own id included. */
function checkItem(v: unknown, file: string, line: number): asserts v is ItemInfo {
  const bad = (why: string): never => {
    throw new RecdistillError('E_INPUT', `${file} line ${line}: expected {id, rawId, title, genres, year?, extra?}; ${why}.`);
  };
  if (!isObject(v)) return bad('not a JSON object');
  if (v.id !== line) bad(`"id" must be ${line} (the line number), got ${JSON.stringify(v.id)}`);
  if (typeof v.rawId !== 'string') bad('"rawId" is not a string');
  if (typeof v.title !== 'string') bad('"title" is not a string');
  if (!Array.isArray(v.genres) || !v.genres.every((g) => typeof g === 'string')) bad('"genres" is not an array of strings');
  if (v.year !== undefined && !(typeof v.year === 'number' && Number.isFinite(v.year))) bad('"year" is not a number');
  if (v.extra !== undefined && (!isObject(v.extra) || !Object.values(v.extra).every((x) => typeof x === 'string'))) bad('"extra" is not an object of strings');
}

/** Read an export back (round trip of writePrepared), checking its content against dataset.json. */
export function readPrepared(dir: string): PreparedDataset {
  const metaFile = join(dir, 'dataset.json');
  if (!existsSync(metaFile)) throw new RecdistillError('E_NOT_FOUND', `${metaFile} not found: ${dir} is not a prepared dataset.`);
  const meta = readMeta(metaFile);
  const itemsIn = readChecked(dir, 'items.jsonl', meta);
  const usersIn = readChecked(dir, 'users.jsonl', meta);
  const items: ItemInfo[] = [{ id: 0, rawId: '', title: '<pad>', genres: [] }];
  for (const { value, line } of readLines(itemsIn.file, itemsIn.text)) items.push(parseItem(value, itemsIn.file, line));
  const N = items.length - 1;
  const users = readLines(usersIn.file, usersIn.text).map(({ value: u, line }) => {
    const bad = (why: string): never => {
      throw new RecdistillError('E_INPUT', `${usersIn.file} line ${line}: expected {id, rawId, items: [item ids 1..${N}]}; ${why}.`);
    };
    if (!isObject(u)) return bad('not a JSON object');
    if (typeof u.rawId !== 'string') bad('"rawId" is not a string');
    if (!Array.isArray(u.items)) return bad('"items" is not an array');
    const seq = new Int32Array(u.items.length);
    u.items.forEach((x, k) => {
      if (!Number.isSafeInteger(x) || (x as number) < 1 || (x as number) > N) bad(`item ${JSON.stringify(x)} at position ${k} is not an item id in 1..${N} (items.jsonl has ${N} items)`);
      seq[k] = x as number;
    });
    return { rawId: u.rawId as string, items: seq };
  });
  const interactions = users.reduce((s, u) => s + u.items.length, 0);
  const counts = { users: users.length, items: N, interactions } as const;
  for (const k of ['users', 'items', 'interactions'] as const) {
    if (meta.stats[k] !== counts[k]) throw new RecdistillError('E_INPUT', `${metaFile}: field "stats.${k}" is ${meta.stats[k]}, but the data files hold ${counts[k]}.`);
  }
  return { name: meta.name, fingerprint: meta.fingerprint, options: meta.options, items, users, stats: meta.stats as DatasetStats };
}
