import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256 } from '../util/hash.js';
import type { STTensor } from '../util/safetensors.js';
import { readManifest, type CacheManifest } from './format.js';
import { decodeSafetensors } from '../util/safetensors.js';

export interface VerifyProblem {
  file: string;
  problem: string;
}

export interface VerifyResult {
  dir: string;
  key: string;
  complete: boolean;
  files: number;
  rows: number;
  problems: VerifyProblem[];
}

/**
 * Check every file the manifest lists: present, sha256 equal, tensors with the shapes the manifest implies
 * (hidden [R, layers, H], user/position [R] within the shard's user range, soft [R, K], items [N+1, H]), and
 * for a complete cache that every shard is there.
 */
export function verifyCache(dir: string): VerifyResult {
  const m = readManifest(dir);
  const problems: VerifyProblem[] = [];
  let files = 0;
  const L = m.teacher.layers.length;
  const H = m.teacher.hiddenSize;
  const K = m.softLabels.k;

  const check = (file: string, sha: string, shapes: Record<string, number[]>, more?: (t: Record<string, STTensor>) => string | undefined) => {
    files++;
    const path = join(dir, file);
    if (!existsSync(path)) return void problems.push({ file, problem: 'missing' });
    const buf = readFileSync(path);
    const got = sha256(buf);
    if (got !== sha) return void problems.push({ file, problem: `sha256 ${got.slice(0, 16)}... does not match the manifest's ${sha.slice(0, 16)}...` });
    let tensors: Record<string, STTensor>;
    try {
      tensors = decodeSafetensors(buf, path).tensors;
    } catch (e) {
      return void problems.push({ file, problem: (e as Error).message });
    }
    for (const [name, shape] of Object.entries(shapes)) {
      const t = tensors[name];
      if (!t) problems.push({ file, problem: `tensor "${name}" missing` });
      else if (t.shape.join(',') !== shape.join(',')) problems.push({ file, problem: `tensor "${name}" has shape [${t.shape}], expected [${shape}]` });
    }
    const extra = more?.(tensors);
    if (extra) problems.push({ file, problem: extra });
  };

  if (m.items) check(m.items.file, m.items.sha256, { embedding: [m.dataset.items + 1, H] });
  else if (m.complete || !m.slice || m.slice.index === 0) problems.push({ file: 'items.safetensors', problem: 'not listed in the manifest' });
  if (m.stats) check(m.stats.file, m.stats.sha256, { mean: [L, H], std: [L, H] });
  if (m.head.file && m.head.sha256) check(m.head.file, m.head.sha256, { weight: [m.dataset.items + 1, H], bias: [m.dataset.items + 1] });
  for (const s of m.shards) {
    const rangeCheck = (t: Record<string, STTensor>) => {
      const u = t.user?.data as Int32Array | undefined;
      if (!u) return undefined;
      for (let i = 0; i < u.length; i++) {
        if (u[i]! < s.userStart || u[i]! >= s.userEnd || (i && u[i]! < u[i - 1]!)) return `row ${i}: user ${u[i]} outside [${s.userStart}, ${s.userEnd}) or out of order`;
      }
      return undefined;
    };
    check(s.file, s.sha256, { user: [s.rows], position: [s.rows], hidden: [s.rows, L, H] }, rangeCheck);
    if (s.soft) check(s.soft.file, s.soft.sha256, { user: [s.rows], position: [s.rows], topk_index: [s.rows, K], topk_prob: [s.rows, K] }, rangeCheck);
    else if (m.complete) problems.push({ file: s.file, problem: 'complete cache but no soft-label shard listed' });
  }
  const expected = expectedShards(m);
  const have = new Set(m.shards.map((s) => s.index));
  const lost = expected.filter((i) => !have.has(i));
  if (m.complete && lost.length) problems.push({ file: 'manifest.json', problem: `complete, but shard(s) ${lost.join(', ')} are not listed` });
  return { dir, key: m.key, complete: m.complete, files, rows: m.shards.reduce((a, s) => a + s.rows, 0), problems };
}

/** Shard indices this directory should hold: all of them, or its slice's block. */
export function expectedShards(m: CacheManifest): number[] {
  const [a, b] = m.slice && !m.complete ? [m.slice.shardStart, m.slice.shardEnd] : [0, m.layout.numShards];
  return Array.from({ length: b - a }, (_, i) => a + i);
}
