import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { createApp } from './app.js'
import {
  createDatabase,
  type Database,
  describeError,
  jsonLogger,
  type Logger,
  logDatabaseEvents,
  type ResilientDb,
  type SqlDialect,
} from './db.js'
import { type Metrics, startMetrics } from './telemetry.js'

/** How long shutdown waits for in-flight requests before closing their connections anyway. */
const SHUTDOWN_GRACE_MS = 10_000

export interface RunningServer {
  readonly url: string
  readonly port: number
  /**
   * Graceful shutdown: stops accepting connections, lets in-flight requests finish (up to 10 s), then
   * closes the database pools. Safe to call more than once.
   */
  close(): Promise<void>
}

export interface ServerOptions {
  readonly dialect: SqlDialect
  /** 0: any free port. */
  readonly port: number
  /** Default: `0.0.0.0`. */
  readonly host?: string
  /** Enables `GET /admin/stats` with this bearer token (see createApp). */
  readonly adminToken?: string | undefined
  /** Enables `GET /metrics` with this bearer token, served by `metrics` (see createApp); shut down on close. */
  readonly metrics?: { readonly token: string; readonly metrics: Metrics } | undefined
  readonly log?: Logger
}

/** Starts the app and resolves once it is listening. */
export async function startServer(db: ResilientDb<Database>, options: ServerOptions): Promise<RunningServer> {
  const { port, host = '0.0.0.0' } = options
  const metrics = options.metrics
  const app = createApp(db, {
    dialect: options.dialect,
    adminToken: options.adminToken,
    metrics: metrics && { token: metrics.token, handle: metrics.metrics.handle },
    log: options.log,
  })
  const server = await new Promise<Server>((resolveServer, reject) => {
    const listening = app.listen(port, host, (error?: Error) =>
      error ? reject(error) : resolveServer(listening),
    )
  })
  const { port: actualPort } = server.address() as AddressInfo
  let closing: Promise<void> | undefined
  return {
    url: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${actualPort}`,
    port: actualPort,
    close: () => {
      closing ??= (async () => {
        await stopAccepting(server)
        await db.destroy()
        await metrics?.metrics.shutdown()
      })()
      return closing
    },
  }
}

/**
 * `server.close()` stops accepting connections and resolves once every open connection has ended: idle
 * keep-alive connections are closed at once, busy ones after their response. Connections still busy
 * after the grace period are cut.
 */
function stopAccepting(server: Server): Promise<void> {
  return new Promise((resolveClosed) => {
    const force = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS)
    force.unref()
    server.close(() => {
      clearTimeout(force)
      resolveClosed()
    })
    server.closeIdleConnections()
  })
}

/**
 * On the first SIGTERM or SIGINT: run `shutdown`, then exit 0 (1 if it failed). A second signal exits
 * at once.
 */
export function exitOnSignals(shutdown: () => Promise<void>): void {
  let stopping = false
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      jsonLogger('error', { msg: `${signal} again: exiting without waiting` })
      process.exit(1)
    }
    stopping = true
    jsonLogger('info', {
      msg: `${signal}: shutting down (finishing in-flight requests, closing database pools)`,
    })
    shutdown().then(
      () => {
        jsonLogger('info', { msg: 'stopped' })
        process.exit(0)
      },
      (error: unknown) => {
        jsonLogger('error', { msg: 'shutdown failed', error: describeError(error) })
        process.exit(1)
      },
    )
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
}

function parsePort(value: string | undefined): number {
  if (value === undefined || value === '') return 3000
  const port = Number(value)
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new Error(`PORT must be an integer from 0 to 65535, not '${value}'`)
  }
  return port
}

/**
 * The service. The schema must be up to date already (migrate.ts runs at deploy time, before this):
 * the server changes no schema, so its database user needs no DDL rights.
 */
async function main(): Promise<void> {
  const port = parsePort(process.env.PORT)
  // Before createDatabase: the db takes its meter from the global provider when it opens.
  const metricsToken = process.env.METRICS_TOKEN?.trim() || undefined
  const metrics = metricsToken === undefined ? undefined : { token: metricsToken, metrics: startMetrics() }
  const { db, dialect } = createDatabase(process.env)
  logDatabaseEvents(db, jsonLogger)
  const adminToken = process.env.ADMIN_TOKEN?.trim() || undefined
  const server = await startServer(db, {
    dialect,
    port,
    host: process.env.HOST || '0.0.0.0',
    adminToken,
    metrics,
  })
  exitOnSignals(() => server.close())
  // The port, not the database's address: logs are read by more people than the admin route.
  jsonLogger('info', {
    msg: 'listening',
    url: server.url,
    dialect,
    readers: db.stats().readers.length,
    admin: adminToken !== undefined,
    metrics: metrics !== undefined,
  })
}

// Run only when started directly (`node --import tsx examples/express/server.ts`), not when imported.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((error: unknown) => {
    jsonLogger('error', { msg: 'server failed to start', error: describeError(error) })
    process.exit(1)
  })
}
