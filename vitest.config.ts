import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // 2 cores: keep forks low so heavy tests (training, ONNX) do not starve each other.
    pool: 'forks',
    maxWorkers: 2,
    // The two workers already use both cores: wasm runs single-threaded in tests unless a test asks for threads
    // (test/backend/threads.test.ts sets its own counts in child processes).
    env: { RECDISTILL_THREADS: '1' },
  },
});
