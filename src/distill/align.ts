import { RecdistillError } from '../errors.js';
import { parseIndex, resolveIndex, splitList } from '../util/layers.js';

/** One aligned pair: student block (0-based index into hidden[]) and tapped teacher layer (0-based into the tapped list). */
export interface AlignPair {
  block: number;
  tapped: number;
}

/**
 * Parse `--align 0:-4,1:-1`: student blocks count from 0 like every block number (--layers, checkpoints), teacher
 * entries index the cache's TAPPED layers; in both a negative number counts from the end (-1 = the last block, the
 * last tapped layer; see src/util/layers.ts for every flag's numbering). Empty
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
  for (const part of splitList(spec, '--align', '0:-4,1:-1')) {
    const m = /^([+-]?\d+)\s*:\s*(\S+)$/.exec(part);
    if (!m) throw new RecdistillError('E_USAGE', `--align: "${part}" is not block:layer (e.g. 0:-4,1:-1).`);
    const block = resolveIndex(parseIndex(m[1]!, '--align', spec), blocks, { flag: '--align', of: `the student's ${blocks} blocks` }, spec);
    const tapped = resolveIndex(parseIndex(m[2]!, '--align', spec), tappedCount, { flag: '--align', of: `the cache's ${tappedCount} tapped layers` }, spec);
    if (seen.has(block)) throw new RecdistillError('E_USAGE', `--align: student block ${block} is aligned twice in "${spec}".`);
    seen.add(block);
    pairs.push({ block, tapped });
  }
  return pairs.sort((a, b) => a.block - b.block);
}

/** An `align` written with student blocks from 1 ("1:-4,2:-1"), as blocks count today ("0:-4,1:-1"). */
export function alignFromZero(oneBased: string): string {
  return oneBased.split(',').map((pair) => pair.trim().replace(/^(\d+)\s*:/, (_, b: string) => `${Number(b) - 1}:`)).join(',');
}

/**
 * Runs distilled before blocks were numbered from 0 recorded `align` (and rel's) with student blocks from 1, and no
 * `alignFrom`. Their provenance as this version writes it: the blocks shifted down by one, `alignFrom: 0`, so an
 * older checkpoint resumes and an older run folder continues (the alignment itself is the same).
 */
export function upgradeAlignProvenance(p: unknown): unknown {
  if (p === null || typeof p !== 'object' || Array.isArray(p)) return p;
  const old = p as Record<string, unknown>;
  if (old.alignFrom !== undefined || typeof old.align !== 'string') return p;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(old)) {
    out[k] = k === 'align' ? alignFromZero(v as string) : k === 'rel' && v && typeof v === 'object' && typeof (v as { align?: unknown }).align === 'string' ? { ...(v as object), align: alignFromZero((v as { align: string }).align) } : v;
    if (k === 'align') out.alignFrom = 0;
  }
  return out;
}
