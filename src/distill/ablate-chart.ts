/**
 * The ablation's SVG: test NDCG@10 (mean ± std over seeds) of the teacher and every student configuration, one
 * column each (teacher first, then the students by accuracy), numbered as in the legend. The students share one
 * architecture, so a parameter axis would only spread equal sizes apart: sizes and latencies are in the legend.
 */
import { chartFrame, esc, linearTicks } from '../util/chart.js';

export interface AblationPoint {
  label: string;
  params: number;
  mean: number;
  /** Sample std over seeds (NaN or undefined: no bar). */
  std?: number;
  /** Single-request p50 latency, shown in the legend when known. */
  p50Ms?: number;
  teacher?: boolean;
  chosen?: boolean;
}

const PALETTE = ['#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf', '#aec7e8', '#98df8a', '#ffbb78'];

/** Column order: the teacher(s) first, then students by mean test NDCG@10, best first. */
export function chartOrder(points: AblationPoint[]): AblationPoint[] {
  return [...points].sort((a, b) => Number(!!b.teacher) - Number(!!a.teacher) || b.mean - a.mean);
}

export function ablationChart(points: AblationPoint[], title: string): string {
  const W = 1180;
  if (!points.length) return `<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40"><text x="10" y="25" font-family="sans-serif">${esc(title)}: no configuration with a known size yet</text></svg>\n`;
  const hi = Math.max(...points.map((p) => p.mean + (Number.isFinite(p.std) ? p.std! : 0)));
  const lo = Math.min(...points.map((p) => p.mean - (Number.isFinite(p.std) ? p.std! : 0)));
  const sorted = chartOrder(points);
  const n = sorted.length;
  const { parts: out, sx, sy, m, pw } = chartFrame({
    width: W, height: 460, margin: { l: 70, r: 580, t: 50, b: 60 }, title, xLabel: 'configuration (numbered as in the legend)', yLabel: 'test NDCG@10 (mean ± std over seeds)',
    xTicks: Array.from({ length: n + 2 }, (_, i) => i), yTicks: linearTicks(Math.max(0, lo - (hi - lo) * 0.2), hi + (hi - lo) * 0.1),
    xTickLabel: (t) => (t >= 1 && t <= n ? String(t) : ''), xScale: 'linear',
  });
  sorted.forEach((p, i) => {
    const x = sx(i + 1);
    const y = sy(p.mean);
    const c = p.teacher ? '#d62728' : PALETTE[i % PALETTE.length]!;
    if (Number.isFinite(p.std)) out.push(`<line x1="${x.toFixed(1)}" y1="${sy(p.mean - p.std!).toFixed(1)}" x2="${x.toFixed(1)}" y2="${sy(p.mean + p.std!).toFixed(1)}" stroke="${c}" stroke-width="1.5"/>`);
    out.push(p.teacher
      ? `<rect x="${(x - 6).toFixed(1)}" y="${(y - 6).toFixed(1)}" width="12" height="12" fill="${c}"/>`
      : `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${p.chosen ? 7 : 5}" fill="${c}" fill-opacity="0.9"${p.chosen ? ' stroke="black" stroke-width="2"' : ''}/>`);
    const ly = m.t + 10 + i * 18;
    const lx = m.l + pw + 20;
    out.push(p.teacher ? `<rect x="${lx - 5}" y="${ly - 5}" width="10" height="10" fill="${c}"/>` : `<circle cx="${lx}" cy="${ly}" r="5" fill="${c}"/>`);
    const lat = p.p50Ms !== undefined ? `, ${p.p50Ms.toFixed(3)} ms p50` : '';
    const std = Number.isFinite(p.std) ? ` ± ${p.std!.toFixed(4)}` : '';
    out.push(`<text x="${lx + 12}" y="${ly}" dominant-baseline="middle"${p.chosen ? ' font-weight="bold"' : ''}>${esc(`${i + 1}. ${p.label}: ${p.mean.toFixed(4)}${std}${p.chosen ? ' (chosen on valid)' : ''} (${p.params >= 1e3 ? `${(p.params / 1e3).toFixed(1)}k` : p.params} params${lat})`)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
