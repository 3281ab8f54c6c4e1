import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const src = (path: string) => fileURLToPath(new URL(`./src/${path}`, import.meta.url))

export default defineConfig({
  resolve: {
    // The examples import 'kysely-resilient' by name; in tests that is the sources, so no test needs
    // dist and the tests' own imports of src/ and the examples' share one copy of every class.
    alias: [
      { find: /^kysely-resilient$/, replacement: src('index.ts') },
      { find: /^kysely-resilient\/lambda$/, replacement: src('lambda/index.ts') },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    // One PostgreSQL primary+replica and one MariaDB primary+replica for the whole run; tests that
    // break servers start their own clusters. It also runs the leak watch's final check.
    globalSetup: ['test/support/global-setup.ts'],
    // Records every event, logged error and warning of the run so global setup can search them all for
    // secrets (see test/support/leak-watch.ts).
    setupFiles: ['test/support/leak-watch.ts'],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Two files at a time, also on two cores: most of a file's time is spent waiting on its servers
    // (starting them, replication, failovers, timeouts), not on the CPU. The full run took 680 s with
    // Vitest's default of one worker on a 2-core machine and 295 s with two.
    maxWorkers: 2,
    reporters: ['default'],
  },
})
