import { defineConfig } from 'vitest/config';

/**
 * Two projects: `unit` (pure code, fakes, loopback sockets) runs files in parallel; `lab` (network
 * namespaces, wireguard-go, the kernel VM lane) runs one file at a time, because its tests share the
 * host's 2 cores and kernel and assert on real traffic.
 */
export default defineConfig({
  test: {
    reporters: ['default', ['json', { outputFile: process.env.WEFT_TEST_REPORT ?? 'test/results/vitest.json' }]],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts', 'mesh/**/*.test.ts'],
          exclude: ['test/lab/**', 'test/vm/**', '**/node_modules/**'],
          testTimeout: 30_000,
          hookTimeout: 30_000,
          maxWorkers: 2,
        },
      },
      {
        extends: true,
        test: {
          name: 'lab',
          include: ['test/lab/**/*.test.ts', 'test/vm/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
