import { ConfigError } from '../errors.js'
import { boolean, orFalse } from '../validation/check.js'
import { type ConfigSpec, checkObject, withDefaults } from '../validation/config-spec.js'
import { duration, integer } from '../validation/number-setting.js'
import type { PoolConfig } from './create-db-config.js'

/** Pool settings with every default applied. */
export interface ResolvedPoolOptions {
  readonly max: number
  readonly min: number
  readonly idleTimeoutMs: number
  readonly acquireTimeoutMs: number
  readonly connectTimeoutMs: number
  readonly maxLifetimeMs: number
  readonly statementTimeoutMs: number | undefined
  readonly queryTimeoutMs: number | undefined
  readonly keepAlive: boolean
  readonly keepAliveInitialDelayMs: number
  readonly validateAfterIdleMs: number | undefined
  readonly sessionIdleTimeoutMs: number | undefined
  readonly probeAfterMs: number | undefined
  readonly probeTimeoutMs: number
}

/** The defaults, documented field by field on {@link PoolConfig}. */
export const POOL_DEFAULTS: ResolvedPoolOptions = Object.freeze({
  max: 10,
  min: 0,
  idleTimeoutMs: 30_000,
  acquireTimeoutMs: 10_000,
  connectTimeoutMs: 5_000,
  maxLifetimeMs: 30 * 60_000,
  statementTimeoutMs: undefined,
  queryTimeoutMs: undefined,
  keepAlive: true,
  keepAliveInitialDelayMs: 10_000,
  validateAfterIdleMs: undefined,
  sessionIdleTimeoutMs: undefined,
  probeAfterMs: 500,
  probeTimeoutMs: 1_000,
})

/** The table of `pool`, the top level's and an endpoint's own. */
export const POOL_SPEC = {
  max: integer({ min: 1 }),
  min: integer({ min: 0 }),
  idleTimeoutMs: duration({ min: 0 }),
  acquireTimeoutMs: duration({ min: 1 }),
  connectTimeoutMs: duration({ min: 1 }),
  maxLifetimeMs: duration({ min: 0 }),
  statementTimeoutMs: duration({ min: 1 }),
  queryTimeoutMs: duration({ min: 1 }),
  keepAlive: boolean,
  keepAliveInitialDelayMs: duration({ min: 0 }),
  validateAfterIdleMs: duration({ min: 0 }),
  sessionIdleTimeoutMs: duration({ min: 1_000 }),
  probeAfterMs: orFalse(duration({ min: 1 })),
  probeTimeoutMs: duration({ min: 1 }),
} satisfies ConfigSpec<PoolConfig>

/**
 * Validates a `pool` setting at `setting`; what it leaves unset comes from `base` (the defaults, or
 * the top level's pool for an endpoint's own).
 */
export function resolvePool(input: unknown, base: ResolvedPoolOptions, setting: string): ResolvedPoolOptions {
  if (input === undefined) return base
  const { probeAfterMs, ...rest } = checkObject(input, setting, POOL_SPEC)
  const pool = withDefaults(rest, base)
  // Between fields, either of which may be inherited: name the one this object set.
  if (pool.min > pool.max) {
    throw rest.min === undefined
      ? new ConfigError(
          `${setting}.max`,
          `must be at least the inherited pool.min (${pool.min}), got ${pool.max}`,
        )
      : new ConfigError(`${setting}.min`, `must not exceed ${setting}.max (${pool.max}), got ${pool.min}`)
  }
  // false turns the probe off here even when the inherited pool has one.
  return Object.freeze({
    ...pool,
    probeAfterMs: probeAfterMs === false ? undefined : (probeAfterMs ?? base.probeAfterMs),
  })
}
