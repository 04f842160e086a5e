/** Render a summary object as aligned `key  value` lines (nested objects flattened with dots). */
export function formatSummary(summary: Record<string, unknown>): string {
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

export function formatNumber(v: number): string {
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : v.toFixed(4);
}

/** A Markdown table from rows of cells. */
export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const cell = (c: string | number) => (typeof c === 'number' ? formatNumber(c) : c);
  return [
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
  ].join('\n');
}
