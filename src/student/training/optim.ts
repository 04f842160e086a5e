import * as tf from '@tensorflow/tfjs-core';

/**
 * Adam / AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019) with explicit state, so a checkpoint stores the
 * moments by the model's own parameter names and a resumed run continues bit-for-bit.
 * Bias correction is folded into the step size: lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t).
 */
export interface AdamConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface Adam {
  config: AdamConfig;
  /** Steps taken so far. */
  t: number;
  m: tf.Variable[];
  v: tf.Variable[];
  /** One step; `lr` (default config.lr) is this step's learning rate (a schedule's value), decay included. */
  apply(vars: tf.Variable[], grads: tf.Tensor[], lr?: number): void;
  dispose(): void;
}

export function createAdam(vars: tf.Variable[], config: AdamConfig): Adam {
  // The variable takes its own reference to the zeros: dispose the initial tensor, or it leaks.
  const zeroVar = (x: tf.Variable) => {
    const z = tf.zerosLike(x);
    const out = tf.variable(z, false);
    z.dispose();
    return out;
  };
  const m = vars.map(zeroVar);
  const v = vars.map(zeroVar);
  const adam: Adam = {
    config,
    t: 0,
    m,
    v,
    apply(params, grads, lr = config.lr) {
      adam.t += 1;
      const { beta1: b1, beta2: b2, eps, weightDecay } = config;
      const lrT = (lr * Math.sqrt(1 - Math.pow(b2, adam.t))) / (1 - Math.pow(b1, adam.t));
      tf.tidy(() => {
        params.forEach((p, i) => {
          const g = grads[i]!;
          const mi = m[i]!;
          const vi = v[i]!;
          mi.assign(tf.add(tf.mul(mi, b1), tf.mul(g, 1 - b1)));
          vi.assign(tf.add(tf.mul(vi, b2), tf.mul(tf.square(g), 1 - b2)));
          let upd = tf.mul(tf.div(mi, tf.add(tf.sqrt(vi), eps)), lrT);
          if (weightDecay > 0) upd = tf.add(upd, tf.mul(p, lr * weightDecay));
          p.assign(tf.sub(p, upd));
        });
      });
    },
    dispose() {
      for (const x of [...m, ...v]) x.dispose();
    },
  };
  return adam;
}

export type LrSchedule = 'constant' | 'warmup' | 'cosine';

/**
 * Learning rate of the step with 0-based global index `step` (a pure function of it, so a resumed run replays
 * the same rates). constant: lr. warmup: lr * min(1, (step + 1) / warmupSteps), i.e. lr / warmupSteps at the
 * first step, lr from step warmupSteps - 1 on. cosine: the same warm-up, then
 * lr * (1 + cos(pi * (step - warmupSteps) / (totalSteps - warmupSteps))) / 2: lr at step warmupSteps, 0 at
 * step totalSteps (the end of the --epochs budget) and after.
 */
export function scheduledLr(schedule: LrSchedule, lr: number, step: number, warmupSteps: number, totalSteps: number): number {
  if (schedule === 'constant') return lr;
  if (step < warmupSteps) return (lr * (step + 1)) / warmupSteps;
  if (schedule === 'warmup') return lr;
  const span = totalSteps - warmupSteps;
  if (span <= 0) return 0;
  const progress = Math.min(1, (step - warmupSteps) / span);
  return (lr * (1 + Math.cos(Math.PI * progress))) / 2;
}
