/**
 * A small, dependency-free SVG scatter chart: latency (log x axis) against accuracy (y axis), one labelled point
 * per model. Used by bench's report; the values plotted are the measured ones passed in.
 */
export interface ChartPoint {
  label: string;
  /** Median single-request latency in ms (plotted on a log scale). */
  latencyMs: number;
  /** Accuracy, e.g. test NDCG@10. */
  accuracy: number;
  color?: string;
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
}

export const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** Nice log-scale decade ticks covering [lo, hi]. */
export function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) ticks.push(10 ** e);
  return ticks;
}

/** Nice linear ticks (1, 2, 5 x 10^k steps) from at or below lo to at or above hi. */
export function linearTicks(lo: number, hi: number, target = 5): number[] {
  const span = Math.max(hi - lo, 1e-12);
  const raw = span / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= target) ?? 10 * mag;
  const out: number[] = [];
  // The last tick is the first one at or above hi, so the axis covers every point.
  let v = Math.floor(lo / step) * step;
  for (;;) {
    out.push(Number(v.toFixed(10)));
    if (v >= hi - step * 1e-9) return out;
    v += step;
  }
}

/** A plot frame: a log-scale x axis over xTicks, a linear y axis over yTicks, their grid lines, labels and title. */
export interface Frame {
  parts: string[];
  sx(v: number): number;
  sy(v: number): number;
  m: { l: number; r: number; t: number; b: number };
  pw: number;
  ph: number;
}

export function chartFrame(o: {
  width: number; height: number; margin: Frame['m']; title: string; xLabel: string; yLabel: string;
  xTicks: number[]; yTicks: number[]; xTickLabel(t: number): string; xMin?: number;
  /** 'log' (default) or 'linear' x axis. */
  xScale?: 'log' | 'linear';
}): Frame {
  const { width: W, height: H, margin: m, xTicks: xt, yTicks: yt } = o;
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const xMin = o.xMin ?? 1e-3;
  const fx = o.xScale === 'linear' ? (v: number) => v : (v: number) => Math.log10(Math.max(v, xMin));
  const x0 = fx(xt[0]!);
  const x1 = fx(xt[xt.length - 1]!);
  const ya = yt[0]!;
  const yb = yt[yt.length - 1]!;
  const sx = (v: number) => m.l + ((fx(v) - x0) / Math.max(x1 - x0, 1e-9)) * pw;
  const sy = (v: number) => m.t + ph - ((v - ya) / Math.max(yb - ya, 1e-12)) * ph;
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${esc(o.title)}</text>`);
  for (const t of xt) {
    const x = sx(t).toFixed(1);
    parts.push(`<line x1="${x}" y1="${m.t}" x2="${x}" y2="${m.t + ph}" stroke="#ddd"/>`);
    parts.push(`<text x="${x}" y="${m.t + ph + 16}" text-anchor="middle">${o.xTickLabel(t)}</text>`);
  }
  for (const t of yt) {
    const y = sy(t).toFixed(1);
    parts.push(`<line x1="${m.l}" y1="${y}" x2="${m.l + pw}" y2="${y}" stroke="#ddd"/>`);
    parts.push(`<text x="${m.l - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${t}</text>`);
  }
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  parts.push(`<text x="${m.l + pw / 2}" y="${H - 18}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  parts.push(`<text transform="translate(18 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`);
  return { parts, sx, sy, m, pw, ph };
}

export function latencyAccuracyChart(points: ChartPoint[], o: ChartOptions): string {
  const lat = points.map((p) => Math.max(p.latencyMs, 1e-3));
  const acc = points.map((p) => p.accuracy);
  const { parts, sx, sy, m, pw } = chartFrame({
    width: o.width ?? 640, height: o.height ?? 400, margin: { l: 70, r: 30, t: 50, b: 60 }, title: o.title, xLabel: o.xLabel, yLabel: o.yLabel,
    xTicks: logTicks(Math.min(...lat) / 1.5, Math.max(...lat) * 1.5), yTicks: linearTicks(0, Math.max(...acc, 1e-6) * 1.15),
    xTickLabel: (t) => String(t >= 1 ? t : t.toPrecision(1)),
  });
  const palette = ['#d62728', '#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd'];
  points.forEach((p, i) => {
    const x = sx(p.latencyMs);
    const y = sy(p.accuracy);
    const c = p.color ?? palette[i % palette.length]!;
    parts.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="7" fill="${c}" fill-opacity="0.85"/>`);
    const anchor = x > m.l + pw * 0.7 ? 'end' : 'start';
    const dx = anchor === 'end' ? -10 : 10;
    parts.push(`<text x="${(x + dx).toFixed(1)}" y="${(y - 10).toFixed(1)}" text-anchor="${anchor}">${esc(`${p.label}: ${fmt(p.latencyMs)} ms, ${p.accuracy.toFixed(4)}`)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

function fmt(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(2) : v.toFixed(3);
}
