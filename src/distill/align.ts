import { RecdistillError } from '../errors.js';
import { parseIndex, resolveIndex, splitList } from '../util/layers.js';

/** One aligned pair: student block (0-based index into hidden[]) and tapped teacher layer (0-based into the tapped list). */
export interface AlignPair {
  block: number;
  tapped: number;
}

/**
 * Parse `--align 1:-4,2:-1`: student blocks are 1-based, teacher entries index the cache's TAPPED layers
 * (negative counts from the end: -1 = last tapped; see src/util/layers.ts for every flag's numbering). Empty
 * spec: spread the student blocks evenly over the tapped layers with the last block on the last tapped layer
 * (block b of B -> tapped ceil(b*T/B) - 1).
 */
export function parseAlign(spec: string, blocks: number, tappedCount: number): AlignPair[] {
  if (blocks < 1 || tappedCount < 1) {
    throw new RecdistillError('E_USAGE', `--align: need at least one student block and one tapped teacher layer (got ${blocks} blocks, ${tappedCount} tapped layers).`);
  }
  if (spec.trim() === '') {
    return Array.from({ length: blocks }, (_, b) => ({ block: b, tapped: Math.ceil(((b + 1) * tappedCount) / blocks) - 1 }));
  }
  const pairs: AlignPair[] = [];
  const seen = new Set<number>();
  for (const part of splitList(spec, '--align', '1:-4,2:-1')) {
    const m = /^(\d+)\s*:\s*(\S+)$/.exec(part);
    if (!m) throw new RecdistillError('E_USAGE', `--align: "${part}" is not block:layer (e.g. 1:-4,2:-1).`);
    const block = Number(m[1]);
    if (block < 1 || block > blocks) {
      throw new RecdistillError('E_USAGE', `--align: student block ${block} out of range 1..${blocks} in "${spec}".`);
    }
    const tapped = resolveIndex(parseIndex(m[2]!, '--align', spec), tappedCount, { flag: '--align', of: `the cache's ${tappedCount} tapped layers` }, spec);
    if (seen.has(block)) throw new RecdistillError('E_USAGE', `--align: student block ${block} is aligned twice in "${spec}".`);
    seen.add(block);
    pairs.push({ block: block - 1, tapped });
  }
  return pairs.sort((a, b) => a.block - b.block);
}
