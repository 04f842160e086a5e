import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { BACKEND_CHOICES, type BackendName } from '../../backend/index.js';
import { checkRanges, defineOptions, type Resolved } from '../../config/options.js';
import { RecdistillError } from '../../errors.js';
import { evaluableUsers, evaluateRanking, historyFor, popularityScorer, type RankingMetrics, type ScoreBatch } from '../../eval/evaluate.js';
import { metricsTable } from '../../eval/report.js';
import { loadStudent } from './serve.js';
import { usersByLength } from './scorer.js';
import { flagsRecord, loadRunDataset, readRunConfig, runDatasetRecord } from '../model/run-folder.js';
import { datasetDifference } from '../../data/differ.js';
import { writeFileAtomic, writeJsonAtomic } from '../../util/atomic.js';
import type { LogFn } from '../../util/progress.js';

export const evalOptions = defineOptions({
  student: { type: 'string', help: 'student run folder (holds model.safetensors and config.json)', required: true },
  source: { type: 'string', help: 'raw data location, if it moved since training (default: the one in config.json)' },
  ks: { type: 'string', help: 'cut-offs K, comma-separated', default: '5,10,20' },
  excludeHistory: { type: 'boolean', help: 'exclude the user\'s earlier items from the ranking', default: true },
  batchSize: { type: 'int', help: 'users scored per call (bounds memory: batchSize x numItems floats)', default: 256, min: 1 },
  seed: { type: 'int', help: 'seed of the sampled-100 negatives', default: 42 },
  out: { type: 'string', help: 'folder for eval.json and eval.md (default: the run folder; a temp folder if that is not writable)' },
  backend: { type: 'string', help: 'tfjs backend', default: 'auto', choices: BACKEND_CHOICES },
});

export type EvalConfig = Resolved<typeof evalOptions>;

/**
 * The eval stage: full-ranking HR/NDCG@K and MRR of a trained student on its own dataset (valid and test), the
 * sampled-100 protocol and a popularity baseline; eval.json and eval.md next to the run (or in `out`).
 */
export async function runEvalStage(opts: EvalConfig, env: { log: LogFn }) {
  readRunConfig(opts.student); // a folder that is not a run is refused before the model loads
  const ks = opts.ks.split(',').map((k) => Number(k.trim()));
  if (ks.some((k) => !Number.isInteger(k) || k < 1 || k > 1_000_000)) throw new RecdistillError('E_USAGE', `--ks expects positive integers separated by commas, got "${opts.ks}".`);
  checkRanges(evalOptions, opts); // the flags were checked as they resolved; a library caller's values here
  const student = await loadStudent(opts.student, { backend: opts.backend as BackendName });
  try {
    const ds = await loadRunDataset(opts.student, opts.source);
    if (ds.fingerprint !== student.info.fingerprint) {
      const why = datasetDifference(runDatasetRecord(opts.student) ?? { name: student.info.dataset }, flagsRecord(ds), 'the model');
      throw new RecdistillError('E_MISMATCH', `dataset fingerprint ${ds.fingerprint.slice(0, 12)} differs from the model's ${student.info.fingerprint.slice(0, 12)}: ${why}.`);
    }
    if (student.info.config.numItems !== ds.items.length - 1) {
      throw new RecdistillError('E_MISMATCH', `${join(opts.student, 'model.safetensors')} scores ${student.info.config.numItems} items, the dataset ${ds.name} has ${ds.items.length - 1}.`);
    }
    const score: ScoreBatch = async (users, split) => student.scoreBatch(users.map((u) => historyFor(ds, u, split)));
    const users = usersByLength(ds, evaluableUsers(ds));
    if (users.length === 0) throw new RecdistillError('E_EMPTY', `${ds.name}: no user has a validation/test item (every user has at most 2 interactions), so there is nothing to evaluate.`);
    const common = { ks, excludeHistory: opts.excludeHistory, batchSize: opts.batchSize, users };
    const t0 = performance.now();
    const valid = await evaluateRanking(ds, score, { ...common, split: 'valid' });
    const test = await evaluateRanking(ds, score, { ...common, split: 'test' });
    const evalSeconds = (performance.now() - t0) / 1000;
    const sampled100 = await evaluateRanking(ds, score, { ...common, split: 'test', protocol: 'sampled100', seed: opts.seed });
    const pop = popularityScorer(ds);
    const popularity = await evaluateRanking(ds, pop, { ...common, split: 'test' });
    const popularitySampled100 = await evaluateRanking(ds, pop, { ...common, split: 'test', protocol: 'sampled100', seed: opts.seed });
    const summary = {
      run: opts.student,
      backend: student.info.backend,
      dataset: ds.name,
      protocol: `leave-one-out, full ranking over ${ds.items.length - 1} items${opts.excludeHistory ? ', history excluded' : ''}, pessimistic ties`,
      valid, test, sampled100, popularity, popularitySampled100,
      evalSeconds: Number(evalSeconds.toFixed(2)),
    };
    const rows: Array<{ name: string; m: RankingMetrics }> = [
      { name: 'student valid (full)', m: valid }, { name: 'student test (full)', m: test }, { name: 'popularity test (full)', m: popularity },
      { name: 'student test (sampled 100)', m: sampled100 }, { name: 'popularity test (sampled 100)', m: popularitySampled100 },
    ];
    const md = `# Evaluation of ${opts.student}\n\n${summary.protocol}; backend ${summary.backend}.\n\n${metricsTable(rows)}\n`;
    env.log(metricsTable(rows));
    const written = writeEvalFiles(opts.student, opts.out, summary, md, env.log);
    return { ...summary, written };
  } finally {
    student.dispose();
  }
}

/**
 * eval.json + eval.md go to --out when given (an error there is the user's to see), else into the run folder;
 * when that is not writable (read-only mount, someone else's run) they go to a temp folder instead, and the
 * log says where: results are never lost.
 */
function writeEvalFiles(run: string, out: string | undefined, summary: unknown, md: string, log: (l: string) => void): string {
  const write = (dir: string) => {
    writeJsonAtomic(join(dir, 'eval.json'), summary);
    writeFileAtomic(join(dir, 'eval.md'), md);
  };
  if (out) {
    try {
      write(out);
    } catch (e) {
      throw new RecdistillError('E_USAGE', `cannot write eval.json/eval.md to --out ${out}: ${(e as Error).message}`);
    }
    return out;
  }
  try {
    write(run);
    return run;
  } catch (e) {
    const fallback = join(tmpdir(), 'recdistill-eval', `${basename(resolve(run))}-${process.pid}`);
    try {
      write(fallback);
    } catch (e2) {
      log(`eval: could not write eval.json to ${run} (${(e as Error).message}) nor to ${fallback} (${(e2 as Error).message}); the results are only in this output. Use --out <folder>.`);
      return '';
    }
    log(`eval: the run folder ${run} is not writable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); wrote ${join(fallback, 'eval.json')} and eval.md instead (use --out <folder> to choose).`);
    return fallback;
  }
}
