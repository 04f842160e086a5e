/**
 * Learning-curve SVG (hand-written, no dependency), written into every run folder as curves.svg.
 *
 * Top: validation NDCG@10 and HR@10 per epoch on one axis (same unit), best epoch marked.
 * Below: one small panel per training-loss term (unweighted), each with its own y axis.
 * Why small multiples rather than one axis: the terms differ by up to two orders of magnitude (ce ~ 7,
 * kd ~ 0.1), so on a shared axis the small ones look flat; a second axis only serves two scales, and
 * normalising by the first value hides the values a reader compares against other runs. Each panel's
 * title also gives the first and last value.
 * Ticks are "nice" (1, 2 or 5 x 10^k); labels and legends sit outside the plotted area.
 */
export interface CurvePoint {
  epoch: number;
  loss: Record<string, number>;
  valid?: Record<string, number>;
}

interface Series { name: string; pts: Array<[number, number]>; color?: string }
interface Box { x: number; y: number; w: number; h: number }

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2'];
const WIDTH = 860;
const VALID_H = 250;
const TERM_H = 156;
const SECTION_H = 26;
/** Rough advance width of a sans-serif character, as a fraction of the font size (for layout only). */
export const CHAR_W = 0.6;

function esc(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}

function niceStep(span: number, count: number): number {
  const raw = span / Math.max(1, count);
  const p = 10 ** Math.floor(Math.log10(raw));
  const e = raw / p;
  return p * (e >= Math.sqrt(50) ? 10 : e >= Math.sqrt(10) ? 5 : e >= Math.sqrt(2) ? 2 : 1);
}

function decimals(step: number): number {
  return Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
}

/** Axis covering [lo, hi] extended to multiples of a 1/2/5 x 10^k step, with about `count` intervals. */
export function niceScale(lo: number, hi: number, count = 4): { lo: number; hi: number; step: number; ticks: number[] } {
  if (!(hi - lo > 1e-12 * Math.max(1, Math.abs(hi)))) {
    const pad = Math.abs(hi) > 0 ? Math.abs(hi) * 0.05 : 0.5;
    lo -= pad;
    hi += pad;
  }
  let step = niceStep(hi - lo, count);
  for (let i = 0; i < 5; i++) {
    const next = niceStep(Math.ceil(hi / step) * step - Math.floor(lo / step) * step, count);
    if (next === step) break;
    step = next;
  }
  const d = decimals(step);
  const round = (v: number) => Number(v.toFixed(Math.min(20, d + 2)));
  const a = Math.floor(lo / step + 1e-9), b = Math.ceil(hi / step - 1e-9);
  const ticks: number[] = [];
  for (let i = a; i <= b; i++) ticks.push(round(i * step));
  return { lo: ticks[0]!, hi: ticks[ticks.length - 1]!, step, ticks };
}

/** Epoch ticks on [1, maxEpoch]: multiples of a nice integer step, plus epoch 1 unless it crowds the first. */
export function epochTicks(maxEpoch: number, count = 6): number[] {
  const step = Math.max(1, Math.round(niceStep(Math.max(1, maxEpoch - 1), count)));
  const ticks: number[] = [];
  for (let e = step; e <= maxEpoch; e += step) ticks.push(e);
  if (ticks[0] !== 1 && (ticks[0] ?? Infinity) - 1 >= step / 2) ticks.unshift(1);
  return ticks;
}

function fmtTick(v: number, step: number): string {
  const d = decimals(step);
  return d > 6 || Math.abs(v) >= 1e6 ? v.toExponential(1) : v.toFixed(d);
}

function text(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}"${attrs ? ' ' + attrs : ''}>${esc(s)}</text>`;
}

/**
 * One plot in `box`: title (and an optional note at the right) on the first line, an optional legend on the
 * second, then the plotted area with y ticks at the left and epoch ticks below.
 */
function panel(box: Box, o: { title: string; note?: string; series: Series[]; maxEpoch: number; mark?: number; markLabel?: boolean; legend: boolean; yCount: number }): string {
  const fs = 10;
  const finite = o.series.flatMap((s) => s.pts.map((p) => p[1])).filter(Number.isFinite);
  const parts: string[] = [text(box.x + 8, box.y + 14, o.title, 'font-size="12" font-weight="bold"')];
  if (o.note) parts.push(text(box.x + box.w - 10, box.y + 14, o.note, `font-size="${fs}" text-anchor="end" fill="#555"`));
  let top = box.y + 24;
  if (o.legend) {
    let lx = box.x + 8;
    o.series.forEach((s, i) => {
      const c = s.color ?? COLORS[i % COLORS.length]!;
      parts.push(`<line x1="${lx}" y1="${top + 6}" x2="${lx + 16}" y2="${top + 6}" stroke="${c}" stroke-width="2"/>`, text(lx + 20, top + 10, s.name, `font-size="${fs + 1}" fill="${c}"`));
      lx += 20 + s.name.length * (fs + 1) * CHAR_W + 16;
    });
    top += 20;
  }
  const bottom = box.y + box.h - 28;
  if (!finite.length) {
    parts.push(text(box.x + box.w / 2, (top + bottom) / 2, 'no finite values', `font-size="${fs}" text-anchor="middle" fill="#999"`));
    return `<g class="panel">\n${parts.join('\n')}\n</g>`;
  }
  const y = niceScale(Math.min(...finite), Math.max(...finite), o.yCount);
  const labels = y.ticks.map((v) => fmtTick(v, y.step));
  const left = box.x + 12 + Math.max(...labels.map((l) => l.length)) * fs * CHAR_W;
  const right = box.x + box.w - 14;
  const sx = (e: number) => left + ((e - 1) / Math.max(1, o.maxEpoch - 1)) * (right - left);
  const sy = (v: number) => bottom - ((v - y.lo) / (y.hi - y.lo)) * (bottom - top);
  y.ticks.forEach((v, i) => {
    parts.push(`<line x1="${left}" y1="${sy(v).toFixed(1)}" x2="${right}" y2="${sy(v).toFixed(1)}" stroke="#eee"/>`);
    parts.push(text(left - 4, sy(v) + 3.5, labels[i]!, `font-size="${fs}" text-anchor="end" class="ytick"`));
  });
  for (const e of epochTicks(o.maxEpoch)) {
    parts.push(`<line x1="${sx(e).toFixed(1)}" y1="${bottom}" x2="${sx(e).toFixed(1)}" y2="${bottom + 3}" stroke="#444"/>`);
    parts.push(text(sx(e), bottom + 14, String(e), `font-size="${fs}" text-anchor="middle" class="xtick"`));
  }
  parts.push(`<polyline class="axis" fill="none" stroke="#444" points="${left},${top} ${left},${bottom} ${right},${bottom}"/>`);
  if (o.mark !== undefined) {
    const mx = sx(o.mark);
    parts.push(`<line x1="${mx.toFixed(1)}" y1="${top}" x2="${mx.toFixed(1)}" y2="${bottom}" stroke="#999" stroke-dasharray="4 3"/>`);
    // the best epoch is where validation peaks, so the curves are high there: label at the bottom, on the
    // side of the line with more room
    if (o.markLabel) {
      const onLeft = mx > (left + right) / 2;
      parts.push(text(onLeft ? mx - 4 : mx + 4, bottom - 5, `best ${o.mark}`, `font-size="${fs}" text-anchor="${onLeft ? 'end' : 'start'}" fill="#555"`));
    }
  }
  o.series.forEach((s, i) => {
    const pts = s.pts.filter((p) => Number.isFinite(p[1]));
    if (!pts.length) return;
    const c = s.color ?? COLORS[i % COLORS.length]!;
    parts.push(`<polyline class="series" fill="none" stroke="${c}" stroke-width="1.5" points="${pts.map(([e, v]) => `${sx(e).toFixed(1)},${sy(v).toFixed(1)}`).join(' ')}"/>`);
  });
  return `<g class="panel">\n${parts.join('\n')}\n</g>`;
}

export function learningCurveSvg(points: CurvePoint[], bestEpoch?: number): string {
  const maxEpoch = Math.max(2, ...points.map((p) => p.epoch));
  const valid: Series[] = ['ndcg@10', 'hr@10'].map((k) => ({ name: `valid ${k}`, pts: points.filter((p) => p.valid).map((p) => [p.epoch, p.valid![k] ?? NaN] as [number, number]) }));
  const termNames = [...new Set(points.flatMap((p) => Object.keys(p.loss)))];
  const cols = Math.max(1, Math.min(3, termNames.length));
  const rows = Math.ceil(termNames.length / cols);
  const height = VALID_H + SECTION_H + rows * TERM_H;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif">`,
    `<rect width="${WIDTH}" height="${height}" fill="white"/>`,
    panel({ x: 0, y: 0, w: WIDTH, h: VALID_H }, { title: 'validation per epoch (full ranking)', series: valid, maxEpoch, mark: bestEpoch, markLabel: true, legend: true, yCount: 5 }),
    text(8, VALID_H + 18, 'training loss per epoch, one panel per term (unweighted, each on its own scale)', 'font-size="12" font-weight="bold"'),
  ];
  const w = WIDTH / cols;
  termNames.forEach((n, i) => {
    const pts = points.map((p) => [p.epoch, p.loss[n] ?? NaN] as [number, number]).filter((p) => Number.isFinite(p[1]));
    const note = pts.length ? `${pts[0]![1].toPrecision(3)} → ${pts[pts.length - 1]![1].toPrecision(3)}` : undefined;
    const box = { x: (i % cols) * w, y: VALID_H + SECTION_H + Math.floor(i / cols) * TERM_H, w, h: TERM_H };
    parts.push(panel(box, { title: n, note, series: [{ name: n, pts, color: COLORS[i % COLORS.length] }], maxEpoch, mark: bestEpoch, legend: false, yCount: 3 }));
  });
  parts.push('</svg>', '');
  return parts.join('\n');
}
