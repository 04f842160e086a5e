import { join } from 'node:path';
import { markdownTable } from '../util/format.js';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import { latencyAccuracyChart } from '../util/chart.js';

/** The figures bench reports per model (also the `--json` summary's `teacher` / `student` objects). */
export interface ModelFigures {
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  /** Requests per second answering `batch` requests at a time. */
  throughput: number;
  params: number;
  /** Bytes on disk of the files needed to serve (weights, tokenizer, head). */
  bytes: number;
  /** Peak resident set size of the model's own process, MB (2^20 bytes). */
  rssMB: number;
  'ndcg@10': number;
  'hr@10': number;
}

export interface BenchReport {
  dataset: { name: string; fingerprint: string; users: number; items: number };
  teacher: ModelFigures;
  student: ModelFigures;
  /** teacher p50 / student p50. */
  speedup: number;
  details: Record<string, unknown>;
  settings: Record<string, unknown>;
  machine: { cpus: number; cpuModel: string; node: string; loadAverageStart: number; loadAverageEnd: number };
  date: string;
  files: { json: string; md: string; svg: string };
}

const REPORT_FILES = { json: 'report.json', md: 'report.md', svg: 'latency-accuracy.svg' } as const;

const ms = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(2) : v.toFixed(3));
const mb = (bytes: number) => (bytes / 1e6).toFixed(bytes >= 1e8 ? 0 : 2);
const big = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : String(n));

/** Rows of the comparison table (shared by report.md, the CLI and the demo). */
export function comparisonRows(r: Pick<BenchReport, 'teacher' | 'student'>): { header: string[]; rows: string[][] } {
  const header = ['model', 'p50 ms', 'p95 ms', 'p99 ms', 'req/s (batch)', 'params', 'MB on disk', 'peak RSS MB', 'NDCG@10', 'HR@10'];
  const row = (name: string, f: ModelFigures) => [name, ms(f.p50Ms), ms(f.p95Ms), ms(f.p99Ms), f.throughput.toFixed(f.throughput >= 100 ? 0 : 1), big(f.params), mb(f.bytes), f.rssMB.toFixed(0), f['ndcg@10'].toFixed(4), f['hr@10'].toFixed(4)];
  return { header, rows: [row('teacher', r.teacher), row('student', r.student)] };
}

/** A fixed-width text table for terminals. */
export function textTable(header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

type RuntimeFigures = { runtime: string; latency: { p50Ms: number; p95Ms: number; p99Ms: number }; throughput: number; rssMB: number };

/** The student on each runtime measured (same model, same requests, each in its own process). */
function runtimeSection(d: { studentRuntimes?: Record<string, RuntimeFigures> }): string[] {
  const rts = Object.values(d.studentRuntimes ?? {});
  if (rts.length < 2) return [];
  return [
    '## Student by runtime',
    '',
    markdownTable(['runtime', 'p50 ms', 'p95 ms', 'p99 ms', 'req/s (batch)', 'peak RSS MB'], rts.map((x) => [x.runtime, ms(x.latency.p50Ms), ms(x.latency.p95Ms), ms(x.latency.p99Ms), x.throughput.toFixed(0), x.rssMB.toFixed(0)])),
    '',
  ];
}

export function reportMarkdown(r: BenchReport): string {
  const { header, rows } = comparisonRows(r);
  type D = { latencyByLength?: Array<{ lengths: string; n: number; p50Ms: number }>; runtime?: string; accuracySource?: string; startRssMB?: number; singleRssMB?: number; cpuRefMs?: number; source?: string; model?: string; dtype?: string; kind?: string };
  const d = r.details as { teacher?: D; student?: D };
  const s = r.settings;
  return [
    `# recdistill bench: ${r.dataset.name}`,
    '',
    `Teacher ${d.teacher?.kind ?? ''} \`${d.teacher?.model ?? ''}\` (${d.teacher?.dtype ?? ''}, ${d.teacher?.runtime ?? ''}) vs student \`${d.student?.source ?? ''}\` (${d.student?.runtime ?? ''}) on ${r.dataset.users} users, ${r.dataset.items} items (fingerprint ${r.dataset.fingerprint.slice(0, 12)}).`,
    '',
    markdownTable(header, rows),
    '',
    `**Speed-up (teacher p50 / student p50): ${r.speedup.toFixed(r.speedup >= 100 ? 0 : 1)}x**`,
    '',
    '![latency vs accuracy](latency-accuracy.svg)',
    '',
    ...runtimeSection(r.details as { studentRuntimes?: Record<string, RuntimeFigures> }),
    '## Median latency by history length (items)',
    '',
    markdownTable(['model', ...(d.student?.latencyByLength ?? []).map((b) => b.lengths)], (['teacher', 'student'] as const).map((w) => [w, ...(d.student?.latencyByLength ?? []).map((b) => { const x = d[w]?.latencyByLength?.find((y) => y.lengths === b.lengths); return x ? `${ms(x.p50Ms)} (n=${x.n})` : '-'; })])),
    '',
    '## How it was measured',
    `- A request is one test user's history (training items + validation item) and its answer the top-${String(s.k)} item ids, history excluded. ${String(s.requests)} student requests and ${String(s.teacherRequests)} teacher requests from users spread evenly over the test users, each after ${String(s.warmup)} (student) / up to 5 (teacher) untimed warm-up requests; p50/p95/p99 of single requests answered one at a time.`,
    `- Throughput: requests answered ${String(s.batch)} at a time (student: one scoreBatch forward pass per batch, ${String(s.batchRounds)} batches; teacher: ${String(s.batch)} concurrent requests, padded into ONNX runs of up to ${String(s.teacherMicroBatch)} by the runtime's micro-batcher, one batch).`,
    `- Each model runs in its own child process; peak RSS is that process's \`process.resourceUsage().maxRSS\` (it includes Node and tsx: ${d.student?.startRssMB?.toFixed(0) ?? '?'} MB before the student loaded, ${d.teacher?.startRssMB?.toFixed(0) ?? '?'} MB before the teacher loaded). The teacher's peak before its batched requests was ${d.teacher?.singleRssMB?.toFixed(0) ?? '?'} MB (padded batches of long prompts dominate its peak). Bytes on disk count the files needed to serve (weights, tokenizer and soft-label head for the LLM).`,
    `- Accuracy, test split, full ranking over every item with the user's history excluded, pessimistic ties: student: ${d.student?.accuracySource ?? ''}; teacher: ${d.teacher?.accuracySource ?? ''}. Both use the same function, so the numbers are comparable.`,
    `- Machine: ${r.machine.cpus} x ${r.machine.cpuModel}, Node ${r.machine.node}; load average ${r.machine.loadAverageStart.toFixed(2)} at the start and ${r.machine.loadAverageEnd.toFixed(2)} at the end (other work on the machine makes every latency pessimistic). CPU reference (median ms of a fixed plain-JS 1.2M multiply-add matmul, the same work on every run: compare it across reports) measured in each child: teacher ${d.teacher?.cpuRefMs?.toFixed(2) ?? '?'} ms, student ${d.student?.cpuRefMs?.toFixed(2) ?? '?'} ms. ${r.date}.`,
    '',
  ].join('\n');
}

export function reportChart(r: BenchReport): string {
  return latencyAccuracyChart(
    [
      { label: 'teacher', latencyMs: r.teacher.p50Ms, accuracy: r.teacher['ndcg@10'], color: '#d62728' },
      { label: 'student', latencyMs: r.student.p50Ms, accuracy: r.student['ndcg@10'], color: '#1f77b4' },
    ],
    { title: `${r.dataset.name}: latency vs accuracy (speed-up ${r.speedup.toFixed(r.speedup >= 100 ? 0 : 1)}x)`, xLabel: 'median single-request latency (ms, log scale)', yLabel: 'test NDCG@10 (full ranking)' },
  );
}

/** Write report.json, report.md and the chart into `dir`, atomically; returns their paths. */
export function writeBenchReport(dir: string, r: BenchReport): BenchReport['files'] {
  const files = { json: join(dir, REPORT_FILES.json), md: join(dir, REPORT_FILES.md), svg: join(dir, REPORT_FILES.svg) };
  const full = { ...r, files };
  writeFileAtomic(files.svg, reportChart(full));
  writeFileAtomic(files.md, reportMarkdown(full));
  writeJsonAtomic(files.json, full);
  return files;
}
