import { RecdistillError } from '../errors.js';
import { loadAmazon } from './formats/amazon.js';
import type { LoadContext } from './formats/common.js';
import { loadGeneric, type GenericOptions } from './formats/generic.js';
import { loadMl100k, loadMlCsv, loadMlDat } from './formats/movielens.js';
import { loadPairsFile, loadS3RecDir, loadSequencesFile } from './formats/sequences.js';
import { generateSynthetic, type SyntheticOptions } from './synthetic.js';
import type { RawDataset } from './types.js';

/** Official MovieLens archives live here; RECDISTILL_DATASETS_URL (or the baseUrl argument) overrides it. */
export const GROUPLENS_BASE_URL = 'https://files.grouplens.org/datasets/movielens';

/** What a loader needs beyond the source: per-format options. */
export interface LoaderInput {
  source: string;
  itemsFile?: string;
  generic: GenericOptions;
  synthetic: Partial<SyntheticOptions>;
}

export interface DatasetSpec {
  name: string;
  description: string;
  /** Archive file name under the base URL (downloadable datasets only). */
  archive?: string;
  /**
   * sha256 of the official archive. undefined = no published value we could pin (ml-10m, ml-32m,
   * ml-latest, which GroupLens updates in place): the download then needs --sha256 or is trusted on
   * first use (the computed hash is logged and recorded next to the extracted files).
   */
  sha256?: string;
  /** md5 of the official archive, checked when no sha256 is known (GroupLens publishes <name>.zip.md5). */
  md5?: string;
  /** About how many bytes the official archive extracts to: extraction stops at 4x this (zip-bomb guard). */
  extractedBytes?: number;
  /** true when the loader needs --source (a file), i.e. nothing to download or generate. */
  needsSource?: boolean;
  /** Reads --items-file (amazon meta, generic items table). */
  usesItemsFile?: boolean;
  /** Generated: takes no --source. */
  generated?: boolean;
  /** A data:prepare --out export: read as a prepared dataset, not through `load`. */
  prepared?: boolean;
  load(input: LoaderInput, ctx: LoadContext): RawDataset;
  /** Options that change the content, for the fingerprint (others, like paths, do not). */
  fingerprintOptions?(input: LoaderInput): Record<string, unknown>;
}

const ml = (name: string, description: string, sha256: string | undefined, load: DatasetSpec['load'], extractedBytes?: number): DatasetSpec => ({
  name,
  description,
  archive: `${name}.zip`,
  sha256,
  extractedBytes,
  load,
});

/**
 * sha256 values from tensorflow_datasets' url_checksums/movielens.txt (same files, same URLs). ml-10m
 * has no published sha256 we could find; its md5 (ce571fd5...) is the value GroupLens-based loaders
 * use, and the md5 values listed next to it for ml-100k/1m/20m/25m match the published ones.
 */
const DATASETS: Record<string, DatasetSpec> = {
  'ml-100k': ml('ml-100k', 'MovieLens 100K (u.data, u.item)', '50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229', (i, c) => loadMl100k(i.source, c), 16e6),
  'ml-1m': ml('ml-1m', 'MovieLens 1M (ratings.dat, movies.dat)', 'a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20', (i, c) => loadMlDat(i.source, c, 'MovieLens 1M'), 26e6),
  'ml-10m': { ...ml('ml-10m', 'MovieLens 10M (ml-10M100K/ratings.dat, movies.dat)', undefined, (i, c) => loadMlDat(i.source, c, 'MovieLens 10M'), 280e6), md5: 'ce571fd55effeba0271552578f2648bd' },
  'ml-20m': ml('ml-20m', 'MovieLens 20M (ratings.csv, movies.csv)', '96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3', (i, c) => loadMlCsv(i.source, c, 'MovieLens 20M'), 900e6),
  'ml-25m': ml('ml-25m', 'MovieLens 25M (ratings.csv, movies.csv)', '8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa', (i, c) => loadMlCsv(i.source, c, 'MovieLens 25M'), 1.2e9),
  'ml-32m': ml('ml-32m', 'MovieLens 32M (ratings.csv, movies.csv)', undefined, (i, c) => loadMlCsv(i.source, c, 'MovieLens 32M'), 1e9),
  'ml-latest': ml('ml-latest', 'MovieLens latest full (ratings.csv, movies.csv; changes over time)', undefined, (i, c) => loadMlCsv(i.source, c, 'MovieLens latest'), 1.6e9),
  'ml-latest-small': ml('ml-latest-small', 'MovieLens latest small (ratings.csv, movies.csv)', '696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436', (i, c) => loadMlCsv(i.source, c, 'MovieLens latest-small'), 4e6),
  'amazon-2018': {
    name: 'amazon-2018',
    description: 'Amazon reviews 2018: --source reviews JSON lines (reviewerID, asin, unixReviewTime), --items-file meta (asin, title)',
    needsSource: true,
    usesItemsFile: true,
    load: (i, c) => loadAmazon('2018', i.source, i.itemsFile, c),
  },
  'amazon-2023': {
    name: 'amazon-2023',
    description: 'Amazon reviews 2023: --source reviews JSONL (user_id, parent_asin, timestamp ms), --items-file meta (parent_asin, title, main_category)',
    needsSource: true,
    usesItemsFile: true,
    load: (i, c) => loadAmazon('2023', i.source, i.itemsFile, c),
  },
  'amazon-beauty': {
    name: 'amazon-beauty',
    description: 'Amazon Beauty 5-core as S3Rec/ICLRec/EMKD publish it: --source DIR with Beauty.txt (and Beauty_item2attributes.json, the items\' categories)',
    needsSource: true,
    load: (i, c) => loadS3RecDir(i.source, 'Beauty', 'Amazon Beauty (S3Rec layout)', c),
  },
  'amazon-toys': {
    name: 'amazon-toys',
    description: 'Amazon Toys and Games 5-core as S3Rec/ICLRec/EMKD publish it: --source DIR with Toys_and_Games.txt (and Toys_and_Games_item2attributes.json)',
    needsSource: true,
    load: (i, c) => loadS3RecDir(i.source, 'Toys_and_Games', 'Amazon Toys and Games (S3Rec layout)', c),
  },
  sequences: {
    name: 'sequences',
    description: 'one line per user, "user item item ..." oldest first (S3Rec layout): --source FILE, optional --items-file attributes JSON {"item": [ids]}',
    needsSource: true,
    usesItemsFile: true,
    load: (i, c) => loadSequencesFile(i.source, i.itemsFile, c),
    fingerprintOptions: (i) => ({ hasItemsFile: i.itemsFile !== undefined && i.itemsFile !== '' }),
  },
  pairs: {
    name: 'pairs',
    description: 'one "user item" line per interaction, a user\'s lines in time order (SASRec layout): --source FILE, optional --items-file attributes JSON',
    needsSource: true,
    usesItemsFile: true,
    load: (i, c) => loadPairsFile(i.source, i.itemsFile, c),
    fingerprintOptions: (i) => ({ hasItemsFile: i.itemsFile !== undefined && i.itemsFile !== '' }),
  },
  generic: {
    name: 'generic',
    description: 'any CSV/TSV log: --source file, --user-col/--item-col/--time-col, optional --items-file',
    needsSource: true,
    usesItemsFile: true,
    load: (i, c) => loadGeneric(i.source, { ...i.generic, itemsFile: i.itemsFile }, c),
    fingerprintOptions: (i) => ({ ...i.generic, hasItemsFile: i.itemsFile !== undefined && i.itemsFile !== '' }),
  },
  prepared: {
    name: 'prepared',
    description: 'a directory written by data:prepare --out (dataset.json, items.jsonl, users.jsonl), read as is',
    needsSource: true,
    prepared: true,
    load: () => {
      throw new RecdistillError('E_INTERNAL', 'prepared exports are read by prepareDataset, not by a raw loader.');
    },
  },
  synthetic: {
    name: 'synthetic',
    description: 'deterministic offline dataset with franchises watched in order and genre drift (the demo default)',
    generated: true,
    // The raw hash covers the generated content (and so its size and seed).
    load: (i) => generateSynthetic(i.synthetic),
  },
};


export function datasetSpec(name: string): DatasetSpec {
  const spec = DATASETS[name];
  if (!spec) throw new RecdistillError('E_USAGE', `unknown dataset "${name}". Valid: ${Object.keys(DATASETS).join(', ')}.`);
  return spec;
}

/** Flags that the dataset would silently ignore are errors (a typo'd --dataset should not pass unnoticed). */
export function checkSourceFlags(spec: DatasetSpec, source: string, itemsFile: string | undefined): void {
  if (spec.generated && source) {
    throw new RecdistillError('E_USAGE', `dataset "${spec.name}" is generated and takes no --source (got ${JSON.stringify(source)}); did you mean --dataset generic?`);
  }
  if (itemsFile && !spec.usesItemsFile) {
    const users = Object.values(DATASETS).filter((d) => d.usesItemsFile).map((d) => d.name);
    throw new RecdistillError('E_USAGE', `--items-file is not used by dataset "${spec.name}"; it is read by ${users.join(', ')}.`);
  }
}
