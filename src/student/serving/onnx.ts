/**
 * The trained student as an ONNX graph, so any onnxruntime (Node, Python, C#, the browser) serves it without
 * the training code. The graph is the inference path of model.ts (SASRec, pre-LN or post-LN blocks, item
 * embeddings scaled by sqrt(D) or not, positions counted from the end), written op for op:
 *
 *   inputs   history int64 [batch, length]  dense item ids, left-padded with 0 (length <= maxLen)
 *            k       int64 [1]              how many items to return
 *   outputs  scores     float32 [batch, items + 1]  item scores after the last position (column 0 = padding)
 *            top_scores float32 [batch, k]          best k scores with the history's items and padding excluded
 *            top_ids    int64   [batch, k]          their item ids (dense, 1..items)
 *
 * Like encodeLast, the last block computes its query, attention row, feed-forward and final norm for the
 * last position only.
 */
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { filterMatrix } from '../model/filter.js';
import { RecdistillError } from '../../errors.js';
import { DataType, eagerTensor, encodeOnnxModel, writeOnnxModel, type GraphDesc } from '../../util/onnx-file.js';
import { GraphBuilder, tensorProto, valueInfo } from '../../util/onnx-graph.js';
import { padHistories } from '../model/batches.js';
import { readStudentFile, topK } from './serve.js';
import { averageScoresAsync, readServePlan } from './serve-plan.js';
import type { ModelConfig } from '../model/model.js';
import { hasFilter } from '../model/params.js';

const ONNX_OPSET = 17;

/** Build the graph from the run's weights (names as in model.ts's params map, row-major float32). */
function buildStudentOnnx(config: ModelConfig, weights: (name: string) => Float32Array): GraphDesc {
  const { dims: D, heads: H, maxLen, numItems: N } = config;
  const dh = D / H;
  const post = config.norm === 'post';
  if (config.padKeys === 'attend') throw new RecdistillError('E_USAGE', 'the ONNX export does not implement padKeys "attend" (padding attended, as in pmixer) yet: serve such a run with loadStudent (tfjs).');
  if (config.attention === 'bidirectional') throw new RecdistillError('E_USAGE', 'the ONNX export does not implement the bidirectional (cloze) network yet: serve such a run with loadStudent (tfjs), e.g. `eval --student` or `serve`.');
  const g = new GraphBuilder();
  const w = (name: string, dims: number[]) => {
    const data = weights(name);
    if (data.length !== dims.reduce((a, b) => a * b, 1)) throw new Error(`weight ${name}: ${data.length} values, expected [${dims}]`);
    return g.addInit(eagerTensor(name, dims, DataType.FLOAT, data));
  };
  const itemEmb = w('item_emb', [N + 1, D]);
  const posEmb = w('pos_emb', [maxLen, D]);
  const i64 = (v: number[]) => g.constI('/const', v);
  const scalarI = (v: number) => g.constI('/const', v);

  // Shapes: L = history length, B = batch.
  const shape = g.op('/input', 'Shape', ['history'], {}, { type: DataType.INT64 }); // [2]
  const L1 = g.op('/input', 'Slice', [shape, i64([1]), i64([2])], {}, { type: DataType.INT64 }); // [1] = L
  const keepB = g.op('/input', 'Not', [g.op('/input', 'Equal', ['history', scalarI(0)], {}, { type: DataType.BOOL })], {}, { type: DataType.BOOL });
  const keep = g.op('/input', 'Unsqueeze', [g.op('/input', 'Cast', [keepB], { to: { i: DataType.FLOAT } }, { type: DataType.FLOAT }), i64([-1])]); // [B, L, 1]

  // x = E[history] * sqrt(D) (embScale; else unscaled) + P[maxLen - L:], padding rows zero. [B, L, D]
  const start = g.op('/pos', 'Sub', [i64([maxLen]), L1], {}, { type: DataType.INT64 });
  const pos = g.op('/pos', 'Slice', [posEmb, start, i64([maxLen]), i64([0])]);
  const emb = g.op('/emb', 'Gather', [itemEmb, 'history'], { axis: { i: 0 } });
  let x = config.embScale === false ? emb : g.op('/emb', 'Mul', [emb, g.constF('/emb', Math.sqrt(D))]);
  x = g.op('/emb', 'Mul', [g.op('/emb', 'Add', [x, pos]), keep]);

  // Attention bias [B, 1, L, L]: -1e9 on future keys and padding keys.
  const LL = g.op('/mask', 'Concat', [L1, L1], { axis: { i: 0 } }, { type: DataType.INT64 });
  const ones = g.op('/mask', 'ConstantOfShape', [LL], { value: { t: tensorProto(DataType.FLOAT, [1], Float32Array.of(1)) } });
  const causal = g.op('/mask', 'Mul', [g.op('/mask', 'Sub', [g.constF('/mask', 1), g.op('/mask', 'Trilu', [ones], { upper: { i: 0 } })]), g.constF('/mask', -1e9)]); // [L, L]
  const keepKeys = g.op('/mask', 'Unsqueeze', [g.op('/mask', 'Squeeze', [keep, i64([-1])]), i64([1, 2])]); // [B, 1, 1, L]
  const padBias = g.op('/mask', 'Mul', [g.op('/mask', 'Sub', [g.constF('/mask', 1), keepKeys]), g.constF('/mask', -1e9)]);
  const bias = g.op('/mask', 'Add', [padBias, causal]); // [B, 1, L, L]
  const lastIdx = g.op('/mask', 'Sub', [L1, i64([1])], {}, { type: DataType.INT64 }); // [1]
  const lastOf = (t: string, axis: number) => g.op('/last', 'Gather', [t, lastIdx], { axis: { i: axis } }); // keeps the axis (size 1)

  const ln = (s: string, t: string, gain: string, bias_: string) =>
    g.op(s, 'LayerNormalization', [t, w(gain, [D]), w(bias_, [D])], { axis: { i: -1 }, epsilon: { f: 1e-8 } });
  const linear = (s: string, t: string, wn: string, bn: string, din: number, dout: number) => g.op(s, 'Add', [g.op(s, 'MatMul', [t, w(wn, [din, dout])]), w(bn, [dout])]);
  const heads = (s: string, t: string) => g.op(s, 'Transpose', [g.op(s, 'Reshape', [t, i64([0, -1, H, dh])])], { perm: { ints: [0, 2, 1, 3] } }); // [B, H, L, dh]

  // The frequency-filter branch's matrix at maxLen (filter.ts); each call slices its top-left [L, L].
  const filter = hasFilter(config);
  const filterT = filter ? g.addInit(eagerTensor('filter_matrix', [maxLen, maxLen], DataType.FLOAT, filterMatrix(maxLen, config.filterBins ?? 3, maxLen, config.filterSpan ?? 'causal'))) : undefined;
  for (let bi = 0; bi < config.blocks; bi++) {
    const s = `/block${bi}`;
    const p = `block${bi}.`;
    const last = bi === config.blocks - 1;
    // pre: x + MHA(LN1(x)), x + FFN(LN2(x)); post: LN1(x + MHA(x)), LN2(x + FFN(x)).
    const h = post ? x : ln(`${s}/ln1`, x, p + 'ln1.g', p + 'ln1.b');
    const qkv = linear(`${s}/qkv`, h, p + 'attn.wqkv', p + 'attn.bqkv', D, 3 * D); // [B, L, 3D]
    const [q0, k0, v0] = ['q', 'k', 'v'].map((_, j) => g.op(`${s}/split`, 'Slice', [qkv, i64([j * D]), i64([(j + 1) * D]), i64([-1])]));
    // The last block only needs the last position's query (and residual).
    const qIn = last ? lastOf(q0!, 1) : q0!;
    const q = heads(`${s}/q`, qIn);
    const k = heads(`${s}/k`, k0!);
    const v = heads(`${s}/v`, v0!);
    const kT = g.op(`${s}/attn`, 'Transpose', [k], { perm: { ints: [0, 1, 3, 2] } });
    const b = last ? lastOf(bias, 2) : bias;
    const att = g.op(`${s}/attn`, 'Softmax', [g.op(`${s}/attn`, 'Add', [g.op(`${s}/attn`, 'Mul', [g.op(`${s}/attn`, 'MatMul', [q, kT]), g.constF(s, 1 / Math.sqrt(dh))]), b])], { axis: { i: -1 } });
    const ctx = g.op(`${s}/attn`, 'Reshape', [g.op(`${s}/attn`, 'Transpose', [g.op(`${s}/attn`, 'MatMul', [att, v])], { perm: { ints: [0, 2, 1, 3] } }), i64([0, -1, D])]);
    const a = linear(`${s}/wo`, ctx, p + 'attn.wo', p + 'attn.bo', D, D);
    const xq = last ? lastOf(x, 1) : x;
    const keepQ = last ? lastOf(keep, 1) : keep;
    if (filter) {
      // alpha * filter branch + (1 - alpha) * attention (filter.ts): low = T[:L, :L] @ (h * keep) over the slots.
      const fs = `${s}/filter`;
      const hk = g.op(fs, 'Mul', [h, keep]);
      const T = g.op(fs, 'Slice', [filterT!, i64([0, 0]), LL, i64([0, 1])]);
      const low = g.op(fs, 'MatMul', [T, hk]); // [L, L] @ [B, L, D] (broadcast) -> [B, L, D]
      const beta = w(p + 'filter.beta', [D]);
      const f = g.op(fs, 'Add', [low, g.op(fs, 'Mul', [g.op(fs, 'Mul', [beta, beta]), g.op(fs, 'Sub', [hk, low])])]);
      const fq = last ? lastOf(f, 1) : f;
      const alpha = config.filterAlpha!;
      x = post
        ? g.op(fs, 'Add', [g.op(fs, 'Mul', [ln(`${s}/ln1`, g.op(s, 'Add', [xq, a]), p + 'ln1.g', p + 'ln1.b'), g.constF(fs, 1 - alpha)]), g.op(fs, 'Mul', [ln(`${fs}/ln`, g.op(fs, 'Add', [xq, fq]), p + 'filter.ln.g', p + 'filter.ln.b'), g.constF(fs, alpha)])])
        : g.op(s, 'Add', [xq, g.op(fs, 'Add', [g.op(fs, 'Mul', [a, g.constF(fs, 1 - alpha)]), g.op(fs, 'Mul', [fq, g.constF(fs, alpha)])])]);
    } else {
      x = g.op(s, 'Add', [xq, a]);
      if (post) x = ln(`${s}/ln1`, x, p + 'ln1.g', p + 'ln1.b');
    }
    const h2 = post ? x : ln(`${s}/ln2`, x, p + 'ln2.g', p + 'ln2.b');
    const f1 = g.op(`${s}/ffn`, 'Relu', [linear(`${s}/ffn1`, h2, p + 'ffn.w1', p + 'ffn.b1', D, config.ffnDims)]);
    const f2 = linear(`${s}/ffn2`, f1, p + 'ffn.w2', p + 'ffn.b2', config.ffnDims, D);
    const res = g.op(s, 'Add', [x, f2]);
    x = g.op(s, 'Mul', [post ? ln(`${s}/ln2`, res, p + 'ln2.g', p + 'ln2.b') : res, keepQ]);
    if (last) x = g.op('/final', 'Mul', [ln('/final', x, 'final_ln.g', 'final_ln.b'), keepQ]); // [B, 1, D]
  }
  const state = g.op('/scores', 'Squeeze', [x, i64([1])]); // [B, D]
  const itemT = g.op('/scores', 'Transpose', [itemEmb], { perm: { ints: [1, 0] } });
  g.op('/scores', 'MatMul', [state, itemT], {}, { out: ['scores'] }); // [B, N + 1]
  // History items and padding (column 0) get -inf before the top-k.
  const negInf = g.op('/topk', 'Expand', [g.constF('/topk', -Infinity), shape]); // [B, L]
  const masked = g.op('/topk', 'ScatterElements', ['scores', 'history', negInf], { axis: { i: 1 } });
  const col0 = g.op('/topk', 'Mul', [g.op('/topk', 'Slice', ['history', i64([0]), i64([1]), i64([1])]), scalarI(0)]); // [B, 1] zeros
  const first = g.op('/topk', 'Slice', [negInf, i64([0]), i64([1]), i64([1])]);
  const noPad = g.op('/topk', 'ScatterElements', [masked, col0, first], { axis: { i: 1 } });
  g.op('/topk', 'TopK', [noPad, 'k'], { axis: { i: -1 }, largest: { i: 1 }, sorted: { i: 1 } }, { out: ['top_scores', 'top_ids'] });

  return {
    graphName: 'recdistill-student',
    producerName: 'recdistill student:export',
    irVersion: 8,
    opsets: [{ domain: '', version: ONNX_OPSET }],
    nodes: g.nodes,
    inputs: [valueInfo('history', DataType.INT64, ['batch', 'length']), valueInfo('k', DataType.INT64, [1])],
    outputs: [
      valueInfo('scores', DataType.FLOAT, ['batch', N + 1]),
      valueInfo('top_scores', DataType.FLOAT, ['batch', 'k']),
      valueInfo('top_ids', DataType.INT64, ['batch', 'k']),
    ],
    initializers: g.initializers,
  };
}


/** The graph of a run folder's model.safetensors (read and validated by the same reader as the tfjs model). */
function studentOnnxFromRun(dir: string): { desc: GraphDesc; config: ModelConfig; metadata: Record<string, string> } {
  const { path, config, tensors, metadata } = readStudentFile(dir);
  const desc = buildStudentOnnx(config, (name) => {
    const t = tensors[name];
    if (!t) throw new RecdistillError('E_MISMATCH', `${path}: tensor "${name}" is missing.`);
    return t.data as Float32Array;
  });
  return { desc, config, metadata };
}

/** `student:export`: write the run's model as ONNX (atomic). */
export function exportStudentOnnx(dir: string, file: string): { file: string; bytes: number; config: ModelConfig } {
  const { desc, config } = studentOnnxFromRun(dir);
  return { file, bytes: writeOnnxModel(file, desc), config };
}

export interface OnnxStudent {
  config: ModelConfig;
  /** From the model file's metadata: the dataset it was trained on and its fingerprint. */
  dataset: string;
  fingerprint: string;
  session: ort.InferenceSession;
  /** Scores [B, N + 1] for histories (each truncated to its last maxLen items, left-padded). */
  scoreBatch(histories: Int32Array[]): Promise<Float32Array>;
  /** Top-k after one history, history items and padding excluded (in the graph). */
  recommend(history: Int32Array, k: number): Promise<{ items: number[]; scores: number[] }>;
  dispose(): Promise<void>;
}

/**
 * What a run folder serves, through onnxruntime-node: its own graph, or (serve.json naming an ensemble: an EMKD
 * run trained with --serve ensemble) its members' graphs with their scores averaged; then `recommend` ranks the
 * averaged scores (history excluded) and `session`, `config`, `dataset`, `fingerprint` are the first member's.
 * `members`: the folders served (the run folder itself for one network).
 */
export async function loadServedOnnx(dir: string, opts: { threads?: number } = {}): Promise<OnnxStudent & { members: string[] }> {
  const plan = readServePlan(dir);
  if (plan.serve !== 'ensemble') return { ...(await loadStudentOnnx(dir, opts)), members: [dir] };
  const dirs = plan.members.map((m) => join(dir, m));
  const ms: OnnxStudent[] = [];
  try {
    for (const d of dirs) ms.push(await loadStudentOnnx(d, opts));
  } catch (e) {
    for (const m of ms) await m.dispose();
    throw e;
  }
  const fns = ms.map((m) => (hs: Int32Array[]) => m.scoreBatch(hs));
  const scoreBatch = (hs: Int32Array[]) => averageScoresAsync(fns, hs);
  return {
    ...ms[0]!,
    members: dirs,
    scoreBatch,
    recommend: async (history, k) => topK(await scoreBatch([history]), k, new Set(history)),
    async dispose() {
      for (const m of ms) await m.dispose();
    },
  };
}

/** Serve a run through onnxruntime-node: the exported graph, built in memory from model.safetensors. */
export async function loadStudentOnnx(dir: string, opts: { threads?: number } = {}): Promise<OnnxStudent> {
  const { desc, config, metadata } = studentOnnxFromRun(dir);
  const session = await ort.InferenceSession.create(encodeOnnxModel(desc), {
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: opts.threads ?? 1,
    interOpNumThreads: 1,
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  });
  const feeds = (histories: Int32Array[], k: number) => {
    const { items, B, L } = padHistories(histories, config.maxLen);
    return { history: new ort.Tensor('int64', BigInt64Array.from(items, (v) => BigInt(v)), [B, L]), k: new ort.Tensor('int64', BigInt64Array.of(BigInt(k)), [1]) };
  };
  return {
    config,
    dataset: metadata.dataset ?? '',
    fingerprint: metadata.fingerprint ?? '',
    session,
    async scoreBatch(histories) {
      const out = await session.run(feeds(histories, 1), ['scores']);
      return out.scores!.data as Float32Array;
    },
    async recommend(history, k) {
      // The graph excludes the items of the window it reads (the last maxLen); older history items are
      // excluded here, asking the graph for that many more.
      const inWindow = new Set(history.subarray(Math.max(0, history.length - config.maxLen)));
      const older = new Set([...history].filter((id) => !inWindow.has(id)));
      const kk = Math.max(1, Math.min(k + older.size, config.numItems + 1)); // TopK needs k <= the scores' width
      const out = await session.run(feeds([history], kk), ['top_scores', 'top_ids']);
      const ids = Array.from(out.top_ids!.data as BigInt64Array, Number);
      const scores = Array.from(out.top_scores!.data as Float32Array);
      const keep = ids.map((id, i) => scores[i]! > -Infinity && !older.has(id));
      return { items: ids.filter((_, i) => keep[i]).slice(0, k), scores: scores.filter((_, i) => keep[i]).slice(0, k) };
    },
    dispose: () => session.release(),
  };
}
