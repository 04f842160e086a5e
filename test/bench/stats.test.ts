import { describe, expect, it } from 'vitest';
import { percentile, summarizeLatencies } from '../../src/util/stats.js';
import { latencyAccuracyChart, linearTicks, logTicks } from '../../src/util/chart.js';

describe('latency statistics', () => {
  it('percentiles interpolate between closest ranks (numpy default)', () => {
    const s = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(percentile(s, 50)).toBeCloseTo(5.5, 12);
    expect(percentile(s, 95)).toBeCloseTo(9.55, 12);
    expect(percentile(s, 0)).toBe(1);
    expect(percentile(s, 100)).toBe(10);
    expect(percentile([4], 99)).toBe(4);
  });

  it('summarizes unsorted samples', () => {
    const r = summarizeLatencies([3, 1, 2]);
    expect(r).toMatchObject({ n: 3, p50Ms: 2, maxMs: 3, meanMs: 2 });
    expect(r.p99Ms).toBeCloseTo(2.98, 12);
  });
});

describe('latency/accuracy chart', () => {
  it('ticks cover the data', () => {
    expect(logTicks(0.3, 250)).toEqual([0.1, 1, 10, 100, 1000]);
    expect(linearTicks(0, 0.115)).toEqual([0, 0.05, 0.1, 0.15]);
  });

  it('places points by measured values: faster is further left, more accurate is higher', () => {
    const svg = latencyAccuracyChart(
      [
        { label: 'teacher', latencyMs: 120, accuracy: 0.05 },
        { label: 'student', latencyMs: 0.5, accuracy: 0.1 },
      ],
      { title: 't', xLabel: 'x', yLabel: 'y' },
    );
    const circles = [...svg.matchAll(/<circle cx="([\d.]+)" cy="([\d.]+)"/g)].map((m) => [Number(m[1]), Number(m[2])]);
    expect(circles).toHaveLength(2);
    const [teacher, student] = circles as [number[], number[]];
    expect(student[0]!).toBeLessThan(teacher[0]!);
    expect(student[1]!).toBeLessThan(teacher[1]!); // SVG y grows downwards: higher accuracy = smaller y
    expect(svg).toContain('student: 0.500 ms, 0.1000');
    expect(svg).toContain('teacher: 120 ms, 0.0500');
    expect(latencyAccuracyChart([{ label: 'mid', latencyMs: 12.5, accuracy: 0.123456 }], { title: 't', xLabel: 'x', yLabel: 'y' })).toContain('mid: 12.50 ms, 0.1235');
    expect(svg.startsWith('<svg')).toBe(true);
  });
});
