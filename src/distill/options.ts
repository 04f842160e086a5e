import { defineOptions, resolveOptions, type Resolved } from '../config/options.js';

/**
 * Distillation flags of student:train (all terms off unless --cache is given and a lambda > 0).
 * L = CE + λcos·Dcos + λl2·Dl2 + λms·Lms + λkd·Lkd + λemb·Lemb + λrel·(wd·Lrkd-distance + wa·Lrkd-angle)
 */
export const distillOptions = defineOptions({
  cache: { type: 'string', help: 'teacher cache directory to distil from (empty: plain training)' },
  lambdaCos: { type: 'number', help: 'weight of 1 - cosine(student proj, teacher) hidden alignment (SLMRec)', default: 0, min: 0 },
  lambdaL2: { type: 'number', help: 'weight of squared L2 hidden alignment (SLMRec)', default: 0, min: 0 },
  lambdaMs: { type: 'number', help: 'weight of multi-supervision adapters on aligned intermediate layers (SLMRec)', default: 0, min: 0 },
  lambdaKd: { type: 'number', help: 'weight of soft-label distillation (KL over teacher top-K)', default: 0, min: 0 },
  lambdaEmb: { type: 'number', help: 'weight of item-embedding distillation (DLLM2Rec)', default: 0, min: 0 },
  lambdaRel: {
    type: 'number',
    help: 'weight of relational distillation (RKD): the batch\'s pairwise distances and triplet angles of the last block vs the teacher layer aligned with it',
    default: 0,
    min: 0,
  },
  // Park et al. weigh distance 25 and angle 50 against their metric-learning / classification losses; what
  // carries over is the 1:2 ratio, the scale is set here. Measured at 64 rows, a random 16-wide student against a
  // random or low-rank-plus-noise teacher (64 and 896 wide): distance 0.014-0.07, angle 0.018-0.095 at unit
  // weight. 5 and 10 make the term 0.3-1.3 at λrel = 1 (the ablation's default), the size λcos·Dcos starts at
  // with λcos = 1 (1 - cosine of a random projection ~ 1); the paper's 25 / 50 would start near CE itself.
  relDistance: { type: 'number', help: 'RKD: weight of the distance-wise term (Huber between mean-normalised pairwise distances) inside λrel', default: 5, min: 0 },
  relAngle: { type: 'number', help: 'RKD: weight of the angle-wise term (Huber between triplet-angle cosines) inside λrel', default: 10, min: 0 },
  align: {
    type: 'string',
    help: 'student block : tapped teacher layer, both from 0 and negative from the end (the block as --layers and checkpoints count it, the layer as an index into the tapped list), e.g. 0:-4,1:-1; empty = spread blocks evenly, last to last',
    default: '',
  },
  standardise: { type: 'boolean', help: 'standardise teacher hidden states per dimension (mean/std over the cache)', default: false },
  kd: { type: 'string', help: 'soft-label loss: kl (KL at temperature over the top-K) or ranking (DLLM2Rec importance-weighted)', default: 'kl', choices: ['kl', 'ranking'] },
  kdTemperature: { type: 'number', help: 'temperature T of the KL soft-label loss (the loss is scaled by T^2)', default: 2, min: 0, exclusiveMin: true },
  kdTopK: { type: 'int', help: 'use the first K of the cached teacher top-K (0 = all cached)', default: 0 },
  rankLambda: { type: 'number', help: 'ranking KD: position weight exp(-rank / rankLambda) (DLLM2Rec λ)', default: 1, min: 0, exclusiveMin: true },
  gammaPosition: { type: 'number', help: 'ranking KD: weight of the position-aware term', default: 0.3 },
  gammaConfidence: { type: 'number', help: 'ranking KD: weight of the teacher-confidence term', default: 0.5 },
  gammaConsistency: { type: 'number', help: 'ranking KD: weight of the teacher-student agreement term', default: 0.1 },
  balance: {
    type: 'string',
    help: 'gradient balancing of the distillation terms against CE: gradcos switches a conflicting term off, pcgrad projects it, unshare routes it through its own adapter with its gradient stopped at the shared layers',
    default: 'none',
    choices: ['none', 'gradcos', 'pcgrad', 'unshare'],
  },
  balanceEvery: { type: 'int', help: 'steps between two gradient-balance measurements', default: 20, min: 1 },
  unshareAfter: { type: 'int', help: '--balance unshare: consecutive measurements with a negative EMA gradient cosine (with CE) that unshare a term', default: 3, min: 1 },
  unshareBelow: { type: 'number', help: '--balance unshare: the EMA-cosine threshold (a term is conflicting below it)', default: 0 },
  cacheMemoryMb: { type: 'int', help: 'memory for decoded teacher-cache shards (MB); shards beyond it are streamed from disk', default: 2048 },
  // EMKD (Du et al., SIGIR 2023; src/distill/emkd): K parallel SASRec networks trained together. Defaults are the
  // reference implementation's ML settings (hw-du/EMKD templates.py / options.py): mask 0.15, tau 1, lambda 0.01
  // for both contrastive terms, mu 0.001 for the KL, weight 1 for the masked-item and attribute losses.
  emkd: { type: 'int', help: 'EMKD: number K of parallel networks (network 1 is the served student; 0 = off); with --attention bidirectional, the reference\'s cloze networks and loss set', default: 0, group: 'EMKD' },
  // With K > 1, ensemble also selects the best epoch on the ensemble's validation (src/distill/emkd/ensemble.ts).
  serve: {
    type: 'string',
    help: 'EMKD: what the run folder serves, and so what validation selects the best epoch on: member (network 1 alone, its model.safetensors) or ensemble (the K networks\' scores averaged, through serve.json); metrics.json reports both',
    default: 'member',
    choices: ['member', 'ensemble'],
    group: 'EMKD',
  },
  emkdMaskRatio: { type: 'number', help: 'EMKD: fraction of each sequence\'s non-padding items replaced by the mask token in a masked view', default: 0.15, group: 'EMKD' },
  emkdTemperature: { type: 'number', help: 'EMKD: temperature of the contrastive (InfoNCE, cosine) and KL terms', default: 1, group: 'EMKD' },
  emkdViews: { type: 'int', help: 'EMKD: masked views per sequence and step (the reference code uses 8; each costs K extra forward passes)', default: 1, group: 'EMKD' },
  // 0 by default: on a causal network the state at a masked slot cannot see the item it must predict, so L1 is a
  // second copy of the next-item loss (measured: removing it helped). Cloze networks do not use it (emkd_cloze).
  lambdaEmkdMask: { type: 'number', help: 'EMKD L1 (causal networks only): weight of the masked-item cross-entropy (per network and view); off by default, since on a causal network it repeats the next-item loss', default: 0, group: 'EMKD' },
  lambdaEmkdAttr: { type: 'number', help: 'EMKD L2: weight of the next item\'s attribute-class (genre / category) cross-entropy', default: 1, group: 'EMKD' },
  lambdaEmkdIntra: { type: 'number', help: 'EMKD L3: weight of the intra-network InfoNCE (original vs its masked view, same network)', default: 0.01, group: 'EMKD' },
  lambdaEmkdInter: { type: 'number', help: 'EMKD L4: weight of the inter-network InfoNCE (original in network i vs masked view in network j, every ordered pair)', default: 0.01, group: 'EMKD' },
  lambdaEmkdKl: { type: 'number', help: 'EMKD L5: weight of the KL between the networks\' next-item distributions (every pair; with --cache the teacher\'s soft labels join as a fixed member)', default: 0.001, group: 'EMKD' },
}, { group: 'Distillation' });

export type DistillFlags = Resolved<typeof distillOptions>;

/**
 * The distillation flags as a run's config.json records them (every key, defaults filled in), so that
 * `student:train --config RUN/config.json` trains the same distilled run; `o` may hold other options too.
 */
export function distillRecord(o: Record<string, unknown>): Record<string, unknown> {
  const picked: Record<string, unknown> = {};
  for (const k of Object.keys(distillOptions)) if (o[k] !== undefined) picked[k] = o[k];
  return { ...resolveOptions(distillOptions, { flags: picked }) };
}
