import { join } from 'node:path';
import { RecdistillError } from '../errors.js';
import { writeFileAtomic } from '../util/atomic.js';
import { sha256 } from '../util/hash.js';
import { encodeSafetensors, type STTensor } from '../util/safetensors.js';
import { firstNonFinite } from './check.js';
import { f32ToF16 } from '../util/f16.js';
import type { HiddenDtype } from './format.js';

/** One user's teacher states, already clipped to positions first..first+count-1 (all <= n-2). */
export interface UserStates {
  user: number;
  first: number;
  count: number;
  /** [count, layers, H] */
  states: Float32Array;
}

/**
 * Pass-1 shard bytes: `user` I32 [R], `position` I32 [R], `hidden` F32|F16 [R, layers, H], rows sorted by
 * (user, position). No metadata that depends on the run (time, pid): the same states give the same bytes.
 */
export function encodeHiddenShard(users: UserStates[], layers: number, H: number, dtype: HiddenDtype): { bytes: Uint8Array; rows: number } {
  const sorted = [...users].sort((a, b) => a.user - b.user);
  const R = sorted.reduce((a, u) => a + u.count, 0);
  const LH = layers * H;
  const user = new Int32Array(R);
  const position = new Int32Array(R);
  const hidden = new Float32Array(R * LH);
  let r = 0;
  for (const u of sorted) {
    if (u.states.length !== u.count * LH) {
      throw new RecdistillError('E_INTERNAL', `teacher returned ${u.states.length} state values for user ${u.user}, expected ${u.count} x ${layers} x ${H}.`);
    }
    const bad = firstNonFinite(u.states);
    if (bad >= 0) {
      throw new RecdistillError('E_NUMERIC', `teacher state of user ${u.user} is not finite (${u.states[bad]} at position ${u.first + Math.floor(bad / LH)}, layer ${Math.floor(bad / H) % layers}, dimension ${bad % H}); not caching it.`);
    }
    hidden.set(u.states, r * LH);
    for (let i = 0; i < u.count; i++, r++) {
      user[r] = u.user;
      position[r] = u.first + i;
    }
  }
  const half = dtype === 'F16' ? f32ToF16(hidden) : undefined;
  if (half) {
    for (let i = 0; i < half.length; i++) {
      if ((half[i]! & 0x7c00) === 0x7c00) {
        const row = Math.floor(i / LH);
        throw new RecdistillError('E_NUMERIC', `teacher state ${hidden[i]} (user ${user[row]}, position ${position[row]}) overflows half precision (|x| > 65504); use --hidden-dtype f32.`);
      }
    }
  }
  const tensors: Record<string, STTensor> = {
    user: { dtype: 'I32', shape: [R], data: user },
    position: { dtype: 'I32', shape: [R], data: position },
    hidden: half ? { dtype: 'F16', shape: [R, layers, H], data: half } : { dtype: 'F32', shape: [R, layers, H], data: hidden },
  };
  return { bytes: encodeSafetensors(tensors), rows: R };
}

/** Pass-2 shard bytes: soft labels aligned row for row with a hidden shard. */
export function encodeSoftShard(user: Int32Array, position: Int32Array, topkIndex: Int32Array, topkProb: Float32Array, k: number): Uint8Array {
  const R = user.length;
  return encodeSafetensors({
    user: { dtype: 'I32', shape: [R], data: user },
    position: { dtype: 'I32', shape: [R], data: position },
    topk_index: { dtype: 'I32', shape: [R, k], data: topkIndex },
    topk_prob: { dtype: 'F32', shape: [R, k], data: topkProb },
  });
}

/** Write bytes atomically (temp + rename) and return their sha256. */
export function writeShard(dir: string, file: string, bytes: Uint8Array): string {
  writeFileAtomic(join(dir, file), bytes);
  return sha256(bytes);
}

