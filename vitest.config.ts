import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // 2 cores: keep forks low so heavy tests (training, ONNX) do not starve each other.
    pool: 'forks',
    maxWorkers: 2,
  },
});
