import type { ItemInfo } from '../data/types.js';

/**
 * An item as the teacher reads it: "Toy Story (1995) — Animation, Children's, Comedy".
 * The year is appended only when the title does not already carry it (MovieLens titles do);
 * the "unknown" placeholder genre is dropped. Extra text columns (Amazon main_category, generic --text-cols)
 * follow in brackets, "Widget — Tools [main_category: Home]", in column-name order so the text is stable.
 */
export function itemText(item: Pick<ItemInfo, 'title' | 'year' | 'genres' | 'extra'>): string {
  let text = item.title.trim();
  if (item.year !== undefined && !text.includes(`(${item.year})`)) text += ` (${item.year})`;
  const genres = item.genres.filter((g) => g && g.toLowerCase() !== 'unknown');
  if (genres.length) text += ` — ${genres.join(', ')}`;
  const extra = Object.entries(item.extra ?? {})
    .filter(([, v]) => v.trim() !== '')
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (extra.length) text += ` [${extra.map(([k, v]) => `${k}: ${v.trim()}`).join('; ')}]`;
  return text;
}
