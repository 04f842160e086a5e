import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Safety nets only (tests wait on events, not on time): generous enough for 2 cores shared with other jobs.
    testTimeout: 900_000,
    hookTimeout: 900_000,
    // 2 cores: keep forks low so heavy tests (training, ONNX) do not starve each other.
    pool: 'forks',
    maxWorkers: 2,
    // The two workers already use both cores: wasm runs single-threaded in tests unless a test asks for threads
    // (test/backend/threads.test.ts sets its own counts in child processes).
    env: { RECDISTILL_THREADS: '1' },
  },
});
