import type { Connection, ConnectionOptions } from 'mysql2'
import { connectWithCredentials } from '../auth/connect-with-credentials.js'
import type { CredentialCache } from '../auth/credential-cache.js'
import { type Credentials, loginTarget } from '../auth/credentials.js'
import type { EndpointSettings } from '../config/endpoint-settings.js'
import { isUnixSocket } from '../host/unix-socket.js'
import type { PoolConnector } from '../pool/connection-pool.js'
import { type CaBundle, mysqlSslOptions } from '../tls/driver-tls-options.js'
import type { Mysql2Module } from './load-driver.js'

/** The part of a mysql2 connection Kysely's MySQL driver uses to kill a query. */
export interface MysqlControlConnection {
  connect(callback: (error: unknown) => void): void
  query(sql: string, values: unknown[], callback: (error: unknown) => void): void
  destroy(): void
}

/**
 * Behind RDS Proxy, Kysely's `KILL QUERY <id>` / `KILL CONNECTION <id>` would name the id the proxy
 * gave this client connection, and run on whichever database connection the proxy lends: nothing to
 * do with the statement, and possibly another client's session. So nothing is sent. The caller is
 * released by Kysely at once anyway, Kysely's kill destroys the connection itself, and a cancelled
 * connection is never reused (RoutingConnection.cancelQuery).
 */
const PROXY_CONTROL_CONNECTION: MysqlControlConnection = Object.freeze({
  connect: (callback: (error: unknown) => void) => callback(null),
  query: (_sql: string, _values: unknown[], callback: (error: unknown) => void) => callback(null),
  destroy: () => {},
})

/** Opens `mysql2` connections (callback API, as Kysely's MySQL driver expects) to one endpoint. */
export class MysqlConnector implements PoolConnector<Connection> {
  readonly #mysql: Mysql2Module
  readonly #endpoint: EndpointSettings
  readonly #credentials: CredentialCache | undefined
  readonly #broken = new WeakSet<Connection>()
  /** Set by the pool: told when a connection breaks, so an idle one leaves the pool at once. */
  onBroken: ((connection: Connection) => void) | undefined
  readonly #statementTimeoutMs: number | undefined
  readonly #sessionIdleTimeoutMs: number | undefined
  /** The connection options, also used by Kysely to open a control connection for cancellation. */
  readonly connectionOptions: ConnectionOptions

  constructor(
    mysql: Mysql2Module,
    endpoint: EndpointSettings,
    credentials: CredentialCache | undefined,
    rdsCa: CaBundle | undefined,
  ) {
    this.#mysql = mysql
    this.#endpoint = endpoint
    this.#credentials = credentials
    const { pool } = endpoint
    const options: ConnectionOptions = {
      // The user's mysql2 options first: the settings the library owns (createDb refuses them there) win.
      ...(endpoint.driverOptions as ConnectionOptions),
      // mysql2 takes a Unix socket as socketPath, and then ignores host and port.
      ...(isUnixSocket(endpoint.host)
        ? { socketPath: endpoint.host }
        : { host: endpoint.host, port: endpoint.port }),
      user: endpoint.user,
      database: endpoint.database,
      connectTimeout: pool.connectTimeoutMs,
      enableKeepAlive: pool.keepAlive,
      keepAliveInitialDelay: pool.keepAliveInitialDelayMs,
    }
    const ssl = mysqlSslOptions(endpoint.tls, rdsCa)
    if (ssl !== undefined) {
      options.ssl = ssl
      // RDS IAM (and other token schemes) ask for mysql_clear_password: the token is sent as is.
      // mysql2 refuses that unless enabled; it is only enabled when the connection is encrypted.
      if (credentials !== undefined) options.enableCleartextPlugin = true
    }
    Object.defineProperty(options, 'password', { value: endpoint.password(), enumerable: false })
    this.connectionOptions = options
    this.#statementTimeoutMs = pool.statementTimeoutMs
    this.#sessionIdleTimeoutMs = pool.sessionIdleTimeoutMs
  }

  /**
   * The options for one connection: mysql2 reads `password` from the options it is given, so hand
   * it a copy that has it, with the current credentials when there is an `auth` source.
   */
  #optionsFor(credentials: Credentials | undefined): ConnectionOptions {
    if (credentials === undefined) {
      return { ...this.connectionOptions, password: this.connectionOptions.password }
    }
    return {
      ...this.connectionOptions,
      ...loginTarget(this.#endpoint, credentials),
      password: credentials.password(),
    }
  }

  /**
   * A stand-in for Kysely's `controlConnection`, the connection that kills a running query. It
   * connects through `connect()`, so it gets the same TLS, the current credentials and the refetch
   * after a rejection (the pooled connection's own password may have been rotated since it was opened).
   */
  controlConnection(): MysqlControlConnection {
    if (this.#endpoint.proxy !== undefined) return PROXY_CONTROL_CONNECTION
    let connection: Connection | undefined
    return {
      connect: (callback) => {
        this.connect().then(
          (opened) => {
            connection = opened
            callback(null)
          },
          (error: unknown) => callback(error),
        )
      },
      query: (sql, values, callback) => {
        if (connection === undefined) {
          callback(new Error('control connection not connected'))
          return
        }
        connection.query(sql, values, (error) => callback(error))
      },
      destroy: () => {
        if (connection !== undefined) this.destroy(connection)
      },
    }
  }

  connect(): Promise<Connection> {
    const credentials = this.#credentials
    if (credentials === undefined) return this.#open(this.#optionsFor(undefined))
    return connectWithCredentials(
      this.#endpoint,
      credentials,
      (current) => this.#open(this.#optionsFor(current)),
      (error) => (error as { errno?: unknown } | null)?.errno === 1045,
    )
  }

  async #open(options: ConnectionOptions): Promise<Connection> {
    const connection = this.#mysql.createConnection(options)
    connection.on('error', () => this.#markBroken(connection))
    connection.on('end', () => this.#markBroken(connection))
    try {
      await new Promise<void>((resolve, reject) => {
        connection.connect((error) => (error ? reject(error) : resolve()))
      })
      if (this.#statementTimeoutMs !== undefined) {
        await this.#setStatementTimeout(connection, this.#statementTimeoutMs)
      }
      if (this.#sessionIdleTimeoutMs !== undefined) {
        // wait_timeout is whole seconds; round up so the server never closes a session early. At most
        // 2147484 s with createDb's cap (MAX_TIMER_MS), far below the server's 31536000 s maximum,
        // above which it would silently truncate.
        await this.#query(connection, 'SET SESSION wait_timeout = ?', [
          Math.ceil(this.#sessionIdleTimeoutMs / 1000),
        ])
      }
    } catch (error) {
      this.#broken.add(connection)
      connection.destroy()
      throw error
    }
    return connection
  }

  #markBroken(connection: Connection): void {
    this.#broken.add(connection)
    this.onBroken?.(connection)
  }

  async close(connection: Connection): Promise<void> {
    if (this.#broken.has(connection)) {
      connection.destroy()
      return
    }
    this.#broken.add(connection)
    await new Promise<void>((resolve) => {
      // end() sends COM_QUIT politely; fall back to destroying the socket if it fails.
      connection.end(() => {
        connection.destroy()
        resolve()
      })
    })
  }

  /** `COM_PING`: a protocol-level round trip, cheaper than any statement. */
  validate(connection: Connection): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      connection.ping((error) => (error ? reject(error) : resolve()))
    })
  }

  #query(connection: Connection, sql: string, values: unknown[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      connection.query(sql, values, (error) => (error ? reject(error) : resolve()))
    })
  }

  isBroken(connection: Connection): boolean {
    return this.#broken.has(connection)
  }

  destroy(connection: Connection): void {
    this.#broken.add(connection)
    connection.destroy()
    // mysql2's destroy() only half-closes the socket (end()) and never answers the command in
    // flight. Destroying the socket with an error closes it now and fails that command with it, so a
    // statement cut off by the pool's deadlines settles instead of waiting forever.
    const stream = (
      connection as unknown as { stream?: { destroyed?: boolean; destroy(error?: Error): void } }
    ).stream
    if (stream !== undefined && stream.destroyed !== true) {
      stream.destroy(new Error('kysely-resilient: the connection was destroyed'))
    }
  }

  /** Runs one statement of the library's own on a raw connection (platform detection at connect). */
  query(connection: Connection, sql: string): Promise<ReadonlyArray<Record<string, unknown>>> {
    return new Promise((resolve, reject) => {
      connection.query(sql, (error, rows) =>
        error ? reject(error) : resolve(Array.isArray(rows) ? (rows as Record<string, unknown>[]) : []),
      )
    })
  }

  /**
   * Opens a separate connection and asks the server whether it accepts writes: MySQL and MariaDB
   * replicas set `read_only`, Aurora MySQL readers `innodb_read_only`.
   */
  async probeRole(): Promise<'writer' | 'reader'> {
    const connection = await this.connect()
    try {
      const rows = await new Promise<unknown>((resolve, reject) => {
        connection.query(
          'select @@global.read_only as ro, @@global.innodb_read_only as iro',
          (error, result) => (error ? reject(error) : resolve(result)),
        )
      })
      const row = (Array.isArray(rows) ? rows[0] : undefined) as { ro?: unknown; iro?: unknown } | undefined
      return Number(row?.ro) === 0 && Number(row?.iro) === 0 ? 'writer' : 'reader'
    } finally {
      await this.close(connection)
    }
  }

  #setStatementTimeout(connection: Connection, timeoutMs: number): Promise<void> {
    const handshake = (connection as unknown as { _handshakePacket?: { serverVersion?: string } })
      ._handshakePacket
    const isMariaDb = /mariadb/i.test(handshake?.serverVersion ?? '')
    // MariaDB takes seconds (fractional); MySQL takes milliseconds and applies it to SELECT only. With
    // createDb's cap (MAX_TIMER_MS) both stay below the servers' maxima (31536000 s; 2^32 - 1 ms).
    const sql = isMariaDb ? 'SET SESSION max_statement_time = ?' : 'SET SESSION max_execution_time = ?'
    const value = isMariaDb ? timeoutMs / 1000 : timeoutMs
    return new Promise<void>((resolve, reject) => {
      connection.query(sql, [value], (error) => (error ? reject(error) : resolve()))
    })
  }
}
