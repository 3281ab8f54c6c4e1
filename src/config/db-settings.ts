import type { ReaderStrategy, SqlDialect } from './create-db-config.js'
import type { ResolvedPoolOptions } from './pool-options.js'
import type { ConnectionProxy } from './proxy.js'
import type { ResolvedConfig } from './resolve-config.js'

/**
 * One endpoint's settings after defaults, without secrets: what `db.settings` lists.
 *
 * @example
 * ```ts
 * const [writer] = db.settings.writers
 * log.info({ writer: `${writer.host}:${writer.port}`, tls: writer.tls, proxy: writer.proxy ?? 'none' })
 * ```
 */
export interface EndpointDescription {
  /** `'writer'`, `'reader-0'`, … or the endpoint's `name`. */
  readonly name: string
  readonly role: 'writer' | 'reader'
  /** Host name, IP address or Unix socket path; absent when a Secrets Manager secret supplies it. */
  readonly host: string | undefined
  readonly port: number
  readonly user: string | undefined
  readonly database: string | undefined
  /** Every pool setting, defaults applied (see `PoolConfig`). */
  readonly pool: PoolSettings
  /** The kind of `auth` only: an IAM or token config may hold keys or a function. */
  readonly auth: 'password' | 'iam' | 'secret' | 'token'
  /** `'off'`, `'unverified'` (tls: 'require'), or `'verify'` with the CAs trusted. */
  readonly tls: 'off' | 'unverified' | 'verify (system CA)' | 'verify (rds CA)' | 'verify (custom CA)'
  /** The connection proxy in front of it, set or detected; absent for none. */
  readonly proxy: ConnectionProxy | undefined
  /** The names of the `pg` / `mysql2` options given; never their values. */
  readonly driverOptions: ReadonlyArray<string>
  /** Which of `onCreateConnection` / `onReserveConnection` are set. */
  readonly hooks: ReadonlyArray<string>
}

/**
 * Every pool setting of an endpoint with its default applied (the fields of `PoolConfig`;
 * `statementTimeoutMs`, `queryTimeoutMs`, `validateAfterIdleMs`, `sessionIdleTimeoutMs` and
 * `probeAfterMs` are `undefined` when off).
 *
 * @example
 * ```ts
 * const { acquireTimeoutMs, max } = db.settings.writers[0].pool
 * ```
 */
export type PoolSettings = ResolvedPoolOptions

/**
 * A db's configuration after validation and defaults, without secrets: no password, token, AWS
 * key, secret value or driver option value, and no function. Frozen, and plain data that
 * `JSON.stringify` prints (`retry.retries` is `Infinity` when unbounded, which JSON prints as null),
 * so a health check or a startup log line can show how the db is set up without reading the
 * environment again.
 *
 * @example
 * ```ts
 * console.log(JSON.stringify({ event: 'db-ready', ...db.settings }))
 * app.get('/health', (_req, res) => res.json({ dialect: db.dialect, readers: db.settings.readers.length }))
 * ```
 */
export interface DbSettings {
  readonly dialect: SqlDialect
  /** Writer candidates in the order given; `db.stats().writer` says which one is the writer now. */
  readonly writers: ReadonlyArray<EndpointDescription>
  readonly readers: ReadonlyArray<EndpointDescription>
  readonly routing: {
    readonly readerStrategy: ReaderStrategy
    readonly fallback: 'writer' | 'error'
    readonly maxReplicaLagMs: number | undefined
    readonly lagCheckIntervalMs: number
    readonly readerCooldownMs: number
    readonly writerTables: ReadonlyArray<string>
  }
  readonly retry: {
    readonly retries: number
    readonly minDelayMs: number
    readonly maxDelayMs: number
    readonly maxElapsedMs: number
  }
  readonly consistency: {
    readonly readYourWrites: 'scoped' | 'process'
    readonly whenBehind: 'writer' | 'wait'
    readonly maxWaitMs: number
    readonly pollIntervalMs: number
  }
  /** Topology discovery as resolved (`false` when off): see `TopologyConfig`. */
  readonly topology:
    | false
    | {
        readonly instanceHostPattern: string
        readonly refreshIntervalMs: number
      }
  readonly telemetry: {
    /** Whether spans carry the statement's SQL (`telemetry.statementText`). */
    readonly statementText: boolean
  }
}

/** The {@link DbSettings} of a resolved config; built once per db. */
export function describeSettings(config: ResolvedConfig): DbSettings {
  return deepFreeze({
    dialect: config.dialect,
    writers: config.writers.map((endpoint) => endpoint.describe()),
    readers: config.readers.map((endpoint) => endpoint.describe()),
    routing: {
      readerStrategy: config.readerStrategy,
      fallback: config.fallback,
      maxReplicaLagMs: config.maxReplicaLagMs,
      lagCheckIntervalMs: config.lagCheckIntervalMs,
      readerCooldownMs: config.readerCooldownMs,
      writerTables: [...config.writerTables],
    },
    retry: { ...config.retry },
    consistency: { ...config.consistency },
    topology: config.topology === undefined ? false : { ...config.topology },
    telemetry: { ...config.telemetry },
  })
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child)
    Object.freeze(value)
  }
  return value
}
