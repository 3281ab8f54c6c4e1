import type { Client, ClientConfig } from 'pg'
import type { EndpointSettings } from '../config/endpoint-settings.js'
import type { PoolConnector } from '../pool/connection-pool.js'
import type { PgModule } from './load-driver.js'

/** Opens `pg` clients to one endpoint with the endpoint's timeouts and keepalive. */
export class PostgresConnector implements PoolConnector<Client> {
  readonly #pg: PgModule
  readonly #broken = new WeakSet<Client>()
  /** Set by the pool: told when a connection breaks, so an idle one leaves the pool at once. */
  onBroken: ((client: Client) => void) | undefined
  /** The client config, also used by Kysely to open a control connection for query cancellation. */
  readonly clientConfig: ClientConfig

  constructor(pg: PgModule, endpoint: EndpointSettings) {
    this.#pg = pg
    const { pool } = endpoint
    const config: ClientConfig = {
      host: endpoint.host,
      port: endpoint.port,
      user: endpoint.user,
      database: endpoint.database,
      connectionTimeoutMillis: pool.connectTimeoutMs,
      keepAlive: pool.keepAlive,
      keepAliveInitialDelayMillis: pool.keepAliveInitialDelayMs,
      application_name: 'kysely-resilient',
    }
    if (pool.statementTimeoutMs !== undefined) config.statement_timeout = pool.statementTimeoutMs
    if (pool.sessionIdleTimeoutMs !== undefined) {
      // A startup parameter, not a SET: no extra round trip per connection.
      config.options = `-c idle_session_timeout=${pool.sessionIdleTimeoutMs}`
    }
    // Not enumerable, so spreading or printing the config never shows it (pg does the same).
    Object.defineProperty(config, 'password', { value: endpoint.password(), enumerable: false })
    this.clientConfig = config
  }

  async connect(): Promise<Client> {
    const client = new this.#pg.Client(this.clientConfig)
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
