import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Runtime environment (not hyperparameters): where caches live, offline mode.
 * Like transformers.js's `env`: one object, set once, apart from per-call options.
 */
export const env = {
  /** Root for downloaded datasets (hub models go to the Hugging Face hub cache). RECDISTILL_CACHE overrides. */
  cacheDir: process.env.RECDISTILL_CACHE ?? join(homedir(), '.cache', 'recdistill'),
  /** Never touch the network when true. RECDISTILL_OFFLINE=1 (or the hub's HF_HUB_OFFLINE=1) sets it. */
  offline: process.env.RECDISTILL_OFFLINE === '1' || process.env.HF_HUB_OFFLINE === '1',
};
