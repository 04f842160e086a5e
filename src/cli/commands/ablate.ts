import { ablateOptions } from '../../distill/ablate-options.js';
import { runAblationStage, type AblationReport } from '../../distill/ablate-stage.js';
import { defineCommand } from '../command.js';

export default defineCommand({
  description: 'CE-only vs each distillation term alone vs all terms, same small student and seeds; best distilled config chosen on validation',
  options: ablateOptions,
  run: (opts, ctx) => runAblationStage(opts, { log: ctx.log, verbose: ctx.verbose }),
  format(s: AblationReport) {
    // One seed has no spread: its std is NaN (null in JSON), printed '-', never 'NaN'.
    const f = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(4) : '-');
    const { ce, distilled: d, relation: rel, member, ensemble, single, chosen } = s;
    const t = s.teacher?.test;
    const line = (label: string, c: Record<string, unknown>) => `${label} test ndcg@10 ${f(c['ndcg@10.mean'])} ± ${f(c['ndcg@10.std'])} hr@10 ${f(c['hr@10.mean'])}`;
    const pm = (c: Record<string, unknown>) => `${f(c['ndcg@10.mean'])} ± ${f(c['ndcg@10.std'])}`;
    const pct = (x: unknown) => `${(Number(x) * 100).toFixed(1)}%`;
    const emkd = member && ensemble && single
      ? [
          `single   (${String(single.config)}) test ndcg@10 ${pm(single)}`,
          `ensemble (${String(ensemble.config)}, K-network average) test ndcg@10 ${pm(ensemble)}, ${pct(s.ensembleGain)} over single`,
          `member   (${String(member.config)}, network 1) test ndcg@10 ${pm(member)}, ${pct(s.memberGain)} over single`,
          ...(chosen ? [`chosen on valid: ${chosen.config} (ensemble valid ndcg@10 ${f(chosen['valid.ndcg@10.mean'])}), ensemble test ndcg@10 ${pm(chosen.ensemble)}, ${pct(chosen.ensembleGain)} over its single network`] : []),
        ]
      : undefined;
    return [
      ...(s.teacher ? [`teacher test ndcg@10 ${f(t?.['ndcg@10'])} hr@10 ${f(t?.['hr@10'])}`] : []),
      ...(emkd ?? [
        line('ce       ', ce),
        rel ? line('relation ', rel) : d ? line(`distilled (${String(d.name)}, chosen on valid)`, d) : 'no distilled config',
        `gain ${pct(s.gain)} relative test NDCG@10`,
      ]),
      `report ${(s.report as { markdown: string }).markdown}`,
    ].join('\n');
  },
});
