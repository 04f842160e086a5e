import type { ItemInfo } from '../data/types.js';

/**
 * An item as the teacher reads it: "Toy Story (1995) — Animation, Children's, Comedy".
 * The year is appended only when the title does not already carry it (MovieLens titles do);
 * the "unknown" placeholder genre is dropped.
 */
export function itemText(item: Pick<ItemInfo, 'title' | 'year' | 'genres'>): string {
  let text = item.title.trim();
  if (item.year !== undefined && !text.includes(`(${item.year})`)) text += ` (${item.year})`;
  const genres = item.genres.filter((g) => g && g.toLowerCase() !== 'unknown');
  if (genres.length) text += ` — ${genres.join(', ')}`;
  return text;
}
