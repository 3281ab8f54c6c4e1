import { settingKeys } from '../validation/setting-keys.js'
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

export const POOL_KEYS: ReadonlyArray<keyof PoolConfig> = settingKeys<PoolConfig>()(
  'max',
  'min',
  'idleTimeoutMs',
  'acquireTimeoutMs',
  'connectTimeoutMs',
  'maxLifetimeMs',
  'statementTimeoutMs',
  'queryTimeoutMs',
  'keepAlive',
  'keepAliveInitialDelayMs',
  'validateAfterIdleMs',
  'sessionIdleTimeoutMs',
  'probeAfterMs',
  'probeTimeoutMs',
)
