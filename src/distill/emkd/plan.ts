import { meanStd, type AblationConfig, type ConfigSummary } from '../ablate.js';
import { distillOptions } from '../options.js';
import { EMKD_TERMS } from './hooks.js';

/**
 * The EMKD rows of `npm run ablate -- --suite emkd` as configurations runAblation (src/distill/ablate.ts) runs:
 *   ce            the single network, CE only (the baseline; runAblation needs the name 'ce');
 *   emkd2, emkd3  K = 2, 3 with every EMKD term at its lambda;
 *   emkd3-L1..L5  K = 3 with one term removed (lambda 0): L1 mask, L2 attr, L3 intra, L4 inter, L5 kl;
 *   emkd3+teacher (opt-in) K = 3 with the teacher cache as L5's fixed member.
 * Each EMKD row's `overrides` is the full set of EMKD flags, and `cache: undefined` except in the +teacher row,
 * so a row never inherits the ablation's cache or another row's setting (runAblation spreads overrides over
 * its distillation base; a flag set to undefined is dropped by distillFlagsFrom).
 */
export type EmkdLambdas = { [K in (typeof EMKD_TERMS)[keyof typeof EMKD_TERMS]]: number };

/** student:train's defaults for the EMKD lambdas (the reference implementation's). */
export const EMKD_DEFAULT_LAMBDAS: EmkdLambdas = Object.fromEntries(Object.values(EMKD_TERMS).map((k) => [k, distillOptions[k].default])) as EmkdLambdas;

export const EMKD_REMOVED = { L1: 'lambdaEmkdMask', L2: 'lambdaEmkdAttr', L3: 'lambdaEmkdIntra', L4: 'lambdaEmkdInter', L5: 'lambdaEmkdKl' } as const;

export interface EmkdPlanOptions {
  lambdas?: Partial<EmkdLambdas>;
  /** Other EMKD flags for every EMKD row (emkdMaskRatio, emkdTemperature, emkdViews). */
  flags?: Record<string, number>;
  /** The K of the removal rows (default 3). */
  mainK?: number;
  /** Add the `emkd<K>+teacher` row (keeps the ablation's --cache). */
  teacherRow?: boolean;
}

export function planEmkdConfigs(o: EmkdPlanOptions = {}): AblationConfig[] {
  const lambdas: EmkdLambdas = { ...EMKD_DEFAULT_LAMBDAS, ...o.lambdas };
  const K = o.mainK ?? 3;
  const row = (name: string, k: number, change: Partial<EmkdLambdas> = {}, keepCache = false): AblationConfig => ({
    name,
    lambdas: {},
    overrides: { ...(keepCache ? {} : { cache: undefined }), ...o.flags, emkd: k, ...lambdas, ...change },
  });
  const rows: AblationConfig[] = [{ name: 'ce', lambdas: {} }, row('emkd2', 2), row('emkd3', 3)];
  if (K !== 2 && K !== 3) rows.push(row(`emkd${K}`, K));
  for (const [label, flag] of Object.entries(EMKD_REMOVED)) rows.push(row(`emkd${K}-${label}`, K, { [flag]: 0 }));
  if (o.teacherRow) rows.push(row(`emkd${K}+teacher`, K, {}, true));
  return rows;
}

/** Training cost of a row (ConfigSummary's cost keys, when the trainer reported them). */
export type EmkdCost = Pick<ConfigSummary, 'secondsPerEpoch.mean' | 'estimateMiB' | 'peakRssMiB.max' | 'wasmHeapMiB.max'>;

export interface EmkdSuiteSummary {
  single: { 'ndcg@10.mean': number; 'ndcg@10.std': number } & EmkdCost;
  member: { 'ndcg@10.mean': number; 'ndcg@10.std': number; config: string } & EmkdCost;
  ensemble: { 'ndcg@10.mean': number; 'ndcg@10.std': number; config: string };
  /** member over single, relative: member / single - 1. */
  gain: number;
  /** Training time per epoch of the main EMKD row over the single network's (both from the trainer's metrics). */
  epochTimeRatio?: number;
  /**
   * The K = 3 row (every term, or one removed) with the best mean validation NDCG@10, served by one member: its
   * test figure, its ensemble's and its gain over the single network (the rows are variants of one method, so
   * the choice among them is made on validation like the distillation ablation's).
   */
  chosen?: { config: string; 'valid.ndcg@10.mean': number; 'ndcg@10.mean': number; 'ndcg@10.std': number; ensemble?: { 'ndcg@10.mean': number; 'ndcg@10.std': number }; gain: number };
}

const costOf = (c: ConfigSummary): EmkdCost => {
  const out: EmkdCost = {};
  for (const k of ['secondsPerEpoch.mean', 'estimateMiB', 'peakRssMiB.max', 'wasmHeapMiB.max'] as const) if (c[k] !== undefined) out[k] = c[k];
  return out;
};

/**
 * The `--suite emkd` summary keys: `single` = the ce row, `member` = the main EMKD row served by network 1
 * (its runs' test NDCG@10, the trainer's metrics), `ensemble` = the same runs served by the K-network average
 * (their metrics.json distill.emkd.serving.ensemble.test['ndcg@10'] per seed, in `ensembleTest[config]`), `gain` =
 * member / single - 1; single and member carry their training cost (s/epoch, memory) and `epochTimeRatio` compares
 * the two.
 */
export function emkdSummary(configs: ConfigSummary[], ensembleTest: Record<string, number[]>, main = 'emkd3'): EmkdSuiteSummary {
  const single = configs.find((c) => c.name === 'ce');
  const member = configs.find((c) => c.name === main);
  if (!single || !member) throw new Error(`emkdSummary: need the ce and ${main} rows (have ${configs.map((c) => c.name).join(', ')}).`);
  const ens = meanStd(ensembleTest[main] ?? []);
  const [a, b] = [single['secondsPerEpoch.mean'], member['secondsPerEpoch.mean']];
  const k3 = configs.filter((c) => c.name === main || c.name.startsWith(`${main}-`));
  const best = k3.reduce((x, c) => (c['valid.ndcg@10.mean'] > x['valid.ndcg@10.mean'] ? c : x), member);
  const bestEns = ensembleTest[best.name]?.length ? meanStd(ensembleTest[best.name]!) : undefined;
  const chosen = {
    config: best.name, 'valid.ndcg@10.mean': best['valid.ndcg@10.mean'], 'ndcg@10.mean': best['ndcg@10.mean'], 'ndcg@10.std': best['ndcg@10.std'],
    ...(bestEns ? { ensemble: { 'ndcg@10.mean': bestEns.mean, 'ndcg@10.std': bestEns.std } } : {}),
    gain: best['ndcg@10.mean'] / single['ndcg@10.mean'] - 1,
  };
  return {
    single: { 'ndcg@10.mean': single['ndcg@10.mean'], 'ndcg@10.std': single['ndcg@10.std'], ...costOf(single) },
    member: { 'ndcg@10.mean': member['ndcg@10.mean'], 'ndcg@10.std': member['ndcg@10.std'], config: main, ...costOf(member) },
    ensemble: { 'ndcg@10.mean': ens.mean, 'ndcg@10.std': ens.std, config: main },
    gain: member['ndcg@10.mean'] / single['ndcg@10.mean'] - 1,
    ...(a && b ? { epochTimeRatio: b / a } : {}),
    chosen,
  };
}
