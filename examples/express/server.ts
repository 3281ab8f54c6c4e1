import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { createApp, describeError } from './app.js'
import { createDatabase, type Database, migrate, type ResilientDb, type SqlDialect } from './db.js'

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

/** Starts the app on `port` (0: any free port) and resolves once it is listening. */
export async function startServer(
  db: ResilientDb<Database>,
  dialect: SqlDialect,
  port: number,
  host = '0.0.0.0',
): Promise<RunningServer> {
  const app = createApp(db, { dialect })
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
      console.error(`${signal} again: exiting without waiting`)
      process.exit(1)
    }
    stopping = true
    console.log(`${signal}: shutting down (finishing in-flight requests, closing database pools)`)
    shutdown().then(
      () => {
        console.log('stopped')
        process.exit(0)
      },
      (error: unknown) => {
        console.error(`shutdown failed: ${describeError(error)}`)
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

async function main(): Promise<void> {
  const port = parsePort(process.env.PORT)
  const { db, dialect } = createDatabase(process.env)
  try {
    await migrate(db, dialect)
  } catch (error) {
    await db.destroy()
    throw error
  }
  const server = await startServer(db, dialect, port)
  exitOnSignals(() => server.close())
  const { writer, readers } = db.stats()
  console.log(
    `listening on ${server.url} (${dialect}; writer ${writer.address}` +
      `${readers.map((reader) => `, ${reader.name} ${reader.address}`).join('')})`,
  )
}

// Run only when started directly (`tsx examples/express/server.ts`), not when imported by the demo.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((error: unknown) => {
    console.error(describeError(error))
    process.exit(1)
  })
}
