import { meanStd, type AblationConfig, type ConfigSummary } from '../ablate.js';
import { distillOptions } from '../options.js';
import { EMKD_TERMS } from './hooks.js';

/**
 * The rows of `npm run ablate -- --suite emkd` as configurations runAblation (src/distill/ablate.ts) runs:
 *   ce                 one causal network (SASRec), next-item CE (the baseline; runAblation needs the name 'ce');
 *   cloze1             one bidirectional network trained by cloze alone (BERT4Rec-style; --emkd 1, every other term 0);
 *   emkd3-reference    K = 3 bidirectional cloze networks with the reference's loss set (src/distill/emkd/cloze.ts);
 *   emkd3-causal       K = 3 causal networks with the causal variant's terms (src/distill/emkd/hooks.ts);
 *   then, from the better of the two K = 3 rows (mean validation NDCG@10 of the ensemble, which both serve and select
 *   on), one row per term removed: <row>-no-attr, -no-intra, -no-inter, -no-kl (planEmkdRemovals);
 *   emkd3-causal+teacher (opt-in, with --cache) the causal K = 3 row with the teacher cache as L5's fixed member.
 * Every EMKD row serves and selects its epoch on the ensemble (--serve ensemble). Each row's `overrides` is the full
 * set of EMKD flags and `cache: undefined` except in the +teacher row, so a row never inherits the ablation's cache
 * or another row's setting; `student` carries the network family (--attention).
 */
export type EmkdLambdas = { [K in (typeof EMKD_TERMS)[keyof typeof EMKD_TERMS]]: number };

/** student:train's defaults for the EMKD lambdas. */
export const EMKD_DEFAULT_LAMBDAS: EmkdLambdas = Object.fromEntries(Object.values(EMKD_TERMS).map((k) => [k, distillOptions[k].default])) as EmkdLambdas;

/** The terms a removal row turns off (the masked-item term is off by default: cloze networks do not use it). */
export const EMKD_REMOVED = { attr: 'lambdaEmkdAttr', intra: 'lambdaEmkdIntra', inter: 'lambdaEmkdInter', kl: 'lambdaEmkdKl' } as const;

/** The two K = 3 rows the removals start from. */
export const EMKD_MAIN_ROWS = ['emkd3-reference', 'emkd3-causal'] as const;
/** The single network of each K = 3 row's own family (what its ensemble gain is measured against). */
export const SINGLE_OF: Record<string, string> = { 'emkd3-reference': 'cloze1', 'emkd3-causal': 'ce' };

export interface EmkdPlanOptions {
  lambdas?: Partial<EmkdLambdas>;
  /** Other EMKD flags for every EMKD row (emkdMaskRatio, emkdTemperature, emkdViews). */
  flags?: Record<string, number>;
  /** Add the `emkd3-causal+teacher` row (keeps the ablation's --cache). */
  teacherRow?: boolean;
}

const BIDIRECTIONAL = { attention: 'bidirectional' };

function row(name: string, o: EmkdPlanOptions, k: number, family: 'reference' | 'causal', change: Partial<EmkdLambdas> = {}, keepCache = false): AblationConfig {
  const lambdas: EmkdLambdas = { ...EMKD_DEFAULT_LAMBDAS, ...o.lambdas };
  return {
    name,
    lambdas: {},
    overrides: { ...(keepCache ? {} : { cache: undefined }), ...o.flags, emkd: k, serve: k > 1 ? 'ensemble' : 'member', ...lambdas, ...change },
    ...(family === 'reference' ? { student: BIDIRECTIONAL } : {}),
  };
}

/** The rows that do not depend on a result: ce, cloze1, the two K = 3 rows (and the opt-in teacher row). */
export function planEmkdConfigs(o: EmkdPlanOptions = {}): AblationConfig[] {
  const off: Partial<EmkdLambdas> = { lambdaEmkdAttr: 0, lambdaEmkdIntra: 0, lambdaEmkdInter: 0, lambdaEmkdKl: 0 };
  const rows: AblationConfig[] = [
    { name: 'ce', lambdas: {} },
    row('cloze1', o, 1, 'reference', off),
    row('emkd3-reference', o, 3, 'reference'),
    row('emkd3-causal', o, 3, 'causal'),
  ];
  if (o.teacherRow) rows.push(row('emkd3-causal+teacher', o, 3, 'causal', {}, true));
  return rows;
}

/** Each term removed from `main` (one of EMKD_MAIN_ROWS), once its result chose it. */
export function planEmkdRemovals(main: string, o: EmkdPlanOptions = {}): AblationConfig[] {
  const family = main === 'emkd3-reference' ? 'reference' : 'causal';
  return Object.entries(EMKD_REMOVED).map(([label, flag]) => row(`${main}-no-${label}`, o, 3, family, { [flag]: 0 }));
}

/** Per configuration and seed: the ensemble's validation and test NDCG@10 (metrics.json distill.emkd.serving). */
export type EnsembleFigures = Record<string, { valid: number[]; test: number[] }>;

/** The better K = 3 row: the higher mean validation NDCG@10 of its ensemble (ties: the reference). */
export function betterMain(configs: ConfigSummary[], ensemble: EnsembleFigures): string | undefined {
  const have = EMKD_MAIN_ROWS.filter((n) => configs.some((c) => c.name === n) && ensemble[n]?.valid.length);
  if (!have.length) return undefined;
  return have.reduce((a, b) => (meanStd(ensemble[b]!.valid).mean > meanStd(ensemble[a]!.valid).mean ? b : a));
}

/** Training cost of a row (ConfigSummary's cost keys, when the trainer reported them). */
export type EmkdCost = Pick<ConfigSummary, 'secondsPerEpoch.mean' | 'estimateMiB' | 'peakRssMiB.max' | 'wasmHeapMiB.max'>;
type Figure = { 'ndcg@10.mean': number; 'ndcg@10.std': number };

export interface EmkdSuiteSummary {
  /** The main row's family trained alone (ce for causal, cloze1 for the reference), test. */
  single: Figure & { config: string } & EmkdCost;
  /** The main row (the better K = 3 row on validation) served as its ensemble (the K networks' average), test. */
  ensemble: Figure & { config: string };
  /** ensemble over single, relative: ensemble / single - 1. */
  ensembleGain: number;
  /** The main row served by network 1 alone (at the epoch the ensemble chose), test. */
  member: Figure & { config: string } & EmkdCost;
  memberGain: number;
  /** The best single network of either family (by validation), test: what the ensemble should beat. */
  bestSingle: Figure & { config: string };
  /** Seconds per epoch of the main row over its single network's (both from the trainer's metrics). */
  epochTimeRatio?: number;
  /** The K = 3 row (both variants and every removal) with the best mean validation NDCG@10 of its ensemble. */
  chosen?: { config: string; 'valid.ndcg@10.mean': number; ensemble: Figure; member: Figure; ensembleGain: number };
}

const costOf = (c: ConfigSummary): EmkdCost => {
  const out: EmkdCost = {};
  for (const k of ['secondsPerEpoch.mean', 'estimateMiB', 'peakRssMiB.max', 'wasmHeapMiB.max'] as const) if (c[k] !== undefined) out[k] = c[k];
  return out;
};
const fig = (xs: number[]): Figure => {
  const m = meanStd(xs);
  return { 'ndcg@10.mean': m.mean, 'ndcg@10.std': m.std };
};
const testFig = (c: ConfigSummary): Figure => ({ 'ndcg@10.mean': c['ndcg@10.mean'], 'ndcg@10.std': c['ndcg@10.std'] });

/** The `--suite emkd` summary keys (undefined until the single rows and a K = 3 row with its ensemble are done). */
export function emkdSummary(configs: ConfigSummary[], ensemble: EnsembleFigures): EmkdSuiteSummary | undefined {
  const main = betterMain(configs, ensemble);
  const by = (n: string) => configs.find((c) => c.name === n);
  const mainRow = main ? by(main) : undefined;
  const single = main ? by(SINGLE_OF[main]!) : undefined;
  if (!main || !mainRow || !single) return undefined;
  const ens = fig(ensemble[main]!.test);
  const singles = ['ce', 'cloze1'].map(by).filter((c): c is ConfigSummary => Boolean(c));
  const best = singles.reduce((a, b) => (b['valid.ndcg@10.mean'] > a['valid.ndcg@10.mean'] ? b : a));
  const k3 = configs.filter((c) => ensemble[c.name]?.valid.length && c.name.startsWith('emkd3-') && !c.name.endsWith('+teacher'));
  const top = k3.reduce((a, b) => (meanStd(ensemble[b.name]!.valid).mean > meanStd(ensemble[a.name]!.valid).mean ? b : a), mainRow);
  const topSingle = by(SINGLE_OF[top.name.startsWith('emkd3-reference') ? 'emkd3-reference' : 'emkd3-causal']!) ?? single;
  const topEns = fig(ensemble[top.name]!.test);
  const [a, b] = [single['secondsPerEpoch.mean'], mainRow['secondsPerEpoch.mean']];
  return {
    single: { ...testFig(single), config: single.name, ...costOf(single) },
    ensemble: { ...ens, config: main },
    ensembleGain: ens['ndcg@10.mean'] / single['ndcg@10.mean'] - 1,
    member: { ...testFig(mainRow), config: main, ...costOf(mainRow) },
    memberGain: mainRow['ndcg@10.mean'] / single['ndcg@10.mean'] - 1,
    bestSingle: { ...testFig(best), config: best.name },
    ...(a && b ? { epochTimeRatio: b / a } : {}),
    chosen: {
      config: top.name,
      'valid.ndcg@10.mean': meanStd(ensemble[top.name]!.valid).mean,
      ensemble: topEns,
      member: testFig(top),
      ensembleGain: topEns['ndcg@10.mean'] / topSingle['ndcg@10.mean'] - 1,
    },
  };
}
