/**
 * Progress for long work: one line per interval on stderr with rate and ETA.
 * Quiet when total is small or when the logger is silent.
 */
export interface Progress {
  tick(n?: number, extra?: string): void;
  done(extra?: string): { seconds: number; perSec: number };
}

export type LogFn = (line: string) => void;

export function stderrLog(line: string): void {
  process.stderr.write(line + '\n');
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${Math.round(s % 60)}s` : `${Math.floor(m / 60)}h${m % 60}m`;
}

export function progress(label: string, total: number, log: LogFn = stderrLog, intervalMs = 2000, unit = 'it'): Progress {
  const start = performance.now();
  let count = 0;
  let last = start;
  return {
    tick(n = 1, extra = '') {
      count += n;
      const now = performance.now();
      if (now - last < intervalMs && count < total) return;
      last = now;
      const secs = (now - start) / 1000;
      const rate = count / Math.max(secs, 1e-9);
      const eta = (total - count) / Math.max(rate, 1e-9);
      log(`${label}: ${count}/${total} ${rate.toFixed(1)} ${unit}/s ETA ${formatSeconds(eta)}${extra ? ' ' + extra : ''}`);
    },
    done(extra = '') {
      const seconds = (performance.now() - start) / 1000;
      const perSec = count / Math.max(seconds, 1e-9);
      log(`${label}: done ${count} in ${formatSeconds(seconds)} (${perSec.toFixed(1)} ${unit}/s)${extra ? ' ' + extra : ''}`);
      return { seconds, perSec };
    },
  };
}
