import { RecdistillError } from '../errors.js';
import { formatSeconds, type LogFn } from '../util/progress.js';
import { OPT_IN_TERMS, TERM_LAMBDAS, TERM_NAMES, type TermName } from './terms/index.js';

/**
 * The ablation: the same small student, same seeds, trained CE-only, with each distillation term alone and
 * with all terms; test NDCG@10 / HR@10 mean ± std and train time per configuration. The distilled
 * configuration reported as "best" is chosen on VALIDATION NDCG@10 (mean over seeds), never on test.
 * Training and the teacher are injected (see src/distill/ablate-stage.ts), so this file is the protocol only.
 */
export type Metrics = Record<string, number>; // 'ndcg@10', 'hr@10', ...

export interface RunResult {
  valid: Metrics;
  test: Metrics;
  /** Training seconds (excluding evaluation where the trainer reports it). */
  seconds: number;
  /** Epoch whose weights were kept (best validation NDCG@10). */
  bestEpoch?: number;
  /** Parameters of the trained model. */
  params?: number;
  runDir?: string;
  /** Training cost: seconds per epoch (validation included) and memory, MiB (src/student/training/finish.ts RunMemory). */
  secondsPerEpoch?: number;
  memory?: { peakRssMiB: number; wasmHeapMiB?: number; estimateMiB?: number };
}

export interface AblationConfig {
  /** 'ce', a term name ('kd'), a '+'-joined set ('kd+cos'), or 'all'. */
  name: string;
  /** Lambda per term that is on. */
  lambdas: Partial<Record<TermName, number>>;
  /** Other distillation flags of this configuration (e.g. kd: 'ranking'). */
  overrides?: Record<string, unknown>;
  /** Student options of this configuration over the ablation's (e.g. attention: 'bidirectional'). */
  student?: Record<string, unknown>;
}

export interface AblationPlan {
  configs: AblationConfig[];
  seeds: number[];
  /**
   * Configurations that depend on results: called once the listed ones are done, with their summaries; what it
   * returns runs next (e.g. --suite emkd's removal rows from the better K = 3 row).
   */
  extend?(done: ConfigSummary[]): AblationConfig[];
}

export interface AblationDeps {
  /** Train the student once: `distill` holds the distillation flags (cache + lambdas) or is undefined for CE-only. */
  train(config: AblationConfig, seed: number, distill: Record<string, unknown> | undefined): Promise<RunResult>;
  log: LogFn;
  /** Called after each finished configuration with the result so far (write a partial report: a killed run keeps its numbers). */
  onConfig?(partial: AblationResult): void;
}

/**
 * Parse `--configs ce,cos,kd,all,kd+ms,kd:ranking=0.5` against the base lambdas (the value each term takes
 * when on). A term may carry a variant (`kd:ranking`, `kd:kl`: the soft-label loss) and its own lambda
 * (`=0.5`). 'ce' is always included first (the baseline the gain is measured against). `all` is every term
 * with a positive lambda except the opt-in ones (OPT_IN_TERMS: rel), which join with `all+rel`; a missing
 * lambda is 0.
 */
export function planConfigs(spec: string, lambdas: Partial<Record<TermName, number>>): AblationConfig[] {
  const lam0 = (t: TermName) => lambdas[t] ?? 0;
  const allTerms = TERM_NAMES.filter((t) => !OPT_IN_TERMS.includes(t) && lam0(t) > 0);
  const names = spec.split(',').map((s) => s.trim()).filter(Boolean);
  const out: AblationConfig[] = [{ name: 'ce', lambdas: {} }];
  for (const name of names) {
    if (name === 'ce' || out.some((c) => c.name === name)) continue;
    // `all@gradcos`, `kd+cos@pcgrad`, `all@unshare`: the same terms with gradient balancing.
    const [termsSpec, balance, ...more] = name.split('@') as [string, string | undefined, ...string[]];
    if (more.length || (balance !== undefined && !['gradcos', 'pcgrad', 'unshare'].includes(balance))) {
      throw new RecdistillError('E_USAGE', `--configs: "${name}": a configuration may end with one @gradcos, @pcgrad or @unshare (gradient balancing), nothing else.`);
    }
    const parts = termsSpec.split('+').flatMap((p) => (p === 'all' ? allTerms : [p]));
    const cfg: AblationConfig = { name, lambdas: {}, ...(balance ? { overrides: { balance } } : {}) };
    for (const part of parts) {
      const m = /^([a-z0-9]+)(?::([a-z]+))?(?:=([0-9.eE+-]+))?$/.exec(part);
      const t = m?.[1] as TermName | undefined;
      if (!m || !t || !TERM_NAMES.includes(t)) {
        throw new RecdistillError('E_USAGE', `--configs: unknown term "${part}" in "${name}"; valid: ce, ${TERM_NAMES.join(', ')}, all (${OPT_IN_TERMS.join(', ')} only as all+${OPT_IN_TERMS[0]}), terms joined with + (kd+cos), kd:ranking / kd:kl, and term=lambda.`);
      }
      if (m[2] !== undefined) {
        if (t !== 'kd' || !['kl', 'ranking'].includes(m[2])) throw new RecdistillError('E_USAGE', `--configs: "${part}": only kd has variants (kd:kl, kd:ranking).`);
        cfg.overrides = { ...cfg.overrides, kd: m[2] };
      }
      const lam = m[3] !== undefined ? Number(m[3]) : lam0(t);
      if (!(lam > 0)) throw new RecdistillError('E_USAGE', `--configs: "${name}" turns on ${t} but ${m[3] !== undefined ? `its weight is ${m[3]}` : `--${kebab(TERM_LAMBDAS[t])} is ${lam0(t)}`}; give it a positive weight.`);
      cfg.lambdas[t] = lam;
    }
    if (!parts.length) throw new RecdistillError('E_USAGE', `--configs: "${name}" has no term with a positive lambda.`);
    out.push(cfg);
  }
  return out;
}

/** Folder-safe name of a configuration (kd:ranking=0.5 -> kd_ranking_0.5). */
export function configSlug(name: string): string {
  return name.replace(/[^A-Za-z0-9.+-]/g, '_');
}

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());

export function meanStd(xs: number[]): { mean: number; std: number } {
  const n = xs.length;
  if (!n) return { mean: NaN, std: NaN };
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  // Sample standard deviation (n - 1); undefined for one seed: NaN (printed "-", null in JSON), not a misleading 0.
  const std = n > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : NaN;
  return { mean, std };
}

export interface ConfigSummary {
  name: string;
  lambdas: Partial<Record<TermName, number>>;
  seeds: number[];
  'ndcg@10.mean': number;
  'ndcg@10.std': number;
  'hr@10.mean': number;
  'hr@10.std': number;
  'valid.ndcg@10.mean': number;
  'valid.hr@10.mean': number;
  'seconds.mean': number;
  /** Mean epoch of the kept weights (best validation NDCG@10). */
  'epochs.mean': number;
  params?: number;
  /** Single-request serving latency (onnxruntime-node, p50 ms) of the configuration's first run; see ablate-latency.ts. */
  'p50.ms'?: number;
  /** Training cost, when the trainer reports it: mean seconds per epoch; the up-front memory estimate (MiB). */
  'secondsPerEpoch.mean'?: number;
  estimateMiB?: number;
  /**
   * Process high-water marks (MiB) when the configuration's last run finished: maxima over its runs. Runs share
   * the ablation's process, so a row shows the largest peak of itself and the rows before it.
   */
  'peakRssMiB.max'?: number;
  'wasmHeapMiB.max'?: number;
  runs: Array<{ seed: number; valid: Metrics; test: Metrics; seconds: number; bestEpoch?: number; runDir?: string; secondsPerEpoch?: number; memory?: RunResult['memory'] }>;
}

export function summarizeConfig(cfg: AblationConfig, runs: ConfigSummary['runs'], params?: number): ConfigSummary {
  const m = (split: 'valid' | 'test', k: string) => meanStd(runs.map((r) => r[split][k] ?? NaN));
  return {
    name: cfg.name,
    lambdas: cfg.lambdas,
    seeds: runs.map((r) => r.seed),
    'ndcg@10.mean': m('test', 'ndcg@10').mean,
    'ndcg@10.std': m('test', 'ndcg@10').std,
    'hr@10.mean': m('test', 'hr@10').mean,
    'hr@10.std': m('test', 'hr@10').std,
    'valid.ndcg@10.mean': m('valid', 'ndcg@10').mean,
    'valid.hr@10.mean': m('valid', 'hr@10').mean,
    'seconds.mean': meanStd(runs.map((r) => r.seconds)).mean,
    'epochs.mean': meanStd(runs.map((r) => r.bestEpoch ?? NaN)).mean,
    ...(params !== undefined ? { params } : {}),
    ...costOf(runs),
    runs,
  };
}

/** The cost keys of a configuration's summary, from the runs that report them. */
function costOf(runs: ConfigSummary['runs']): Partial<ConfigSummary> {
  const spe = runs.map((r) => r.secondsPerEpoch).filter((x): x is number => x !== undefined);
  const mem = runs.map((r) => r.memory).filter((m): m is NonNullable<RunResult['memory']> => m !== undefined);
  const max = (xs: Array<number | undefined>) => (xs.some((x) => x !== undefined) ? Math.max(...xs.filter((x): x is number => x !== undefined)) : undefined);
  const out: Partial<ConfigSummary> = {};
  if (spe.length) out['secondsPerEpoch.mean'] = meanStd(spe).mean;
  const est = max(mem.map((m) => m.estimateMiB));
  if (est !== undefined) out.estimateMiB = est;
  if (mem.length) out['peakRssMiB.max'] = max(mem.map((m) => m.peakRssMiB));
  const heap = max(mem.map((m) => m.wasmHeapMiB));
  if (heap !== undefined) out['wasmHeapMiB.max'] = heap;
  return out;
}

/** The distilled configuration with the best mean VALIDATION NDCG@10 (ties: the earlier one). */
export function chooseOnValidation(summaries: ConfigSummary[]): ConfigSummary | undefined {
  let best: ConfigSummary | undefined;
  for (const s of summaries) {
    if (s.name === 'ce') continue;
    if (!best || s['valid.ndcg@10.mean'] > best['valid.ndcg@10.mean']) best = s;
  }
  return best;
}

export interface AblationResult {
  configs: ConfigSummary[];
  ce: ConfigSummary;
  distilled?: ConfigSummary;
  /** Relative test NDCG@10 gain of the validation-chosen configuration over CE-only. */
  gain: number;
}

/** A figure to 4 decimals, '-' for a missing one (log lines and the report). */
export const fmt = (x: number | undefined, d = 4) => (x === undefined || Number.isNaN(x) ? '-' : x.toFixed(d));

/** Run every configuration for every seed (seeds inner: a killed run still has whole configurations). */
export async function runAblation(plan: AblationPlan, distillBase: Record<string, unknown>, deps: AblationDeps): Promise<AblationResult> {
  const configs = [...plan.configs];
  let total = configs.length * plan.seeds.length;
  const summaries: ConfigSummary[] = [];
  const t0 = performance.now();
  let done = 0;
  let extended = !plan.extend;
  for (let i = 0; i < configs.length || !extended; i++) {
    if (i === configs.length) {
      extended = true;
      const more = plan.extend!(summaries);
      configs.push(...more);
      total += more.length * plan.seeds.length;
      if (i === configs.length) break;
    }
    const cfg = configs[i]!;
    const runs: ConfigSummary['runs'] = [];
    let params: number | undefined;
    for (const seed of plan.seeds) {
      const distill = cfg.name === 'ce' ? undefined : { ...distillBase, ...cfg.overrides, ...lambdaFlags(cfg.lambdas) };
      const r = await deps.train(cfg, seed, distill);
      runs.push({ seed, valid: r.valid, test: r.test, seconds: r.seconds, bestEpoch: r.bestEpoch, runDir: r.runDir, ...(r.secondsPerEpoch !== undefined ? { secondsPerEpoch: r.secondsPerEpoch } : {}), ...(r.memory ? { memory: r.memory } : {}) });
      params = r.params ?? params;
      done++;
      const secs = (performance.now() - t0) / 1000;
      deps.log(
        `ablate: ${done}/${total} ${cfg.name} seed ${seed}: valid ndcg@10 ${fmt(r.valid['ndcg@10'])} test ndcg@10 ${fmt(r.test['ndcg@10'])} ` +
          `(${formatSeconds(r.seconds)}) ETA ${formatSeconds((secs / done) * (total - done))}`,
      );
    }
    summaries.push(summarizeConfig(cfg, runs, params));
    deps.onConfig?.(resultOf(summaries));
  }
  return resultOf(summaries);
}

function resultOf(summaries: ConfigSummary[]): AblationResult {
  const ce = summaries.find((s) => s.name === 'ce')!;
  const distilled = chooseOnValidation(summaries);
  const gain = distilled ? distilled['ndcg@10.mean'] / ce['ndcg@10.mean'] - 1 : 0;
  return { configs: summaries, ce, distilled, gain };
}

/** Every term's lambda, zero for terms that are off (so a config never inherits another's weight). */
export function lambdaFlags(l: Partial<Record<TermName, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of TERM_NAMES) out[TERM_LAMBDAS[t]] = l[t] ?? 0;
  return out;
}
