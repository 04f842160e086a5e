import * as tf from '@tensorflow/tfjs-core';
import { resolveOptions } from '../../config/options.js';
import type { PreparedDataset } from '../../data/types.js';
import { RecdistillError } from '../../errors.js';
import { modelOptions, studentOptions, type StudentOptions } from '../../student/training/config.js';
import { createSasrec, encode, type ModelConfig, type Sasrec } from '../../student/model/model.js';
import { modelConfigFrom } from '../../student/training/train.js';
import { mixSeed, type Rng } from '../../util/rng.js';

/**
 * The K-network student's extra parameters, all hook variables (trained by the student's Adam, saved in the
 * checkpoint as hook.<i>, restored on resume):
 * - networks 2..K: full SASRec encoders built by the student's own createSasrec with the student's config and
 *   their own seeds (own item table, positions, blocks and final LayerNorm; nothing shared with network 1 or
 *   each other);
 * - one mask-token row [1, D] per network (network 1 included): the "one extra embedding row" of the paper. The
 *   student's item table cannot grow without changing src/student/model/model.ts, so the row lives outside it and is
 *   appended to a network's table for a masked forward pass only (concat: the mask id is N + 1). The item
 *   table, hence the output layer and the served model, stays [N + 1, D];
 * - with attributes: one linear head [D, A] + [A] per network for L2.
 * Variable order (the checkpoint's hook.<i> order): networks 2..K (each in createSasrec's parameter order),
 * then the K mask rows, then the K attribute heads (w, b).
 */
export interface EmkdNetworks {
  /** The student's model config (every network has it). */
  config: ModelConfig;
  /** Networks 2..K. */
  extra: Sasrec[];
  /** K mask rows [1, D]: maskRows[0] is network 1's (causal networks; empty for cloze networks, which own theirs). */
  maskRows: tf.Variable[];
  /** K attribute heads, or empty when the dataset has no attributes. */
  attrHeads: Array<{ w: tf.Variable; b: tf.Variable }>;
  variables: tf.Variable[];
  /** createSasrec's parameter names, the order each extra network's variables come in (empty when K = 1). */
  paramNames: string[];
}

/** Seed of network n (2..K): the student's initialisation seed is mixSeed(seed, 1) (src/student/training/train.ts). */
export const networkSeed = (seed: number, n: number) => mixSeed(seed, 1, 0xe3d, n);

/** Model options a hooks factory's `opts` must carry for EMKD (a default here would silently differ from network 1). */
const REQUIRED_MODEL_KEYS = ['maxLen', 'heads', 'ffnDims', 'dropout', 'attnDropout'] as const;

/**
 * The student's model config from student:train's resolved options (student:train passes them all to the hooks
 * factory; another caller must pass the student's options too, e.g. buildDistillHooks({ ...studentOpts,
 * ...distillFlags, seed }, ...)). Model keys added after these (norm, init, embScale) take student:train's
 * defaults when absent; dims / blocks must equal the ones the trainer reports.
 */
export function studentModelConfig(opts: Record<string, unknown>, ds: PreparedDataset, model: { dims: number; blocks: number }): ModelConfig {
  const missing = REQUIRED_MODEL_KEYS.filter((k) => opts[k] === undefined);
  if (missing.length) {
    throw new RecdistillError('E_USAGE', `EMKD builds networks 2..K with the student's model config, but the hooks factory's options lack ${missing.join(', ')}: pass the student's options along with the distillation flags.`);
  }
  const picked: Record<string, unknown> = {};
  for (const k of Object.keys(modelOptions)) if (opts[k] !== undefined) picked[k] = opts[k];
  const o = resolveOptions(studentOptions, { flags: { dims: model.dims, blocks: model.blocks, ...picked } }) as StudentOptions;
  if (o.dims !== model.dims || o.blocks !== model.blocks) {
    throw new RecdistillError('E_USAGE', `EMKD: the options say dims ${o.dims}, blocks ${o.blocks} but the student has dims ${model.dims}, blocks ${model.blocks}; pass the student's options to the hooks factory.`);
  }
  return modelConfigFrom(ds, o);
}

export function createNetworks(config: ModelConfig, K: number, seed: number, attrClasses: number, namespace: string): EmkdNetworks {
  const D = config.dims;
  const extra: Sasrec[] = [];
  for (let n = 2; n <= K; n++) extra.push(createSasrec(config, networkSeed(seed, n)));
  const own = (name: string, init: tf.Tensor) => {
    const v = tf.variable(init, true, `${namespace}/${name}`);
    init.dispose();
    return v;
  };
  // Mask rows start like an item row (Glorot-uniform scale of the item table: sqrt(6 / (N + 1 + D))).
  const a = Math.sqrt(6 / (config.numItems + 1 + D));
  // A bidirectional (cloze) network has its own MASK row (the model's mask_emb): no hook row then.
  const maskRows = config.attention === 'bidirectional' ? [] : Array.from({ length: K }, (_, i) => own(`mask${i + 1}`, tf.randomUniform([1, D], -a, a, 'float32', networkSeed(seed, 100 + i))));
  const attrHeads = attrClasses > 0
    ? Array.from({ length: K }, (_, i) => ({
        w: own(`attr${i + 1}/w`, tf.randomNormal([D, attrClasses], 0, 1 / Math.sqrt(D), 'float32', networkSeed(seed, 200 + i))),
        b: own(`attr${i + 1}/b`, tf.zeros([attrClasses])),
      }))
    : [];
  const variables = [...extra.flatMap((m) => [...m.params.values()]), ...maskRows, ...attrHeads.flatMap((h) => [h.w, h.b])];
  const paramNames = extra.length ? [...extra[0]!.params.keys()] : [];
  return { config, extra, maskRows, attrHeads, variables, paramNames };
}

/**
 * A forward pass of network `m` on ids [B * L] with `extraRows` [R, D] appended to its item table for this pass
 * (ids N + 1 .. N + R). Everything else is the student's encode (training mode when `rng` is given).
 */
export function encodeWithRows(m: Sasrec, items: Int32Array, B: number, L: number, rng: Rng | undefined, extraRows?: tf.Tensor): tf.Tensor3D[] {
  if (!extraRows) return encode(m, items, B, L, { rng });
  const table = tf.concat([m.itemEmb, extraRows], 0);
  return encode({ ...m, itemEmb: table as tf.Variable }, items, B, L, { rng });
}
