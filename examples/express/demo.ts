/**
 * `npm run demo`: starts the users service against a database and plays a short client session,
 * printing which endpoint (writer or reader) served each request.
 *
 * Without DB_WRITER_URL it starts a throwaway PostgreSQL primary + streaming replica (needs the
 * PostgreSQL server binaries: initdb, postgres, pg_basebackup) and removes it afterwards.
 * With `--serve` it keeps the server running after the session, until Ctrl-C.
 */
import { randomBytes } from 'node:crypto'
import { type PostgresCluster, startPostgresCluster } from '../../test/support/postgres-cluster.js'
import { waitForReplica } from '../../test/support/replication.js'
import { describeError } from './app.js'
import { createDatabase, type DatabaseEnv, migrate } from './db.js'
import { exitOnSignals, type RunningServer, startServer } from './server.js'

const serve = process.argv.includes('--serve')

interface Exchange {
  readonly status: number
  readonly servedBy: string
  readonly body: unknown
}

let failures = 0

/** Sends one request and prints `METHOD /path -> status served by endpoint`. */
async function request(
  baseUrl: string,
  method: 'GET' | 'POST',
  path: string,
  expected: readonly number[],
  body?: string,
): Promise<Exchange> {
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    ...(body === undefined ? {} : { body, headers: { 'content-type': 'application/json' } }),
  })
  const exchange: Exchange = {
    status: response.status,
    servedBy: response.headers.get('x-served-by') ?? '(no header)',
    body: await response.json(),
  }
  const unexpected = !expected.includes(exchange.status)
  if (unexpected) failures++
  console.log(
    `${method} ${path} -> ${exchange.status} served by ${exchange.servedBy}${summary(exchange.body)}` +
      `${unexpected ? `   <-- UNEXPECTED (expected ${expected.join(' or ')})` : ''}`,
  )
  return exchange
}

function summary(body: unknown): string {
  if (typeof body !== 'object' || body === null) return ''
  if ('error' in body) return `  (error: ${String(body.error)})`
  if ('users' in body && Array.isArray(body.users)) return `  (${body.users.length} users)`
  if ('status' in body) return `  (status: ${String(body.status)})`
  if ('id' in body && 'email' in body) return `  (id ${String(body.id)}, ${String(body.email)})`
  return ''
}

async function session(baseUrl: string, afterWrites: () => Promise<void>, replicaAwaited: boolean) {
  const run = randomBytes(4).toString('hex')
  const created: number[] = []
  for (const name of ['Ada Lovelace', 'Grace Hopper', 'Edsger Dijkstra']) {
    const email = `${name.split(' ')[0]?.toLowerCase()}.${run}@example.com`
    const { body } = await request(baseUrl, 'POST', '/users', [201], JSON.stringify({ name, email }))
    if (typeof body === 'object' && body !== null && 'id' in body) created.push(Number(body.id))
  }
  await afterWrites()
  await request(baseUrl, 'GET', '/users?limit=5', [200])
  // Without waiting for the replica, a fresh row may not have reached it yet: 404 is then possible.
  await request(baseUrl, 'GET', `/users/${created[0] ?? 1}`, replicaAwaited ? [200] : [200, 404])
  await request(baseUrl, 'POST', '/users', [400], JSON.stringify({ name: 'No Email' }))
  await request(baseUrl, 'GET', '/health', [200])
}

async function main(): Promise<void> {
  let cluster: PostgresCluster | undefined
  let server: RunningServer | undefined
  const shutdown = async () => {
    await server?.close() // stops accepting, finishes in-flight requests, destroys the db pools
    await cluster?.stop()
  }

  try {
    let env: DatabaseEnv = process.env
    if (!process.env.DB_WRITER_URL) {
      console.log('DB_WRITER_URL is not set: starting a throwaway PostgreSQL primary + streaming replica...')
      const startedAt = performance.now()
      cluster = await startPostgresCluster()
      console.log(
        `PostgreSQL primary on 127.0.0.1:${cluster.primary.port}, replica on 127.0.0.1:${cluster.replica?.port}` +
          ` (ready in ${Math.round(performance.now() - startedAt)} ms)`,
      )
      env = { DB_DIALECT: 'postgres', DB_WRITER_URL: cluster.writerUrl, DB_READER_URLS: cluster.readerUrl }
    }

    const { db, dialect } = createDatabase(env)
    try {
      await migrate(db, dialect)
      server = await startServer(db, dialect, Number(process.env.PORT ?? 0), '127.0.0.1')
    } catch (error) {
      await db.destroy()
      throw error
    }
    const { writer, readers } = db.stats()
    console.log(
      `users service on ${server.url} (${dialect}: ${writer.name} ${writer.address}` +
        `${readers.map((reader) => `, ${reader.name} ${reader.address}`).join('')})\n`,
    )

    const started = cluster
    await session(
      server.url,
      async () => {
        if (started === undefined) return
        await waitForReplica('postgres', started.adminWriterUrl, started.adminReaderUrl)
        console.log('(replica has replayed the writes)')
      },
      started !== undefined,
    )

    console.log('\nfinal db.stats():')
    console.log(JSON.stringify(db.stats(), null, 2))
    if (failures > 0) throw new Error(`${failures} request(s) got an unexpected status`)
  } catch (error) {
    console.error(`demo failed: ${describeError(error)}`)
    await shutdown().catch(() => {})
    process.exit(1)
  }

  if (serve && server !== undefined) {
    console.log(`\nserving on ${server.url}; press Ctrl-C to stop. Try: curl -i ${server.url}/users`)
    exitOnSignals(shutdown)
    return
  }
  await shutdown()
  console.log('\nserver, database pools and PostgreSQL cluster stopped')
  process.exit(0)
}

await main()
