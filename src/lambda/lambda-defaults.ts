import type { CreateDbConfig, PoolConfig } from '../config/create-db-config.js'

/**
 * The pool settings `getConnection` applies under your own: every field you set in `pool` wins.
 * Tuned for AWS Lambda, where one container serves one invocation at a time and is frozen between
 * invocations (no timers run, no socket events are seen) for anything from milliseconds to hours.
 *
 * - `max: 2`: a container runs one invocation at a time, so it rarely needs more than one
 *   connection; 2 lets a read on a reader and a write on the writer (or a transaction and a
 *   statement outside it) overlap. With a thousand warm containers this is still a thousand to two
 *   thousand sessions: put RDS Proxy in front when concurrency is high.
 * - `min: 0`: connections kept open for a frozen container are only zombies on the server.
 * - `idleTimeoutMs: 60_000`: a container serving a steady stream keeps its connection; one that
 *   has been quiet for a minute closes it on the first timer tick after the thaw instead of reusing
 *   a socket that may have died meanwhile.
 * - `maxLifetimeMs: 600_000` (10 minutes): a connection is replaced regularly, so a long-lived warm
 *   container follows DNS after a failover or a reader change, and sessions stay well inside
 *   typical proxy and load-balancer limits (RDS Proxy closes idle clients after 30 minutes by
 *   default).
 * - `validateAfterIdleMs: 5_000`: a connection idle for more than five seconds (the container may
 *   have been frozen) gets one cheap ping before it is handed out; a dead one is replaced, so the
 *   first query after a thaw does not fail on a socket the server closed. Back-to-back invocations
 *   pay nothing.
 *
 * @example
 * ```ts
 * import { LAMBDA_POOL_DEFAULTS } from 'kysely-resilient/lambda'
 *
 * console.log(LAMBDA_POOL_DEFAULTS.max) // 2
 * ```
 */
export const LAMBDA_POOL_DEFAULTS: Readonly<PoolConfig> = Object.freeze({
  max: 2,
  min: 0,
  idleTimeoutMs: 60_000,
  maxLifetimeMs: 10 * 60_000,
  validateAfterIdleMs: 5_000,
})

/**
 * `config` with {@link LAMBDA_POOL_DEFAULTS} under its own `pool` settings. Endpoint-level `pool`
 * overrides still win over both.
 *
 * @example
 * ```ts
 * withLambdaDefaults({ dialect: 'postgres', writer, pool: { max: 4 } }).pool
 * // { max: 4, min: 0, idleTimeoutMs: 60_000, maxLifetimeMs: 600_000, validateAfterIdleMs: 5_000 }
 * ```
 */
export function withLambdaDefaults(config: CreateDbConfig): CreateDbConfig {
  // Anything malformed is left as it is, so createDb reports it as the user wrote it.
  if (typeof config !== 'object' || config === null) return config
  if (config.pool !== undefined && (typeof config.pool !== 'object' || config.pool === null)) return config
  return { ...config, pool: { ...LAMBDA_POOL_DEFAULTS, ...config.pool } }
}
