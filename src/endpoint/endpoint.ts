import {
  type AbortableOperationOptions,
  CompiledQuery,
  type DatabaseConnection,
  type Driver,
  MysqlDriver,
  PostgresDriver,
} from 'kysely'
import type { Connection as MysqlRawConnection } from 'mysql2'
import type { Client as PgClient } from 'pg'
import type { CredentialCache } from '../auth/credential-cache.js'
import { createCredentialCache } from '../auth/credential-source.js'
import type { ConnectionHook } from '../config/driver-options.js'
import type { EndpointSettings } from '../config/endpoint-settings.js'
import type { ConnectionProxy } from '../config/proxy.js'
import type { ReadPosition } from '../consistency/replication-position.js'
import { type LagSource, ReplayLagReader } from '../dialect/lag-queries.js'
import { type LoadedDrivers, missingCursor, type PgCursorConstructor } from '../dialect/load-driver.js'
import { MysqlConnector } from '../dialect/mysql-connector.js'
import { PostgresConnector } from '../dialect/postgres-connector.js'
import { readReplayPosition, readWriterPosition } from '../dialect/replication-queries.js'
import {
  type DatabasePlatform,
  detectPlatform,
  hasTopology,
  readTopology,
  type TopologyInstance,
} from '../dialect/topology-queries.js'
import {
  ConnectionHookTimeoutError,
  ConnectTimeoutError,
  QueryTimeoutError,
  ServerUnresponsiveError,
} from '../errors.js'
import type { ResilientEvents } from '../events/resilient-events.js'
import { LivenessMonitor, type Watched } from '../liveness/liveness-monitor.js'
import {
  ConnectionPool,
  type PoolConnector,
  type PoolCounts,
  type PoolInstruments,
} from '../pool/connection-pool.js'
import { classifyError, markConnectPhase } from '../retry/classify-error.js'
import { withDeadline } from '../retry/deadline.js'
import { loadRdsCaBundle } from '../tls/rds-ca-bundle.js'

/**
 * Counters of one endpoint, as returned in `db.stats()`.
 *
 * @example
 * ```ts
 * const { writer } = db.stats()
 * console.log(`${writer.inUse}/${writer.total} in use, ${writer.waiting} waiting`)
 * ```
 */
export interface EndpointStats extends PoolCounts {
  /** The endpoint's name: `'writer'`, `'reader-0'`, or the `name` given in its config. */
  readonly name: string
  /** `'writer'` or `'reader'`. */
  readonly role: 'writer' | 'reader'
  /** `host:port/database`; never the user or password. */
  readonly address: string
  /** Statements this endpoint has executed (including `begin`/`commit`), since `createDb`. */
  readonly queries: number
  /**
   * The connection proxy in front of it (the `proxy` setting, or `'rds-proxy'` detected from the host
   * name); absent when there is none. Behind one, the settings a proxy refuses or pins on are refused.
   */
  readonly proxy?: ConnectionProxy
  /**
   * The platform found behind the endpoint (`'postgres'`, `'aurora-postgres'`,
   * `'rds-multi-az-postgres'`, `'mysql'`, `'mariadb'`, `'aurora-mysql'`, `'rds-multi-az-mysql'`):
   * found on the endpoint's first connection, absent until then.
   */
  readonly platform?: DatabasePlatform
}

/**
 * A statement whose wait may be ended from outside (a killed session): {@link Endpoint.watch} sets
 * `abandon` while it waits, and clears it once the statement settles.
 */
export interface Abandonable {
  abandon?: ((error: unknown) => void) | undefined
}

/** Where an endpoint notes the raw driver connection under Kysely's connection object. */
const RAW = Symbol('kysely-resilient.raw-connection')

/** What every dialect's connector offers the endpoint on top of the pool contract. */
interface EndpointConnector<C> extends PoolConnector<C> {
  probeRole(): Promise<'writer' | 'reader'>
  query(connection: C, sql: string): Promise<ReadonlyArray<Record<string, unknown>>>
}

/**
 * One live endpoint: its pool of raw driver connections and a Kysely driver (Kysely's own
 * `PostgresDriver` or `MysqlDriver`) on top of it, so streaming, cancellation, savepoints and result
 * shapes are exactly Kysely's.
 *
 * The endpoint also remembers which raw connection sits under each Kysely connection, so a
 * connection that failed at the connection level can be destroyed instead of going back to the pool.
 */
export class Endpoint {
  readonly settings: EndpointSettings
  readonly driver: Driver
  readonly #pool: ConnectionPool<unknown>
  readonly #connector: EndpointConnector<unknown>
  readonly #monitor: LivenessMonitor<unknown>
  #handoff: unknown
  /** Kysely's connection object of each raw connection it wrapped (see acquire and acquireNow). */
  readonly #connections = new WeakMap<object, DatabaseConnection>()
  readonly #wrapped = (raw: unknown): boolean => this.#connections.has(raw as object)
  /** Kysely runs `onReserveConnection` on every acquire: then every acquire goes through it. */
  readonly #reserveHook: boolean
  #queries = 0
  /** Reads the replay lag; made on the first lag check. */
  #lag: ReplayLagReader | undefined
  #platform: DatabasePlatform | undefined
  /** A first connection is finding the platform: the others opened meanwhile do not. */
  #detecting = false
  /** False once detection at connect failed with a server error, until forgetPlatform. */
  #detectOnConnect = true
  /** While set, released connections are closed instead of pooled (see {@link drain}). */
  #draining = false
  /** Told when the server stops answering; set by the cluster. */
  onUnresponsive: ((endpoint: Endpoint) => void) | undefined

  private constructor(
    settings: EndpointSettings,
    pool: ConnectionPool<unknown>,
    connector: EndpointConnector<unknown>,
    events: ResilientEvents,
    createDriver: (takeHandoff: () => unknown) => Driver,
  ) {
    this.settings = settings
    this.#pool = pool
    this.#connector = connector
    this.#reserveHook = settings.hooks.onReserveConnection !== undefined
    this.#monitor = new LivenessMonitor(
      settings.name,
      {
        connect: () => connector.connect(),
        ping: (raw) => connector.validate?.(raw) ?? Promise.resolve(),
        destroy: (raw) => {
          connector.destroy(raw)
          void connector.close(raw)
        },
      },
      { probeAfterMs: settings.pool.probeAfterMs, probeTimeoutMs: settings.pool.probeTimeoutMs },
      {
        unresponsive: (error, failed) => {
          // Idle connections lead to the same silent server, and callers waiting for a connection
          // would wait for a connect timeout: both go; new statements fail fast (acquire).
          this.#pool.evictIdle()
          this.#pool.rejectWaiters(this.unresponsiveError())
          events.emit('endpoint-unresponsive', {
            endpoint: settings.name,
            role: settings.role,
            statementsFailed: failed,
            probeTimeoutMs: settings.pool.probeTimeoutMs,
          })
          events.emit('error', {
            endpoint: settings.name,
            category: 'unavailable',
            code: error instanceof ServerUnresponsiveError ? error.code : undefined,
            reason: 'the server stopped answering',
          })
          this.onUnresponsive?.(this)
        },
        responsive: (downForMs) =>
          events.emit('endpoint-responsive', { endpoint: settings.name, role: settings.role, downForMs }),
      },
    )
    // Kysely's drivers ask their pool for a connection synchronously at the start of
    // acquireConnection(); hand over the one `acquire` already took, so we know which it is.
    this.driver = createDriver(() => {
      const raw = this.#handoff
      this.#handoff = undefined
      return raw
    })
  }

  get name(): string {
    return this.settings.name
  }

  get role(): 'writer' | 'reader' {
    return this.settings.role
  }

  /** True while the liveness monitor finds the server not answering. */
  get unresponsive(): boolean {
    return this.#monitor.unresponsive
  }

  /** The error a statement gets, before anything is sent, while the server is not answering. */
  unresponsiveError(): ServerUnresponsiveError {
    const error = new ServerUnresponsiveError(this.name, this.settings.pool.probeTimeoutMs)
    markConnectPhase(error)
    return error
  }

  /**
   * A single statement's connection without a promise (see ConnectionPool.takeReady): an idle one
   * ready at once whose Kysely connection object exists, when no `onReserveConnection` hook must run
   * first. Kysely's `acquireConnection` would only look that object up again. Otherwise `undefined`:
   * use {@link acquire}. Give it back with {@link releaseStatement}.
   */
  acquireNow(): DatabaseConnection | undefined {
    if (this.#reserveHook || this.#monitor.unresponsive) return undefined
    const raw = this.#pool.takeReady(this.#wrapped)
    return raw === undefined ? undefined : this.#connections.get(raw as object)
  }

  /** Takes a connection from the pool and returns Kysely's connection object for it. */
  async acquire(options?: AbortableOperationOptions): Promise<DatabaseConnection> {
    // A silent server would hold the caller until a connect or query deadline: fail at once.
    if (this.#monitor.unresponsive) throw this.unresponsiveError()
    const raw = await this.#pool.acquire(options?.signal)
    this.#handoff = raw
    let pending: Promise<DatabaseConnection>
    try {
      pending = this.driver.acquireConnection(options)
    } finally {
      this.#handoff = undefined
    }
    let connection: DatabaseConnection
    try {
      connection = await pending
    } catch (error) {
      this.#pool.release(raw, true)
      throw error
    }
    // Kysely keeps one connection object per raw connection, so this is written once per connection.
    const tagged = connection as DatabaseConnection & { [RAW]?: unknown }
    if (tagged[RAW] !== raw) {
      tagged[RAW] = raw
      this.#connections.set(raw as object, connection)
    }
    return connection
  }

  /** Gives a connection back; `discard` destroys it instead (it failed at the connection level). */
  async release(connection: DatabaseConnection, discard = false): Promise<void> {
    if (discard || this.#draining) this.discard(connection)
    await this.driver.releaseConnection(connection)
  }

  /**
   * Gives back a single statement's connection: straight to the pool when it is kept, which is all
   * Kysely's `releaseConnection` would do (its connection's only other state, "discarded", is set by a
   * failed ROLLBACK, never by a single statement). `undefined` when done; otherwise the promise of
   * {@link release}, which destroys it.
   */
  releaseStatement(connection: DatabaseConnection, discard: boolean): Promise<void> | undefined {
    const raw = (connection as DatabaseConnection & { [RAW]?: unknown })[RAW]
    if (discard || this.#draining || raw === undefined) return this.release(connection, discard)
    this.#pool.release(raw)
    return undefined
  }

  /**
   * Runs one statement's promise under the endpoint's watch: `pool.queryTimeoutMs`, and the liveness
   * monitor. Either one fails the caller and calls `cut` (which must destroy the connection: some
   * drivers never settle a query whose socket was destroyed, so the caller is rejected here).
   */
  watch<T>(work: Promise<T>, cut: () => void, abandonable?: Abandonable): Promise<T> {
    const monitor = this.#monitor
    const timeoutMs = this.settings.pool.queryTimeoutMs
    if (timeoutMs === undefined && abandonable === undefined) {
      if (!monitor.enabled) return work
      return this.#watchLiveness(work, cut)
    }
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      let settled = false
      const finish = (): void => {
        settled = true
        clearTimeout(timer)
        monitor.end(watched)
        if (abandonable !== undefined && abandonable.abandon === abandon) abandonable.abandon = undefined
      }
      const abandon = (error: unknown): void => {
        if (settled) return
        finish()
        reject(error)
      }
      const watched: Watched = {
        startedAt: monitor.now(),
        fail: (error) => {
          if (settled) return
          finish()
          cut()
          reject(error)
        },
      }
      if (abandonable !== undefined) abandonable.abandon = abandon
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => watched.fail(new QueryTimeoutError(this.name, timeoutMs)), timeoutMs)
      }
      if (monitor.enabled) {
        // Sent to a server already known not to answer: the outcome is unknown, fail now.
        if (monitor.unresponsive) {
          watched.fail(new ServerUnresponsiveError(this.name, this.settings.pool.probeTimeoutMs))
          return
        }
        monitor.start(watched)
      }
      work.then(
        (value) => {
          if (settled) return
          finish()
          resolve(value)
        },
        (error: unknown) => {
          if (settled) return
          finish()
          reject(error)
        },
      )
    })
  }

  /**
   * The common case (no `queryTimeoutMs`, no abort signal), kept cheap because every statement pays
   * it: only the liveness monitor watches. Failing the statement destroys its connection, which makes
   * the driver reject the statement in flight (both drivers do once the socket is destroyed), and the
   * caller gets the monitor's error instead of the driver's.
   */
  #watchLiveness<T>(work: Promise<T>, cut: () => void): Promise<T> {
    const monitor = this.#monitor
    const watched: Watched & { failedWith?: Error } = {
      startedAt: monitor.now(),
      fail: (error) => {
        watched.failedWith = error
        cut()
      },
    }
    // Sent to a server already known not to answer: the outcome is unknown, fail now.
    if (monitor.unresponsive)
      watched.fail(new ServerUnresponsiveError(this.name, this.settings.pool.probeTimeoutMs))
    else monitor.start(watched)
    return work.then(
      (value) => {
        monitor.end(watched)
        return value
      },
      (error: unknown) => {
        monitor.end(watched)
        throw watched.failedWith ?? error
      },
    )
  }

  /**
   * The endpoint may have changed role (a failover is being looked into): close its idle
   * connections, and close every connection released until {@link stopDraining}, so none that
   * leads to a demoted writer is handed out again.
   */
  drain(): void {
    this.#draining = true
    this.#pool.evictIdle()
  }

  stopDraining(): void {
    this.#draining = false
  }

  /** Destroys the connection's socket now and makes sure the pool never hands it out again. */
  discard(connection: DatabaseConnection): void {
    const raw = (connection as DatabaseConnection & { [RAW]?: unknown })[RAW]
    if (raw !== undefined) this.#connector.destroy(raw)
  }

  /** Closes every idle connection (they may point at a server that changed role). */
  evictIdle(): number {
    return this.#pool.evictIdle()
  }

  /** Asks the server, over a fresh connection, whether it currently accepts writes. */
  probeRole(): Promise<'writer' | 'reader'> {
    // Bounded as a whole, not only while connecting: a server that accepts the connection and then
    // never answers must not stall writer discovery, which runs one round at a time.
    const timeoutMs = this.settings.pool.connectTimeoutMs * 2
    return withDeadline(
      () => this.#connector.probeRole(),
      timeoutMs,
      () => {
        throw new ConnectTimeoutError(this.name, timeoutMs)
      },
    )
  }

  /**
   * Runs `select 1` over a pooled connection: does the endpoint answer? Needs no privilege. Not
   * counted in `queries`.
   */
  async probeReachable(): Promise<void> {
    await this.#withConnection((connection) => connection.executeQuery(CompiledQuery.raw('select 1')))
  }

  /**
   * The replica's replay lag in milliseconds, over a pooled connection (see ReplayLagReader.read: 0
   * for a server that is not a replica, Infinity for a replica whose replication is stopped,
   * `undefined` for one that reports no lag). Not counted in `queries` and never seen by Kysely's
   * logger: it is the library's own statement.
   */
  async probeLag(): Promise<number | undefined> {
    this.#lag ??= new ReplayLagReader()
    const lag = this.#lag
    return this.#withConnection(async (connection) =>
      lag.read(connection, await this.#platformOf(connection)),
    )
  }

  /**
   * The platform behind this endpoint (Aurora, Multi-AZ cluster, MariaDB, ...), found on its first
   * connection, and again after {@link forgetPlatform}.
   */
  get platform(): DatabasePlatform | undefined {
    return this.#platform
  }

  /**
   * The platform is already known (an instance of a cluster whose platform another endpoint found):
   * no detection for this endpoint.
   */
  assumePlatform(platform: DatabasePlatform): void {
    this.#platform ??= platform
  }

  /** A failover may have put another server behind the same host name: find the platform again. */
  forgetPlatform(): void {
    this.#platform = undefined
    this.#detectOnConnect = true
  }

  /**
   * The cluster's instances as this server's topology view lists them; `undefined` on a platform
   * without one (the platform is found first when not yet known). Not counted in `queries`, never
   * seen by Kysely's logger.
   */
  readTopology(): Promise<{
    platform: DatabasePlatform
    instances: ReadonlyArray<TopologyInstance> | undefined
  }> {
    return this.#withConnection(async (connection) => {
      const platform = await this.#platformOf(connection)
      return {
        platform,
        instances: hasTopology(platform) ? await readTopology(connection, platform) : undefined,
      }
    })
  }

  async #platformOf(connection: DatabaseConnection): Promise<DatabasePlatform> {
    this.#platform ??= await detectPlatform(connection, this.settings.dialect)
    return this.#platform
  }

  /** Where this endpoint's lag comes from, once a lag check has found out. */
  get lagSource(): LagSource | undefined {
    return this.#lag?.source
  }

  /**
   * The writer's replication position, read over a pooled connection after the caller's writes
   * completed (see readWriterPosition). Not counted in `queries`, never seen by Kysely's logger.
   */
  writerPosition(): Promise<ReadPosition> {
    return this.#withConnection((connection) => readWriterPosition(connection, this.settings.dialect))
  }

  /** How far this reader has replayed (see readReplayPosition); undefined when it cannot say. */
  replayPosition(writerServerId: number | undefined): Promise<ReadPosition | undefined> {
    return this.#withConnection((connection) =>
      readReplayPosition(connection, this.settings.dialect, writerServerId),
    )
  }

  /**
   * Runs the library's own statement on a pooled connection, under the endpoint's watch (a silent
   * server fails it like any statement); a failure discards the connection.
   */
  async #withConnection<T>(work: (connection: DatabaseConnection) => Promise<T>): Promise<T> {
    const connection = await this.acquire()
    let failed = false
    try {
      return await this.watch(work(connection), () => {
        failed = true
        this.discard(connection)
      })
    } catch (error) {
      failed = true
      throw error
    } finally {
      await this.release(connection, failed)
    }
  }

  /** Counts one executed statement. */
  countQuery(): void {
    this.#queries++
  }

  stats(): EndpointStats {
    return {
      name: this.settings.name,
      role: this.settings.role,
      address: this.settings.address,
      queries: this.#queries,
      ...(this.settings.proxy === undefined ? {} : { proxy: this.settings.proxy }),
      ...(this.#platform === undefined ? {} : { platform: this.#platform }),
      ...this.#pool.counts(),
    }
  }

  /** Times this endpoint's connections for OpenTelemetry; set by the cluster once it knows it records. */
  instrumentPool(instruments: PoolInstruments | undefined): void {
    this.#pool.instrument(instruments)
  }

  /** Callers that waited `pool.acquireTimeoutMs` for a connection in vain, since the db was made. */
  get acquireTimeouts(): number {
    return this.#pool.timeouts
  }

  /** Sessions the server refused for lack of slots (the pool backs off after each), since the db was made. */
  get sessionRefusals(): number {
    return this.#pool.sessionRefusals
  }

  /** True while the pool holds back after the server refused a session for lack of slots (storm back-off). */
  get backingOff(): boolean {
    return this.#pool.saturated
  }

  /** In-use plus waiting: how busy the endpoint is, for the least-busy reader strategy. */
  load(): number {
    const counts = this.#pool.counts()
    return counts.inUse + counts.waiting
  }

  async destroy(): Promise<void> {
    this.#monitor.close()
    await this.driver.destroy()
  }

  static async open(
    settings: EndpointSettings,
    drivers: LoadedDrivers,
    events: ResilientEvents,
  ): Promise<Endpoint> {
    const credentials = credentialCacheFor(settings, events)
    const rdsCa =
      settings.tls.mode === 'verify' && settings.tls.trust === 'rds' ? await loadRdsCaBundle() : undefined
    // One wiring for both dialects: a connector of the dialect, our pool over it, and Kysely's own
    // driver of the dialect over the pool (see postgresDriver / mysqlDriver).
    const connector = (
      drivers.dialect === 'postgres'
        ? new PostgresConnector(drivers.pg, settings, credentials, rdsCa)
        : new MysqlConnector(drivers.mysql2, settings, credentials, rdsCa)
    ) as EndpointConnector<unknown>
    // The platform is found on the endpoint's first connection (see Endpoint.detectOn), set once the
    // endpoint exists; connections only open on demand, after open() returned.
    let detectOn: ((raw: unknown) => Promise<void> | undefined) | undefined
    const pool = new ConnectionPool<unknown>(settings.name, connector, settings.pool, {
      onOpen: (raw) => detectOn?.(raw),
    })
    const hooks = boundedHooks(settings)
    const endpoint = new Endpoint(settings, pool, connector, events, (takeHandoff) =>
      drivers.dialect === 'postgres'
        ? postgresDriver(takeHandoff, pool, connector as unknown as PostgresConnector, drivers.cursor, hooks)
        : mysqlDriver(takeHandoff, pool, connector as unknown as MysqlConnector, hooks),
    )
    detectOn = (raw) => endpoint.#detectOn(raw, connector)
    await endpoint.driver.init()
    return endpoint
  }

  /**
   * Finds the platform on a new connection, once per endpoint (and again after forgetPlatform): one
   * or two statements on the first connection, never on the statement path. A statement the server
   * refuses leaves it unknown (found later by a lag check or topology read); a lost connection
   * fails the open like any connect error.
   */
  #detectOn(raw: unknown, connector: EndpointConnector<unknown>): Promise<void> | undefined {
    if (this.#platform !== undefined || this.#detecting || !this.#detectOnConnect) return undefined
    this.#detecting = true
    const connection = {
      executeQuery: async (query: CompiledQuery) => ({ rows: await connector.query(raw, query.sql) }),
      streamQuery: () => {
        throw new Error('kysely-resilient: not streamed')
      },
    } as unknown as DatabaseConnection
    return detectPlatform(connection, this.settings.dialect).then(
      (platform) => {
        this.#platform ??= platform
        this.#detecting = false
      },
      (error: unknown) => {
        this.#detecting = false
        if (classifyError(error).connectionLost) throw error
        // Refused (a privilege, a server that parses neither statement): not again on every new
        // connection; a lag check or topology read asks once more.
        this.#detectOnConnect = false
      },
    )
  }
}

/**
 * Kysely's PostgresDriver over our pool: it asks a pg-Pool-like object for clients and releases them
 * with `client.release(destroy)`. `takeHandoff` gives the client Endpoint.acquire took from the pool
 * (every acquire goes that way); the pool is asked only if there is none.
 */
function postgresDriver(
  takeHandoff: () => unknown,
  pool: ConnectionPool<unknown>,
  connector: PostgresConnector,
  cursor: PgCursorConstructor | undefined,
  hooks: KyselyHooks,
): Driver {
  type PooledClient = PgClient & { release(destroy?: boolean): void }
  const withRelease = (raw: unknown): PooledClient => {
    const pooled = raw as PgClient & { release?(destroy?: boolean): void }
    // Once per client, not per acquire: the closure only needs the client itself.
    pooled.release ??= (destroy?: boolean) => pool.release(raw, destroy === true)
    return pooled as PooledClient
  }
  return new PostgresDriver({
    ...hooks,
    pool: {
      // Kysely opens a control connection with `controlClient` (below) instead.
      options: {},
      // No `.then` on the statement path: the handed-off client is ready, one promise hop saved.
      connect: () => {
        const raw = takeHandoff()
        return raw !== undefined ? Promise.resolve(withRelease(raw)) : pool.acquire().then(withRelease)
      },
      end: () => pool.end(),
    },
    // Cancels with a connection opened like the pool's: TLS, current credentials.
    controlClient: connector.controlClient() as never,
    cursor: cursor ?? missingCursor(),
  })
}

/**
 * Kysely's MysqlDriver over our pool: it asks a mysql2-Pool-like object for connections with a
 * callback and releases them with `connection.release()`. `takeHandoff` as for postgresDriver.
 */
function mysqlDriver(
  takeHandoff: () => unknown,
  pool: ConnectionPool<unknown>,
  connector: MysqlConnector,
  hooks: KyselyHooks,
): Driver {
  const withRelease = (raw: unknown): never => {
    const pooled = raw as MysqlRawConnection & { release?(): void }
    // Once per connection, not per acquire.
    pooled.release ??= () => pool.release(raw)
    return pooled as never
  }
  return new MysqlDriver({
    ...hooks,
    // Kills with a connection opened like the pool's: TLS, current credentials.
    controlConnection: (() => connector.controlConnection()) as never,
    pool: {
      getConnection: (callback) => {
        const raw = takeHandoff()
        // The handed-off connection at once (Kysely's driver wraps this call in a promise of its own).
        if (raw !== undefined) return callback(null, withRelease(raw))
        pool.acquire().then(
          (acquired) => callback(null, withRelease(acquired)),
          (error: unknown) => callback(error, undefined as never),
        )
      },
      end: (callback) => {
        pool.end().then(() => callback(null), callback)
      },
    },
  })
}

/** The hooks as Kysely's dialect configs take them: only those that are set. */
interface KyselyHooks {
  onCreateConnection?: ConnectionHook
  onReserveConnection?: ConnectionHook
}

/**
 * The endpoint's connection hooks, each under `pool.acquireTimeoutMs`: Kysely's drivers run them
 * while a connection is being acquired, and a hook that never finishes (a SET waiting on a lock, a
 * server that stopped answering) must not hold the caller without a deadline. On timeout the caller
 * gets a ConnectionHookTimeoutError and the endpoint closes the connection (see Endpoint.acquire).
 */
function boundedHooks(settings: EndpointSettings): KyselyHooks {
  const hooks: KyselyHooks = {}
  const timeoutMs = settings.pool.acquireTimeoutMs
  for (const name of ['onCreateConnection', 'onReserveConnection'] as const) {
    const hook = settings.hooks[name]
    if (hook === undefined) continue
    hooks[name] = (connection, options) =>
      withDeadline(
        () => hook(connection, options),
        timeoutMs,
        () => {
          throw new ConnectionHookTimeoutError(settings.name, name, timeoutMs)
        },
      )
  }
  return hooks
}

/** The endpoint's credential cache (none for password auth), reporting through the db's events. */
function credentialCacheFor(
  settings: EndpointSettings,
  events: ResilientEvents,
): CredentialCache | undefined {
  return createCredentialCache(settings, {
    onFetched: (reason, durationMs) =>
      events.emit('credentials-refreshed', {
        endpoint: settings.name,
        authType: settings.auth.type,
        reason,
        durationMs,
      }),
    onBackgroundFailure: (error) => {
      const verdict = classifyError(error)
      events.emit('error', {
        endpoint: settings.name,
        category: verdict.category,
        code: verdict.code,
        reason: `background ${settings.auth.type} credential refresh failed; the current credentials are used until they expire`,
      })
    },
  })
}
