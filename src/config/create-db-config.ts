import type { KyselyPlugin, LogConfig } from 'kysely'
import type { AuthConfig } from '../auth/auth-config.js'
import type { TlsConfig } from '../tls/tls-config.js'
import type { ConnectionHook, MysqlDriverOptions, PostgresDriverOptions } from './driver-options.js'
import type { ConnectionProxy } from './proxy.js'

/**
 * The database engine family. `'mysql'` covers MySQL, MariaDB and Aurora MySQL (driver: `mysql2`);
 * `'postgres'` covers PostgreSQL and Aurora PostgreSQL (driver: `pg`).
 *
 * @example
 * ```ts
 * const dialect: SqlDialect = 'postgres'
 * ```
 */
export type SqlDialect = 'postgres' | 'mysql'

/**
 * How reads are spread over several readers.
 *
 * - `'round-robin'`: each read goes to the next reader in turn.
 * - `'random'`: each read goes to a reader chosen uniformly at random.
 * - `'least-busy'`: each read goes to the reader with the fewest connections in use (then the
 *   fewest callers waiting); ties go round-robin.
 *
 * @example
 * ```ts
 * createDb({ dialect: 'postgres', writer, readers, routing: { readerStrategy: 'least-busy' } })
 * ```
 */
export type ReaderStrategy = 'round-robin' | 'random' | 'least-busy'

/**
 * Pool settings. The same names mean the same thing for both drivers. Set them once in
 * `config.pool`; an endpoint may override any of them in its own `pool`. Every `...Ms` setting is
 * an integer of at most `2_147_483_647` (2^31 - 1 ms, about 24.8 days): the longest delay a Node.js
 * timer accepts, and PostgreSQL's limit for `statement_timeout` and `idle_session_timeout`.
 *
 * @example
 * ```ts
 * const pool: PoolConfig = { max: 20, acquireTimeoutMs: 2_000, statementTimeoutMs: 15_000 }
 * ```
 */
export interface PoolConfig {
  /**
   * Most connections the pool opens to one endpoint.
   *
   * Default: `10`. Example: `20`.
   */
  readonly max?: number
  /**
   * Connections kept open even when idle; opened in the background after the first use.
   *
   * Default: `0`. Example: `2`.
   */
  readonly min?: number
  /**
   * An idle connection (above `min`) is closed after this long unused. `0` keeps idle connections open.
   *
   * Default: `30_000` (30 s). Example: `10_000`.
   */
  readonly idleTimeoutMs?: number
  /**
   * How long a caller waits for a free connection when all `max` are in use before it gets a
   * `PoolTimeoutError` (like SQLAlchemy's `pool_timeout` or HikariCP's `connectionTimeout`). Never
   * infinite, so an exhausted pool fails fast instead of hanging a request.
   *
   * Default: `10_000` (10 s). Example: `2_000`.
   */
  readonly acquireTimeoutMs?: number
  /**
   * How long opening one new connection (TCP, TLS and authentication) may take before it fails.
   *
   * Default: `5_000` (5 s). Example: `3_000`.
   */
  readonly connectTimeoutMs?: number
  /**
   * A connection older than this is closed when it is next released or found idle, and replaced
   * on demand (like SQLAlchemy's `pool_recycle`). Each connection's lifetime is shortened by a random
   * 0-10% so connections opened together are not all recycled at once. `0` disables recycling.
   *
   * Default: `1_800_000` (30 minutes). Example: `600_000`.
   */
  readonly maxLifetimeMs?: number
  /**
   * Server-side limit for one statement: PostgreSQL `statement_timeout`, MariaDB
   * `max_statement_time`, MySQL `max_execution_time` (MySQL applies it to SELECT only). Unset means
   * the server's own default (usually no limit).
   *
   * Default: unset. Example: `30_000`.
   */
  readonly statementTimeoutMs?: number
  /**
   * Client-side deadline for one statement. When it passes, the connection is destroyed (so a
   * blackholed server cannot hold the caller forever, even where no TCP error will ever arrive) and
   * the caller gets a `QueryTimeoutError`. Unlike `statementTimeoutMs` it does not need the server
   * to answer. Should be longer than `statementTimeoutMs` when both are set.
   *
   * Default: unset. Example: `60_000`.
   */
  readonly queryTimeoutMs?: number
  /**
   * TCP keepalive on every connection, so a peer that vanished (failover, NAT timeout) is noticed
   * even on an idle socket.
   *
   * Default: `true`. Example: `false`.
   */
  readonly keepAlive?: boolean
  /**
   * Idle time before the first keepalive probe is sent.
   *
   * Default: `10_000` (10 s). Example: `30_000`.
   */
  readonly keepAliveInitialDelayMs?: number
  /**
   * A connection that sat idle in the pool longer than this is checked with a cheap round trip
   * (PostgreSQL `select 1`, MySQL `COM_PING`) before it is handed out, bounded by
   * `connectTimeoutMs`. If the check fails the connection is destroyed and the next idle one is tried
   * (or a new one opened), so a socket the server closed while nobody was looking (a frozen AWS Lambda
   * container, a NAT or proxy idle timeout) never fails the caller's query. Unset: no check, and no
   * extra round trip on any acquire. Connections idle for less than this are handed out unchecked.
   *
   * Default: unset (`getConnection` uses `5_000`). Example: `5_000`.
   */
  readonly validateAfterIdleMs?: number
  /**
   * Asks the server to close a session that stays idle longer than this: PostgreSQL
   * `idle_session_timeout` (sent as a startup parameter; PostgreSQL 14 or later), MySQL/MariaDB
   * `wait_timeout` (`SET SESSION` after connecting, rounded up to whole seconds). A guard against
   * zombie sessions left by clients that vanished without closing them (a Lambda container that was
   * frozen and never thawed). Behind RDS Proxy, a `SET` pins the MySQL session to one database
   * connection and PostgreSQL startup parameters may do the same, which defeats the proxy's
   * multiplexing: leave it unset there and rely on the proxy's own idle client timeout. Pair it with
   * `validateAfterIdleMs`, so a session the server closed is replaced before it is used.
   *
   * Default: unset (the server's own setting). Example: `900_000` (15 minutes).
   */
  readonly sessionIdleTimeoutMs?: number
  /**
   * Detects a server that stopped answering (a frozen VM, stuck storage, a network partition where
   * the kernel still acknowledges), which TCP keepalive and the drivers never notice: once a
   * statement has run longer than this, the server is pinged over a separate connection (at most once
   * per this interval while statements keep running). A slow statement on a healthy server is never
   * cut short: it keeps running as long as the ping is answered. `false` turns the detection off.
   *
   * Default: `500`. Example: `2_000`.
   */
  readonly probeAfterMs?: number | false
  /**
   * How long that ping may take. Unanswered, with no other statement of the endpoint completing
   * meanwhile, the server is declared unresponsive: statements in flight on it fail with
   * `ServerUnresponsiveError` (their connections destroyed; reads are retried on another endpoint,
   * writes are `'ambiguous'`), new statements fail at once instead of waiting for a connect timeout,
   * a reader leaves rotation, the writer is looked for again, and the ping repeats until the server
   * answers. With the defaults a silent server is declared down within 500 + 1000 ms plus a 100 ms
   * tick.
   *
   * Default: `1_000`. Example: `3_000`.
   */
  readonly probeTimeoutMs?: number
}

/**
 * One database endpoint given as an object: either `url`, or `host` with the other fields.
 *
 * @example
 * ```ts
 * const reader: EndpointOptions = {
 *   host: 'mydb.cluster-ro-abc.eu-west-1.rds.amazonaws.com',
 *   user: 'app',
 *   password: process.env.DB_PASSWORD,
 *   database: 'orders',
 *   pool: { max: 20 },
 * }
 * ```
 */
export interface EndpointOptions {
  /**
   * A connection URL (`postgres://`, `postgresql://`, `mysql://` or `mariadb://`). Use either `url`
   * or `host`, not both. Fields given next to `url` override the URL's. The user, password, database
   * and host are percent-decoded: write a literal `%` as `%25`. A Unix socket's path goes in the host,
   * percent-encoded (`postgres://app@%2Fvar%2Frun%2Fpostgresql/orders`), or in libpq's form
   * `postgres:///orders?host=/var/run/postgresql` (the only query parameter accepted).
   *
   * Default: unset. Example: `'postgres://app:secret@db.internal:5432/orders'`.
   */
  readonly url?: string
  /**
   * Host name or IP address, or the absolute path of a Unix socket: on PostgreSQL the directory that
   * holds it (`'/var/run/postgresql'`; `port` picks the socket file in it), on MySQL the socket file
   * itself (`'/run/mysqld/mysqld.sock'`). A socket connection has no TLS (`tls` must be unset or
   * `false`) and cannot use IAM auth.
   *
   * Default: unset (required when `url` is not given, unless `auth` is a `'secret'` whose secret
   * holds the host). Example: `'db.internal'`.
   */
  readonly host?: string
  /**
   * TCP port.
   *
   * Default: `5432` for PostgreSQL, `3306` for MySQL. Example: `6432`.
   */
  readonly port?: number
  /**
   * User name.
   *
   * Default: the driver's default (`PGUSER` or the OS user for `pg`, none for `mysql2`). Example: `'app'`.
   */
  readonly user?: string
  /**
   * Password. Never shown in errors, logs, `util.inspect` or `JSON.stringify`.
   *
   * Default: unset. Example: `process.env.DB_PASSWORD`.
   */
  readonly password?: string
  /**
   * Database (schema in MySQL terms) to connect to.
   *
   * Default: the driver's default. Example: `'orders'`.
   */
  readonly database?: string
  /**
   * A name for this endpoint in `db.stats()` and events.
   *
   * Default: `'writer'` for the writer, `'reader-<index>'` for readers. Example: `'replica-eu-west-1b'`.
   */
  readonly name?: string
  /**
   * Pool settings for this endpoint only; each one overrides the same setting of `config.pool`.
   *
   * Default: unset (use `config.pool`). Example: `{ max: 30 }`.
   */
  readonly pool?: PoolConfig
  /**
   * How this endpoint authenticates, overriding `config.auth`; see {@link AuthConfig}.
   *
   * Default: `config.auth`. Example: `{ type: 'iam' }`.
   */
  readonly auth?: AuthConfig
  /**
   * TLS for this endpoint, overriding `config.tls`; see {@link TlsConfig}.
   *
   * Default: `config.tls`. Example: `'verify-full'`.
   */
  readonly tls?: TlsConfig
  /**
   * `pg` options for this endpoint, each one overriding the same key of `config.pg`; see
   * {@link PostgresDriverOptions}. Only with `dialect: 'postgres'`.
   *
   * Default: `config.pg`. Example: `{ application_name: 'orders-api-reports' }`.
   */
  readonly pg?: PostgresDriverOptions
  /**
   * `mysql2` options for this endpoint, each one overriding the same key of `config.mysql2`; see
   * {@link MysqlDriverOptions}. Only with `dialect: 'mysql'`.
   *
   * Default: `config.mysql2`. Example: `{ dateStrings: true }`.
   */
  readonly mysql2?: MysqlDriverOptions
  /**
   * Runs once on every new connection of this endpoint, replacing `config.onCreateConnection`; see
   * {@link ConnectionHook}.
   *
   * Default: `config.onCreateConnection`. Example: `async (c) => { await c.executeQuery(CompiledQuery.raw("set time_zone = '+00:00'")) }`.
   */
  readonly onCreateConnection?: ConnectionHook
  /**
   * Runs each time a connection of this endpoint is taken from the pool, replacing
   * `config.onReserveConnection`; see {@link ConnectionHook}.
   *
   * Default: `config.onReserveConnection`. Example: `async (c) => { await c.executeQuery(CompiledQuery.raw('set role app_reader')) }`.
   */
  readonly onReserveConnection?: ConnectionHook
  /**
   * The connection proxy in front of this endpoint, overriding `config.proxy`; see
   * {@link ConnectionProxy} and the README's "Behind a connection proxy".
   *
   * Default: `config.proxy`. Example: `'pgbouncer'`.
   */
  readonly proxy?: ConnectionProxy | false
}

/**
 * An endpoint: a connection URL string, or an {@link EndpointOptions} object.
 *
 * @example
 * ```ts
 * const writer: EndpointConfig = 'postgres://app:secret@db.internal:5432/orders'
 * ```
 */
export type EndpointConfig = string | EndpointOptions

/**
 * How statements are routed between the writer and the readers. The `...Ms` settings are integers of
 * at most `2_147_483_647` (about 24.8 days, the longest delay a Node.js timer accepts).
 *
 * @example
 * ```ts
 * const routing: RoutingConfig = { readerStrategy: 'random' }
 * ```
 */
export interface RoutingConfig {
  /**
   * How reads are spread over several readers; see {@link ReaderStrategy}.
   *
   * Default: `'round-robin'`. Example: `'least-busy'`.
   */
  readonly readerStrategy?: ReaderStrategy
  /**
   * Where reads go when no reader is healthy: `'writer'` sends them to the writer; `'error'` fails
   * them at once with `NoReaderAvailableError`.
   *
   * Default: `'writer'`. Example: `'error'`.
   */
  readonly fallback?: 'writer' | 'error'
  /**
   * A reader whose replay lag exceeds this is taken out of rotation until it catches up (PostgreSQL:
   * time since the last replayed commit while WAL is pending; MySQL/MariaDB: `Seconds_Behind_Master`,
   * whole seconds). Unset: lag is not checked.
   *
   * Default: unset. Example: `5_000`.
   */
  readonly maxReplicaLagMs?: number
  /**
   * How often each reader's lag is checked when `maxReplicaLagMs` is set.
   *
   * Default: `1_000`. Example: `5_000`.
   */
  readonly lagCheckIntervalMs?: number
  /**
   * How long a reader that failed to connect (or lagged) stays out of rotation before it is probed
   * again.
   *
   * Default: `5_000`. Example: `30_000`.
   */
  readonly readerCooldownMs?: number
  /**
   * Tables whose SELECTs always go to the writer, because a replica that has not yet replayed the
   * latest writes would answer them wrongly. Matched by table name (without schema) against the FROM
   * and JOINs of a SELECT. Kysely's migration tables (`kysely_migration`, `kysely_migration_lock`) are
   * always included; list your own here when you give Kysely's `Migrator` a `migrationTableName` or
   * `migrationLockTableName`. SELECTs from `pg_catalog` and `information_schema` (Kysely's
   * `db.introspection`) always go to the writer too.
   *
   * Default: `[]` (just Kysely's two tables). Example: `['app_migration', 'app_migration_lock']`.
   */
  readonly writerTables?: ReadonlyArray<string>
}

/**
 * Topology discovery for Aurora and RDS Multi-AZ DB clusters: the writer and readers are read from
 * the cluster's own topology view (`aurora_replica_status()`, `information_schema.replica_host_status`,
 * `rds_tools.show_topology()`, `mysql.rds_topology`) and reached at their instance endpoints, so a
 * failover is followed as soon as the new writer answers, without waiting for the cluster endpoint's
 * DNS to change, and readers added or removed are used or dropped at the next refresh. The
 * `...Ms` settings are integers of at most `2_147_483_647`. See the README's "Aurora and Multi-AZ
 * clusters".
 *
 * @example
 * ```ts
 * createDb({
 *   dialect: 'postgres',
 *   writer: 'postgres://app@orders.cluster-c9xyz.eu-west-1.rds.amazonaws.com/orders',
 *   auth: { type: 'iam' },
 *   topology: { refreshIntervalMs: 10_000 },
 * })
 * ```
 */
export interface TopologyConfig {
  /**
   * Read the topology and connect to instances directly. `true` needs a platform that has a
   * topology view (found on first use; on any other an `'error'` event says so and the configured
   * endpoints are used as they are).
   *
   * Default: on when the (first) writer is an Aurora or Multi-AZ cluster endpoint
   * (`<name>.cluster-<id>.<region>.rds.amazonaws.com`), off otherwise. Example: `false`.
   */
  readonly discovery?: boolean
  /**
   * How an Aurora instance identifier becomes a host: `?` is replaced by the identifier, and an
   * optional `:port` sets the port (otherwise the writer's). Multi-AZ DB clusters list their
   * instances' endpoints themselves and do not use it.
   *
   * Default: from the cluster endpoint, `?.<id>.<region>.rds.amazonaws.com` (the instance endpoints'
   * domain). Required when `discovery` is on and the writer is not an RDS cluster endpoint.
   * Example: `'?.c9xyz.eu-west-1.rds.amazonaws.com'`.
   */
  readonly instanceHostPattern?: string
  /**
   * How often the topology is read again when nothing has failed. A failure of the writer reads it
   * again at once.
   *
   * Default: `30_000`. Example: `5_000`.
   */
  readonly refreshIntervalMs?: number
}

/**
 * Read-your-writes: which reads must see earlier writes, and what a read does when no reader has
 * replayed them yet. Positions are the engine's own (PostgreSQL WAL locations, MariaDB GTIDs), so a
 * read goes to a replica as soon as that replica has the writes, and never before. The `...Ms`
 * settings are integers of at most `2_147_483_647`.
 *
 * @example
 * ```ts
 * createDb({ dialect: 'postgres', writer, readers, consistency: { readYourWrites: 'process' } })
 * ```
 */
export interface ConsistencyConfig {
  /**
   * Which reads see earlier writes.
   *
   * - `'scoped'`: reads inside `db.withReadYourWrites(fn)` (the function and everything it awaits:
   *   one HTTP request, one Lambda invocation, one job) see the writes made earlier in that scope and
   *   the tokens given to it. Other reads are eventual: any healthy reader, as without this setting.
   * - `'process'`: every read through this db sees every write this db completed before the read
   *   started: for scripts, workers and test suites.
   *
   * Default: `'scoped'` (nothing changes until `withReadYourWrites` is used). Example: `'process'`.
   */
  readonly readYourWrites?: 'scoped' | 'process'
  /**
   * What a read does when it must see a write that no reader in rotation is known to have replayed:
   * `'writer'` runs it on the writer at once (no added latency; the writer serves reads that follow
   * writes until a replica catches up); `'wait'` waits up to `maxWaitMs` for a reader to replay it,
   * then runs it on the writer (spares the writer, costs up to the replica lag per such read).
   *
   * Default: `'writer'`. Example: `'wait'`.
   */
  readonly whenBehind?: 'writer' | 'wait'
  /**
   * With `whenBehind: 'wait'`, the longest a read waits for a reader to replay what it must see
   * (reading the writer's position included) before it runs on the writer.
   *
   * Default: `1_000`. Example: `200`.
   */
  readonly maxWaitMs?: number
  /**
   * How often the readers' replay positions are read while some read needs a position that no
   * reader is known to have: one small statement per reader, shared by every waiting read. Nothing
   * is polled while no read needs it.
   *
   * Default: `50`. Example: `20`.
   */
  readonly pollIntervalMs?: number
}

/**
 * Automatic retries of single statements outside transactions. Only what cannot apply work twice is
 * retried: a statement that never reached a server (`'unavailable'`), one that reached a node that
 * is no longer the writer (`'read-only'`), and a read whose connection broke (`'ambiguous'`). A write
 * whose connection broke may have committed and is never retried here; statements inside a
 * transaction are never retried (retry the whole transaction with `withRetry`). The delays are
 * integers of at most `2_147_483_647` ms (the longest delay a Node.js timer accepts).
 *
 * @example
 * ```ts
 * createDb({ dialect: 'postgres', writer, retry: { retries: 5, maxDelayMs: 2_000 } })
 * ```
 */
export interface AutoRetryConfig {
  /**
   * Retries after the first attempt, at most; `0` turns automatic retries off. The time budget,
   * `maxElapsedMs`, is what normally ends them.
   *
   * Default: `Infinity` (bounded by `maxElapsedMs`). Example: `4`.
   */
  readonly retries?: number
  /**
   * Time budget of one statement's retries, counted from its first attempt: a retry whose backoff
   * would end past it is not made, and the last error is thrown instead. So a statement that keeps
   * failing as `'unavailable'` (a server restarting, a failover) costs the caller at most this, plus
   * one attempt (bounded by `pool.connectTimeoutMs`, or `pool.acquireTimeoutMs` while waiting for a
   * connection). A restart shorter than this surfaces no error.
   *
   * Default: `10_000`. Example: `30_000`.
   */
  readonly maxElapsedMs?: number
  /**
   * Backoff before the first retry; each later retry doubles it, with full jitter.
   *
   * Default: `50`. Example: `100`.
   */
  readonly minDelayMs?: number
  /**
   * Upper bound of one backoff.
   *
   * Default: `1_000`. Example: `5_000`.
   */
  readonly maxDelayMs?: number
}

/**
 * OpenTelemetry tracing and metrics (with `@opentelemetry/api` installed and a provider registered;
 * see the README's "OpenTelemetry traces"). Statements are traced without their text unless
 * `statementText` says otherwise; parameter values are never recorded.
 *
 * Each statement's span is the active span while it runs, so with `@opentelemetry/instrumentation-pg`
 * or `-mysql2` installed the driver's span of each attempt nests under it. Both are kept on purpose:
 * this one is the statement as the caller saw it (routing, retries, waits), the driver's is one
 * attempt on the wire.
 *
 * @example
 * ```ts
 * createDb({ dialect: 'postgres', writer, telemetry: { statementText: true } })
 * ```
 */
export interface TelemetryConfig {
  /**
   * Put each statement's SQL in its span's `db.query.text`: the text Kysely compiled, with its
   * placeholders (`$1`, `?`) and never the parameter values bound to them. Values written into the
   * SQL itself (`sql.lit`, `sql.raw`) are part of the text: leave this off if yours do.
   *
   * Default: `false`. Example: `true`.
   */
  readonly statementText?: boolean
}

/**
 * Everything `createDb` accepts. Unknown keys are rejected with a `ConfigError`.
 *
 * @example
 * ```ts
 * const config: CreateDbConfig = {
 *   dialect: 'postgres',
 *   writer: process.env.DATABASE_URL!,
 *   readers: [process.env.REPLICA_URL!],
 *   pool: { max: 10, acquireTimeoutMs: 5_000 },
 * }
 * ```
 */
export interface CreateDbConfig {
  /**
   * The engine family: `'postgres'` (driver `pg`) or `'mysql'` (driver `mysql2`; MySQL and MariaDB).
   *
   * Default: none, required. Example: `'mysql'`.
   */
  readonly dialect: SqlDialect
  /**
   * The endpoint that takes writes and transactions: a URL or an {@link EndpointOptions} object. A
   * list of candidates (e.g. every instance of a cluster) makes the library find the one that
   * accepts writes, and find it again after a failover.
   *
   * Default: none, required. Example: `'postgres://app:secret@primary.internal/orders'`.
   */
  readonly writer: EndpointConfig | ReadonlyArray<EndpointConfig>
  /**
   * One reader or a list of readers. Absent or empty: everything goes to the writer.
   *
   * Default: `[]`. Example: `['postgres://app:secret@replica-1.internal/orders']`.
   */
  readonly readers?: EndpointConfig | ReadonlyArray<EndpointConfig>
  /**
   * How every endpoint authenticates (an endpoint's own `auth` wins): the URL's password, an RDS
   * IAM token, a Secrets Manager secret or your own token source; see {@link AuthConfig}.
   *
   * Default: `{ type: 'password' }`. Example: `{ type: 'iam', region: 'eu-west-1' }`.
   */
  readonly auth?: AuthConfig
  /**
   * TLS for every endpoint (an endpoint's own `tls` wins); see {@link TlsConfig}. IAM auth
   * requires TLS.
   *
   * Default: `'rds'` for hosts ending in `.rds.amazonaws.com`, `false` (plain TCP) for others.
   * Example: `'verify-full'`.
   */
  readonly tls?: TlsConfig
  /**
   * The connection proxy in front of every endpoint (an endpoint's own `proxy` wins): PgBouncer or
   * Amazon RDS Proxy. Behind one, the library sends no startup parameters and no `SET` at connect
   * (the proxy refuses them or pins the session), and refuses the settings that need them
   * (`pool.statementTimeoutMs`, `pool.sessionIdleTimeoutMs`, pg's `options`, `lock_timeout`,
   * `idle_in_transaction_session_timeout`) with a `ConfigError` that says what to use instead. `false`
   * says there is none, even on an RDS Proxy host name. See the README's "Behind a connection proxy".
   *
   * Default: `'rds-proxy'` for RDS Proxy host names (`*.proxy-*.<region>.rds.amazonaws.com`), none
   * for others. Example: `'pgbouncer'`.
   */
  readonly proxy?: ConnectionProxy | false
  /**
   * Pool settings for every endpoint; see {@link PoolConfig}.
   *
   * Default: `{}` (every pool default). Example: `{ max: 20 }`.
   */
  readonly pool?: PoolConfig
  /**
   * Routing settings; see {@link RoutingConfig}.
   *
   * Default: `{}`. Example: `{ readerStrategy: 'random' }`.
   */
  readonly routing?: RoutingConfig
  /**
   * Topology discovery on Aurora and Multi-AZ DB clusters; see {@link TopologyConfig}.
   *
   * Default: `{}` (on for an Aurora / Multi-AZ cluster endpoint writer). Example: `{ discovery: false }`.
   */
  readonly topology?: TopologyConfig
  /**
   * Read-your-writes on replicas; see {@link ConsistencyConfig}.
   *
   * Default: `{}` (`readYourWrites: 'scoped'`, `whenBehind: 'writer'`). Example: `{ readYourWrites: 'process' }`.
   */
  readonly consistency?: ConsistencyConfig
  /**
   * Automatic retries of single statements; see {@link AutoRetryConfig}. `false` turns them off.
   *
   * Default: `{}` (retries for up to 10 s, 50 ms to 1 s backoff). Example: `false`.
   */
  readonly retry?: AutoRetryConfig | false
  /**
   * OpenTelemetry settings; see {@link TelemetryConfig}.
   *
   * Default: `{}` (no statement text in spans). Example: `{ statementText: true }`.
   */
  readonly telemetry?: TelemetryConfig
  /**
   * Kysely's own `log` option, with exactly Kysely's meaning: the statements you run (and the
   * `begin`/`commit`/`rollback`/savepoint statements Kysely runs for you) are logged, nothing else.
   *
   * Default: unset (no logging). Example: `['error']`.
   */
  readonly log?: LogConfig
  /**
   * Kysely plugins, exactly as in Kysely's `plugins` option.
   *
   * Default: `[]`. Example: `[new CamelCasePlugin()]`.
   */
  readonly plugins?: ReadonlyArray<KyselyPlugin>
  /**
   * Options for every `pg` Client (`dialect: 'postgres'` only); an endpoint's own `pg` overrides
   * them key by key. See {@link PostgresDriverOptions}: the address, credentials, TLS and timeouts
   * are set with the library's own settings, and createDb names the one to use when given here.
   *
   * Default: `{}` (`application_name: 'kysely-resilient'`). Example: `{ types: myTypeParsers }`.
   */
  readonly pg?: PostgresDriverOptions
  /**
   * Options for every `mysql2` connection (`dialect: 'mysql'` only); an endpoint's own `mysql2`
   * overrides them key by key. See {@link MysqlDriverOptions}.
   *
   * Default: `{}`. Example: `{ supportBigNumbers: true, bigNumberStrings: true }`.
   */
  readonly mysql2?: MysqlDriverOptions
  /**
   * Kysely's `onCreateConnection`: runs once on every new connection of every endpoint (after a
   * failover or a credential rotation too), before its first statement. An endpoint's own hook
   * replaces it. A hook that fails, or takes longer than `pool.acquireTimeoutMs`, fails the
   * statement that asked for the connection and the connection is closed.
   *
   * Default: unset. Example: `async (c) => { await c.executeQuery(CompiledQuery.raw('set search_path to app')) }`.
   */
  readonly onCreateConnection?: ConnectionHook
  /**
   * Kysely's `onReserveConnection`: runs each time a connection is taken from a pool, for a
   * statement (each attempt of a retried one) or a session. Same deadline as `onCreateConnection`.
   *
   * Default: unset. Example: `async (c) => { await c.executeQuery(CompiledQuery.raw('set role app')) }`.
   */
  readonly onReserveConnection?: ConnectionHook
}
