import { isIP } from 'node:net'
import type { KyselyPlugin, LogConfig } from 'kysely'
import { PASSWORD_AUTH, type ResolvedAuth, resolveAuth } from '../auth/resolve-auth.js'
import { regionFromRdsHost } from '../aws/rds-host.js'
import { ConfigError } from '../errors.js'
import { isUnixSocket } from '../host/unix-socket.js'
import { backoffDelays } from '../retry/backoff.js'
import { checkTls, defaultTls, type ResolvedTls } from '../tls/resolve-tls.js'
import {
  boolean,
  type Check,
  checkedByItsResolver,
  list,
  oneOf,
  required,
  text,
} from '../validation/check.js'
import { type Checked, type ConfigSpec, checkObject, withDefaults } from '../validation/config-spec.js'
import { describeValue } from '../validation/describe-value.js'
import { duration, integer } from '../validation/number-setting.js'
import type {
  AutoRetryConfig,
  ConsistencyConfig,
  CreateDbConfig,
  EndpointConfig,
  EndpointOptions,
  ReaderStrategy,
  RoutingConfig,
  SqlDialect,
  TelemetryConfig,
} from './create-db-config.js'
import { connectionHook, type ResolvedDriverOptions, resolveDriverOptions } from './driver-options.js'
import { type ConnectionHooks, type EndpointRole, EndpointSettings } from './endpoint-settings.js'
import { POOL_DEFAULTS, type ResolvedPoolOptions, resolvePool } from './pool-options.js'
import { type ConnectionProxy, checkProxyCompatibility, proxyOf, proxySetting } from './proxy.js'
import { type ResolvedTopology, resolveTopology } from './topology-options.js'

export interface ResolvedConfig {
  readonly dialect: SqlDialect
  /** Writer candidates; the first is assumed to be the writer until discovery says otherwise. */
  readonly writers: ReadonlyArray<EndpointSettings>
  readonly readers: ReadonlyArray<EndpointSettings>
  readonly readerStrategy: ReaderStrategy
  readonly fallback: 'writer' | 'error'
  readonly maxReplicaLagMs: number | undefined
  readonly lagCheckIntervalMs: number
  readonly readerCooldownMs: number
  /** `routing.writerTables` as given; routing adds Kysely's migration tables to them. */
  readonly writerTables: ReadonlyArray<string>
  readonly retry: ResolvedRetry
  readonly consistency: ResolvedConsistency
  /** Topology discovery; `undefined` when off. */
  readonly topology: ResolvedTopology | undefined
  readonly telemetry: ResolvedTelemetry
  readonly log: LogConfig | undefined
  readonly plugins: ReadonlyArray<KyselyPlugin>
}

/** `consistency` after validation, with every default applied. */
export interface ResolvedConsistency {
  readonly readYourWrites: 'scoped' | 'process'
  readonly whenBehind: 'writer' | 'wait'
  readonly maxWaitMs: number
  readonly pollIntervalMs: number
}

/** `telemetry` after validation, with every default applied. */
export interface ResolvedTelemetry {
  readonly statementText: boolean
}

/** Automatic statement retries with defaults applied. */
export interface ResolvedRetry {
  /** `Infinity`: only `maxElapsedMs` bounds the retries. */
  readonly retries: number
  readonly minDelayMs: number
  readonly maxDelayMs: number
  readonly maxElapsedMs: number
}

/** `routing` after validation, with every default applied. */
type ResolvedRouting = Pick<
  ResolvedConfig,
  | 'readerStrategy'
  | 'fallback'
  | 'maxReplicaLagMs'
  | 'lagCheckIntervalMs'
  | 'readerCooldownMs'
  | 'writerTables'
>

const ROUTING_DEFAULTS: ResolvedRouting = Object.freeze({
  readerStrategy: 'round-robin',
  fallback: 'writer',
  maxReplicaLagMs: undefined,
  lagCheckIntervalMs: 1_000,
  readerCooldownMs: 5_000,
  writerTables: Object.freeze([]),
})
const RETRY_DEFAULTS: ResolvedRetry = Object.freeze({
  retries: Infinity,
  minDelayMs: 50,
  maxDelayMs: 1_000,
  maxElapsedMs: 10_000,
})
const NO_RETRY: ResolvedRetry = Object.freeze({ ...RETRY_DEFAULTS, retries: 0 })
const CONSISTENCY_DEFAULTS: ResolvedConsistency = Object.freeze({
  readYourWrites: 'scoped',
  whenBehind: 'writer',
  maxWaitMs: 1_000,
  pollIntervalMs: 50,
})
const TELEMETRY_DEFAULTS: ResolvedTelemetry = Object.freeze({ statementText: false })

const ROUTING_SPEC = {
  readerStrategy: oneOf('round-robin', 'random', 'least-busy'),
  fallback: oneOf('writer', 'error'),
  maxReplicaLagMs: duration({ min: 1 }),
  lagCheckIntervalMs: duration({ min: 10 }),
  readerCooldownMs: duration({ min: 1 }),
  writerTables: list(
    'an array of table names',
    required(text({ expected: 'a non-empty table name' }), 'expected a non-empty table name, got undefined'),
  ),
} satisfies ConfigSpec<RoutingConfig>

const RETRY_SPEC = {
  retries: integer({ min: 0, orInfinity: true }),
  minDelayMs: duration({ min: 0 }),
  maxDelayMs: duration({ min: 0 }),
  maxElapsedMs: duration({ min: 0 }),
} satisfies ConfigSpec<AutoRetryConfig>

const CONSISTENCY_SPEC = {
  readYourWrites: oneOf('scoped', 'process'),
  whenBehind: oneOf('writer', 'wait'),
  maxWaitMs: duration({ min: 1 }),
  pollIntervalMs: duration({ min: 1 }),
} satisfies ConfigSpec<ConsistencyConfig>

const TELEMETRY_SPEC = { statementText: boolean } satisfies ConfigSpec<TelemetryConfig>

const LOG: Check<LogConfig | undefined> = (value, setting) => {
  if (value === undefined || Array.isArray(value) || typeof value === 'function') {
    return value as LogConfig | undefined
  }
  throw new ConfigError(setting, `expected an array of log levels or a function, got ${describeValue(value)}`)
}

const CONFIG_SPEC = {
  dialect: required(oneOf('postgres', 'mysql'), "expected 'postgres' or 'mysql', got undefined"),
  // resolveEndpoint, for each writer and reader, once the dialect and the defaults below are known.
  writer: required(checkedByItsResolver, 'is required: a connection URL or an endpoint object'),
  readers: checkedByItsResolver,
  auth: resolveAuth,
  tls: checkTls,
  pool: (value, setting) => resolvePool(value, POOL_DEFAULTS, setting),
  routing: (value, setting) =>
    value === undefined
      ? ROUTING_DEFAULTS
      : withDefaults(checkObject(value, setting, ROUTING_SPEC), ROUTING_DEFAULTS),
  retry: resolveRetry,
  consistency: resolveConsistency,
  log: LOG,
  // Kysely calls the plugins; only the list is the library's to check.
  plugins: list('an array of Kysely plugins'),
  // resolveDriverOptions, once the dialect is known.
  pg: checkedByItsResolver,
  mysql2: checkedByItsResolver,
  onCreateConnection: connectionHook,
  onReserveConnection: connectionHook,
  proxy: proxySetting,
  // resolveTopology, against the first writer.
  topology: checkedByItsResolver,
  telemetry: (value, setting) =>
    value === undefined
      ? TELEMETRY_DEFAULTS
      : withDefaults(checkObject(value, setting, TELEMETRY_SPEC), TELEMETRY_DEFAULTS),
} satisfies ConfigSpec<CreateDbConfig>

const PORT = integer({ min: 1, max: 65_535, expected: 'a TCP port' })
// Parts of an endpoint that may be secret: a wrong value is described by its type, never repeated.
const SECRET_TEXT = text({ empty: true, secret: true })

/**
 * The table of an endpoint object, for one dialect and what the top level gives every endpoint
 * (its pool and driver options are merged over the top level's).
 */
function endpointSpec(dialect: SqlDialect, base: EndpointDefaults) {
  return {
    url: (value, setting) => {
      const url = text({ empty: true, expected: 'a connection URL string' })(value, setting)
      return url === undefined ? undefined : parseUrl(url, dialect, setting)
    },
    host: (value, setting) => {
      const host = text({ expected: "a host name (or give 'url')" })(value, setting)
      return host === undefined ? undefined : checkHost(host, dialect, setting, 'host')
    },
    port: PORT,
    user: SECRET_TEXT,
    password: SECRET_TEXT,
    database: SECRET_TEXT,
    name: text(),
    pool: (value, setting) => resolvePool(value, base.pool, setting),
    auth: (value, setting) => (value === undefined ? undefined : resolveAuth(value, setting)),
    tls: checkTls,
    pg: (value, setting) => resolveDriverOptions(value, dialect, 'pg', setting, base.driverOptions),
    mysql2: (value, setting) => resolveDriverOptions(value, dialect, 'mysql2', setting, base.driverOptions),
    onCreateConnection: connectionHook,
    onReserveConnection: connectionHook,
    proxy: proxySetting,
  } satisfies ConfigSpec<EndpointOptions>
}

const URL_SCHEMES: Record<string, SqlDialect> = {
  'postgres:': 'postgres',
  'postgresql:': 'postgres',
  'mysql:': 'mysql',
  'mariadb:': 'mysql',
}
const DEFAULT_PORTS: Record<SqlDialect, number> = { postgres: 5432, mysql: 3306 }

/**
 * Validates `createDb`'s config. Every problem is a `ConfigError` naming the setting; nothing is
 * silently ignored or defaulted around.
 */
export function resolveConfig(config: CreateDbConfig): ResolvedConfig {
  const checked = checkObject(config, '', CONFIG_SPEC)
  const { dialect } = checked
  const base: EndpointDefaults = {
    pool: checked.pool,
    auth: checked.auth,
    tls: checked.tls,
    driverOptions: driverOptionsOf(config, dialect, '', NO_DRIVER_OPTIONS),
    proxy: checked.proxy,
    hooks: {
      onCreateConnection: checked.onCreateConnection,
      onReserveConnection: checked.onReserveConnection,
    },
  }

  const writerList: ReadonlyArray<EndpointConfig> = Array.isArray(config.writer)
    ? (config.writer as ReadonlyArray<EndpointConfig>)
    : [config.writer as EndpointConfig]
  if (writerList.length === 0) {
    throw new ConfigError('writer', 'is an empty list: give at least one endpoint')
  }
  const writers = writerList.map((writer, index) =>
    writerList.length === 1
      ? resolveEndpoint(writer, dialect, 'writer', 'writer', 'writer', base)
      : resolveEndpoint(writer, dialect, 'writer', `writer-${index}`, `writer[${index}]`, base),
  )

  const readerList =
    config.readers === undefined ? [] : Array.isArray(config.readers) ? config.readers : [config.readers]
  const readers = (readerList as ReadonlyArray<EndpointConfig>).map((reader, index) =>
    resolveEndpoint(reader, dialect, 'reader', `reader-${index}`, `readers[${index}]`, base),
  )
  const names = new Set<string>()
  writers.forEach((writer, index) => {
    if (names.has(writer.name)) {
      throw new ConfigError(`writer[${index}].name`, `'${writer.name}' is already used by another endpoint`)
    }
    names.add(writer.name)
  })
  readers.forEach((reader, index) => {
    if (names.has(reader.name)) {
      throw new ConfigError(`readers[${index}].name`, `'${reader.name}' is already used by another endpoint`)
    }
    names.add(reader.name)
  })

  const unverified = [...writers, ...readers].filter((endpoint) => endpoint.tls.mode === 'unverified')
  if (unverified.length > 0) {
    process.emitWarning(
      `kysely-resilient: tls 'require' encrypts without verifying the server's certificate for ${unverified
        .map((endpoint) => endpoint.name)
        .join(
          ', ',
        )}; an attacker on the network path can impersonate the database. Use 'verify-full', 'rds' or { ca }.`,
      { code: 'KYSELY_RESILIENT_TLS_UNVERIFIED' },
    )
  }

  return Object.freeze({
    dialect,
    writers: Object.freeze(writers),
    readers: Object.freeze(readers),
    ...checked.routing,
    retry: checked.retry,
    consistency: checked.consistency,
    topology: resolveTopology(config.topology, writers[0] as EndpointSettings),
    telemetry: checked.telemetry,
    log: checked.log,
    plugins: (checked.plugins ?? Object.freeze([])) as ReadonlyArray<KyselyPlugin>,
  })
}

/** Validates `retry`; see `AutoRetryConfig`. `false` turns automatic retries off. */
function resolveRetry(input: unknown, setting: string): ResolvedRetry {
  if (input === undefined) return RETRY_DEFAULTS
  if (input === false) return NO_RETRY
  const retry = checkObject(input, setting, RETRY_SPEC, { expected: 'an object or false' })
  return Object.freeze({
    retries: retry.retries ?? RETRY_DEFAULTS.retries,
    // Between the two delays, so after the table.
    ...backoffDelays(retry, setting, RETRY_DEFAULTS),
    maxElapsedMs: retry.maxElapsedMs ?? RETRY_DEFAULTS.maxElapsedMs,
  })
}

/** Validates `consistency`; see `ConsistencyConfig`. */
function resolveConsistency(input: unknown, setting: string): ResolvedConsistency {
  if (input === undefined) return CONSISTENCY_DEFAULTS
  const consistency = checkObject(input, setting, CONSISTENCY_SPEC)
  if (consistency.maxWaitMs !== undefined && consistency.whenBehind !== 'wait') {
    // Only 'wait' waits: a bound given without it would be silently ignored.
    throw new ConfigError(
      `${setting}.maxWaitMs`,
      "applies only with consistency.whenBehind: 'wait'; set that too, or remove maxWaitMs",
    )
  }
  return withDefaults(consistency, CONSISTENCY_DEFAULTS)
}

/** What every endpoint inherits from the top level of the config. */
interface EndpointDefaults {
  readonly pool: ResolvedPoolOptions
  readonly auth: ResolvedAuth
  /** `undefined`: each endpoint gets the default for its host. */
  readonly tls: ResolvedTls | undefined
  readonly driverOptions: ResolvedDriverOptions
  readonly proxy: ConnectionProxy | false | undefined
  readonly hooks: ConnectionHooks
}

const NO_DRIVER_OPTIONS: ResolvedDriverOptions = Object.freeze({})

/** The top level's `pg` or `mysql2` options; the other driver's must be unset. */
function driverOptionsOf(
  input: { readonly pg?: unknown; readonly mysql2?: unknown },
  dialect: SqlDialect,
  prefix: string,
  base: ResolvedDriverOptions,
): ResolvedDriverOptions {
  let resolved = base
  for (const driver of ['pg', 'mysql2'] as const) {
    resolved = resolveDriverOptions(input[driver], dialect, driver, `${prefix}${driver}`, resolved)
  }
  return resolved
}

/** Where an endpoint is and who connects: from its URL, or its object's fields. */
interface Address {
  readonly host: string | undefined
  readonly port?: number | undefined
  readonly user?: string | undefined
  readonly password?: string | undefined
  readonly database?: string | undefined
}

function resolveEndpoint(
  input: EndpointConfig,
  dialect: SqlDialect,
  role: EndpointRole,
  defaultName: string,
  setting: string,
  base: EndpointDefaults,
): EndpointSettings {
  const own =
    typeof input === 'string'
      ? undefined
      : checkObject(input, setting, endpointSpec(dialect, base), {
          expected: 'a connection URL string or an endpoint object',
        })
  const auth = own?.auth ?? base.auth
  const authSetting = own?.auth === undefined ? 'auth' : `${setting}.auth`
  const fields =
    own === undefined ? parseUrl(input as string, dialect, setting) : addressOf(own, auth, setting)
  const name = own?.name ?? defaultName
  const tlsSetting = own?.tls === undefined ? 'tls' : `${setting}.tls`
  const pool = own?.pool ?? base.pool
  const driverOptions = own === undefined ? base.driverOptions : dialect === 'postgres' ? own.pg : own.mysql2
  const hooks: ConnectionHooks = {
    onCreateConnection: own?.onCreateConnection ?? base.hooks.onCreateConnection,
    onReserveConnection: own?.onReserveConnection ?? base.hooks.onReserveConnection,
  }
  const proxySetting = own?.proxy ?? base.proxy
  const proxySettingName = own?.proxy === undefined ? 'proxy' : `${setting}.proxy`
  // Which of this endpoint's own settings it set, to name the right one in an error.
  const object = typeof input === 'string' ? undefined : input
  const ownPool = (object?.pool ?? {}) as Readonly<Record<string, unknown>>
  const ownDriver = ((dialect === 'postgres' ? object?.pg : object?.mysql2) ?? {}) as Readonly<
    Record<string, unknown>
  >

  const resolvedTls = own?.tls ?? base.tls ?? defaultTls(fields.host)
  if (isUnixSocket(fields.host)) checkUnixSocket(setting, auth, resolvedTls.mode, tlsSetting)
  if (
    dialect === 'mysql' &&
    resolvedTls.mode === 'verify' &&
    fields.host !== undefined &&
    isIP(fields.host) !== 0
  ) {
    // mysql2 gives Node no server name for an IP address, so Node would check the certificate against
    // 'localhost' instead: a host-name check that passes for the wrong reason is worse than none.
    throw new ConfigError(
      tlsSetting,
      `cannot verify the certificate of ${fields.host} with mysql2 (it checks IP addresses against 'localhost'); connect by the host name the certificate names, or use tls: 'require' to encrypt without verifying`,
    )
  }
  checkAuth(auth, authSetting, setting, fields, resolvedTls.mode !== 'off')
  const proxy = proxyOf(proxySetting, fields.host)
  const driverName = dialect === 'postgres' ? 'pg' : 'mysql2'
  checkProxyCompatibility(proxy, dialect, pool, driverOptions, {
    proxy:
      proxySetting === undefined
        ? `${setting} (an RDS Proxy host name; set proxy: false if it is not)`
        : proxySettingName,
    pool: (key) => (ownPool[key] !== undefined ? `${setting}.pool.${key}` : `pool.${key}`),
    driver: (key) =>
      ownDriver[key] !== undefined ? `${setting}.${driverName}.${key}` : `${driverName}.${key}`,
  })

  return new EndpointSettings({
    name,
    role,
    dialect,
    host: fields.host,
    port: fields.port ?? DEFAULT_PORTS[dialect],
    user: fields.user,
    password: fields.password,
    database: fields.database,
    pool,
    auth,
    tls: resolvedTls,
    driverOptions,
    hooks,
    proxy,
  })
}

/**
 * An endpoint object's address: from 'url' or from 'host', its own port, user, password and database
 * over the URL's. Rules between fields, so after the table: not both, and neither only when a secret
 * supplies the host (RDS secrets carry host, port and dbname).
 */
function addressOf(
  own: Checked<ReturnType<typeof endpointSpec>>,
  auth: ResolvedAuth,
  setting: string,
): Address {
  if (own.url !== undefined && own.host !== undefined) {
    throw new ConfigError(setting, "give either 'url' or 'host', not both")
  }
  if (own.url === undefined && own.host === undefined && auth.type !== 'secret') {
    throw new ConfigError(`${setting}.host`, "expected a host name (or give 'url'), got undefined")
  }
  const url: Partial<Address> = own.url ?? {}
  return {
    host: own.host ?? url.host,
    port: own.port ?? url.port,
    user: own.user ?? url.user,
    password: own.password ?? url.password,
    database: own.database ?? url.database,
  }
}

function checkHost(host: string, dialect: SqlDialect, setting: string, what: string): string {
  // Most likely a URL pasted into `host` (a socket path may start one: '//user:password@host/db');
  // it may hold a password, so do not echo it.
  if (isUnixSocket(host) ? host.includes('@') : /[/@\s]/.test(host)) {
    throw new ConfigError(
      setting,
      what === 'host'
        ? "expected a bare host name, an IP address or an absolute Unix socket path; put a URL in 'url'"
        : `${what} is not a host name, an IP address or an absolute Unix socket path`,
    )
  }
  if (dialect === 'postgres' && /\/\.s\.PGSQL\.\d+$/.test(host)) {
    throw new ConfigError(
      setting,
      `${what === 'host' ? 'names' : `${what} names`} the socket file itself; give the directory that holds it (pg adds '/.s.PGSQL.<port>') and its port as the port`,
    )
  }
  return host
}

/** What a Unix-socket endpoint cannot have: IAM auth, or TLS. */
function checkUnixSocket(
  setting: string,
  auth: ResolvedAuth,
  tlsMode: ResolvedTls['mode'],
  tlsSetting: string,
): void {
  if (auth !== PASSWORD_AUTH && auth.type === 'iam') {
    throw new ConfigError(
      setting,
      "is a Unix socket, but auth type 'iam' needs TCP: RDS takes IAM tokens only over TLS, for the host name and port they were signed for; connect by host name, or use another auth type",
    )
  }
  if (tlsMode !== 'off') {
    throw new ConfigError(
      tlsSetting,
      `cannot apply to ${setting}, a Unix socket: TLS is for TCP connections (PostgreSQL does not offer it on a socket at all); set this endpoint's tls to false`,
    )
  }
}

/** What an auth type needs from its endpoint, checked at createDb time rather than on first connect. */
function checkAuth(
  auth: ResolvedAuth,
  authSetting: string,
  setting: string,
  fields: { host?: string; user?: string; password?: string },
  encrypted: boolean,
): void {
  if (auth === PASSWORD_AUTH || auth.type === 'password') return
  if (fields.password !== undefined) {
    // Two sources for one password: which one wins would be a guess. Never echo the password.
    throw new ConfigError(
      setting,
      `has a password, but ${authSetting} is '${auth.type}', which supplies it; remove the password`,
    )
  }
  if (auth.type !== 'iam') return
  if (fields.user === undefined) {
    throw new ConfigError(
      setting,
      "auth type 'iam' needs the database user name the token is for (in the URL or 'user')",
    )
  }
  if (!encrypted) {
    throw new ConfigError(
      setting,
      "auth type 'iam' needs TLS (RDS refuses IAM tokens over plain TCP, and a token is a password for 15 minutes): set tls to 'rds' or 'verify-full'",
    )
  }
  if (
    auth.region === undefined &&
    process.env.AWS_REGION === undefined &&
    regionFromRdsHost(fields.host) === undefined
  ) {
    throw new ConfigError(
      `${authSetting}.region`,
      'is required: no AWS_REGION in the environment and the host is not an *.<region>.rds.amazonaws.com name',
    )
  }
}

function parseUrl(
  raw: string,
  dialect: SqlDialect,
  setting: string,
): { host: string; port?: number; user?: string; password?: string; database?: string } {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    // The URL may hold a password: do not echo it.
    throw new ConfigError(
      setting,
      'is not a valid connection URL (expected e.g. postgres://user:password@host:5432/db)',
    )
  }
  const urlDialect = URL_SCHEMES[url.protocol]
  if (urlDialect === undefined) {
    throw new ConfigError(
      setting,
      `unsupported URL scheme '${url.protocol}' (expected postgres://, postgresql://, mysql:// or mariadb://)`,
    )
  }
  if (urlDialect !== dialect) {
    throw new ConfigError(setting, `is a ${urlDialect} URL but the dialect is '${dialect}'`)
  }
  const keys = [...url.searchParams.keys()]
  const socketParam = url.searchParams.get('host')
  let host: string
  if (url.hostname.length === 0 && keys.length === 1 && socketParam !== null && isUnixSocket(socketParam)) {
    // libpq's form for a Unix socket: postgres:///orders?host=/var/run/postgresql
    host = socketParam
  } else {
    if (url.hostname.length === 0) {
      throw new ConfigError(
        setting,
        'the URL has no host (for a Unix socket, percent-encode its path as the host: postgres://user@%2Fvar%2Frun%2Fpostgresql/db)',
      )
    }
    if (keys.length > 0) {
      throw new ConfigError(
        setting,
        `URL query parameters are not supported (${keys.join(', ')}); put settings in the config object instead`,
      )
    }
    // An IPv6 address is bracketed; anything else may be percent-encoded (a Unix socket path must be).
    host = url.hostname.startsWith('[')
      ? url.hostname.slice(1, -1)
      : decodeUrlPart(url.hostname, setting, 'host')
  }
  const result: { host: string; port?: number; user?: string; password?: string; database?: string } = {
    host: checkHost(host, dialect, setting, "the URL's host"),
  }
  if (url.port) result.port = PORT(Number(url.port), setting)
  if (url.username) result.user = decodeUrlPart(url.username, setting, 'user')
  if (url.password) result.password = decodeUrlPart(url.password, setting, 'password')
  const database = decodeUrlPart(url.pathname.replace(/^\//, ''), setting, 'database')
  if (database) result.database = database
  return result
}

/**
 * One percent-encoded part of a URL, decoded. A '%' that starts no escape (a password with a literal
 * '%' pasted in as is) makes decodeURIComponent throw a bare "URIError: URI malformed"; say which
 * part is wrong and how to fix it, and never what it holds (it may be the password).
 */
function decodeUrlPart(
  text: string,
  setting: string,
  part: 'host' | 'user' | 'password' | 'database',
): string {
  try {
    return decodeURIComponent(text)
  } catch {
    throw new ConfigError(
      setting,
      /%(?![0-9a-f]{2})/i.test(text)
        ? `the URL's ${part} has a '%' that is not followed by two hex digits; percent-encode a literal '%' as %25 (encodeURIComponent does)`
        : `the URL's ${part} has a percent-escape that is not UTF-8 (such as %FF); percent-encode it with encodeURIComponent`,
    )
  }
}
