import * as tf from '@tensorflow/tfjs-core';

/**
 * Exponential moving average of the model's weights (Polyak averaging), updated after every optimiser step:
 *   shadow <- decay * shadow + (1 - decay) * weights,   shadow = the initial weights before the first step.
 * Validation, the best-epoch copy and so the served model use the shadow; training continues on the raw
 * weights. The shadow lives in the checkpoint (`ema/<name>`), so a resumed run replays exactly.
 */
export interface Ema {
  decay: number;
  /** One shadow per model variable, same order. */
  shadow: tf.Variable[];
}

export function createEma(vars: tf.Variable[], decay: number): Ema {
  return { decay, shadow: vars.map((v) => tf.variable(v.clone(), false)) };
}

export function updateEma(ema: Ema, vars: tf.Variable[]): void {
  tf.tidy(() => {
    ema.shadow.forEach((s, i) => s.assign(tf.add(tf.mul(s, ema.decay), tf.mul(vars[i]!, 1 - ema.decay))));
  });
}

/** Run `fn` with the shadow weights in the model's variables, then put the raw weights back. */
export async function withShadow<T>(ema: Ema, vars: tf.Variable[], fn: () => Promise<T>): Promise<T> {
  const raw = vars.map((v) => v.clone());
  vars.forEach((v, i) => v.assign(ema.shadow[i]!));
  try {
    return await fn();
  } finally {
    vars.forEach((v, i) => v.assign(raw[i]!));
    raw.forEach((t) => t.dispose());
  }
}

export function disposeEma(ema: Ema | undefined): void {
  ema?.shadow.forEach((s) => s.dispose());
}
