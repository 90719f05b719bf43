import { defineConfig } from 'vitest/config';

/**
 * vitest configuration used only inside the kernel VM lane (test/vm/guest/run.sh): the host root
 * is read-only there, so caches and the report go to /tmp, and only the guest tests run.
 */
export default defineConfig({
  cacheDir: '/tmp/weft-vm-vite-cache',
  test: {
    include: ['test/vm/guest/**/*.guest.ts'],
    reporters: ['verbose', ['json', { outputFile: process.env.WEFT_TEST_REPORT ?? '/tmp/weft-vm-report.json' }]],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    fileParallelism: false,
    pool: 'threads',
    isolate: false,
  },
});
