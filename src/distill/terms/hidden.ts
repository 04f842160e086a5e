import * as tf from '@tensorflow/tfjs-core';
import { cosineDistance, l2Distance } from '../losses.js';
import { connect } from './util.js';
import type { StepShared, TermModule, TermName, TermSetup } from './types.js';

/**
 * Hidden-state alignment (SLMRec): each aligned student block's states, through a learned projection D -> H, against
 * the teacher's states at its tapped layer; cos = 1 - cosine, l2 = squared L2, both averaged over the pairs. The two
 * terms share the projections (created once, when either is on) and, within a step, the projected states.
 */
interface Projection {
  w: tf.Variable; // [D, H]
  b: tf.Variable; // [H]
}

const projections = new WeakMap<TermSetup, Projection[]>();
const projectedStates = new WeakMap<StepShared, Map<string, tf.Tensor2D>>();

/** The D -> H projections, one per aligned pair, created by whichever of cos / l2 is set up first. */
function projectionsOf(s: TermSetup): Projection[] {
  let proj = projections.get(s);
  if (!proj) {
    const { D, H, seed } = s;
    // The seed offset 11 * (block + 1) is older than blocks numbered from 0: kept, so runs reproduce.
    proj = s.pairs.map((p) => ({
      w: s.variable(`proj${p.block}/w`, tf.randomNormal([D, H], 0, 1 / Math.sqrt(D), 'float32', seed + 11 * (p.block + 1))),
      b: s.variable(`proj${p.block}/b`, tf.zeros([H])),
    }));
    projections.set(s, proj);
  }
  return proj;
}

/** Pair i's projected student states at the teacher slots [M, H]; cos and l2 share them unless one is cut. */
function projected(st: StepShared, proj: Projection[], s: TermSetup, t: TermName, i: number): tf.Tensor2D {
  let cache = projectedStates.get(st);
  if (!cache) projectedStates.set(st, (cache = new Map()));
  const key = `${i}:${st.cut(t)}`;
  if (!cache.has(key)) {
    const hs = tf.gather(st.flatFor(t, s.pairs[i]!.block), st.slotsT!); // [M, D]
    cache.set(key, tf.add(tf.matMul(hs, proj[i]!.w), proj[i]!.b) as tf.Tensor2D); // [M, H]
  }
  return cache.get(key)!;
}

function alignment(name: 'cos' | 'l2', distance: (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Scalar): TermModule['create'] {
  return (s) => {
    const proj = projectionsOf(s);
    return {
      compute(st) {
        if (!st.tb || !st.slotsT) return undefined;
        const M = st.tb.slots.length;
        let sum: tf.Scalar = tf.scalar(0);
        s.pairs.forEach((p, i) => {
          const ht = tf.tensor2d(st.tb!.hidden[st.lookupTapped.indexOf(p.tapped)]!, [M, s.H]); // [M, H]
          sum = tf.add(sum, distance(projected(st, proj, s, name, i), ht));
        });
        return connect(tf.div(sum, s.pairs.length), proj.map((p) => p.w));
      },
    };
  };
}

export const cosTerm: TermModule = {
  name: 'cos', lambda: 'lambdaCos', ablateLambda: 1, inAll: true, readsTeacher: true, ownAdapter: false,
  what: 'hidden-state alignment: 1 - cosine(student projection, teacher state) at the aligned layers (SLMRec)',
  create: alignment('cos', cosineDistance),
};

export const l2Term: TermModule = {
  name: 'l2', lambda: 'lambdaL2', ablateLambda: 0.1, inAll: true, readsTeacher: true, ownAdapter: false,
  what: 'hidden-state alignment: squared L2 between student projection and teacher state (SLMRec)',
  create: alignment('l2', l2Distance),
};
