/**
 * One application process of the connection-storm benchmark: creates ONE db (createDb or plain Kysely,
 * pool max as given), says 'ready', and on 'go' runs its request loops for the given time, each loop
 * alternating a point SELECT and a one-row INSERT. Reports counts, failures by error code, TCP connects
 * and a latency histogram, then destroys the db and exits. Started by fleet.ts; see bench/README.md.
 */
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely'
import mysql from 'mysql2'
import pg from 'pg'
import { createDb } from '../../src/index.js'
import { connectCounts, countTcpConnects } from './connect-counter.js'
import { errorLabel, errorSample } from './error-label.js'
import { Histogram } from './histogram.js'
import { type ParentMessage, WORKER_SPEC_ENV, type WorkerMessage, type WorkerSpec } from './protocol.js'
import type { StormDatabase } from './schema.js'

/** db.destroy() may wait for connections still being opened; the process exits anyway after this. */
const DESTROY_TIMEOUT_MS = 15_000

interface VariantDb {
  readonly db: Kysely<StormDatabase>
  /** createDb's 'retry' events by code; undefined for plain Kysely. */
  readonly retries: Record<string, number> | undefined
}

function send(message: WorkerMessage): Promise<void> {
  return new Promise((resolve) => {
    if (process.send === undefined) throw new Error('worker.ts must be started by fleet.ts (fork)')
    process.send(message, undefined, {}, () => resolve())
  })
}

/**
 * Exactly the two set-ups the issue compares: library defaults apart from the pool size (and, through
 * PgBouncer, `proxy: 'pgbouncer'`). Plain Kysely's pool is the same whether a proxy is in front or not.
 */
function openDb(spec: WorkerSpec): VariantDb {
  if (spec.variant === 'createDb') {
    const db = createDb<StormDatabase>({
      dialect: spec.engine,
      writer: spec.url,
      pool: { max: spec.poolMax },
      ...(spec.proxy === undefined ? {} : { proxy: spec.proxy }),
    })
    const retries: Record<string, number> = {}
    db.on('retry', (event) => {
      const code = event.code ?? event.category
      retries[code] = (retries[code] ?? 0) + 1
    })
    // Background connection failures are reported as 'error' events; the requests' own errors are counted
    // by the loops. A listener keeps them from being printed.
    db.on('error', () => {})
    return { db, retries }
  }
  if (spec.engine === 'postgres') {
    const pool = new pg.Pool({ connectionString: spec.url, max: spec.poolMax })
    // An idle client whose server went away emits 'error' on the pool; an application listens for it.
    pool.on('error', () => {})
    return { db: new Kysely<StormDatabase>({ dialect: new PostgresDialect({ pool }) }), retries: undefined }
  }
  const pool = mysql.createPool({ uri: spec.url, connectionLimit: spec.poolMax })
  return { db: new Kysely<StormDatabase>({ dialect: new MysqlDialect({ pool }) }), retries: undefined }
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.env[WORKER_SPEC_ENV] ?? 'null') as WorkerSpec | null
  if (spec === null) throw new Error(`${WORKER_SPEC_ENV} is not set: worker.ts is started by fleet.ts`)
  // Before any driver opens a socket.
  countTcpConnects()
  const uncaught: Record<string, number> = {}
  const onUncaught = (error: unknown) => {
    const label = errorLabel(error)
    uncaught[label] = (uncaught[label] ?? 0) + 1
  }
  process.on('uncaughtException', onUncaught)
  process.on('unhandledRejection', onUncaught)
  const { db, retries } = openDb(spec)

  const go = new Promise<void>((resolve) => {
    process.on('message', (message: ParentMessage) => {
      if (message.type === 'go') resolve()
    })
  })
  await send({ type: 'ready' })
  await go

  const latency = new Histogram()
  const failures: Record<string, number> = {}
  const failureSamples: Record<string, string> = {}
  let ok = 0
  let failed = 0
  const startedAt = performance.now()
  const deadline = startedAt + spec.durationMs

  const select = () =>
    db
      .selectFrom('storm_item')
      .select(['id', 'payload'])
      .where('id', '=', 1 + Math.floor(Math.random() * spec.rows))
      .executeTakeFirst()
  const insert = (n: number) => db.insertInto('storm_item').values({ name: 'storm', payload: n }).execute()

  // Closed loops, as request handlers under load: the next request starts when the previous one is
  // answered, failed or not. A request started before the deadline is awaited, however long it takes.
  const loop = async (id: number) => {
    for (let n = id; performance.now() < deadline; n++) {
      const before = performance.now()
      try {
        if (n % 2 === 0) await select()
        else await insert(n)
        latency.record(performance.now() - before)
        ok++
      } catch (error) {
        failed++
        const label = errorLabel(error)
        failures[label] = (failures[label] ?? 0) + 1
        failureSamples[label] ??= errorSample(error)
        // A failure that comes back at once must not turn the loop into one that never yields.
        await new Promise((resolve) => setImmediate(resolve))
      }
    }
  }
  await Promise.all(Array.from({ length: spec.loops }, (_, id) => loop(id)))
  const elapsedMs = performance.now() - startedAt

  let destroyTimedOut = false
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    db.destroy().catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        destroyTimedOut = true
        resolve()
      }, DESTROY_TIMEOUT_MS)
    }),
  ])
  clearTimeout(timer)

  await send({
    type: 'result',
    result: {
      ok,
      failed,
      failures,
      failureSamples,
      connectAttempts: connectCounts.attempts,
      connectsEstablished: connectCounts.established,
      retries,
      latency: latency.toData(),
      elapsedMs,
      uncaught,
      destroyTimedOut,
    },
  })
}

main()
  .then(() => process.exit(0))
  .catch(async (error: unknown) => {
    const text = error instanceof Error ? (error.stack ?? error.message) : String(error)
    if (process.send !== undefined) await send({ type: 'failed', error: text }).catch(() => undefined)
    else console.error(text)
    process.exit(1)
  })
