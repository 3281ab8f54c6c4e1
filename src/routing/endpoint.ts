import type { Driver } from 'kysely'
import { MysqlDriver, PostgresDriver } from 'kysely'
import type { Connection as MysqlRawConnection } from 'mysql2'
import type { Client as PgClient } from 'pg'
import type { EndpointSettings } from '../config/endpoint-settings.js'
import {
  loadMysql2,
  loadPg,
  loadPgCursor,
  type Mysql2Module,
  type PgCursorConstructor,
} from '../dialect/load-driver.js'
import { MysqlConnector } from '../dialect/mysql-connector.js'
import { PostgresConnector } from '../dialect/postgres-connector.js'
import { MissingDriverError } from '../errors.js'
import { ConnectionPool, type PoolCounts } from '../pool/connection-pool.js'

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
}

/**
 * One live endpoint: its pool of raw driver connections and a Kysely driver (Kysely's own
 * `PostgresDriver` or `MysqlDriver`) on top of it, so streaming, cancellation, savepoints and result
 * shapes are exactly Kysely's.
 */
export class Endpoint {
  readonly settings: EndpointSettings
  readonly driver: Driver
  readonly #pool: ConnectionPool<unknown>
  #queries = 0

  private constructor(settings: EndpointSettings, pool: ConnectionPool<unknown>, driver: Driver) {
    this.settings = settings
    this.#pool = pool
    this.driver = driver
  }

  get name(): string {
    return this.settings.name
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
      ...this.#pool.counts(),
    }
  }

  /** In-use plus waiting: how busy the endpoint is, for the least-busy reader strategy. */
  load(): number {
    const counts = this.#pool.counts()
    return counts.inUse + counts.waiting
  }

  async destroy(): Promise<void> {
    await this.driver.destroy()
  }

  static async open(settings: EndpointSettings, drivers: LoadedDrivers): Promise<Endpoint> {
    if (drivers.dialect === 'postgres') {
      const connector = new PostgresConnector(drivers.pg, settings)
      const pool = new ConnectionPool<PgClient>(settings.name, connector, settings.pool)
      const driver = new PostgresDriver({
        pool: {
          // Kysely opens a control connection with these to cancel a query on this same server.
          Client: drivers.pg.Client,
          options: connector.clientConfig,
          connect: async () => {
            const client = await pool.acquire()
            const pooled = client as PgClient & { release(destroy?: boolean): void }
            pooled.release = (destroy?: boolean) => pool.release(client, destroy === true)
            return pooled
          },
          end: () => pool.end(),
        },
        cursor: drivers.cursor ?? missingCursor(),
      })
      await driver.init()
      return new Endpoint(settings, pool as ConnectionPool<unknown>, driver)
    }

    const connector = new MysqlConnector(drivers.mysql2, settings)
    const pool = new ConnectionPool<MysqlRawConnection>(settings.name, connector, settings.pool)
    const driver = new MysqlDriver({
      controlConnection: drivers.mysql2.createConnection as never,
      pool: {
        getConnection: (callback) => {
          pool.acquire().then(
            (connection) => {
              const pooled = connection as MysqlRawConnection & { release(): void }
              pooled.release = () => pool.release(connection)
              callback(null, pooled as never)
            },
            (error: unknown) => callback(error, undefined as never),
          )
        },
        end: (callback) => {
          pool.end().then(() => callback(null), callback)
        },
      },
    })
    await driver.init()
    return new Endpoint(settings, pool as ConnectionPool<unknown>, driver)
  }
}

/** The driver modules for one dialect, loaded once per `createDb`. */
export type LoadedDrivers =
  | {
      readonly dialect: 'postgres'
      readonly pg: Awaited<ReturnType<typeof loadPg>>
      readonly cursor: PgCursorConstructor | undefined
    }
  | { readonly dialect: 'mysql'; readonly mysql2: Mysql2Module }

export async function loadDrivers(dialect: 'postgres' | 'mysql'): Promise<LoadedDrivers> {
  if (dialect === 'postgres') {
    const [pg, cursor] = await Promise.all([loadPg(), loadPgCursor()])
    return { dialect, pg, cursor }
  }
  return { dialect, mysql2: await loadMysql2() }
}

/** Stands in for `pg-cursor` when it is not installed, so `.stream()` says what to install. */
function missingCursor(): PgCursorConstructor {
  return class MissingCursor {
    constructor() {
      throw new MissingDriverError('pg-cursor', 'postgres (for .stream())', undefined)
    }
  } as unknown as PgCursorConstructor
}
