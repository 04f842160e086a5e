import { describe, expect, it } from 'vitest';
import { ablationChart, chartOrder, type AblationPoint } from '../../src/distill/ablate-chart.js';

/** The x of each point's marker, in drawing order (circles for students, rects for the teacher). */
function markerXs(svg: string): number[] {
  const xs: number[] = [];
  for (const m of svg.matchAll(/<circle cx="([\d.]+)" cy="[\d.]+" r="[57]" fill="#[0-9a-f]+" fill-opacity|<rect x="([\d.]+)" y="[\d.]+" width="12"/g)) {
    xs.push(m[1] !== undefined ? Number(m[1]) : Number(m[2]) + 6);
  }
  return xs;
}

describe('ablation chart', () => {
  // Students of one architecture with slightly different counted sizes, and a much bigger teacher.
  const points: AblationPoint[] = [
    { label: 'ce', params: 76_200, mean: 0.1, std: 0.01 },
    { label: 'kd', params: 76_450, mean: 0.12, std: NaN },
    { label: 'all', params: 80_100, mean: 0.11 },
    { label: 'teacher', params: 485_100, mean: 0.05, teacher: true },
  ];

  it('one evenly spaced column per configuration, teacher first, then the students by accuracy', () => {
    expect(chartOrder(points).map((p) => p.label)).toEqual(['teacher', 'kd', 'all', 'ce']);
    const svg = ablationChart(points, 'x');
    const xs = markerXs(svg);
    expect(xs).toHaveLength(4);
    const gaps = xs.slice(1).map((x, i) => x - xs[i]!);
    for (const g of gaps) expect(g).toBeCloseTo(gaps[0]!, 0);
    expect(gaps[0]!).toBeGreaterThan(50);
    expect(svg).toContain('configuration (numbered as in the legend)');
    expect(svg).not.toMatch(/log scale/);
    // sizes stay in the legend, numbered like the columns; no NaN anywhere
    expect(svg).toContain('2. kd: 0.1200 (76.5k params)');
    expect(svg).toContain('4. ce: 0.1000 ± 0.0100 (76.2k params)');
    expect(svg).not.toMatch(/NaN/);
  });
});
