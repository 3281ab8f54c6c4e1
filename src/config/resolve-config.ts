import { isIP } from 'node:net'
import type { KyselyPlugin, LogConfig } from 'kysely'
import type { AuthConfig } from '../auth/auth-config.js'
import { PASSWORD_AUTH, type ResolvedAuth, resolveAuth } from '../auth/resolve-auth.js'
import { regionFromRdsHost } from '../aws/rds-host.js'
import { ConfigError } from '../errors.js'
import { isUnixSocket } from '../host/unix-socket.js'
import { backoffDelays } from '../retry/backoff.js'
import { checkTls, defaultTls, type ResolvedTls } from '../tls/resolve-tls.js'
import type { TlsConfig } from '../tls/tls-config.js'
import { type ConfigSpec, checkObject } from '../validation/config-spec.js'
import { describeValue } from '../validation/describe-value.js'
import { duration, integer, numberSetting } from '../validation/number-setting.js'
import { settingKeys } from '../validation/setting-keys.js'
import type {
  AutoRetryConfig,
  ConsistencyConfig,
  CreateDbConfig,
  EndpointConfig,
  EndpointOptions,
  PoolConfig,
  ReaderStrategy,
  RoutingConfig,
  SqlDialect,
  TelemetryConfig,
} from './create-db-config.js'
import { type ResolvedDriverOptions, resolveDriverOptions, resolveHook } from './driver-options.js'
import { type ConnectionHooks, type EndpointRole, EndpointSettings } from './endpoint-settings.js'
import { POOL_DEFAULTS, POOL_KEYS, type ResolvedPoolOptions } from './pool-options.js'
import { type ConnectionProxy, checkProxyCompatibility, checkProxySetting, proxyOf } from './proxy.js'
import { type ResolvedTopology, resolveTopology } from './topology-options.js'

/** `createDb`'s config after validation, with every default applied. */
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

const RETRY_DEFAULTS: ResolvedRetry = Object.freeze({
  retries: Infinity,
  minDelayMs: 50,
  maxDelayMs: 1_000,
  maxElapsedMs: 10_000,
})
const NO_RETRY: ResolvedRetry = Object.freeze({ ...RETRY_DEFAULTS, retries: 0 })
// Each list is held to its interface by the compiler (settingKeys): an option added to an interface
// and not here fails to compile instead of being rejected as unknown.
const TOP_LEVEL_KEYS = settingKeys<CreateDbConfig>()(
  'dialect',
  'writer',
  'readers',
  'auth',
  'tls',
  'pool',
  'routing',
  'retry',
  'consistency',
  'log',
  'plugins',
  'pg',
  'mysql2',
  'onCreateConnection',
  'onReserveConnection',
  'proxy',
  'topology',
  'telemetry',
)
const TELEMETRY_KEYS = settingKeys<TelemetryConfig>()('statementText')
const TELEMETRY_DEFAULTS: ResolvedTelemetry = Object.freeze({ statementText: false })
const CONSISTENCY_KEYS = settingKeys<ConsistencyConfig>()(
  'readYourWrites',
  'whenBehind',
  'maxWaitMs',
  'pollIntervalMs',
)
const CONSISTENCY_DEFAULTS: ResolvedConsistency = Object.freeze({
  readYourWrites: 'scoped',
  whenBehind: 'writer',
  maxWaitMs: 1_000,
  pollIntervalMs: 50,
})
const RETRY_SPEC = {
  retries: integer({ min: 0, orInfinity: true }),
  minDelayMs: duration({ min: 0 }),
  maxDelayMs: duration({ min: 0 }),
  maxElapsedMs: duration({ min: 0 }),
} satisfies ConfigSpec<AutoRetryConfig>
const ENDPOINT_KEYS = settingKeys<EndpointOptions>()(
  'url',
  'host',
  'port',
  'user',
  'password',
  'database',
  'name',
  'pool',
  'auth',
  'tls',
  'pg',
  'mysql2',
  'onCreateConnection',
  'onReserveConnection',
  'proxy',
)
const ROUTING_KEYS = settingKeys<RoutingConfig>()(
  'readerStrategy',
  'fallback',
  'maxReplicaLagMs',
  'lagCheckIntervalMs',
  'readerCooldownMs',
  'writerTables',
)
const DIALECTS: ReadonlyArray<SqlDialect> = ['postgres', 'mysql']
const READER_STRATEGIES: ReadonlyArray<ReaderStrategy> = ['round-robin', 'random', 'least-busy']

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
  if (!isPlainObject(config)) {
    throw new ConfigError('config', `expected an object, got ${describeValue(config)}`)
  }
  rejectUnknownKeys(config, TOP_LEVEL_KEYS, '')

  const dialect = config.dialect
  if (!DIALECTS.includes(dialect)) {
    throw new ConfigError('dialect', `expected 'postgres' or 'mysql', got ${describeValue(dialect)}`)
  }

  const basePool = resolvePool(config.pool, POOL_DEFAULTS, 'pool')
  const base: EndpointDefaults = {
    pool: basePool,
    auth: resolveAuth(config.auth, 'auth'),
    tls: config.tls,
    driverOptions: driverOptionsOf(config, dialect, '', NO_DRIVER_OPTIONS),
    proxy: checkProxySetting(config.proxy, 'proxy'),
    hooks: {
      onCreateConnection: resolveHook(config.onCreateConnection, 'onCreateConnection', undefined),
      onReserveConnection: resolveHook(config.onReserveConnection, 'onReserveConnection', undefined),
    },
  }

  if (config.writer === undefined) {
    throw new ConfigError('writer', 'is required: a connection URL or an endpoint object')
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

  let readerStrategy: ReaderStrategy = 'round-robin'
  let fallback: 'writer' | 'error' = 'writer'
  let maxReplicaLagMs: number | undefined
  let lagCheckIntervalMs = 1_000
  let readerCooldownMs = 5_000
  let writerTables: ReadonlyArray<string> = Object.freeze([])
  if (config.routing !== undefined) {
    const routing = config.routing as Record<string, unknown>
    if (!isPlainObject(routing)) {
      throw new ConfigError('routing', `expected an object, got ${describeValue(routing)}`)
    }
    rejectUnknownKeys(routing, ROUTING_KEYS, 'routing.')
    if (routing.readerStrategy !== undefined) {
      if (!READER_STRATEGIES.includes(routing.readerStrategy as ReaderStrategy)) {
        throw new ConfigError(
          'routing.readerStrategy',
          `expected one of ${READER_STRATEGIES.map((s) => `'${s}'`).join(', ')}, got ${describeValue(routing.readerStrategy)}`,
        )
      }
      readerStrategy = routing.readerStrategy as ReaderStrategy
    }
    if (routing.fallback !== undefined) {
      if (routing.fallback !== 'writer' && routing.fallback !== 'error') {
        throw new ConfigError(
          'routing.fallback',
          `expected 'writer' or 'error', got ${describeValue(routing.fallback)}`,
        )
      }
      fallback = routing.fallback
    }
    const ms = (key: (typeof ROUTING_KEYS)[number], min: number) =>
      numberSetting(routing[key], `routing.${key}`, { min, milliseconds: true })
    maxReplicaLagMs = ms('maxReplicaLagMs', 1)
    lagCheckIntervalMs = ms('lagCheckIntervalMs', 10) ?? lagCheckIntervalMs
    readerCooldownMs = ms('readerCooldownMs', 1) ?? readerCooldownMs
    if (routing.writerTables !== undefined) {
      const tables = routing.writerTables
      if (!Array.isArray(tables)) {
        throw new ConfigError(
          'routing.writerTables',
          `expected an array of table names, got ${describeValue(tables)}`,
        )
      }
      tables.forEach((table: unknown, index) => {
        if (typeof table !== 'string' || table === '') {
          throw new ConfigError(
            `routing.writerTables[${index}]`,
            `expected a non-empty table name, got ${describeValue(table)}`,
          )
        }
      })
      writerTables = Object.freeze([...(tables as string[])])
    }
  }

  const retry = resolveRetry(config.retry, 'retry')

  const consistency = resolveConsistency(config.consistency)
  const telemetry = resolveTelemetry(config.telemetry)

  if (config.plugins !== undefined && !Array.isArray(config.plugins)) {
    throw new ConfigError(
      'plugins',
      `expected an array of Kysely plugins, got ${describeValue(config.plugins)}`,
    )
  }
  if (config.log !== undefined && !Array.isArray(config.log) && typeof config.log !== 'function') {
    throw new ConfigError(
      'log',
      `expected an array of log levels or a function, got ${describeValue(config.log)}`,
    )
  }

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
    readerStrategy,
    fallback,
    maxReplicaLagMs,
    lagCheckIntervalMs,
    readerCooldownMs,
    writerTables,
    retry,
    consistency,
    topology: resolveTopology(config.topology, writers[0] as EndpointSettings),
    telemetry,
    log: config.log,
    plugins: Object.freeze([...(config.plugins ?? [])]),
  })
}

/** Validates `retry`; see `AutoRetryConfig`. `false` turns automatic retries off. */
function resolveRetry(input: unknown, setting: string): ResolvedRetry {
  if (input === undefined) return RETRY_DEFAULTS
  if (input === false) return NO_RETRY
  const retry = checkObject(input, setting, RETRY_SPEC, { expected: 'an object or false' })
  return Object.freeze({
    retries: retry.retries ?? RETRY_DEFAULTS.retries,
    ...backoffDelays(retry, setting, RETRY_DEFAULTS),
    maxElapsedMs: retry.maxElapsedMs ?? RETRY_DEFAULTS.maxElapsedMs,
  })
}

/** Validates `telemetry`; see `TelemetryConfig`. */
function resolveTelemetry(input: unknown): ResolvedTelemetry {
  if (input === undefined) return TELEMETRY_DEFAULTS
  if (!isPlainObject(input)) {
    throw new ConfigError('telemetry', `expected an object, got ${describeValue(input)}`)
  }
  rejectUnknownKeys(input, TELEMETRY_KEYS, 'telemetry.')
  const { statementText } = input
  if (statementText !== undefined && typeof statementText !== 'boolean') {
    throw new ConfigError(
      'telemetry.statementText',
      `expected true or false, got ${describeValue(statementText)}`,
    )
  }
  return Object.freeze({ statementText: statementText ?? TELEMETRY_DEFAULTS.statementText })
}

/** Validates `consistency`; see `ConsistencyConfig`. */
function resolveConsistency(input: unknown): ResolvedConsistency {
  if (input === undefined) return CONSISTENCY_DEFAULTS
  if (!isPlainObject(input)) {
    throw new ConfigError('consistency', `expected an object, got ${describeValue(input)}`)
  }
  rejectUnknownKeys(input, CONSISTENCY_KEYS, 'consistency.')
  const { readYourWrites, whenBehind } = input
  if (readYourWrites !== undefined && readYourWrites !== 'scoped' && readYourWrites !== 'process') {
    throw new ConfigError(
      'consistency.readYourWrites',
      `expected 'scoped' or 'process', got ${describeValue(readYourWrites)}`,
    )
  }
  if (whenBehind !== undefined && whenBehind !== 'writer' && whenBehind !== 'wait') {
    throw new ConfigError(
      'consistency.whenBehind',
      `expected 'writer' or 'wait', got ${describeValue(whenBehind)}`,
    )
  }
  const maxWaitMs = numberSetting(input.maxWaitMs, 'consistency.maxWaitMs', { min: 1, milliseconds: true })
  if (maxWaitMs !== undefined && whenBehind !== 'wait') {
    // Only 'wait' waits: a bound given without it would be silently ignored.
    throw new ConfigError(
      'consistency.maxWaitMs',
      "applies only with consistency.whenBehind: 'wait'; set that too, or remove maxWaitMs",
    )
  }
  return Object.freeze({
    readYourWrites: readYourWrites ?? CONSISTENCY_DEFAULTS.readYourWrites,
    whenBehind: whenBehind ?? CONSISTENCY_DEFAULTS.whenBehind,
    maxWaitMs: maxWaitMs ?? CONSISTENCY_DEFAULTS.maxWaitMs,
    pollIntervalMs:
      numberSetting(input.pollIntervalMs, 'consistency.pollIntervalMs', { min: 1, milliseconds: true }) ??
      CONSISTENCY_DEFAULTS.pollIntervalMs,
  })
}

/** What every endpoint inherits from the top level of the config. */
interface EndpointDefaults {
  readonly pool: ResolvedPoolOptions
  readonly auth: ResolvedAuth
  readonly tls: TlsConfig | undefined
  readonly driverOptions: ResolvedDriverOptions
  readonly proxy: ConnectionProxy | false | undefined
  readonly hooks: ConnectionHooks
}

const NO_DRIVER_OPTIONS: ResolvedDriverOptions = Object.freeze({})

/** The `pg` or `mysql2` options of a config object (the top level or an endpoint), over `base`. */
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

function resolveEndpoint(
  input: EndpointConfig,
  dialect: SqlDialect,
  role: EndpointRole,
  defaultName: string,
  setting: string,
  base: EndpointDefaults,
): EndpointSettings {
  const fields: {
    host?: string
    port?: number
    user?: string
    password?: string
    database?: string
  } = {}
  let name = defaultName
  let pool = base.pool
  let auth = base.auth
  let authSetting = 'auth'
  let tls = base.tls
  let tlsSetting = 'tls'
  let driverOptions = base.driverOptions
  let hooks = base.hooks
  let proxySetting = base.proxy
  let proxySettingName = 'proxy'
  // Which of this endpoint's own settings it set, to name the right one in an error.
  let ownPool: Readonly<Record<string, unknown>> = {}
  let ownDriver: Readonly<Record<string, unknown>> = {}

  if (typeof input === 'string') {
    Object.assign(fields, parseUrl(input, dialect, setting))
  } else if (isPlainObject(input)) {
    rejectUnknownKeys(input, ENDPOINT_KEYS, `${setting}.`)
    if (input.auth !== undefined) {
      authSetting = `${setting}.auth`
      auth = resolveAuth(input.auth as AuthConfig, authSetting)
    }
    if (input.tls !== undefined) {
      tls = input.tls as TlsConfig
      tlsSetting = `${setting}.tls`
    }
    if (input.url !== undefined && input.host !== undefined) {
      throw new ConfigError(setting, "give either 'url' or 'host', not both")
    }
    if (input.url !== undefined) {
      if (typeof input.url !== 'string') {
        throw new ConfigError(
          `${setting}.url`,
          `expected a connection URL string, got ${describeValue(input.url)}`,
        )
      }
      Object.assign(fields, parseUrl(input.url, dialect, `${setting}.url`))
    } else if (input.host === undefined && auth.type === 'secret') {
      // The secret supplies the host (RDS secrets carry host, port and dbname).
    } else {
      if (typeof input.host !== 'string' || input.host.length === 0) {
        throw new ConfigError(
          `${setting}.host`,
          `expected a host name (or give 'url'), got ${describeValue(input.host)}`,
        )
      }
      fields.host = checkHost(input.host, dialect, `${setting}.host`, 'host')
    }
    if (input.port !== undefined) fields.port = checkPort(input.port, `${setting}.port`)
    for (const key of ['user', 'password', 'database'] as const) {
      const value = input[key]
      if (value !== undefined) {
        if (typeof value !== 'string') {
          // Never echo the value: it may be a secret.
          throw new ConfigError(`${setting}.${key}`, `expected a string, got a ${typeof value}`)
        }
        fields[key] = value
      }
    }
    if (input.name !== undefined) {
      if (typeof input.name !== 'string' || input.name.length === 0) {
        throw new ConfigError(
          `${setting}.name`,
          `expected a non-empty string, got ${describeValue(input.name)}`,
        )
      }
      name = input.name
    }
    if (input.pool !== undefined) {
      pool = resolvePool(input.pool as PoolConfig, base.pool, `${setting}.pool`)
      ownPool = input.pool as Readonly<Record<string, unknown>>
    }
    driverOptions = driverOptionsOf(input, dialect, `${setting}.`, driverOptions)
    ownDriver = ((dialect === 'postgres' ? input.pg : input.mysql2) ?? {}) as Readonly<
      Record<string, unknown>
    >
    if (input.proxy !== undefined) {
      proxySetting = checkProxySetting(input.proxy, `${setting}.proxy`)
      proxySettingName = `${setting}.proxy`
    }
    hooks = {
      onCreateConnection: resolveHook(
        input.onCreateConnection,
        `${setting}.onCreateConnection`,
        hooks.onCreateConnection,
      ),
      onReserveConnection: resolveHook(
        input.onReserveConnection,
        `${setting}.onReserveConnection`,
        hooks.onReserveConnection,
      ),
    }
  } else {
    throw new ConfigError(
      setting,
      `expected a connection URL string or an endpoint object, got ${describeValue(input)}`,
    )
  }

  const resolvedTls = checkTls(tls, tlsSetting) ?? defaultTls(fields.host)
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
 * A host name, an IP address, or the absolute path of a Unix socket (PostgreSQL: the directory that
 * holds it; MySQL: the socket file). `what` says how to name it in a message: `'host'` for the
 * endpoint's `host` setting, `"the URL's host"` for a URL's.
 */
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
  if (url.port) result.port = checkPort(Number(url.port), setting)
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

function resolvePool(
  input: PoolConfig | undefined,
  base: ResolvedPoolOptions,
  setting: string,
): ResolvedPoolOptions {
  if (input === undefined) return base
  if (!isPlainObject(input)) {
    throw new ConfigError(setting, `expected an object, got ${describeValue(input)}`)
  }
  rejectUnknownKeys(input, POOL_KEYS, `${setting}.`)
  const count = (key: 'max' | 'min', min: number) => numberSetting(input[key], `${setting}.${key}`, { min })
  const ms = (key: keyof PoolConfig, min: number) =>
    numberSetting(input[key], `${setting}.${key}`, { min, milliseconds: true })
  const max = count('max', 1) ?? base.max
  const ownMin = count('min', 0)
  const min = ownMin ?? base.min
  if (min > max) {
    throw ownMin === undefined
      ? new ConfigError(`${setting}.max`, `must be at least the inherited pool.min (${min}), got ${max}`)
      : new ConfigError(`${setting}.min`, `must not exceed ${setting}.max (${max}), got ${min}`)
  }
  let keepAlive = base.keepAlive
  if (input.keepAlive !== undefined) {
    if (typeof input.keepAlive !== 'boolean') {
      throw new ConfigError(
        `${setting}.keepAlive`,
        `expected true or false, got ${describeValue(input.keepAlive)}`,
      )
    }
    keepAlive = input.keepAlive
  }
  return Object.freeze({
    max,
    min,
    idleTimeoutMs: ms('idleTimeoutMs', 0) ?? base.idleTimeoutMs,
    acquireTimeoutMs: ms('acquireTimeoutMs', 1) ?? base.acquireTimeoutMs,
    connectTimeoutMs: ms('connectTimeoutMs', 1) ?? base.connectTimeoutMs,
    maxLifetimeMs: ms('maxLifetimeMs', 0) ?? base.maxLifetimeMs,
    statementTimeoutMs: ms('statementTimeoutMs', 1) ?? base.statementTimeoutMs,
    queryTimeoutMs: ms('queryTimeoutMs', 1) ?? base.queryTimeoutMs,
    keepAlive,
    keepAliveInitialDelayMs: ms('keepAliveInitialDelayMs', 0) ?? base.keepAliveInitialDelayMs,
    validateAfterIdleMs: ms('validateAfterIdleMs', 0) ?? base.validateAfterIdleMs,
    sessionIdleTimeoutMs: ms('sessionIdleTimeoutMs', 1_000) ?? base.sessionIdleTimeoutMs,
    probeAfterMs: input.probeAfterMs === false ? undefined : (ms('probeAfterMs', 1) ?? base.probeAfterMs),
    probeTimeoutMs: ms('probeTimeoutMs', 1) ?? base.probeTimeoutMs,
  })
}

function checkPort(port: unknown, setting: string): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new ConfigError(setting, `expected a TCP port 1-65535, got ${describeValue(port)}`)
  }
  return port
}

function rejectUnknownKeys(object: object, known: ReadonlyArray<string>, prefix: string): void {
  for (const key of Object.keys(object)) {
    if (!known.includes(key)) {
      throw new ConfigError(`${prefix}${key}`, `unknown setting (known: ${known.join(', ')})`)
    }
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
