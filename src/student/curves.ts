/**
 * Learning-curve SVG (hand-written, no dependency): left panel = training loss per epoch (every term),
 * right panel = validation NDCG@10 and HR@10 per epoch, best epoch marked.
 */
export interface CurvePoint {
  epoch: number;
  loss: Record<string, number>;
  valid?: Record<string, number>;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2'];

function esc(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}

function panel(x0: number, title: string, series: Array<{ name: string; pts: Array<[number, number]> }>, maxEpoch: number, mark?: number): string {
  const W = 420, H = 260, padL = 50, padB = 30, padT = 24;
  const all = series.flatMap((s) => s.pts.map((p) => p[1])).filter(Number.isFinite);
  let lo = all.length ? Math.min(...all) : 0;
  let hi = all.length ? Math.max(...all) : 1;
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const sx = (e: number) => x0 + padL + ((e - 1) / Math.max(1, maxEpoch - 1)) * (W - padL - 10);
  const sy = (v: number) => padT + (1 - (v - lo) / (hi - lo)) * (H - padT - padB);
  const parts: string[] = [`<text x="${x0 + W / 2}" y="16" text-anchor="middle" font-size="13">${esc(title)}</text>`];
  parts.push(`<line x1="${x0 + padL}" y1="${H - padB}" x2="${x0 + W - 10}" y2="${H - padB}" stroke="#444"/><line x1="${x0 + padL}" y1="${padT}" x2="${x0 + padL}" y2="${H - padB}" stroke="#444"/>`);
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    parts.push(`<text x="${x0 + padL - 4}" y="${sy(v) + 4}" text-anchor="end" font-size="10">${v.toPrecision(3)}</text>`);
  }
  parts.push(`<text x="${x0 + padL}" y="${H - 8}" font-size="10">epoch 1</text><text x="${x0 + W - 10}" y="${H - 8}" text-anchor="end" font-size="10">${maxEpoch}</text>`);
  if (mark !== undefined) parts.push(`<line x1="${sx(mark)}" y1="${padT}" x2="${sx(mark)}" y2="${H - padB}" stroke="#999" stroke-dasharray="4 3"/><text x="${sx(mark) + 3}" y="${padT + 10}" font-size="10">best ${mark}</text>`);
  series.forEach((s, i) => {
    const pts = s.pts.filter((p) => Number.isFinite(p[1]));
    if (!pts.length) return;
    const c = COLORS[i % COLORS.length]!;
    parts.push(`<polyline fill="none" stroke="${c}" stroke-width="1.5" points="${pts.map(([e, v]) => `${sx(e).toFixed(1)},${sy(v).toFixed(1)}`).join(' ')}"/>`);
    parts.push(`<text x="${x0 + W - 12}" y="${padT + 12 + 13 * i}" text-anchor="end" font-size="11" fill="${c}">${esc(s.name)}</text>`);
  });
  return parts.join('\n');
}

export function learningCurveSvg(points: CurvePoint[], bestEpoch?: number): string {
  const maxEpoch = Math.max(2, ...points.map((p) => p.epoch));
  const termNames = [...new Set(points.flatMap((p) => Object.keys(p.loss)))];
  const loss = termNames.map((n) => ({ name: n, pts: points.map((p) => [p.epoch, p.loss[n] ?? NaN] as [number, number]) }));
  const valid = ['ndcg@10', 'hr@10'].map((k) => ({ name: `valid ${k}`, pts: points.filter((p) => p.valid).map((p) => [p.epoch, p.valid![k] ?? NaN] as [number, number]) }));
  return `<svg xmlns="http://www.w3.org/2000/svg" width="860" height="270" font-family="sans-serif">\n<rect width="860" height="270" fill="white"/>\n${panel(0, 'training loss (unweighted terms)', loss, maxEpoch)}\n${panel(430, 'validation (full ranking)', valid, maxEpoch, bestEpoch)}\n</svg>\n`;
}
