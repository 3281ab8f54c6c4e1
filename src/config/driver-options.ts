import type { AbortableOperationOptions, DatabaseConnection } from 'kysely'
import { ConfigError } from '../errors.js'
import { type Check, func } from '../validation/check.js'
import { type ConfigSpec, checkObject } from '../validation/config-spec.js'
import { describeType, describeValue } from '../validation/describe-value.js'
import type { SqlDialect } from './create-db-config.js'

/**
 * A connection hook, as Kysely's own dialect configs take it: `onCreateConnection` runs once on each
 * new server connection, `onReserveConnection` each time a connection is taken from the pool for a
 * statement or a session. The connection is Kysely's connection of the endpoint that opened it.
 *
 * @example
 * ```ts
 * import { CompiledQuery } from 'kysely'
 * import { type ConnectionHook, createDb } from 'kysely-resilient'
 *
 * const setSearchPath: ConnectionHook = async (connection) => {
 *   await connection.executeQuery(CompiledQuery.raw('set search_path to app, public'))
 * }
 * const db = createDb({ dialect: 'postgres', writer: process.env.DB_WRITER_URL!, onCreateConnection: setSearchPath })
 * ```
 */
export type ConnectionHook = (
  connection: DatabaseConnection,
  options?: AbortableOperationOptions,
) => Promise<void>

/**
 * Custom type parsers for `pg`, in the shape of pg's `CustomTypesConfig`: `pg.types` itself, or an
 * object whose `getTypeParser` returns a parser for a type OID.
 *
 * @example
 * ```ts
 * import pg from 'pg'
 *
 * const types = {
 *   // int8 (count(*), bigserial) as a JavaScript number instead of pg's default string.
 *   getTypeParser: (oid: number, format?: 'text' | 'binary') =>
 *     oid === 20 ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format),
 * }
 * ```
 */
export interface PostgresTypeParsers {
  getTypeParser(oid: number, format?: 'text' | 'binary'): (value: string) => unknown
}

/**
 * Options handed to each `pg` Client (pg's `ClientConfig`) that the library does not set itself. The
 * address, credentials, TLS, keepalive and timeouts are the library's: set them with the endpoint,
 * `auth`, `tls` and `pool` settings (createDb says which when one is given here).
 *
 * @example
 * ```ts
 * createDb({
 *   dialect: 'postgres',
 *   writer: process.env.DB_WRITER_URL!,
 *   pg: { application_name: 'orders-api', types: { getTypeParser: myParsers } },
 * })
 * ```
 */
export interface PostgresDriverOptions {
  /** The session's `application_name`, shown in `pg_stat_activity`. Default: `'kysely-resilient'`. */
  readonly application_name?: string
  /** Used by the server when `application_name` is not set. Default: unset. */
  readonly fallback_application_name?: string
  /** Custom type parsers for this endpoint's results (pg's `types`). Default: pg's global parsers. */
  readonly types?: PostgresTypeParsers
  /**
   * Startup options (libpq's `options`), for example `'-c search_path=app'`. With
   * `pool.sessionIdleTimeoutMs` the library appends its own `-c idle_session_timeout=…`. Default: unset.
   */
  readonly options?: string
  /** Ask for results in binary format. Default: `false`. */
  readonly binary?: boolean
  /** The client encoding. Default: pg's (`UTF8`). */
  readonly client_encoding?: string
  /** The session's `lock_timeout`, in milliseconds. Default: the server's. */
  readonly lock_timeout?: number
  /** The session's `idle_in_transaction_session_timeout`, in milliseconds. Default: the server's. */
  readonly idle_in_transaction_session_timeout?: number
  /** Use SCRAM channel binding (needs TLS). Default: `false`. */
  readonly enableChannelBinding?: boolean
}

/**
 * What a mysql2 `typeCast` function gets for each column: a part of mysql2's `TypeCastField`.
 *
 * @example
 * ```ts
 * const typeCast = (field: MysqlTypeCastField, next: () => unknown) =>
 *   field.type === 'TINY' && field.length === 1 ? field.string() === '1' : next()
 * ```
 */
export interface MysqlTypeCastField {
  /** The column's type name, for example `'TINY'`, `'LONGLONG'`, `'NEWDECIMAL'`, `'DATETIME'`. */
  readonly type: string
  readonly name: string
  readonly length: number
  readonly db: string
  readonly table: string
  string(encoding?: BufferEncoding): string | null
  buffer(): Buffer | null
  geometry(): unknown
}

/**
 * Options handed to each `mysql2` connection (mysql2's `ConnectionOptions`) that the library does not
 * set itself and that keep rows in the shape Kysely reads. The address, credentials, TLS, keepalive,
 * timeouts and pooling are the library's (createDb says which setting to use when one is given here).
 *
 * @example
 * ```ts
 * createDb({
 *   dialect: 'mysql',
 *   writer: process.env.DB_WRITER_URL!,
 *   mysql2: { supportBigNumbers: true, bigNumberStrings: true, dateStrings: true, timezone: 'Z' },
 * })
 * ```
 */
export interface MysqlDriverOptions {
  /** Return BIGINT and DECIMAL values that do not fit a double as strings. Default: `false`. */
  readonly supportBigNumbers?: boolean
  /** With `supportBigNumbers`, always return BIGINT and DECIMAL as strings. Default: `false`. */
  readonly bigNumberStrings?: boolean
  /** Return DECIMAL as numbers instead of strings. Default: `false`. */
  readonly decimalNumbers?: boolean
  /** Return dates as strings, all or only the listed types. Default: `false` (Date objects). */
  readonly dateStrings?: boolean | ReadonlyArray<'TIMESTAMP' | 'DATETIME' | 'DATE'>
  /** Return JSON columns as strings. Default: `false`. */
  readonly jsonStrings?: boolean
  /** The time zone dates are read and written in: `'local'`, `'Z'` or `'+HH:MM'`. Default: `'local'`. */
  readonly timezone?: string
  /** The connection's collation, for example `'UTF8MB4_UNICODE_CI'`. Default: mysql2's. */
  readonly charset?: string
  /** A column value converter, or `false` to get raw values. Default: mysql2's conversion. */
  readonly typeCast?: boolean | ((field: MysqlTypeCastField, next: () => unknown) => unknown)
  /** Allow several statements in one query string. Default: `false`. */
  readonly multipleStatements?: boolean
  /** Connection flags, for example `['-FOUND_ROWS']`. Default: mysql2's. */
  readonly flags?: ReadonlyArray<string>
  /** The local address to connect from. Default: the system's choice. */
  readonly localAddress?: string
  /** Pass objects as strings instead of expanding them. Default: `false`. */
  readonly stringifyObjects?: boolean
  /** How many prepared statements each connection keeps. Default: mysql2's (16000). */
  readonly maxPreparedStatements?: number
  /** Connection attributes sent to the server (performance_schema.session_connect_attrs). */
  readonly connectAttributes?: Readonly<Record<string, string>>
  /** Log packets to stdout (debugging). Default: `false`. */
  readonly trace?: boolean
}

/** How a driver option's value is checked. */
type OptionKind =
  | 'string'
  | 'number'
  | 'boolean'
  | 'function'
  | 'object'
  | 'boolean|function'
  | 'boolean|array'
  | 'array'
  | 'type parsers'

/**
 * A driver option of `kind`. A wrong value is shown only when it is a boolean or a number: a string
 * may hold a secret (`options: '-c password=…'`, a connect attribute).
 */
function option(kind: OptionKind): Check<unknown> {
  const expected =
    kind === 'type parsers' ? 'an object with a getTypeParser function (pg.types)' : kind.replace('|', ' or ')
  return (value, setting) => {
    if (value === undefined || isOptionKind(value, kind)) return value
    const shown =
      typeof value === 'boolean' || typeof value === 'number' ? describeValue(value) : describeType(value)
    throw new ConfigError(setting, `expected ${expected}, got ${shown}`)
  }
}

/** The table of `pg`: each option pg takes from the caller, with the kind of value it takes. */
export const POSTGRES_DRIVER_OPTIONS = {
  application_name: option('string'),
  fallback_application_name: option('string'),
  types: option('type parsers'),
  options: option('string'),
  binary: option('boolean'),
  client_encoding: option('string'),
  lock_timeout: option('number'),
  idle_in_transaction_session_timeout: option('number'),
  enableChannelBinding: option('boolean'),
} satisfies ConfigSpec<PostgresDriverOptions>

/** The table of `mysql2`. */
export const MYSQL_DRIVER_OPTIONS = {
  supportBigNumbers: option('boolean'),
  bigNumberStrings: option('boolean'),
  decimalNumbers: option('boolean'),
  dateStrings: option('boolean|array'),
  jsonStrings: option('boolean'),
  timezone: option('string'),
  charset: option('string'),
  typeCast: option('boolean|function'),
  multipleStatements: option('boolean'),
  flags: option('array'),
  localAddress: option('string'),
  stringifyObjects: option('boolean'),
  maxPreparedStatements: option('number'),
  connectAttributes: option('object'),
  trace: option('boolean'),
} satisfies ConfigSpec<MysqlDriverOptions>

/**
 * Driver options the library owns or cannot allow, with what to do instead. Named so a user who
 * passes one learns the setting that does the job, instead of "unknown setting".
 */
export const OWNED_POSTGRES_OPTIONS: Readonly<Record<string, string>> = {
  host: "is the library's: set the endpoint's url or host",
  port: "is the library's: set the endpoint's url or port",
  user: "is the library's: set the endpoint's url or user, or auth",
  password: "is the library's: set the endpoint's url or password, or auth",
  database: "is the library's: set the endpoint's url or database",
  connectionString: "is the library's: give the URL as the writer or reader",
  ssl: "is the library's: use the tls setting",
  keepAlive: "is the library's: use pool.keepAlive",
  keepAliveInitialDelayMillis: "is the library's: use pool.keepAliveInitialDelayMs",
  connectionTimeoutMillis: "is the library's: use pool.connectTimeoutMs",
  statement_timeout: "is the library's: use pool.statementTimeoutMs",
  query_timeout: "is the library's: use pool.queryTimeoutMs",
  idle_session_timeout: "is the library's: use pool.sessionIdleTimeoutMs",
  stream: 'is not supported: the library opens the socket itself (host, tls)',
  pipeline: 'is not supported: the library sends one statement at a time on each connection',
}

export const OWNED_MYSQL_OPTIONS: Readonly<Record<string, string>> = {
  host: "is the library's: set the endpoint's url or host",
  port: "is the library's: set the endpoint's url or port",
  socketPath: "is the library's: set the socket path as the endpoint's host",
  user: "is the library's: set the endpoint's url or user, or auth",
  password: "is the library's: set the endpoint's url or password, or auth",
  password1: "is the library's: set the endpoint's password, or auth",
  password2: "is the library's: set the endpoint's password, or auth",
  password3: "is the library's: set the endpoint's password, or auth",
  passwordSha1: "is the library's: set the endpoint's password, or auth",
  authPlugins: "is the library's: use the auth setting",
  authSwitchHandler: "is the library's: use the auth setting",
  enableCleartextPlugin: "is the library's: auth turns it on for token authentication over TLS",
  insecureAuth: 'is not supported: it allows the pre-4.1 password hash',
  database: "is the library's: set the endpoint's url or database",
  uri: "is the library's: give the URL as the writer or reader",
  ssl: "is the library's: use the tls setting",
  connectTimeout: "is the library's: use pool.connectTimeoutMs",
  enableKeepAlive: "is the library's: use pool.keepAlive",
  keepAliveInitialDelay: "is the library's: use pool.keepAliveInitialDelayMs",
  connectionLimit: "is the library's pool: use pool.max",
  maxIdle: "is the library's pool: use pool.min and pool.idleTimeoutMs",
  idleTimeout: "is the library's pool: use pool.idleTimeoutMs",
  queueLimit: "is the library's pool: use pool.acquireTimeoutMs",
  waitForConnections: "is the library's pool: use pool.acquireTimeoutMs",
  pool: "is the library's pool: use the pool setting",
  stream: 'is not supported: the library opens the socket itself (host, tls)',
  isServer: 'is not supported: the library connects as a client',
  Promise: 'is not supported: the library uses the callback API Kysely expects',
  rowsAsArray: 'is not supported: Kysely reads each row as an object keyed by column',
  nestTables: 'is not supported: Kysely reads each row as an object keyed by column',
  namedPlaceholders: 'is not supported: Kysely binds its parameters as ? placeholders',
  queryFormat: 'is not supported: Kysely binds its parameters as ? placeholders',
  compress: 'is not supported by the library',
  debug: 'is not supported: use trace',
  disableEval: 'is not supported by the library',
  gracefulEnd: 'is not supported: the library ends connections itself',
  charsetNumber: 'is not supported: use charset',
  infileStreamFactory: 'is not supported by the library (LOAD DATA LOCAL)',
}

/** A driver's options after validation: only allowed keys, values of the right kind; frozen. */
export type ResolvedDriverOptions = Readonly<Record<string, unknown>>

/**
 * Validates the `pg` or `mysql2` options at `path` for `dialect`, merged over `base` (the top
 * level's, for an endpoint). An option the library owns is refused with the setting to use instead.
 */
export function resolveDriverOptions(
  input: unknown,
  dialect: SqlDialect,
  setting: 'pg' | 'mysql2',
  path: string,
  base: ResolvedDriverOptions,
): ResolvedDriverOptions {
  if (input === undefined) return base
  const driver = dialect === 'postgres' ? 'pg' : 'mysql2'
  if (setting !== driver) {
    throw new ConfigError(
      path,
      `is for the ${setting === 'pg' ? "'postgres'" : "'mysql'"} dialect; with dialect '${dialect}' use '${driver}'`,
    )
  }
  const spec: Readonly<Record<string, Check<unknown>>> =
    dialect === 'postgres' ? POSTGRES_DRIVER_OPTIONS : MYSQL_DRIVER_OPTIONS
  const owned = dialect === 'postgres' ? OWNED_POSTGRES_OPTIONS : OWNED_MYSQL_OPTIONS
  const checked = checkObject(input, path, spec, {
    expected: `an object of ${driver} options`,
    unknownKey: (key, known) =>
      Object.hasOwn(owned, key)
        ? (owned[key] as string)
        : `unknown ${driver} option (supported: ${known.join(', ')})`,
  })
  const resolved: Record<string, unknown> = { ...base }
  for (const [key, value] of Object.entries(checked)) if (value !== undefined) resolved[key] = value
  return Object.freeze(resolved)
}

/** Checks a connection hook setting; `undefined` inherits the top level's. */
export const connectionHook: Check<ConnectionHook | undefined> = func<ConnectionHook>({
  expected: 'an async function (connection) => Promise<void>',
})

/** Whether `value` is of `kind`. */
function isOptionKind(value: unknown, kind: OptionKind): boolean {
  switch (kind) {
    case 'string':
    case 'number':
    case 'boolean':
    case 'function':
      return typeof value === kind && (kind !== 'number' || Number.isFinite(value))
    case 'object':
      return typeof value === 'object' && value !== null && !Array.isArray(value)
    case 'array':
      return Array.isArray(value)
    case 'boolean|function':
      return typeof value === 'boolean' || typeof value === 'function'
    case 'boolean|array':
      return typeof value === 'boolean' || Array.isArray(value)
    case 'type parsers':
      return typeof (value as { getTypeParser?: unknown } | null)?.getTypeParser === 'function'
  }
}
