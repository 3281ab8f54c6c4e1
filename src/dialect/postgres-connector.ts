import type { Client, ClientConfig } from 'pg'
import { connectWithCredentials } from '../auth/connect-with-credentials.js'
import type { CredentialCache } from '../auth/credential-cache.js'
import type { Credentials } from '../auth/credentials.js'
import type { EndpointSettings } from '../config/endpoint-settings.js'
import type { PoolConnector } from '../pool/connection-pool.js'
import { type CaBundle, pgSslOptions } from '../tls/driver-tls-options.js'
import type { PgModule } from './load-driver.js'

/** Opens `pg` clients to one endpoint with the endpoint's timeouts, keepalive, TLS and credentials. */
export class PostgresConnector implements PoolConnector<Client> {
  readonly #pg: PgModule
  readonly #endpoint: EndpointSettings
  readonly #credentials: CredentialCache | undefined
  readonly #broken = new WeakSet<Client>()
  /** Set by the pool: told when a connection breaks, so an idle one leaves the pool at once. */
  onBroken: ((client: Client) => void) | undefined
  /**
   * The client config Kysely uses to open a control connection for query cancellation. With an
   * `auth` source, its user, host and password are read at the moment Kysely opens that connection,
   * so a cancel after a token refresh presents the current token.
   */
  readonly clientConfig: ClientConfig
  readonly #base: ClientConfig

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
    const base: ClientConfig = {
      host: endpoint.host,
      port: endpoint.port,
      user: endpoint.user,
      database: endpoint.database,
      ssl: pgSslOptions(endpoint.tls, rdsCa),
      connectionTimeoutMillis: pool.connectTimeoutMs,
      keepAlive: pool.keepAlive,
      keepAliveInitialDelayMillis: pool.keepAliveInitialDelayMs,
      application_name: 'kysely-resilient',
    }
    if (pool.statementTimeoutMs !== undefined) base.statement_timeout = pool.statementTimeoutMs
    if (pool.sessionIdleTimeoutMs !== undefined) {
      // A startup parameter, not a SET: no extra round trip per connection.
      base.options = `-c idle_session_timeout=${pool.sessionIdleTimeoutMs}`
    }
    this.#base = base
    if (credentials === undefined) {
      const config = { ...base }
      // Not enumerable, so spreading or printing the config never shows it (pg does the same).
      Object.defineProperty(config, 'password', { value: endpoint.password(), enumerable: false })
      this.clientConfig = config
    } else {
      const latest = (): Credentials | undefined => credentials.peek()
      const config = { ...base }
      Object.defineProperties(config, {
        user: { get: () => latest()?.user ?? endpoint.user, enumerable: true },
        host: { get: () => this.#addressOf(latest()).host, enumerable: true },
        port: { get: () => this.#addressOf(latest()).port, enumerable: true },
        database: { get: () => this.#addressOf(latest()).database, enumerable: true },
        // pg's password function: called when the server asks for a password.
        password: {
          value: async () => (await credentials.get()).password(),
          enumerable: false,
        },
      })
      this.clientConfig = config
    }
  }

  /**
   * Where to connect: the endpoint's own address, or, when it has no host (secret auth), the
   * secret's host, port and database.
   */
  #addressOf(credentials: Credentials | undefined): { host?: string; port?: number; database?: string } {
    const endpoint = this.#endpoint
    if (endpoint.host !== undefined || credentials === undefined) {
      return { host: endpoint.host, port: endpoint.port, database: endpoint.database }
    }
    return {
      host: credentials.host,
      port: credentials.port ?? endpoint.port,
      database: credentials.database ?? endpoint.database,
    }
  }

  connect(): Promise<Client> {
    const credentials = this.#credentials
    if (credentials === undefined) return this.#open(this.clientConfig)
    return connectWithCredentials(
      this.#endpoint,
      credentials,
      (current) => {
        const config: ClientConfig = {
          ...this.#base,
          ...this.#addressOf(current),
          user: current.user ?? this.#endpoint.user,
        }
        Object.defineProperty(config, 'password', { value: current.password(), enumerable: false })
        return this.#open(config)
      },
      (error) => (error as { code?: unknown } | null)?.code === '28P01',
    )
  }

  async #open(config: ClientConfig): Promise<Client> {
    const client = new this.#pg.Client(config)
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
    return client
  }

  #markBroken(client: Client): void {
    this.#broken.add(client)
    this.onBroken?.(client)
  }

  async close(client: Client): Promise<void> {
    this.#broken.add(client)
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
    // pg has no public "destroy": end() waits for the server; the socket is what must go now.
    const connection = (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection
    connection?.stream?.destroy()
    void client.end().catch(() => undefined)
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
