/** Render a summary object as aligned `key  value` lines (nested objects flattened with dots). */
export function formatSummary(summary: object): string {
  const rows: [string, string][] = [];
  const walk = (prefix: string, v: unknown) => {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) walk(prefix ? `${prefix}.${k}` : k, x);
    } else {
      rows.push([prefix, typeof v === 'number' ? formatNumber(v) : Array.isArray(v) ? JSON.stringify(v) : String(v)]);
    }
  };
  walk('', summary);
  const w = Math.max(0, ...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}

export { formatNumber, markdownTable } from '../util/format.js';
import { formatNumber } from '../util/format.js';
