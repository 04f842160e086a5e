import { describe, expect, it } from 'vitest';
import { wasmAbortError } from '../../src/student/training/train.js';
import type { StudentOptions } from '../../src/student/training/config.js';
import type { TrainHooks } from '../../src/student/training/hooks.js';

describe('a wasm abort during training', () => {
  const o = { batchSize: 128, maxLen: 50 } as StudentOptions;
  const abort = new Error('Aborted(). Build with -sASSERTIONS for more info.');

  it('becomes an E_USAGE error naming the epoch, the 4 GiB heap and the options to lower; EMKD named when on', () => {
    const emkd = { provenance: () => ({ emkd: { K: 3 } }) } as unknown as TrainHooks;
    const e = wasmAbortError(abort, 'wasm', 4, o, emkd)!;
    expect(e.code).toBe('E_USAGE');
    expect(e.message).toContain('aborted in epoch 5 (Aborted()');
    expect(e.message).toContain('4 GiB');
    expect(e.message).toContain('--emkd 3 keeps 3 networks');
    expect(e.message).toContain('--batch-size (now 128)');
    expect(e.message).toContain('--max-len (now 50)');
    expect(e.cause).toBe(abort);
    expect(wasmAbortError(abort, 'wasm', 0, o)!.message).not.toContain('--emkd');
  });

  it('leaves other errors, and aborts on other backends, alone', () => {
    expect(wasmAbortError(new Error('something else'), 'wasm', 0, o)).toBeUndefined();
    expect(wasmAbortError(abort, 'cpu', 0, o)).toBeUndefined();
    expect(wasmAbortError('Aborted()', 'wasm', 0, o)).toBeUndefined();
  });
});
