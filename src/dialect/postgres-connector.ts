import { isIP } from 'node:net'
import { checkServerIdentity, type PeerCertificate } from 'node:tls'
import type { Client, ClientConfig } from 'pg'
import { connectWithCredentials } from '../auth/connect-with-credentials.js'
import type { CredentialCache } from '../auth/credential-cache.js'
import { loginTarget } from '../auth/credentials.js'
import type { EndpointSettings } from '../config/endpoint-settings.js'
import type { PoolConnector } from '../pool/connection-pool.js'
import { type CaBundle, pgSslOptions } from '../tls/driver-tls-options.js'
import type { PgModule } from './load-driver.js'
import { parseControlStatement, sendCancelRequest } from './postgres-cancel.js'

/** Opens `pg` clients to one endpoint with the endpoint's timeouts, keepalive, TLS and credentials. */
export class PostgresConnector implements PoolConnector<Client> {
  readonly #pg: PgModule
  readonly #endpoint: EndpointSettings
  readonly #credentials: CredentialCache | undefined
  readonly #broken = new WeakSet<Client>()
  /** Set by the pool: told when a connection breaks, so an idle one leaves the pool at once. */
  onBroken: ((client: Client) => void) | undefined
  readonly #base: ClientConfig
  /**
   * Behind a proxy only: the open clients by the process id their BackendKeyData named, so that
   * Kysely's cancel and kill reach the right statement by a CancelRequest (see controlClient).
   */
  readonly #byProcessId: Map<number, Client> | undefined

  constructor(
    pg: PgModule,
    endpoint: EndpointSettings,
    credentials: CredentialCache | undefined,
    rdsCa: CaBundle | undefined,
  ) {
    this.#pg = pg
    this.#endpoint = endpoint
    this.#credentials = credentials
    const { pool } = endpoint
    // The user's pg options first: the settings the library owns (createDb refuses them there) win.
    const driverOptions = endpoint.driverOptions as ClientConfig & { binary?: boolean }
    const base: ClientConfig = {
      ...driverOptions,
      // pg takes a Unix socket's directory as the host (an absolute path) and adds /.s.PGSQL.<port>.
      host: endpoint.host,
      port: endpoint.port,
      user: endpoint.user,
      database: endpoint.database,
      ssl: pgSslOptions(endpoint.tls, rdsCa),
      connectionTimeoutMillis: pool.connectTimeoutMs,
      keepAlive: pool.keepAlive,
      keepAliveInitialDelayMillis: pool.keepAliveInitialDelayMs,
      application_name: driverOptions.application_name ?? 'kysely-resilient',
    }
    // Both are int milliseconds on the server; createDb caps them at INT_MAX (MAX_TIMER_MS), the most
    // PostgreSQL accepts: a larger startup parameter would fail every connection.
    if (pool.statementTimeoutMs !== undefined) base.statement_timeout = pool.statementTimeoutMs
    if (pool.sessionIdleTimeoutMs !== undefined) {
      // A startup parameter, not a SET: no extra round trip per connection.
      const own = `-c idle_session_timeout=${pool.sessionIdleTimeoutMs}`
      base.options = driverOptions.options === undefined ? own : `${driverOptions.options} ${own}`
    }
    this.#base = base
    this.#byProcessId = endpoint.proxy === undefined ? undefined : new Map()
  }

  connect(): Promise<Client> {
    const credentials = this.#credentials
    if (credentials === undefined) {
      const config = { ...this.#base }
      // Not enumerable, so printing the config (or an error that holds it) never shows it.
      Object.defineProperty(config, 'password', { value: this.#endpoint.password(), enumerable: false })
      return this.#open(config)
    }
    return connectWithCredentials(
      this.#endpoint,
      credentials,
      (current) => {
        const config: ClientConfig = { ...this.#base, ...loginTarget(this.#endpoint, current) }
        Object.defineProperty(config, 'password', { value: current.password(), enumerable: false })
        return this.#open(config)
      },
      isCredentialRejection,
    )
  }

  /**
   * A class for Kysely's `controlClient`, the connection that cancels a running query. It connects
   * through `connect()`, so it gets the same TLS, the current credentials and the refetch after a
   * rejection (the pooled connection's own password may have been rotated since it was opened).
   */
  controlClient(): new () => {
    connect(): Promise<void>
    query(sql: string, parameters: unknown[]): Promise<unknown>
    end(): Promise<void>
  } {
    const connector = this
    if (this.#byProcessId !== undefined) return this.#proxyControlClient(this.#byProcessId)
    return class ControlClient {
      #client: Client | undefined

      async connect(): Promise<void> {
        this.#client = await connector.connect()
      }

      query(sql: string, parameters: unknown[]): Promise<unknown> {
        if (this.#client === undefined) return Promise.reject(new Error('control client not connected'))
        return this.#client.query(sql, parameters)
      }

      async end(): Promise<void> {
        if (this.#client !== undefined) await connector.close(this.#client)
      }
    }
  }

  /**
   * Behind a proxy, Kysely's `select pg_cancel_backend(<pid>)` / `pg_terminate_backend(<pid>)`
   * would name the proxy's key, not a server process, and run on any server session (see
   * sendCancelRequest). This control client does not send them: it sends a CancelRequest with the
   * connection's own key, which the proxy forwards to the session running the statement, and for a
   * kill also destroys the connection, so the proxy drops the server session it had lent.
   */
  #proxyControlClient(clients: Map<number, Client>): new () => {
    connect(): Promise<void>
    query(sql: string, parameters: unknown[]): Promise<unknown>
    end(): Promise<void>
  } {
    const connector = this
    const endpoint = this.#endpoint
    return class ProxyControlClient {
      async connect(): Promise<void> {}

      async query(sql: string): Promise<unknown> {
        const control = parseControlStatement(sql)
        if (control === undefined)
          throw new Error('kysely-resilient: unexpected control statement behind a proxy')
        const target = clients.get(control.processId)
        // Already closed: its statement ended with it.
        if (target === undefined) return { rows: [] }
        const { processID, secretKey } = target as unknown as { processID: number; secretKey: number }
        try {
          await sendCancelRequest(
            endpoint.host,
            endpoint.port,
            processID,
            secretKey,
            endpoint.pool.connectTimeoutMs,
          )
        } finally {
          if (control.kill) connector.destroy(target)
        }
        return { rows: [] }
      }

      async end(): Promise<void> {}
    }
  }

  async #open(config: ClientConfig): Promise<Client> {
    const client = new this.#pg.Client(checkIpHostIdentity(config))
    // Without a listener, an idle client whose server went away would crash the process with an
    // unhandled 'error' event. Mark it broken instead; the pool drops it.
    client.on('error', () => this.#markBroken(client))
    client.on('end', () => this.#markBroken(client))
    try {
      await client.connect()
    } catch (error) {
      this.#broken.add(client)
      void client.end().catch(() => undefined)
      throw error
    }
    const processId = (client as unknown as { processID?: unknown }).processID
    if (this.#byProcessId !== undefined && typeof processId === 'number')
      this.#byProcessId.set(processId, client)
    return client
  }

  #forget(client: Client): void {
    const processId = (client as unknown as { processID?: unknown }).processID
    if (typeof processId === 'number' && this.#byProcessId?.get(processId) === client) {
      this.#byProcessId.delete(processId)
    }
  }

  #markBroken(client: Client): void {
    this.#broken.add(client)
    this.#forget(client)
    this.onBroken?.(client)
  }

  async close(client: Client): Promise<void> {
    this.#broken.add(client)
    this.#forget(client)
    await client.end().catch(() => undefined)
  }

  /** `select 1` on the raw client: the cheapest statement that proves the server still serves it. */
  async validate(client: Client): Promise<void> {
    await client.query('select 1')
  }

  isBroken(client: Client): boolean {
    return this.#broken.has(client)
  }

  destroy(client: Client): void {
    this.#broken.add(client)
    this.#forget(client)
    // pg has no public "destroy": end() waits for the server; the socket is what must go now.
    const connection = (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection
    connection?.stream?.destroy()
    void client.end().catch(() => undefined)
  }

  /** Runs one statement of the library's own on a raw connection (platform detection at connect). */
  async query(client: Client, sql: string): Promise<ReadonlyArray<Record<string, unknown>>> {
    return (await client.query<Record<string, unknown>>(sql)).rows
  }

  /** Opens a separate connection and asks the server whether it accepts writes. */
  async probeRole(): Promise<'writer' | 'reader'> {
    const client = await this.connect()
    try {
      const { rows } = await client.query<{ standby: boolean }>('select pg_is_in_recovery() as standby')
      return rows[0]?.standby === false ? 'writer' : 'reader'
    } finally {
      await this.close(client)
    }
  }
}

/**
 * The server (28P01), or PgBouncer in front of it, refused the password. PgBouncer sends its own
 * refusal as 08P01 with a fixed message ("SASL authentication failed" for SCRAM, "password
 * authentication failed" otherwise): a rotated password must be refetched there too.
 */
function isCredentialRejection(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown }
  if (code === '28P01') return true
  return code === '08P01' && typeof message === 'string' && PGBOUNCER_AUTH_FAILED.test(message)
}

const PGBOUNCER_AUTH_FAILED = /^(SASL|password) authentication failed/

/**
 * With a verifying `tls` and an IP-address host, the certificate must be checked against that address.
 * pg before 8.23.1 gives Node no server name for an IP address (SNI takes none), and Node then checks
 * the certificate against 'localhost': a trusted certificate for localhost would pass for any
 * address. Checking against the address the connection goes to is right with every pg version.
 */
function checkIpHostIdentity(config: ClientConfig): ClientConfig {
  const { ssl, host } = config
  if (typeof ssl !== 'object' || ssl.rejectUnauthorized === false) return config
  if (host === undefined || isIP(host) === 0 || ssl.checkServerIdentity !== undefined) return config
  // In place: `config` is this connection's own copy, and its password is a non-enumerable property
  // that a spread would drop.
  config.ssl = {
    ...ssl,
    checkServerIdentity: (_name: string, cert: PeerCertificate) => checkServerIdentity(host, cert),
  }
  return config
}
