import { defineConfig } from 'vitest/config'
import base from './vitest.config.js'

// The server-free tests (`npm run test:unit`): fakes instead of servers, no global setup, seconds in
// all. `npm test` runs them too, with everything else (vitest.config.ts).
export default defineConfig({
  // The same 'kysely-resilient' aliases as the full run.
  resolve: base.resolve,
  test: {
    include: [
      'test/auth/credential-cache.test.ts',
      'test/aws/rds-host.test.ts',
      'test/config/auth-tls-config.test.ts',
      'test/config/db-settings.test.ts',
      'test/config/driver-options.test.ts',
      'test/config/proxy.test.ts',
      'test/config/topology.test.ts',
      'test/consistency/position-tracker.test.ts',
      'test/consistency/replication-position.test.ts',
      'test/dialect/lag-queries.test.ts',
      'test/dialect/topology-queries.test.ts',
      'test/errors.test.ts',
      'test/lambda/config-from-env.test.ts',
      'test/liveness/liveness-monitor.test.ts',
      'test/pool/connection-pool.test.ts',
      'test/retry/deadline.test.ts',
      'test/retry/retry-policy.test.ts',
      'test/routing/classify-statement.test.ts',
      'test/routing/cluster.test.ts',
      'test/routing/reader-selector.test.ts',
      'test/routing/routing-connection.test.ts',
      'test/support/aurora-mysql-shim.test.ts',
      'test/topology/reader-health-unit.test.ts',
      'test/topology/topology-monitor.test.ts',
      'test/topology/writer-tracker.test.ts',
      'test/validation/checks.test.ts',
      'test/validation/config-spec.test.ts',
    ],
    testTimeout: 30_000,
    pool: 'threads',
    // Most of these tests wait on short real timers (cooldowns, polls, deadlines), not on the CPU:
    // three workers overlap the waits even on two cores (5.6 s with Vitest's default of one worker
    // on a 2-core machine, 2.7 s with three).
    maxWorkers: 3,
    // One module graph for all files: the fakes hold no state across files, and re-importing src/ per
    // file was most of the run.
    isolate: false,
    reporters: ['default'],
  },
})
