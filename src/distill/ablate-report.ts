import { join } from 'node:path';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import { formatSeconds } from '../util/progress.js';
import { ablationChart, type AblationPoint } from './ablate-chart.js';
import { fmt, type AblationResult, type Metrics } from './ablate.js';

/** The ablation's report: ablation.md (one row per configuration, the chosen one marked), ablation.json, ablation.svg. */
/** Markdown report: one row per configuration, the chosen one marked. */
export interface ReportHeader {
  title: string;
  lines: string[];
  teacher?: Metrics;
  teacherParams?: number;
  /** The teacher's single-request p50 latency (ms), measured beside the students'. */
  teacherP50Ms?: number;
}

const ms = (x?: number) => (x === undefined || Number.isNaN(x) ? '-' : `${x.toFixed(3)} ms`);

export function ablationMarkdown(r: AblationResult, header: ReportHeader): string {
  const tN = header.teacher?.['ndcg@10'];
  const pct = (p?: number) => (p !== undefined && header.teacherParams ? ` (${((100 * p) / header.teacherParams).toFixed(0)}%)` : '');
  const rows = r.configs.map((s) => {
    const mark = s.name === r.distilled?.name ? ' (chosen on valid)' : '';
    const lam = Object.entries(s.lambdas).map(([k, v]) => `${k}=${v}`).join(' ') || '-';
    const rel = s.name === 'ce' ? '' : `${((s['ndcg@10.mean'] / r.ce['ndcg@10.mean'] - 1) * 100).toFixed(1)}%`;
    const ofT = tN ? `${((100 * s['ndcg@10.mean']) / tN).toFixed(0)}%` : '-';
    const mem = s['peakRssMiB.max'] !== undefined ? `${s['peakRssMiB.max']} MiB${s['wasmHeapMiB.max'] !== undefined ? ` / ${s['wasmHeapMiB.max']} MiB` : ''}` : '-';
    return `| ${s.name}${mark} | ${lam} | ${s.params ?? '-'}${pct(s.params)} | ${fmt(s['valid.ndcg@10.mean'])} | ${fmt(s['ndcg@10.mean'])} ± ${fmt(s['ndcg@10.std'])} | ${fmt(s['hr@10.mean'])} ± ${fmt(s['hr@10.std'])} | ${rel} | ${ofT} | ${fmt(s['epochs.mean'], 1)} | ${formatSeconds(s['seconds.mean'])} | ${fmt(s['secondsPerEpoch.mean'], 1)} | ${s.estimateMiB !== undefined ? `${s.estimateMiB} MiB` : '-'} | ${mem} | ${ms(s['p50.ms'])} |`;
  });
  const teacher = header.teacher ? `\nTeacher (test): NDCG@10 ${fmt(header.teacher['ndcg@10'])}, HR@10 ${fmt(header.teacher['hr@10'])}${header.teacherParams ? `, ${header.teacherParams} parameters` : ''}${header.teacherP50Ms !== undefined ? `, single-request p50 ${ms(header.teacherP50Ms)}` : ''}.\n` : '';
  return [
    `# ${header.title}`,
    '',
    ...header.lines,
    teacher,
    '| config | lambdas | params (% of teacher) | valid NDCG@10 | test NDCG@10 | test HR@10 | vs CE (test NDCG@10) | of teacher | epochs to best | train time | s/epoch | memory estimate | peak RSS / wasm heap | p50 latency (1 request) |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    'Memory: the up-front estimate of the largest training step (src/student/training/memory.ts) and the process\'s high-water marks when the row\'s last run finished; the runs share one process, so a row\'s peak is at least the peaks of the rows above it.',
    '',
    r.distilled
      ? `Chosen on validation: **${r.distilled.name}**; relative test NDCG@10 gain over CE-only: **${(r.gain * 100).toFixed(1)}%**.`
      : 'No distilled configuration was run.',
    '',
  ].join('\n');
}

export function writeAblationReport(dir: string, r: AblationResult, summary: object, header: ReportHeader): { markdown: string; json: string; svg: string } {
  const markdown = join(dir, 'ablation.md');
  const json = join(dir, 'ablation.json');
  const svg = join(dir, 'ablation.svg');
  writeJsonAtomic(json, { ...summary, configs: r.configs });
  writeFileAtomic(markdown, ablationMarkdown(r, header));
  writeFileAtomic(svg, ablationChart(chartPoints(r, header), `${header.title}: test NDCG@10 per configuration`));
  return { markdown, json, svg };
}

/** The chart's points: the teacher (when its size and accuracy are known) and every configuration with a size. */
function chartPoints(r: AblationResult, header: ReportHeader): AblationPoint[] {
  const pts: AblationPoint[] = [];
  const tN = header.teacher?.['ndcg@10'];
  if (tN !== undefined && header.teacherParams) pts.push({ label: 'teacher', params: header.teacherParams, mean: tN, p50Ms: header.teacherP50Ms, teacher: true });
  for (const c of r.configs) {
    if (c.params === undefined) continue;
    pts.push({ label: c.name, params: c.params, mean: c['ndcg@10.mean'], std: c['ndcg@10.std'], p50Ms: c['p50.ms'], chosen: c.name === r.distilled?.name });
  }
  return pts;
}
