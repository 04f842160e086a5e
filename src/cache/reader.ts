import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RecdistillError } from '../errors.js';
import { sha256 } from '../util/hash.js';
import type { STTensor } from '../util/safetensors.js';
import { decodeSafetensors } from '../util/safetensors.js';
import { f16ToF32 } from './f16.js';
import { readManifest, type CacheManifest, type ShardEntry } from './format.js';

/** One user's cached rows, sorted by position. Arrays are views into a decoded shard (do not mutate). */
export interface UserRows {
  user: number;
  /** [P] positions p in the user's sequence: row i is the state after item positions[i]. */
  positions: Int32Array;
  /** [P, layers, H] row-major. */
  hidden: Float32Array;
  /** [P, K] teacher's top-K next items (dense ids), best first; undefined before the soft-label pass. */
  topkIndex?: Int32Array;
  /** [P, K] their probabilities at temperature T. */
  topkProb?: Float32Array;
}

export interface CacheReader {
  dir: string;
  manifest: CacheManifest;
  key: string;
  /** Tapped layers (absolute indices) in the order of the `layers` axis of hidden. */
  layers: number[];
  hiddenSize: number;
  /** Soft-label K and temperature. */
  k: number;
  temperature: number;
  hasSoftLabels: boolean;
  /** [N+1, H] item text embeddings (row 0 padding). */
  itemEmbeddings(): Float32Array;
  /** Per-dimension mean and std over every cached row, [layers, H] each; undefined if not computed. */
  stats(): { mean: Float32Array; std: Float32Array } | undefined;
  /** A user's rows (empty arrays if the user has none, e.g. a 1-item history). */
  rowsForUser(user: number): UserRows;
  /** Index of `position` within rowsForUser(user).positions, or -1. */
  rowIndex(rows: UserRows, position: number): number;
  /** Decoded shards currently held (for tests / memory checks). */
  cachedShards(): number;
  close(): void;
}

export interface OpenCacheOptions {
  /** Fingerprint of the prepared dataset the caller trains on; a cache of any other dataset is refused. */
  fingerprint: string;
  /** Decoded shards kept in memory (LRU); a user's rows are in one shard. */
  maxShards?: number;
  /** Refuse a cache whose passes are not all done (default true). */
  requireComplete?: boolean;
  /** Check each shard's sha256 against the manifest when it is first loaded (default false). */
  verify?: boolean;
}

interface DecodedShard {
  entry: ShardEntry;
  /** [users + 1] row offsets by (user - userStart). */
  offsets: Int32Array;
  positions: Int32Array;
  hidden: Float32Array;
  topkIndex?: Int32Array;
  topkProb?: Float32Array;
}

export function openCache(dir: string, opts: OpenCacheOptions): CacheReader {
  const manifest = readManifest(dir);
  if (manifest.dataset.fingerprint !== opts.fingerprint) {
    throw new RecdistillError(
      'E_MISMATCH',
      `teacher cache ${dir} was built for dataset "${manifest.dataset.name}" with fingerprint ${manifest.dataset.fingerprint}, ` +
        `but the dataset in use has fingerprint ${opts.fingerprint}; rebuild the cache with teacher:cache for this dataset.`,
    );
  }
  if ((opts.requireComplete ?? true) && !manifest.complete) {
    throw new RecdistillError('E_INPUT', `teacher cache ${dir} is not complete (stage "${manifest.stage}"); finish it with teacher:cache (or teacher:merge for --shard slices).`);
  }
  const layers = manifest.teacher.layers;
  const H = manifest.teacher.hiddenSize;
  const per = manifest.layout.usersPerShard;
  const byIndex = new Map(manifest.shards.map((s) => [s.index, s]));
  const lru = new Map<number, DecodedShard>();
  const maxShards = Math.max(1, opts.maxShards ?? 4);
  let items: Float32Array | undefined;
  let stats: { mean: Float32Array; std: Float32Array } | undefined | null = null;

  const readFile = (file: string, expectSha?: string): Uint8Array => {
    const path = join(dir, file);
    let buf: Uint8Array;
    try {
      buf = readFileSync(path);
    } catch {
      throw new RecdistillError('E_NOT_FOUND', `teacher cache ${dir}: shard file ${file} is missing.`);
    }
    if (opts.verify && expectSha && sha256(buf) !== expectSha) {
      throw new RecdistillError('E_CHECKSUM', `teacher cache ${dir}: ${file} sha256 does not match the manifest (run teacher:verify).`);
    }
    return buf;
  };
  const tensor = (ts: Record<string, STTensor>, name: string, file: string, shape: number[]): STTensor => {
    const t = ts[name];
    if (!t || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new RecdistillError('E_INPUT', `teacher cache ${dir}: ${file} tensor "${name}" has shape [${t?.shape ?? 'missing'}], manifest expects [${shape}].`);
    }
    return t;
  };

  const load = (entry: ShardEntry): DecodedShard => {
    const R = entry.rows;
    const { tensors } = decodeSafetensors(readFile(entry.file, entry.sha256), join(dir, entry.file));
    const users = tensor(tensors, 'user', entry.file, [R]).data as Int32Array;
    const positions = tensor(tensors, 'position', entry.file, [R]).data as Int32Array;
    const h = tensor(tensors, 'hidden', entry.file, [R, layers.length, H]);
    const hidden = h.dtype === 'F16' ? f16ToF32(h.data as Uint16Array) : (h.data as Float32Array);
    const n = entry.userEnd - entry.userStart;
    const offsets = new Int32Array(n + 1);
    for (let r = 0; r < R; r++) {
      const u = users[r]! - entry.userStart;
      if (u < 0 || u >= n || (r > 0 && users[r]! < users[r - 1]!)) {
        throw new RecdistillError('E_INPUT', `teacher cache ${dir}: ${entry.file} row ${r} has user ${users[r]}, outside [${entry.userStart}, ${entry.userEnd}) or out of order.`);
      }
      offsets[u + 1]!++;
    }
    for (let u = 0; u < n; u++) offsets[u + 1]! += offsets[u]!;
    const shard: DecodedShard = { entry, offsets, positions, hidden };
    if (entry.soft) {
      const K = manifest.softLabels.k;
      const soft = decodeSafetensors(readFile(entry.soft.file, entry.soft.sha256), join(dir, entry.soft.file)).tensors;
      shard.topkIndex = tensor(soft, 'topk_index', entry.soft.file, [R, K]).data as Int32Array;
      shard.topkProb = tensor(soft, 'topk_prob', entry.soft.file, [R, K]).data as Float32Array;
    }
    return shard;
  };

  const shardFor = (user: number): DecodedShard => {
    const idx = Math.floor(user / per);
    const hit = lru.get(idx);
    if (hit) {
      lru.delete(idx); // move to most-recent end
      lru.set(idx, hit);
      return hit;
    }
    const entry = byIndex.get(idx);
    if (!entry || user < entry.userStart || user >= entry.userEnd) {
      throw new RecdistillError('E_NOT_FOUND', `teacher cache ${dir} has no rows for user ${user} (users 0..${manifest.dataset.users - 1}; this cache holds ${manifest.shards.length} shard(s)).`);
    }
    const shard = load(entry);
    lru.set(idx, shard);
    while (lru.size > maxShards) lru.delete(lru.keys().next().value!);
    return shard;
  };

  return {
    dir,
    manifest,
    key: manifest.key,
    layers,
    hiddenSize: H,
    k: manifest.softLabels.k,
    temperature: manifest.softLabels.temperature,
    hasSoftLabels: manifest.shards.length > 0 && manifest.shards.every((s) => s.soft),
    itemEmbeddings() {
      if (items) return items;
      if (!manifest.items) throw new RecdistillError('E_NOT_FOUND', `teacher cache ${dir} has no item embeddings (items.safetensors not written yet).`);
      const ts = decodeSafetensors(readFile(manifest.items.file, manifest.items.sha256), join(dir, manifest.items.file)).tensors;
      items = tensor(ts, 'embedding', manifest.items.file, [manifest.dataset.items + 1, H]).data as Float32Array;
      return items;
    },
    stats() {
      if (stats !== null) return stats;
      if (!manifest.stats) return (stats = undefined);
      const ts = decodeSafetensors(readFile(manifest.stats.file, manifest.stats.sha256), join(dir, manifest.stats.file)).tensors;
      const mean = tensor(ts, 'mean', manifest.stats.file, [layers.length, H]).data as Float32Array;
      const std = tensor(ts, 'std', manifest.stats.file, [layers.length, H]).data as Float32Array;
      return (stats = { mean, std });
    },
    rowsForUser(user) {
      const s = shardFor(user);
      const u = user - s.entry.userStart;
      const a = s.offsets[u]!;
      const b = s.offsets[u + 1]!;
      const LH = layers.length * H;
      const K = manifest.softLabels.k;
      return {
        user,
        positions: s.positions.subarray(a, b),
        hidden: s.hidden.subarray(a * LH, b * LH),
        topkIndex: s.topkIndex?.subarray(a * K, b * K),
        topkProb: s.topkProb?.subarray(a * K, b * K),
      };
    },
    rowIndex(rows, position) {
      // Positions are sorted and (per HistoryStates) contiguous: try the direct offset first.
      const first = rows.positions[0];
      if (first === undefined) return -1;
      const i = position - first;
      if (i >= 0 && i < rows.positions.length && rows.positions[i] === position) return i;
      return rows.positions.indexOf(position);
    },
    cachedShards: () => lru.size,
    close() {
      lru.clear();
      items = undefined;
    },
  };
}
