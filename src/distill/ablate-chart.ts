/**
 * The ablation's SVG: test NDCG@10 (mean ± std over seeds) against parameters (log scale), the teacher and
 * every student configuration. Students share one architecture, so their points sit side by side at the same
 * parameter count (spread a little for legibility) and are named in a legend sorted by accuracy.
 */
import { chartFrame, esc, logTicks, linearTicks } from '../bench/chart.js';

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

export function ablationChart(points: AblationPoint[], title: string): string {
  const W = 1180;
  if (!points.length) return `<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40"><text x="10" y="25" font-family="sans-serif">${esc(title)}: no configuration with a known size yet</text></svg>\n`;
  const params = points.map((p) => Math.max(p.params, 1));
  const hi = Math.max(...points.map((p) => p.mean + (Number.isFinite(p.std) ? p.std! : 0)));
  const lo = Math.min(...points.map((p) => p.mean - (Number.isFinite(p.std) ? p.std! : 0)));
  const { parts: out, sx, sy, m, pw } = chartFrame({
    width: W, height: 460, margin: { l: 70, r: 580, t: 50, b: 60 }, title, xLabel: 'parameters (log scale)', yLabel: 'test NDCG@10 (mean ± std over seeds)',
    xTicks: logTicks(Math.min(...params) / 2, Math.max(...params) * 2), yTicks: linearTicks(Math.max(0, lo - (hi - lo) * 0.2), hi + (hi - lo) * 0.1),
    xTickLabel: (t) => (t >= 1e6 ? `${t / 1e6}M` : t >= 1e3 ? `${t / 1e3}k` : String(t)), xMin: 1,
  });
  // Points sharing a parameter count are spread over +-4% of the plot width, in legend order.
  const sorted = [...points].sort((a, b) => b.mean - a.mean);
  const groups = new Map<number, AblationPoint[]>();
  for (const p of sorted) groups.set(p.params, [...(groups.get(p.params) ?? []), p]);
  sorted.forEach((p, i) => {
    const g = groups.get(p.params)!;
    const j = g.indexOf(p);
    const spread = g.length > 1 ? ((j / (g.length - 1)) - 0.5) * pw * 0.08 : 0;
    const x = sx(p.params) + spread;
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
    out.push(`<text x="${lx + 12}" y="${ly}" dominant-baseline="middle"${p.chosen ? ' font-weight="bold"' : ''}>${esc(`${p.label}: ${p.mean.toFixed(4)}${std}${p.chosen ? " (chosen on valid)" : ""} (${p.params >= 1e3 ? `${(p.params / 1e3).toFixed(1)}k` : p.params} params${lat})`)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
