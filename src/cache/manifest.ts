/**
 * The teacher-cache manifest (manifest.json) as types: the on-disk layout it describes is in format.ts,
 * its checks in validate.ts.
 */
import type { HeadTrainConfig } from '../teacher/head.js';
import type { TeacherInfo } from '../teacher/types.js';

export const CACHE_FORMAT = 'recdistill-teacher-cache';
export const CACHE_VERSION = 1;

export type HiddenDtype = 'F32' | 'F16';

export interface ShardEntry {
  index: number;
  /** Users [userStart, userEnd) (dense user ids) live in this shard. */
  userStart: number;
  userEnd: number;
  rows: number;
  /** Pass-1 file (hidden states) and its sha256. */
  file: string;
  sha256: string;
  /** Pass-2 file (soft labels), rows aligned with `file`. */
  soft?: { file: string; sha256: string };
}

export interface SoftLabelSpec {
  k: number;
  temperature: number;
  /** 'linear' (head fitted on cached features), 'zeroshot' (scaled h . item embedding), 'teacher' (seqrec scores). */
  head: 'linear' | 'zeroshot' | 'teacher';
  /** topk_prob are softmax(logits / T) over the whole catalogue minus masked items (so a row sums to <= 1). */
  probabilities: 'full-softmax';
  /** Items that get no probability: padding 0 and the items already in the prefix (0..p). */
  mask: 'padding+history';
}

export interface HeadConfig extends HeadTrainConfig {
  kind: 'linear' | 'zeroshot' | 'teacher';
  /** Index into the tapped layers whose state the head reads (-1 = last). */
  layer: number;
}

export interface RankingSummary {
  [metric: string]: number;
}

export interface CacheManifest {
  format: typeof CACHE_FORMAT;
  version: number;
  key: string;
  /** Every pass done (hidden + items + soft labels + metrics). */
  complete: boolean;
  /** 'hidden': pass 1 still running or done for this slice; 'complete': everything written. */
  stage: 'hidden' | 'complete';
  dataset: {
    name: string; fingerprint: string; users: number; items: number; interactions: number;
    /** The preprocessing options in the fingerprint (mismatch messages name the one that differs). */
    options?: Record<string, unknown>;
    /** The dataset flags that load it again, paths absolute (teacher:merge reads them). */
    flags?: Record<string, unknown>;
  };
  teacher: TeacherInfo & { options: Record<string, unknown> };
  layout: { usersPerShard: number; numShards: number; hiddenDtype: HiddenDtype; positions: string };
  softLabels: SoftLabelSpec;
  head: HeadConfig & { file?: string; sha256?: string; bestEpoch?: number; history?: Array<Record<string, number>> };
  items?: { file: string; sha256: string; shape: [number, number] };
  stats?: { file: string; sha256: string };
  /** Set for a `--shard i/N` run: which slice of the shards this directory holds. */
  slice?: { index: number; count: number; shardStart: number; shardEnd: number };
  shards: ShardEntry[];
  timings: Record<string, number>;
  /** The teacher's own full-ranking metrics (history excluded), from src/eval. */
  metrics?: { valid: RankingSummary; test: RankingSummary };
  /** Which tfjs backend computed the head / soft labels (their bytes depend on it). */
  backend?: string;
}
