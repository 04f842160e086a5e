/**
 * Which items go into which forward pass when a history does not fit the token budget.
 *
 * 'recent': one pass over the most recent items that fit; earlier positions get no state (`first` > 0).
 * 'windows' (default): every position gets a state. Passes are planned from the end: each pass holds the
 *   most recent items (up to its last one) that fit; it assigns states to the positions that already have
 *   at least half the budget of context before them in that pass (or all, for the pass starting at item
 *   0); the next pass ends just before the first assigned position. Costs about 2x the tokens of one
 *   truncated pass, and each state still sees >= budget/2 tokens of history (or the whole history).
 */
export type TruncateMode = 'recent' | 'windows';
export const TRUNCATE_MODES: readonly TruncateMode[] = ['recent', 'windows'];

export interface Window {
  /** First item in the pass. */
  start: number;
  /** Last item in the pass (inclusive). */
  end: number;
  /** Items assignFrom..end take their state from this pass. */
  assignFrom: number;
}

/**
 * @param lineTokens tokens of each item's line, in history order
 * @param budget tokens available for lines in one pass; every line must fit alone
 */
export function planWindows(lineTokens: ArrayLike<number>, budget: number, mode: TruncateMode): Window[] {
  const n = lineTokens.length;
  const out: Window[] = [];
  let end = n - 1;
  while (end >= 0) {
    let start = end;
    let sum = lineTokens[end]!;
    if (sum > budget) throw new Error(`line ${end} needs ${sum} tokens, over the budget of ${budget}`);
    while (start > 0 && sum + lineTokens[start - 1]! <= budget) sum += lineTokens[--start]!;
    let assignFrom = start;
    if (mode === 'windows' && start > 0) {
      let c = 0;
      assignFrom = end;
      for (let t = start; t <= end; t++) {
        c += lineTokens[t]!;
        if (c >= budget / 2) {
          assignFrom = t;
          break;
        }
      }
    }
    out.push({ start, end, assignFrom });
    if (mode === 'recent') break;
    end = assignFrom - 1;
  }
  return out.reverse();
}
