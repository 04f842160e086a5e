/**
 * The prepared dataset: the contract every later stage relies on.
 * - item ids are dense 1..numItems; 0 is padding (items[0] is a placeholder)
 * - per user, a time-ordered sequence (stable sort: equal timestamps keep file order)
 * - leave-one-out: last item = test target, second-to-last = validation target
 * - fingerprint = hash of the raw input bytes + every preprocessing option
 */
export interface ItemInfo {
  /** Dense id, 1..numItems. */
  id: number;
  /** The id in the raw data (movie id, asin, ...). */
  rawId: string;
  /** Display title, e.g. "Toy Story (1995)". Falls back to the raw id when the source has no text. */
  title: string;
  /** Release year when known (MovieLens titles carry it). */
  year?: number;
  /** Genres / categories when known. */
  genres: string[];
  /** Extra item text by column name (generic --text-cols, Amazon main_category), for prompts. */
  extra?: Record<string, string>;
}

export interface UserSequence {
  /** The id in the raw data. */
  rawId: string;
  /** Dense item ids in time order (stable on ties), after filtering and max-length truncation. */
  items: Int32Array;
}

export interface DatasetStats {
  users: number;
  items: number;
  interactions: number;
  meanSeqLen: number;
  medianSeqLen: number;
  density: number;
}

export interface PreparedDataset {
  /** Dataset name: ml-100k, ml-1m, amazon-2018, generic, synthetic, ... */
  name: string;
  /** sha256 hex of raw input bytes + every preprocessing option. Travels into every artifact. */
  fingerprint: string;
  /** The preprocessing options that produced it (for reports and provenance). */
  options: Record<string, unknown>;
  /** The dataset flags that load it again (paths absolute), when it was loaded from flags: artifacts record them. */
  flags?: Record<string, unknown>;
  /** items[0] is the padding placeholder; items[i].id === i. */
  items: ItemInfo[];
  /** Users in raw-id order (numeric when ids are integers, else lexicographic); index = dense user id. */
  users: UserSequence[];
  stats: DatasetStats;
}

/** One raw interaction before filtering; `order` is its position in the file (tie-breaker). */
export interface RawInteraction {
  user: string;
  item: string;
  time: number;
  rating?: number;
  order: number;
}

/**
 * Interactions as parallel typed arrays: 24 bytes a row instead of ~200 for one object per row, so
 * MovieLens 20M/25M/32M fit in memory. Row index = file order (the tie-breaker for equal times).
 */
export interface RawColumns {
  /** Distinct raw user ids; index = user code. */
  userIds: string[];
  /** Distinct raw item ids; index = item code. */
  itemIds: string[];
  user: Int32Array; // [n] user code per row
  item: Int32Array; // [n] item code per row
  time: Float64Array; // [n] time (unit of the source; only orders a user's rows)
  rating: Float64Array; // [n] rating, NaN = none
  length: number;
}

/**
 * What a format loader returns: interactions, item texts, and the raw bytes' hash. Loaders of big
 * files fill `columns` (typed arrays, file order) and leave `interactions` empty; read either form
 * with rawColumns(raw) from columns.ts.
 */
export interface RawDataset {
  interactions: RawInteraction[];
  columns?: RawColumns;
  /** Item texts by raw item id (may be partial or empty). */
  items: Map<string, { title: string; year?: number; genres: string[]; extra?: Record<string, string> }>;
  /** sha256 over the raw input files (in a fixed order). */
  rawHash: string;
  /** Files the loader read, for messages. */
  files: string[];
  /** Repeated (user, item, time) rows the loader dropped (first kept); reported in the log. */
  duplicateRows?: number;
}

/** Leave-one-out split of one user's sequence. */
export interface SplitView {
  /** Items the model may train on (all but the last two). */
  train: Int32Array;
  /** Validation target (second-to-last), or 0 when the user has fewer than 3 items. */
  valid: number;
  /** Test target (last), or 0 when the user has fewer than 3 items. */
  test: number;
}
