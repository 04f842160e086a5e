import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeHiddenShard, encodeSoftShard, writeShard } from '../../src/cache/shards.js';
import { CACHE_FORMAT, CACHE_VERSION, manifestKey, type CacheManifest } from '../../src/cache/format.js';
import type { PreparedDataset } from '../../src/data/types.js';
import { encodeSafetensors } from '../../src/util/safetensors.js';

/** user 0: items [1,2,3,4,5]; user 1: items [3,1,2]. 5 items. */
export function twoUserDataset(fingerprint = 'fp-distill'): PreparedDataset {
  const items = [{ id: 0, rawId: '', title: '', genres: [] as string[] }];
  for (let i = 1; i <= 5; i++) items.push({ id: i, rawId: String(i), title: `Item ${i}`, genres: [] });
  return {
    name: 'two',
    fingerprint,
    options: {},
    items,
    users: [
      { rawId: 'a', items: Int32Array.from([1, 2, 3, 4, 5]) },
      { rawId: 'b', items: Int32Array.from([3, 1, 2]) },
    ],
    stats: { users: 2, items: 5, interactions: 8, meanSeqLen: 4, medianSeqLen: 4, density: 0.8 },
  };
}

/** Teacher state of (user, position, tapped layer): [1 + p, l + u]. H = 2. */
export const teacherState = (u: number, p: number, l: number): [number, number] => [1 + p, l + u];
/** Teacher top-2 at (u, p): items [p + 2, p + 1] capped to 5, probabilities [0.6, 0.3]. */
export const teacherTopK = (_u: number, p: number): [number, number] => [Math.min(5, p + 2), Math.min(5, p + 1)];

/**
 * A complete 2-layer (tapped [3, 7]), H = 2 cache by hand, through the cache engineer's shard encoders.
 * User 0 has rows for positions 1..3 only (position 0 missing, as under a prompt budget); user 1 for 0..1.
 */
export function writeTinyCache(ds: PreparedDataset): string {
  const dir = mkdtempSync(join(tmpdir(), 'distill-cache-'));
  const H = 2;
  const layers = [3, 7];
  const rows = [
    { user: 0, first: 1, count: 3 },
    { user: 1, first: 0, count: 2 },
  ];
  const states = rows.map((r) => {
    const s = new Float32Array(r.count * layers.length * H);
    for (let i = 0; i < r.count; i++) for (let l = 0; l < layers.length; l++) s.set(teacherState(r.user, r.first + i, l), (i * layers.length + l) * H);
    return { ...r, states: s };
  });
  const { bytes, rows: R } = encodeHiddenShard(states, layers.length, H, 'F32');
  const sha = writeShard(dir, 'hidden-00000.safetensors', bytes);
  const user = new Int32Array(R);
  const position = new Int32Array(R);
  const idx = new Int32Array(R * 2);
  const prob = new Float32Array(R * 2);
  let r = 0;
  for (const s of rows) {
    for (let i = 0; i < s.count; i++, r++) {
      user[r] = s.user;
      position[r] = s.first + i;
      idx.set(teacherTopK(s.user, s.first + i), r * 2);
      prob.set([0.6, 0.3], r * 2);
    }
  }
  const softSha = writeShard(dir, 'soft-00000.safetensors', encodeSoftShard(user, position, idx, prob, 2));
  const emb = new Float32Array(6 * H);
  for (let i = 1; i <= 5; i++) emb.set([i, i % 2], i * H);
  const itemsSha = writeShard(dir, 'items.safetensors', encodeSafetensors({ embedding: { dtype: 'F32', shape: [6, H], data: emb } }));
  const manifest: CacheManifest = {
    format: CACHE_FORMAT,
    version: CACHE_VERSION,
    key: 'testkey00000',
    complete: true,
    stage: 'complete',
    dataset: { name: ds.name, fingerprint: ds.fingerprint, users: 2, items: 5, interactions: 8 },
    teacher: { kind: 'seqrec', model: 'test/teacher', dtype: 'fp32', weightsHash: '0'.repeat(64), layers, hiddenSize: H, pooling: 'position', options: {} },
    layout: { usersPerShard: 2, numShards: 1, hiddenDtype: 'F32', positions: 'test' },
    softLabels: { k: 2, temperature: 1, head: 'teacher', probabilities: 'full-softmax', mask: 'padding+history' },
    head: { kind: 'teacher', layer: -1, epochs: 0, lr: 0, batchSize: 0, patience: 0, seed: 0 },
    items: { file: 'items.safetensors', sha256: itemsSha, shape: [6, H] },
    shards: [{ index: 0, userStart: 0, userEnd: 2, rows: R, file: 'hidden-00000.safetensors', sha256: sha, soft: { file: 'soft-00000.safetensors', sha256: softSha } }],
    timings: {},
  };
  manifest.key = manifestKey(manifest); // what teacher:cache would have computed from these inputs
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return dir;
}
