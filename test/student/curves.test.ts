import { describe, expect, it } from 'vitest';
import { CHAR_W, epochTicks, learningCurveSvg, niceScale, type CurvePoint } from '../../src/student/training/curves.js';

interface Text { x: number; y: number; size: number; anchor: string; cls: string; body: string }

function texts(svg: string): Text[] {
  return [...svg.matchAll(/<text ([^>]*)>([^<]*)<\/text>/g)].map((m) => {
    const a = (k: string) => m[1]!.match(new RegExp(`${k}="([^"]*)"`))?.[1];
    return { x: Number(a('x')), y: Number(a('y')), size: Number(a('font-size') ?? 12), anchor: a('text-anchor') ?? 'start', cls: a('class') ?? '', body: m[2]!.replace(/&amp;/g, '&') };
  });
}

function viewBox(svg: string): [number, number] {
  const m = svg.match(/viewBox="0 0 (\d+) (\d+)"/)!;
  return [Number(m[1]), Number(m[2])];
}

/** Horizontal extent of a label from its anchor and an estimated advance width. */
function extent(t: Text): [number, number] {
  const w = t.body.length * t.size * CHAR_W;
  return t.anchor === 'end' ? [t.x - w, t.x] : t.anchor === 'middle' ? [t.x - w / 2, t.x + w / 2] : [t.x, t.x + w];
}

function polylineYs(svg: string, cls: string): number[][] {
  return [...svg.matchAll(new RegExp(`<polyline class="${cls}"[^>]* points="([^"]*)"`, 'g'))].map((m) => m[1]!.split(' ').map((p) => Number(p.split(',')[1])));
}

/** A 45-epoch run with a large CE and small distillation terms, as in a real --distill all run. */
function run(n = 45): CurvePoint[] {
  return Array.from({ length: n }, (_, i) => ({
    epoch: i + 1,
    loss: { ce: 5.5 + 2 / (i + 1), kd: 0.11 + 0.05 / (i + 1), emb: 0.04 + 0.7 / (i + 1) },
    valid: { 'ndcg@10': 0.1 - 0.08 / (i + 1), 'hr@10': 0.2 - 0.15 / (i + 1) },
  }));
}

describe('nice axis ticks', () => {
  const cases: Array<[string, number, number, number, number[]]> = [
    ['ce-sized range', 5.53, 7.37, 4, [5.5, 6, 6.5, 7, 7.5]],
    ['small distillation term', 0.107, 0.167, 4, [0.1, 0.12, 0.14, 0.16, 0.18]],
    ['validation metrics', 0.0216, 0.216, 5, [0, 0.05, 0.1, 0.15, 0.2, 0.25]],
    ['range from zero', 0, 1, 4, [0, 0.2, 0.4, 0.6, 0.8, 1]],
    ['constant series is widened', 2, 2, 4, [1.9, 1.95, 2, 2.05, 2.1]],
    ['all zero', 0, 0, 4, [-0.6, -0.4, -0.2, 0, 0.2, 0.4, 0.6]],
  ];
  it.each(cases)('%s', (_, lo, hi, count, ticks) => {
    const s = niceScale(lo, hi, count);
    expect(s.ticks).toEqual(ticks);
    expect(s.lo).toBeLessThanOrEqual(lo);
    expect(s.hi).toBeGreaterThanOrEqual(hi);
  });

  it.each([
    [2, [1, 2]],
    [3, [1, 2, 3]],
    [10, [1, 2, 4, 6, 8, 10]],
    [45, [1, 10, 20, 30, 40]],
    [61, [1, 10, 20, 30, 40, 50, 60]],
    [200, [1, 50, 100, 150, 200]],
  ])('epoch ticks for %i epochs', (n, ticks) => expect(epochTicks(n)).toEqual(ticks));
});

describe('learning-curve SVG layout', () => {
  const svg = learningCurveSvg(run(), 35);
  const [W, H] = viewBox(svg);
  const all = texts(svg);

  it('keeps every label inside the viewBox', () => {
    for (const last of [learningCurveSvg(run(), 45), learningCurveSvg(run(), 1), svg]) {
      const [w, h] = viewBox(last);
      for (const t of texts(last)) {
        const [a, b] = extent(t);
        expect(a, t.body).toBeGreaterThanOrEqual(0);
        expect(b, t.body).toBeLessThanOrEqual(w);
        expect(t.y - t.size, t.body).toBeGreaterThanOrEqual(0);
        expect(t.y, t.body).toBeLessThanOrEqual(h);
      }
    }
    expect(texts(learningCurveSvg(run(), 45)).some((t) => t.body === 'best 45')).toBe(true);
  });

  it('puts the legend above every plotted line', () => {
    const legend = all.filter((t) => t.body.startsWith('valid '));
    expect(legend.map((t) => t.body)).toEqual(['valid ndcg@10', 'valid hr@10']);
    const [ndcg, hr] = polylineYs(svg, 'series');
    const lineTop = Math.min(...ndcg!, ...hr!);
    for (const t of legend) expect(t.y).toBeLessThan(lineTop);
  });

  it('draws one panel per loss term, each on its own y range', () => {
    const lines = polylineYs(svg, 'series');
    expect(lines).toHaveLength(2 + 3);
    // every term spans most of its panel's height: a small term is not flattened by a large one
    for (const ys of lines.slice(2)) {
      const span = Math.max(...ys) - Math.min(...ys);
      expect(span).toBeGreaterThan(60);
    }
    for (const term of ['ce', 'kd', 'emb']) expect(all.filter((t) => t.body === term)).toHaveLength(1);
    expect(H).toBeGreaterThan(W / 2);
  });

  it('labels the x axis with nice epoch ticks and the y axes with evenly spaced nice values', () => {
    const x = all.filter((t) => t.cls === 'xtick').map((t) => Number(t.body));
    expect(x.slice(0, 5)).toEqual([1, 10, 20, 30, 40]);
    expect(x).toHaveLength(4 * 5); // validation + three term panels
    const panels = svg.split('<g class="panel">').slice(1);
    expect(panels).toHaveLength(4);
    for (const p of panels) {
      const g = texts(p).filter((t) => t.cls === 'ytick').map((t) => Number(t.body));
      expect(g.length).toBeGreaterThanOrEqual(3);
      expect(g.length).toBeLessThanOrEqual(7);
      const step = g[1]! - g[0]!;
      const mant = step / 10 ** Math.floor(Math.log10(step) + 1e-9);
      expect([1, 2, 5].some((m) => Math.abs(mant - m) < 1e-6)).toBe(true);
      for (let i = 1; i < g.length; i++) expect(g[i]! - g[i - 1]!).toBeCloseTo(step, 9);
    }
  });

  it('marks the best epoch on the side with room', () => {
    const best = all.find((t) => t.body === 'best 35')!;
    expect(best.anchor).toBe('end');
    expect(texts(learningCurveSvg(run(), 5)).find((t) => t.body === 'best 5')!.anchor).toBe('start');
  });

  it('copes with a single epoch and non-finite losses', () => {
    const one = learningCurveSvg([{ epoch: 1, loss: { ce: NaN }, valid: { 'ndcg@10': 0.1, 'hr@10': 0.2 } }], 1);
    expect(texts(one).some((t) => t.body === 'no finite values')).toBe(true);
    expect(one).not.toContain('NaN');
  });
});
