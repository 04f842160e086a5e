import type { RankingMetrics } from './evaluate.js';

/** A Markdown table of metric rows (one row per model/protocol), columns in a fixed order. */
export function metricsTable(rows: Array<{ name: string; m: RankingMetrics }>): string {
  const cols = ['hr@5', 'ndcg@5', 'hr@10', 'ndcg@10', 'hr@20', 'ndcg@20', 'mrr', 'users'];
  const head = `| model | ${cols.join(' | ')} |\n|---|${cols.map(() => '---:').join('|')}|`;
  const body = rows.map((r) => `| ${r.name} | ${cols.map((c) => (c === 'users' ? String(r.m[c] ?? '') : (r.m[c] ?? NaN).toFixed(4))).join(' | ')} |`);
  return [head, ...body].join('\n');
}
