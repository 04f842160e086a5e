/**
 * Compare the hidden states of two teacher caches of the same dataset row by row: the same model in two
 * exporter layouts or two precisions should agree to within rounding (fp32) or quantisation error (q4).
 */
import { RecdistillError } from '../errors.js';
import { readManifest } from './format.js';
import { openCache } from './reader.js';

export interface LayerAgreement {
  /** Absolute layer index (as in the manifest). */
  layer: number;
  maxAbsDiff: number;
  /** Largest |value| in the first cache: the scale maxAbsDiff is read against. */
  maxAbs: number;
  /** Mean over rows of the cosine between the two states. */
  meanCosine: number;
  minCosine: number;
}

export interface CacheComparison {
  a: string;
  b: string;
  users: number;
  rows: number;
  layers: LayerAgreement[];
  /** Item text embeddings. */
  items: { maxAbsDiff: number; maxAbs: number };
}

export function compareCaches(a: string, b: string): CacheComparison {
  const ma = readManifest(a);
  const mb = readManifest(b);
  if (ma.dataset.fingerprint !== mb.dataset.fingerprint) throw new RecdistillError('E_INPUT', `${b} was built from another dataset (fingerprint ${mb.dataset.fingerprint.slice(0, 12)}, ${a} has ${ma.dataset.fingerprint.slice(0, 12)}).`);
  if (ma.teacher.layers.join() !== mb.teacher.layers.join() || ma.teacher.hiddenSize !== mb.teacher.hiddenSize) {
    throw new RecdistillError('E_INPUT', `${a} and ${b} tap different layers or sizes (${ma.teacher.layers} / ${ma.teacher.hiddenSize} vs ${mb.teacher.layers} / ${mb.teacher.hiddenSize}).`);
  }
  const ra = openCache(a, { fingerprint: ma.dataset.fingerprint, requireComplete: false, maxShards: 2 });
  const rb = openCache(b, { fingerprint: ma.dataset.fingerprint, datasetRecord: ma.dataset, requireComplete: false, maxShards: 2 });
  const L = ra.layers.length;
  const H = ra.hiddenSize;
  const acc = ra.layers.map((layer) => ({ layer, maxAbsDiff: 0, maxAbs: 0, cosSum: 0, minCosine: 1 }));
  let rows = 0;
  try {
    for (let u = 0; u < ma.dataset.users; u++) {
      const x = ra.rowsForUser(u);
      const y = rb.rowsForUser(u);
      if (x.positions.join() !== y.positions.join()) throw new RecdistillError('E_INPUT', `user ${u}: the caches hold different positions (${x.positions.length} vs ${y.positions.length} rows).`);
      for (let r = 0; r < x.positions.length; r++) {
        for (let l = 0; l < L; l++) {
          const off = (r * L + l) * H;
          let dot = 0, na = 0, nb = 0;
          const s = acc[l]!;
          for (let d = 0; d < H; d++) {
            const p = x.hidden[off + d]!;
            const q = y.hidden[off + d]!;
            s.maxAbsDiff = Math.max(s.maxAbsDiff, Math.abs(p - q));
            s.maxAbs = Math.max(s.maxAbs, Math.abs(p));
            dot += p * q;
            na += p * p;
            nb += q * q;
          }
          const cos = na && nb ? dot / Math.sqrt(na * nb) : na === nb ? 1 : 0;
          s.cosSum += cos;
          s.minCosine = Math.min(s.minCosine, cos);
        }
        rows++;
      }
    }
    const ea = ra.itemEmbeddings();
    const eb = rb.itemEmbeddings();
    let maxAbsDiff = 0, maxAbs = 0;
    for (let i = 0; i < ea.length; i++) {
      maxAbsDiff = Math.max(maxAbsDiff, Math.abs(ea[i]! - eb[i]!));
      maxAbs = Math.max(maxAbs, Math.abs(ea[i]!));
    }
    return {
      a,
      b,
      users: ma.dataset.users,
      rows,
      layers: acc.map(({ layer, maxAbsDiff, maxAbs, cosSum, minCosine }) => ({ layer, maxAbsDiff, maxAbs, meanCosine: rows ? cosSum / rows : 1, minCosine })),
      items: { maxAbsDiff, maxAbs },
    };
  } finally {
    ra.close();
    rb.close();
  }
}
