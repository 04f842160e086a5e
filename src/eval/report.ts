import type { RankingMetrics } from './evaluate.js';

/**
 * A Markdown table of metric rows (one row per model/protocol): the hr@k / ndcg@k columns the rows
 * actually hold (whatever --ks asked for, in k order), then mrr and users.
 */
export function metricsTable(rows: Array<{ name: string; m: RankingMetrics }>): string {
  const ks = [...new Set(rows.flatMap((r) => Object.keys(r.m)).map((k) => /^(?:hr|ndcg)@(\d+)$/.exec(k)?.[1]).filter((k): k is string => !!k).map(Number))].sort((a, b) => a - b);
  const cols = [...ks.flatMap((k) => [`hr@${k}`, `ndcg@${k}`]), 'mrr', 'users'];
  const cell = (m: RankingMetrics, c: string) => (m[c] === undefined ? '-' : c === 'users' ? String(m[c]) : m[c]!.toFixed(4));
  const head = `| model | ${cols.join(' | ')} |\n|---|${cols.map(() => '---:').join('|')}|`;
  const body = rows.map((r) => `| ${r.name} | ${cols.map((c) => cell(r.m, c)).join(' | ')} |`);
  return [head, ...body].join('\n');
}
