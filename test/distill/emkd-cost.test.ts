/**
 * Training cost in the ablation (`ablate --suite emkd`): each row carries seconds per epoch (mean over its runs),
 * the up-front memory estimate and the process's memory high-water marks (maxima over its runs), in ablation.json,
 * ablation.md and the suite's single / member summary keys with the main row's epoch-time ratio over its single network.
 */
import { describe, expect, it } from 'vitest';
import { runAblation } from '../../src/distill/ablate.js';
import { ablationMarkdown } from '../../src/distill/ablate-report.js';
import { emkdSummary, planEmkdConfigs } from '../../src/distill/emkd/plan.js';

/** A fake trainer: the cost of each (configuration, seed), made up but distinct. */
const cost: Record<string, [number, number, number, number]> = {
  // name: s/epoch of seed 1, of seed 2, peak RSS of seed 1, of seed 2 (MiB); estimate = 10 x the row's index
  ce: [1.2, 1.4, 300, 310],
  'emkd3-causal': [30, 34, 3700, 3800],
};

async function ablation() {
  const configs = planEmkdConfigs().filter((c) => c.name in cost);
  return runAblation({ configs, seeds: [1, 2] }, {}, {
    log: () => {},
    async train(cfg, seed) {
      const [s1, s2, r1, r2] = cost[cfg.name]!;
      const i = Object.keys(cost).indexOf(cfg.name);
      return {
        valid: { 'ndcg@10': 0.1 }, test: { 'ndcg@10': 0.1 + i / 100 }, seconds: 60,
        secondsPerEpoch: seed === 1 ? s1 : s2,
        memory: { peakRssMiB: seed === 1 ? r1 : r2, wasmHeapMiB: (seed === 1 ? r1 : r2) - 200, estimateMiB: 10 * (i + 1) },
      };
    },
  });
}

describe('ablation rows carry the training cost', () => {
  it('s/epoch mean, estimate, peak RSS and wasm heap maxima per configuration', async () => {
    const r = await ablation();
    const row = (n: string) => r.configs.find((c) => c.name === n)!;
    expect(row('ce')['secondsPerEpoch.mean']).toBeCloseTo(1.3, 12);
    expect(row('emkd3-causal')['secondsPerEpoch.mean']).toBeCloseTo(32, 12);
    expect([row('ce')['peakRssMiB.max'], row('emkd3-causal')['peakRssMiB.max']]).toEqual([310, 3800]);
    expect([row('ce')['wasmHeapMiB.max'], row('emkd3-causal')['wasmHeapMiB.max']]).toEqual([110, 3600]);
    expect([row('ce').estimateMiB, row('emkd3-causal').estimateMiB]).toEqual([10, 20]);
    expect(row('emkd3-causal').runs.map((x) => x.secondsPerEpoch)).toEqual([30, 34]);

    const md = ablationMarkdown(r, { title: 't', lines: [] });
    expect(md).toContain('| train time | s/epoch | memory estimate | peak RSS / wasm heap | p50 latency (1 request) |');
    expect(md).toMatch(/^\| emkd3-causal .* \| 32\.0 \| 20 MiB \| 3800 MiB \/ 3600 MiB \| - \|$/m);
    expect(md).toMatch(/^\| ce .* \| 1\.3 \| 10 MiB \| 310 MiB \/ 110 MiB \| - \|$/m);
  });

  it('the --suite emkd summary: single and member with their cost, member s/epoch over single', async () => {
    const r = await ablation();
    const s = emkdSummary(r.configs, { 'emkd3-causal': { valid: [0.1, 0.1], test: [0.12, 0.13] } })!;
    expect(s.single).toMatchObject({ config: 'ce', 'secondsPerEpoch.mean': expect.closeTo(1.3, 12), 'peakRssMiB.max': 310, estimateMiB: 10 });
    expect(s.member).toMatchObject({ config: 'emkd3-causal', 'secondsPerEpoch.mean': 32, 'peakRssMiB.max': 3800, 'wasmHeapMiB.max': 3600, estimateMiB: 20 });
    expect(s.epochTimeRatio).toBeCloseTo(32 / 1.3, 12);
  });

  it('runs without cost figures (another trainer) leave the keys out and print "-"', async () => {
    const r = await runAblation({ configs: planEmkdConfigs().slice(0, 1), seeds: [1] }, {}, { log: () => {}, train: async () => ({ valid: { 'ndcg@10': 0.1 }, test: { 'ndcg@10': 0.1 }, seconds: 5 }) });
    expect(r.ce).not.toHaveProperty('secondsPerEpoch.mean');
    expect(r.ce).not.toHaveProperty('peakRssMiB.max');
    expect(ablationMarkdown(r, { title: 't', lines: [] })).toMatch(/^\| ce .* \| - \| - \| - \| - \|$/m);
    expect(emkdSummary([{ ...r.ce }, { ...r.ce, name: 'emkd3-causal' }], { 'emkd3-causal': { valid: [0.1], test: [0.1] } })!.epochTimeRatio).toBeUndefined();
  });
});
