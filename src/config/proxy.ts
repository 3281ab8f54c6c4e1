import { isRdsProxyHost } from '../aws/rds-host.js'
import { ConfigError } from '../errors.js'
import { type Check, oneOf } from '../validation/check.js'
import type { SqlDialect } from './create-db-config.js'
import type { ResolvedDriverOptions } from './driver-options.js'
import type { ResolvedPoolOptions } from './pool-options.js'

/**
 * A connection proxy between the application and the database that multiplexes many client
 * connections over a few server sessions: PgBouncer (transaction or session mode) or Amazon RDS
 * Proxy. Behind one, the library sends nothing that would pin a session or that the proxy refuses
 * (startup parameters, `SET` at connect); the settings that need them are refused at `createDb`.
 *
 * @example
 * ```ts
 * import type { ConnectionProxy } from 'kysely-resilient'
 *
 * const proxy: ConnectionProxy = 'pgbouncer'
 * ```
 */
export type ConnectionProxy = 'pgbouncer' | 'rds-proxy'

/**
 * Checks a `proxy` setting: a proxy, `false` (none, even on an RDS Proxy host name) or `undefined`
 * (inherit, and in the end: detect from the host name).
 */
export const proxySetting: Check<ConnectionProxy | false | undefined> = oneOf('pgbouncer', 'rds-proxy', false)

/** The proxy an endpoint is behind: the setting, or RDS Proxy when the host name is one's. */
export function proxyOf(
  setting: ConnectionProxy | false | undefined,
  host: string | undefined,
): ConnectionProxy | undefined {
  if (setting === false) return undefined
  if (setting !== undefined) return setting
  return isRdsProxyHost(host) ? 'rds-proxy' : undefined
}

/** Where an endpoint's settings came from, to name them in an error. */
export interface ProxyCheckNames {
  /** The `proxy` setting that applies (`'proxy'`, `'writer.proxy'`), or a note that it was detected. */
  readonly proxy: string
  /** The pool setting that applies: `'pool.statementTimeoutMs'` or `'readers[0].pool.statementTimeoutMs'`. */
  readonly pool: (key: keyof ResolvedPoolOptions) => string
  /** The driver option that applies: `'pg.options'` or `'writer.pg.options'`. */
  readonly driver: (key: string) => string
}

/** pg options that travel as startup parameters, which PgBouncer refuses and RDS Proxy pins on. */
const POSTGRES_STARTUP_PARAMETERS = [
  'options',
  'lock_timeout',
  'idle_in_transaction_session_timeout',
] as const

/**
 * Refuses, at `createDb`, the settings that cannot work through `proxy`: each one is sent when a
 * session opens (a PostgreSQL startup parameter, a MySQL `SET SESSION`). PgBouncer rejects unknown
 * startup parameters ("unsupported startup parameter", SQLSTATE 08P01) and would apply a `SET` to a
 * server session that other clients share in transaction mode; RDS Proxy pins the client to one
 * server session for its lifetime on either, which undoes the multiplexing it is there for.
 */
export function checkProxyCompatibility(
  proxy: ConnectionProxy | undefined,
  dialect: SqlDialect,
  pool: ResolvedPoolOptions,
  driverOptions: ResolvedDriverOptions,
  names: ProxyCheckNames,
): void {
  if (proxy === undefined) return
  if (proxy === 'pgbouncer' && dialect === 'mysql') {
    throw new ConfigError(
      names.proxy,
      "'pgbouncer' speaks only PostgreSQL's protocol; with dialect 'mysql' use 'rds-proxy' or false",
    )
  }
  const behind = proxy === 'pgbouncer' ? 'PgBouncer' : 'RDS Proxy'
  const how =
    dialect === 'postgres'
      ? proxy === 'pgbouncer'
        ? 'it is a startup parameter, which PgBouncer refuses (unsupported startup parameter)'
        : 'it is a startup parameter, which pins every session on RDS Proxy'
      : 'it is a SET SESSION at connect, which pins every session on RDS Proxy'
  if (pool.statementTimeoutMs !== undefined) {
    throw new ConfigError(
      names.pool('statementTimeoutMs'),
      `cannot be used behind ${behind} (${names.proxy}): ${how}. Set the server-side limit on the database user instead (${
        dialect === 'postgres'
          ? 'ALTER ROLE app_user SET statement_timeout = 15000'
          : "the parameter group's max_execution_time / max_statement_time, or the proxy's initialization query"
      }), and use pool.queryTimeoutMs for a client-side limit`,
    )
  }
  if (pool.sessionIdleTimeoutMs !== undefined) {
    throw new ConfigError(
      names.pool('sessionIdleTimeoutMs'),
      `cannot be used behind ${behind} (${names.proxy}): the proxy, not the server, owns idle client connections (and ${
        dialect === 'postgres'
          ? how
          : 'a SET SESSION at connect is sent to whichever server session the proxy lends'
      }). Use ${
        proxy === 'pgbouncer' ? "PgBouncer's client_idle_timeout" : "RDS Proxy's IdleClientTimeout"
      } and pool.idleTimeoutMs instead`,
    )
  }
  if (dialect === 'postgres') {
    for (const key of POSTGRES_STARTUP_PARAMETERS) {
      if (driverOptions[key] !== undefined) {
        throw new ConfigError(
          names.driver(key),
          `cannot be used behind ${behind} (${names.proxy}): ${how}. Set it on the database user instead (ALTER ROLE … SET …)`,
        )
      }
    }
  }
}
