/**
 * The contract between a teacher (an LLM over textified histories, or a trained sequence model) and
 * the cache writer. Both teacher kinds implement it; the cache stage only sees this interface.
 */
export interface TeacherInfo {
  /** 'llm' (ONNX LM through transformers.js / onnxruntime-node) or 'seqrec' (a trained student-format model). */
  kind: 'llm' | 'seqrec';
  /** Hub id or local path of the model. */
  model: string;
  /** Weights dtype: fp32, fp16, q8, int8, uint8, q4, q4f16 (llm) or 'fp32' (seqrec). */
  dtype: string;
  /** sha256 of the weights file. */
  weightsHash: string;
  /** Hub models: the revision asked for (branch, tag or sha). Absent for local folders. Not in the cache key. */
  revision?: string;
  /** Hub models: the commit sha it resolved to (files of snapshots/<commit>). Absent for local folders. */
  commit?: string;
  /** Tapped layers as absolute indices (0-based), in the order states are returned. */
  layers: number[];
  /** Width of each tapped hidden state. */
  hiddenSize: number;
  /** How an item's state is read: e.g. 'last-token-of-item' (llm) or 'position' (seqrec). */
  pooling: string;
  /** Prompt template path + sha256 (llm only). */
  prompt?: { path: string; sha256: string };
}

export interface HistoryStates {
  /**
   * Index of the first history position that has a state. With a prompt-token budget only the most
   * recent items fit, so positions before `first` have none.
   */
  first: number;
  /** Number of positions with a state: positions first..first+count-1. */
  count: number;
  /** [count, layers.length, hiddenSize] row-major: the state after reading item at each position. */
  states: Float32Array;
  /** Tokens processed (0 for seqrec). */
  tokens: number;
}

export interface TeacherEncoder extends TeacherInfo {
  /**
   * One forward pass over a user's history (dense item ids in time order). The state at position t
   * depends only on items 0..t (causal), so it is the teacher vector for the prefix ending at t.
   */
  encodeHistory(items: Int32Array): Promise<HistoryStates>;
  /** Item text embeddings, pooled: [numItems + 1, hiddenSize], row 0 (padding) all zeros. */
  embedItems(onProgress?: (done: number, total: number) => void): Promise<Float32Array>;
  dispose(): Promise<void>;
}
