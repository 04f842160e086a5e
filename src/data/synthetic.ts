import { RecdistillError } from '../errors.js';
import { sha256, stableStringify } from '../util/hash.js';
import type { RawDataset, RawInteraction } from './types.js';
import { mulberry32 } from '../util/rng.js';

/**
 * A deterministic, offline dataset with real sequential structure, so that a sequence model has
 * something to learn that popularity cannot:
 * - items come in franchises ("Star Quest", "Star Quest II", "Star Quest III"): a user who starts a
 *   franchise usually watches the next instalment next (a strong first-order transition);
 * - each user has a current favourite genre that drifts to a neighbouring genre over the user's life,
 *   so the next franchise a user starts is mostly predictable from the recent items' genres;
 * - franchise popularity is Zipf-like, so popularity is a real (but much weaker) baseline.
 * Titles look like real item texts ("Midnight Harbor (1987)") because an LLM teacher reads them.
 */
export interface SyntheticOptions {
  users: number;
  items: number;
  seed: number;
  /** Sequence length range per user (inclusive). */
  minLen: number;
  maxLen: number;
}

export const SYNTHETIC_DEFAULTS: SyntheticOptions = { users: 500, items: 300, seed: 42, minLen: 15, maxLen: 60 };

/** Probability that a user continues the current franchise with its next instalment. */
const P_CONTINUE = 0.85;
/** Probability that a new franchise is drawn from the user's current genre (else from anything). */
const P_IN_GENRE = 0.8;
/** Per-step probability that the favourite genre drifts to a neighbour on the genre ring. */
const P_DRIFT = 0.08;

/** Neighbouring genres sit next to each other, so drift stays plausible (Action -> Adventure -> Sci-Fi ...). */
const SYNTHETIC_GENRES = [
  'Action', 'Adventure', 'Sci-Fi', 'Fantasy', 'Animation', 'Children', 'Comedy', 'Romance',
  'Drama', 'Mystery', 'Crime', 'Thriller', 'Horror', 'Western', 'Documentary',
] as const;

const ADJ = [
  'Midnight', 'Silent', 'Crimson', 'Golden', 'Broken', 'Hidden', 'Last', 'Frozen', 'Electric', 'Lost',
  'Wild', 'Iron', 'Hollow', 'Burning', 'Distant', 'Secret', 'Shadow', 'Velvet', 'Savage', 'Quiet',
  'Endless', 'Bright', 'Northern', 'Scarlet', 'Falling', 'Glass', 'Paper', 'Winter', 'Summer', 'Star',
];
const NOUN = [
  'Harbor', 'River', 'Quest', 'Empire', 'Garden', 'Horizon', 'Kingdom', 'Signal', 'Frontier', 'Circus',
  'Orchard', 'Lighthouse', 'Station', 'Voyage', 'Promise', 'Canyon', 'Carnival', 'Island', 'Detective', 'Machine',
  'Valley', 'Crown', 'Echo', 'Letters', 'Road', 'Mountain', 'Symphony', 'Tide', 'Witness', 'Legacy',
];
const ROMAN = ['', ' II', ' III', ' IV', ' V', ' VI', ' VII', ' VIII'];
/** Franchise length distribution (index = length - 1): a quarter standalone, most 3-5 instalments. */
const SERIES_LEN_P = [0.25, 0.1, 0.25, 0.2, 0.12, 0.08];


function pickWeighted(rand: () => number, weights: number[]): number {
  let total = 0;
  for (const w of weights) total += w;
  let r = rand() * total;
  for (let i = 0; i < weights.length; i++) {
    r -= weights[i]!;
    if (r < 0) return i;
  }
  return weights.length - 1;
}

interface Series {
  items: number[]; // raw item indices (0-based) in watch order
  genre: number;
  weight: number; // popularity
}

interface Catalogue {
  series: Series[];
  titles: string[];
  years: number[];
  genres: string[][];
}

function buildCatalogue(n: number, rand: () => number): Catalogue {
  const G = SYNTHETIC_GENRES.length;
  const names = ADJ.flatMap((a) => NOUN.map((b) => `${a} ${b}`));
  // Fisher-Yates shuffle so names are unique and seed-dependent.
  for (let i = names.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [names[i], names[j]] = [names[j]!, names[i]!];
  }
  const cat: Catalogue = { series: [], titles: [], years: [], genres: [] };
  let nameIdx = 0;
  while (cat.titles.length < n) {
    const len = Math.min(pickWeighted(rand, SERIES_LEN_P) + 1, n - cat.titles.length);
    const base = names[nameIdx++ % names.length]! + (nameIdx > names.length ? ` ${Math.ceil(nameIdx / names.length)}` : '');
    const genre = Math.floor(rand() * G);
    // A secondary genre next to the primary one on the ring, for some franchises.
    const second = rand() < 0.5 ? (genre + (rand() < 0.5 ? 1 : G - 1)) % G : -1;
    let year = 1950 + Math.floor(rand() * 66);
    const s: Series = { items: [], genre, weight: 0 };
    for (let k = 0; k < len; k++) {
      const id = cat.titles.length;
      cat.titles.push(`${base}${ROMAN[k] ?? ` ${k + 1}`} (${year})`);
      cat.years.push(year);
      cat.genres.push(second >= 0 ? [SYNTHETIC_GENRES[genre]!, SYNTHETIC_GENRES[second]!] : [SYNTHETIC_GENRES[genre]!]);
      s.items.push(id);
      year += 1 + Math.floor(rand() * 4);
    }
    cat.series.push(s);
  }
  // Zipf-like popularity over a random order of franchises.
  const order = cat.series.map((_, i) => ({ i, r: rand() })).sort((a, b) => a.r - b.r);
  order.forEach(({ i }, rank) => (cat.series[i]!.weight = 1 / Math.pow(rank + 1, 0.8)));
  return cat;
}

/** Franchise indices per genre (catalogue order) and the franchise of every item. */
interface Index {
  byGenre: number[][];
  seriesOf: Int32Array;
}

function indexCatalogue(cat: Catalogue): Index {
  const byGenre: number[][] = SYNTHETIC_GENRES.map(() => []);
  const seriesOf = new Int32Array(cat.titles.length);
  cat.series.forEach((s, i) => {
    byGenre[s.genre]!.push(i);
    for (const it of s.items) seriesOf[it] = i;
  });
  return { byGenre, seriesOf };
}

/** One user's time-ordered watch list (raw item indices). */
function generateUser(cat: Catalogue, idx: Index, len: number, rand: () => number): number[] {
  const G = SYNTHETIC_GENRES.length;
  const watched = new Set<number>();
  const seen = new Int32Array(cat.series.length); // watched instalments per franchise
  const isOpen = (i: number) => seen[i]! < cat.series[i]!.items.length;
  const out: number[] = [];
  let genre = Math.floor(rand() * G);
  let cur: Series | undefined;
  let pos = 0;
  while (out.length < len && watched.size < cat.titles.length) {
    if (rand() < P_DRIFT) genre = (genre + (rand() < 0.5 ? 1 : G - 1)) % G;
    const next = cur?.items[pos + 1];
    if (cur && next !== undefined && !watched.has(next) && rand() < P_CONTINUE) {
      pos++;
    } else {
      // Start a new franchise (in the current genre when one is left) at its first unwatched instalment.
      const inGenre = rand() < P_IN_GENRE;
      const openInGenre = idx.byGenre[genre]!.filter(isOpen);
      const pool = inGenre && openInGenre.length ? openInGenre : cat.series.map((_, i) => i).filter(isOpen);
      cur = cat.series[pool[pickWeighted(rand, pool.map((i) => cat.series[i]!.weight))]!]!;
      pos = cur.items.findIndex((i) => !watched.has(i));
    }
    const item = cur.items[pos]!;
    watched.add(item);
    seen[idx.seriesOf[item]!]!++;
    out.push(item);
  }
  return out;
}

function validate(o: SyntheticOptions): void {
  const bad = (what: string) => {
    throw new RecdistillError('E_USAGE', `synthetic dataset: ${what}`);
  };
  if (!Number.isInteger(o.users) || o.users < 1) bad(`--synthetic-users must be an integer >= 1, got ${o.users}.`);
  if (!Number.isInteger(o.items) || o.items < 3) bad(`--synthetic-items must be an integer >= 3, got ${o.items}.`);
  if (!Number.isInteger(o.minLen) || o.minLen < 3 || o.maxLen < o.minLen) bad(`sequence lengths need 3 <= min (${o.minLen}) <= max (${o.maxLen}).`);
}

/** Generate the synthetic raw dataset. Same options -> byte-identical output. */
export function generateSynthetic(opts: Partial<SyntheticOptions> = {}): RawDataset {
  const o: SyntheticOptions = { ...SYNTHETIC_DEFAULTS, ...opts };
  validate(o);
  const rand = mulberry32(o.seed);
  const cat = buildCatalogue(o.items, rand);
  const idx = indexCatalogue(cat);
  const interactions: RawInteraction[] = [];
  for (let u = 1; u <= o.users; u++) {
    const len = o.minLen + Math.floor(rand() * (o.maxLen - o.minLen + 1));
    const seq = generateUser(cat, idx, len, rand);
    // Seconds since epoch, starting in 1997-2000; gaps of 1 hour .. 1 week; a few exact ties
    // (same timestamp) that the stable sort must keep in generation order.
    let t = 852076800 + Math.floor(rand() * 94_000_000);
    for (const item of seq) {
      const rating = 1 + pickWeighted(rand, [0.04, 0.08, 0.23, 0.38, 0.27]);
      interactions.push({ user: String(u), item: String(item + 1), time: t, rating, order: interactions.length });
      if (rand() >= 0.05) t += 3600 + Math.floor(rand() * 7 * 86400);
    }
  }
  const items = new Map<string, { title: string; year?: number; genres: string[] }>();
  cat.titles.forEach((title, i) => items.set(String(i + 1), { title, year: cat.years[i], genres: cat.genres[i]! }));
  // The "raw bytes" of a generated dataset are its content: hash it, so any generator change is visible.
  const content = stableStringify({
    generator: 'synthetic-v1',
    options: o,
    interactions: interactions.map((x) => [x.user, x.item, x.time, x.rating]),
    items: [...items.entries()],
  });
  return { interactions, items, rawHash: sha256(content), files: [`synthetic(users=${o.users}, items=${o.items}, seed=${o.seed})`] };
}
