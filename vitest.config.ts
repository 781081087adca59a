import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Forks, not threads: tests load koffi and the native addon, spawn tasks and enter namespaces.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // End-to-end files share one machine's CPUs and memory: run files one at a time so that ratios stay stable.
    fileParallelism: false,
    reporters: ['default'],
  },
});
