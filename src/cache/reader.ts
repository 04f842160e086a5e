import { datasetDifference, type DatasetRecord } from '../data/differ.js';
import { join } from 'node:path';
import { RecdistillError } from '../errors.js';
import { sha256 } from '../util/hash.js';
import type { STTensor } from '../util/safetensors.js';
import { checkHiddenShard, checkItems, checkSoftShard, checkStats, dataBytes, decodeOrProblem, readSized } from './check.js';
import { MANIFEST_FILE, readManifest, type CacheManifest, type ShardEntry } from './format.js';

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
  /** That dataset's name and preprocessing options, when known: a mismatch then names the option that differs. */
  datasetRecord?: DatasetRecord;
  /** Users and items (N, without padding) of that dataset, when known: the manifest's counts must equal them. */
  dataset?: { users: number; items: number };
  /** Decoded shards kept in memory (LRU); a user's rows are in one shard. */
  maxShards?: number;
  /** Refuse a cache whose passes are not all done (default true). */
  requireComplete?: boolean;
  /**
   * Check each file's sha256 against the manifest when it is first loaded (default true; `student:train
   * --no-verify` passes false through its stage config). Sizes, dtypes, shapes, ranges and finiteness are checked
   * on every load whatever this says.
   */
  verify?: boolean;
}

interface DecodedShard {
  entry: ShardEntry;
  /** Distinct users that have rows, ascending, and [distinct + 1] row offsets (sized by rows, not by the user range). */
  userIds: Int32Array;
  offsets: Int32Array;
  positions: Int32Array;
  hidden: Float32Array;
  topkIndex?: Int32Array;
  topkProb?: Float32Array;
}

export function openCache(dir: string, opts: OpenCacheOptions): CacheReader {
  const manifest = readManifest(dir);
  const mpath = join(dir, MANIFEST_FILE);
  if (manifest.dataset.fingerprint !== opts.fingerprint) {
    throw new RecdistillError(
      'E_MISMATCH',
      `teacher cache ${dir} was built for dataset "${manifest.dataset.name}" with fingerprint ${manifest.dataset.fingerprint}, ` +
        `but the dataset in use has fingerprint ${opts.fingerprint}${opts.datasetRecord ? ` (${datasetDifference(manifest.dataset, opts.datasetRecord, 'the cache')})` : ''}; rebuild the cache with teacher:cache for this dataset, or use the cache's dataset flags.`,
    );
  }
  if (opts.dataset) {
    for (const f of ['users', 'items'] as const) {
      if (manifest.dataset[f] !== opts.dataset[f]) {
        throw new RecdistillError('E_MISMATCH', `${mpath}: field "dataset.${f}" is ${manifest.dataset[f]}, but the dataset in use (same fingerprint) has ${opts.dataset[f]}.`);
      }
    }
  }
  if ((opts.requireComplete ?? true) && !manifest.complete) {
    throw new RecdistillError('E_INPUT', `teacher cache ${dir} is not complete (stage "${manifest.stage}"); finish it with teacher:cache (or teacher:merge for --shard slices).`);
  }
  const verify = opts.verify ?? true;
  const layers = manifest.teacher.layers;
  const H = manifest.teacher.hiddenSize;
  const per = manifest.layout.usersPerShard;
  const sizes = dataBytes(manifest);
  const byIndex = new Map(manifest.shards.map((s) => [s.index, s]));
  const lru = new Map<number, DecodedShard>();
  const maxShards = Math.max(1, opts.maxShards ?? 4);
  /** Files whose sha256 was checked (once per file: an LRU re-decode does not hash again). */
  const verified = new Set<string>();
  let items: Float32Array | undefined;
  let stats: { mean: Float32Array; std: Float32Array } | undefined | null = null;

  const where = (file: string) => `teacher cache ${dir}: ${file}`;
  /** Size-checked read (before allocating), then sha256 against the manifest the first time, then decode. */
  const readTensors = (file: string, expectSha: string, need: number, needMax = need): Record<string, STTensor> => {
    const path = join(dir, file);
    const buf = readSized(path, need, needMax, where(file));
    if (verify && !verified.has(file)) {
      const got = sha256(buf);
      if (got !== expectSha) {
        throw new RecdistillError(
          'E_CHECKSUM',
          `${where(file)}: sha256 ${got.slice(0, 16)}... does not match the manifest's ${expectSha.slice(0, 16)}... (corrupted or replaced); run teacher:verify --cache ${dir} and rebuild the bad file with teacher:cache (student:train --no-verify skips this check).`,
        );
      }
      verified.add(file);
    }
    const ts = decodeOrProblem(buf, path);
    if (typeof ts === 'string') throw new RecdistillError('E_INPUT', `${where(file)}: ${ts}.`);
    return ts;
  };
  const checked = <T>(file: string, r: T | string): T => {
    if (typeof r === 'string') throw new RecdistillError('E_INPUT', `${where(file)}: ${r}.`);
    return r;
  };

  const load = (entry: ShardEntry): DecodedShard => {
    const R = entry.rows;
    const h = checked(entry.file, checkHiddenShard(readTensors(entry.file, entry.sha256, sizes.hidden(R)), entry, manifest));
    // Row offsets per distinct user (at most R of them): memory follows the file, not the manifest's ranges.
    let distinct = 0;
    for (let r = 0; r < R; r++) if (r === 0 || h.users[r] !== h.users[r - 1]) distinct++;
    const userIds = new Int32Array(distinct);
    const offsets = new Int32Array(distinct + 1);
    for (let r = 0, j = -1; r < R; r++) {
      if (r === 0 || h.users[r] !== h.users[r - 1]) userIds[++j] = h.users[r]!;
      offsets[j + 1] = r + 1;
    }
    const shard: DecodedShard = { entry, userIds, offsets, positions: h.positions, hidden: h.hidden };
    if (entry.soft) {
      const soft = checked(entry.soft.file, checkSoftShard(readTensors(entry.soft.file, entry.soft.sha256, sizes.soft(R)), entry, manifest, h));
      shard.topkIndex = soft.topkIndex;
      shard.topkProb = soft.topkProb;
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
    if (!Number.isInteger(user) || !entry || user < entry.userStart || user >= entry.userEnd) {
      throw new RecdistillError('E_NOT_FOUND', `teacher cache ${dir} has no rows for user ${user} (users 0..${manifest.dataset.users - 1}; this cache holds ${manifest.shards.length} shard(s)).`);
    }
    const shard = load(entry);
    lru.set(idx, shard);
    while (lru.size > maxShards) lru.delete(lru.keys().next().value!);
    return shard;
  };

  const LH = layers.length * H;
  const K = manifest.softLabels.k;
  const noRows = (user: number): UserRows => ({ user, positions: new Int32Array(0), hidden: new Float32Array(0), topkIndex: undefined, topkProb: undefined });

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
      const f = manifest.items.file;
      items = checked(f, checkItems(readTensors(f, manifest.items.sha256, sizes.items), manifest));
      return items;
    },
    stats() {
      if (stats !== null) return stats;
      if (!manifest.stats) return (stats = undefined);
      const f = manifest.stats.file;
      return (stats = checked(f, checkStats(readTensors(f, manifest.stats.sha256, sizes.stats), manifest)));
    },
    rowsForUser(user) {
      const s = shardFor(user);
      // Binary search among the shard's distinct users.
      let lo = 0;
      let hi = s.userIds.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        const v = s.userIds[mid]!;
        if (v === user) {
          const a = s.offsets[mid]!;
          const b = s.offsets[mid + 1]!;
          return {
            user,
            positions: s.positions.subarray(a, b),
            hidden: s.hidden.subarray(a * LH, b * LH),
            topkIndex: s.topkIndex?.subarray(a * K, b * K),
            topkProb: s.topkProb?.subarray(a * K, b * K),
          };
        }
        if (v < user) lo = mid + 1;
        else hi = mid - 1;
      }
      const empty = noRows(user);
      if (s.topkIndex) {
        empty.topkIndex = new Int32Array(0);
        empty.topkProb = new Float32Array(0);
      }
      return empty;
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
