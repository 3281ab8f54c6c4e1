/**
 * The benchmark's own throwaway servers (test/support's cluster starters: temporary directories, free
 * ports, no replica), and what the parent does on them between measurements: count connections, wait
 * for them to drain, hold connection slots, check how many slots are left.
 */
import { readFile } from 'node:fs/promises'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { startMariaDbCluster } from '../../test/support/mariadb-cluster.js'
import { startPostgresCluster } from '../../test/support/postgres-cluster.js'
import { type Engine, queryOnce } from '../../test/support/sql.js'
import { errorLabel } from './error-label.js'
import { createTableSql, seedSql } from './schema.js'

export interface StormServer {
  readonly engine: Engine
  /** The server's TCP port on 127.0.0.1 (what a PgBouncer in front of it connects to). */
  readonly port: number
  /** The app user (what the workers and the held connections log in as). */
  readonly appUrl: string
  /** A superuser / admin, for monitoring. */
  readonly adminUrl: string
  readonly maxConnections: number
  /**
   * Connections the app user can open in all. PostgreSQL: max_connections minus
   * superuser_reserved_connections. MariaDB: max_connections plus the one extra connection it keeps
   * for CONNECTION ADMIN, which the test servers' app user holds.
   */
  readonly appSlots: number
  /** Server version and the connection-related settings, for the report header. */
  readonly description: string
  /** PostgreSQL: the server's log, where log_connections writes a line per connection. */
  readonly logFile: string | undefined
  stop(): Promise<void>
}

export async function startServer(engine: Engine, maxConnections: number): Promise<StormServer> {
  if (engine === 'postgres') {
    const cluster = await startPostgresCluster({ replica: false, maxConnections })
    try {
      // Every accepted connection logs a line, refused ones (53300) included: the server-side count of
      // connection attempts that serverConnectionAttempts() reads. New sessions pick it up on reload.
      await queryOnce(engine, cluster.adminWriterUrl, 'ALTER SYSTEM SET log_connections = on')
      await queryOnce(engine, cluster.adminWriterUrl, 'SELECT pg_reload_conf()')
      const [row] = await queryOnce(
        engine,
        cluster.adminWriterUrl,
        `SELECT current_setting('server_version') AS version,
                current_setting('max_connections')::int AS max,
                current_setting('superuser_reserved_connections')::int AS reserved`,
      )
      const reserved = Number(row?.reserved)
      return {
        engine,
        port: cluster.primary.port,
        appUrl: cluster.writerUrl,
        adminUrl: cluster.adminWriterUrl,
        maxConnections: Number(row?.max),
        appSlots: Number(row?.max) - reserved,
        description:
          `PostgreSQL ${String(row?.version)}, max_connections ${String(row?.max)}, ` +
          `superuser_reserved_connections ${reserved}`,
        // postgres-cluster.ts sends the server's output to <dataDir>.log (it runs without logging_collector).
        logFile: `${cluster.primary.dataDir}.log`,
        stop: () => cluster.stop(),
      }
    } catch (error) {
      await cluster.stop()
      throw error
    }
  }
  const cluster = await startMariaDbCluster({ replica: false, maxConnections })
  try {
    const [row] = await queryOnce(
      engine,
      cluster.adminWriterUrl,
      'SELECT VERSION() AS version, @@max_connections AS max, @@back_log AS backlog, @@thread_handling AS threads',
    )
    return {
      engine,
      port: cluster.primary.port,
      appUrl: cluster.writerUrl,
      adminUrl: cluster.adminWriterUrl,
      maxConnections: Number(row?.max),
      appSlots: Number(row?.max) + 1,
      description:
        `MariaDB ${String(row?.version)}, max_connections ${String(row?.max)} (+1 for CONNECTION ADMIN, ` +
        `which the app user has), back_log ${String(row?.backlog)}, thread_handling ${String(row?.threads)}`,
      logFile: undefined,
      stop: () => cluster.stop(),
    }
  } catch (error) {
    await cluster.stop()
    throw error
  }
}

/** Creates and fills the table the workers use, as the app user so it owns it. */
export async function createSchema(server: StormServer, rows: number): Promise<void> {
  await queryOnce(server.engine, server.appUrl, 'DROP TABLE IF EXISTS storm_item')
  await queryOnce(server.engine, server.appUrl, createTableSql(server.engine))
  await queryOnce(server.engine, server.appUrl, seedSql(server.engine, rows))
}

/** Client connections on the server, the monitoring connection itself not counted. */
export async function clientConnections(server: StormServer): Promise<number> {
  if (server.engine === 'postgres') {
    // Backends still starting up count too: they hold a slot.
    const [row] = await queryOnce(
      'postgres',
      server.adminUrl,
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    return Number(row?.n)
  }
  const [row] = await queryOnce('mysql', server.adminUrl, "SHOW GLOBAL STATUS LIKE 'Threads_connected'")
  return Number(row?.Value) - 1
}

/**
 * The server's own count of connection attempts so far, a cross-check of the workers' TCP connect count.
 * MariaDB: status `Connections` (connections it took on, this query's own included) plus the
 * `Connection_errors_*` counters (refused before that, e.g. `Connection_errors_max_connections` for a
 * 1040). PostgreSQL keeps no such counter: the "connection received" lines log_connections writes, which
 * every forked backend logs before it checks for a free slot. Undefined if the log cannot be read.
 */
export async function serverConnectionAttempts(server: StormServer): Promise<number | undefined> {
  if (server.engine === 'mysql') {
    const rows = await queryOnce(
      'mysql',
      server.adminUrl,
      "SHOW GLOBAL STATUS WHERE Variable_name = 'Connections' OR Variable_name LIKE 'Connection\\_errors\\_%'",
    )
    return rows.reduce((sum, row) => sum + Number(row.Value), 0)
  }
  if (server.logFile === undefined) return undefined
  try {
    const log = await readFile(server.logFile, 'utf8')
    return log.split('connection received: ').length - 1
  } catch {
    return undefined
  }
}

/**
 * Waits until the server has exactly `expected` client connections (the ones the benchmark holds
 * itself), so no connection of the previous measurement takes a slot from the next. Returns the last
 * count seen; the caller warns when it is not `expected`.
 */
export async function waitForConnections(
  server: StormServer,
  expected: number,
  timeoutMs = 30_000,
): Promise<number> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    let count: number
    try {
      count = await clientConnections(server)
    } catch {
      // MariaDB: every slot may still be taken, the monitoring connection's included.
      count = Number.NaN
    }
    if (count === expected || Date.now() >= deadline) return count
    await sleep(100)
  }
}

/** Between measurements: MariaDB forgets the connection errors it counted per host (max_connect_errors). */
export async function resetServerState(server: StormServer): Promise<void> {
  if (server.engine === 'mysql') await queryOnce('mysql', server.adminUrl, 'FLUSH HOSTS')
}

interface OpenConnection {
  close(): Promise<void>
}

async function openAppConnection(server: StormServer): Promise<OpenConnection> {
  if (server.engine === 'postgres') {
    const client = new pg.Client({ connectionString: server.appUrl, connectionTimeoutMillis: 10_000 })
    client.on('error', () => {})
    await client.connect()
    return { close: () => client.end().catch(() => undefined) }
  }
  const connection = await mysql.createConnection({ uri: server.appUrl, connectTimeout: 10_000 })
  connection.on('error', () => {})
  return { close: () => connection.end().catch(() => connection.destroy()) }
}

/** Connections the benchmark parent holds open as the app user, to leave only a few slots to a worker. */
export class HeldConnections {
  readonly #server: StormServer
  readonly #open: OpenConnection[] = []

  constructor(server: StormServer) {
    this.#server = server
  }

  get count(): number {
    return this.#open.length
  }

  async open(count: number): Promise<void> {
    for (let i = 0; i < count; i++) this.#open.push(await openAppConnection(this.#server))
  }

  async close(count = this.#open.length): Promise<void> {
    await Promise.all(this.#open.splice(0, count).map((connection) => connection.close()))
  }
}

export interface SlotProbe {
  /** Connections the app user could still open (up to `limit`). */
  readonly free: number
  /** Why the next one failed, e.g. `53300` or `1040`; undefined if `limit` was reached. */
  readonly refusedWith: string | undefined
}

/** Opens app connections one by one until the server refuses one (or `limit` are open), then closes them. */
export async function probeFreeSlots(server: StormServer, limit: number): Promise<SlotProbe> {
  const opened: OpenConnection[] = []
  let refusedWith: string | undefined
  try {
    while (opened.length < limit) {
      try {
        opened.push(await openAppConnection(server))
      } catch (error) {
        refusedWith = errorLabel(error)
        break
      }
    }
  } finally {
    await Promise.all(opened.map((connection) => connection.close()))
  }
  return { free: opened.length, refusedWith }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
