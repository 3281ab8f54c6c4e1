import { createServer, connect as netConnect, type Server, type Socket } from 'node:net'
import { sql } from 'kysely'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  ConfigError,
  ConnectTimeoutError,
  createDb,
  DatabaseDestroyedError,
  MissingDriverError,
  NoReaderAvailableError,
  PoolTimeoutError,
  QueryTimeoutError,
} from '../../src/index.js'
import { classifyError } from '../../src/retry/classify-error.js'
import type { ClassifyErrorContext, ErrorCategory } from '../../src/retry/error-classification.js'
import { findMariaDbBinaries, findPostgresBinDir } from '../support/binaries.js'
import { describeEngines, type Engine, hasReplica, waitForReplica } from '../support/database.js'
import { type MariaDbCluster, startMariaDbCluster } from '../support/mariadb-cluster.js'
import { getFreePort } from '../support/ports.js'
import { type PostgresCluster, startPostgresCluster } from '../support/postgres-cluster.js'
import { queryOnce } from '../support/sql.js'

// Every verdict below is about an error a real server (or a real socket) produced, except the
// cases in the "error shapes we cannot produce here" block at the end, which say where each shape
// comes from.

interface Expected {
  readonly category: ErrorCategory
  readonly code: string | undefined
  readonly connectionLost: boolean
}

/** Classifies `err` and checks the verdict; `retryable` must follow from the category. */
function expectVerdict(err: unknown, expected: Expected, context?: ClassifyErrorContext) {
  const verdict = classifyError(err, context)
  expect(
    { category: verdict.category, code: verdict.code, connectionLost: verdict.connectionLost },
    `verdict on ${describeError(err)}`,
  ).toEqual(expected)
  expect(verdict.retryable).toBe(['unavailable', 'conflict', 'read-only'].includes(expected.category))
  expect(verdict.reason.length).toBeGreaterThan(0)
  return verdict
}

/** Enough of an error to tell which one failed an assertion. */
function describeError(err: unknown): string {
  try {
    if (typeof err !== 'object' || err === null) return String(err)
    const { code, errno, message } = err as { code?: unknown; errno?: unknown; message?: unknown }
    return JSON.stringify({ code, errno, message })
  } catch {
    return 'an uninspectable object'
  }
}

/** The rejection of `operation`; fails the test if it succeeds. */
async function failure(operation: Promise<unknown>): Promise<unknown> {
  try {
    await operation
  } catch (error) {
    return error
  }
  throw new Error('expected the operation to fail, but it succeeded')
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

type Row = Record<string, unknown>

/** One raw driver connection (no pool, no Kysely): the errors it throws are the drivers' own. */
interface Session {
  query(text: string, options?: { readonly timeoutMs?: number }): Promise<Row[]>
  /** Server-side session id: pg_backend_pid() / CONNECTION_ID(). */
  readonly id: number
  /** Errors the driver emitted with no statement running (e.g. the server ended an idle session). */
  readonly events: unknown[]
  /** Resolves once the driver has given up on the connection. */
  readonly dead: Promise<void>
  close(): Promise<void>
}

async function openSession(engine: Engine, url: string): Promise<Session> {
  const events: unknown[] = []
  if (engine === 'postgres') {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
    const dead = new Promise<void>((resolve) => client.once('end', () => resolve()))
    client.on('error', (error: unknown) => events.push(error))
    await client.connect()
    const [row] = (await client.query<Row>('SELECT pg_backend_pid() AS id')).rows
    return {
      id: Number(row?.id),
      events,
      dead,
      query: async (text, options) =>
        (
          await client.query<Row>({
            text,
            ...(options?.timeoutMs ? { query_timeout: options.timeoutMs } : {}),
          })
        ).rows,
      close: () => client.end().catch(() => undefined),
    }
  }
  const connection = await mysql.createConnection({ uri: url, connectTimeout: 5_000 })
  // mysql2 emits 'error' when the server closes an idle connection, just before it marks the
  // connection closed; by the next tick every new statement is refused.
  const dead = new Promise<void>((resolve) => connection.once('error', () => setImmediate(resolve)))
  connection.on('error', (error: unknown) => events.push(error))
  return {
    id: connection.threadId,
    events,
    dead,
    query: async (text, options) => {
      const [rows] = await connection.query({
        sql: text,
        ...(options?.timeoutMs ? { timeout: options.timeoutMs } : {}),
      })
      return Array.isArray(rows) ? (rows as Row[]) : []
    },
    close: () => connection.end().catch(() => connection.destroy()),
  }
}

async function connectOnce(engine: Engine, url: string, timeoutMs = 5_000): Promise<void> {
  if (engine === 'postgres') {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs })
    client.on('error', () => {})
    try {
      await client.connect()
    } finally {
      await client.end().catch(() => undefined)
    }
  } else {
    const connection = await mysql.createConnection({ uri: url, connectTimeout: timeoutMs })
    connection.on('error', () => {})
    await connection.end()
  }
}

const sleepSql = (engine: Engine, seconds: number) =>
  engine === 'postgres' ? `SELECT pg_sleep(${seconds})` : `SELECT SLEEP(${seconds})`
const killSql = (engine: Engine, id: number) =>
  engine === 'postgres' ? `SELECT pg_terminate_backend(${id})` : `KILL ${id}`

async function recreateTable(engine: Engine, url: string, table: string): Promise<void> {
  await queryOnce(engine, url, `DROP TABLE IF EXISTS ${table}`)
  await queryOnce(engine, url, `CREATE TABLE ${table} (id integer PRIMARY KEY, v integer NOT NULL)`)
  await queryOnce(engine, url, `INSERT INTO ${table} (id, v) VALUES (1, 0), (2, 0)`)
}

function withPassword(url: string, password: string): string {
  const parsed = new URL(url)
  parsed.password = password
  return parsed.toString()
}

/** A TCP server that accepts connections and then does `onSocket` with them (or nothing at all). */
async function fakeServer(onSocket: (socket: Socket) => void = () => {}) {
  const sockets = new Set<Socket>()
  const server: Server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    onSocket(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  return {
    port,
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

const SCHEME: Record<Engine, string> = { postgres: 'postgres', mysql: 'mysql' }

/**
 * Defines the test only for the engine it is about. Not `skipIf`: a test that does not apply to an
 * engine should not show up as skipped, since a skipped test in CI counts as a failure.
 */
function itFor(applies: boolean): typeof it {
  return applies ? it : ((() => undefined) as unknown as typeof it)
}

describeEngines('classifyError on real server errors', (engine, info) => {
  const isPostgres = engine === 'postgres'
  const code = (postgres: string, mysqlCode: string) => (isPostgres ? postgres : mysqlCode)

  it('a deadlock is a conflict; the session stays usable', async () => {
    const table = 'clf_deadlock'
    await recreateTable(engine, info.writerUrl, table)
    const [a, b] = await Promise.all([
      openSession(engine, info.writerUrl),
      openSession(engine, info.writerUrl),
    ])
    try {
      await a.query('BEGIN')
      await b.query('BEGIN')
      await a.query(`UPDATE ${table} SET v = v + 1 WHERE id = 1`)
      await b.query(`UPDATE ${table} SET v = v + 1 WHERE id = 2`)
      // Opposite order: a waits for b, then b waits for a. The server picks one victim.
      const first = a.query(`UPDATE ${table} SET v = v + 1 WHERE id = 2`)
      await delay(100)
      const second = b.query(`UPDATE ${table} SET v = v + 1 WHERE id = 1`)
      const results = await Promise.allSettled([first, second])
      const rejected = results.flatMap((result) => (result.status === 'rejected' ? [result.reason] : []))
      expect(rejected).toHaveLength(1)
      expectVerdict(rejected[0], { category: 'conflict', code: code('40P01', '1213'), connectionLost: false })

      const victim = results[0]?.status === 'rejected' ? a : b
      if (!isPostgres) {
        // InnoDB rolled the victim's whole transaction back: that is what makes a retry of the
        // whole transaction safe.
        expect(await victim.query('SELECT @@in_transaction AS open')).toEqual([{ open: 0 }])
      }
      await Promise.all([a.query('ROLLBACK'), b.query('ROLLBACK')])
      expect(await victim.query('SELECT 1 AS one')).toHaveLength(1)
    } finally {
      await Promise.all([a.close(), b.close()])
    }
  })

  it('a serialization failure is a conflict (MariaDB: innodb_snapshot_isolation)', async (context) => {
    const table = 'clf_serial'
    await recreateTable(engine, info.writerUrl, table)
    const [a, b] = await Promise.all([
      openSession(engine, info.writerUrl),
      openSession(engine, info.writerUrl),
    ])
    try {
      if (isPostgres) {
        await a.query('BEGIN ISOLATION LEVEL SERIALIZABLE')
        await b.query('BEGIN ISOLATION LEVEL SERIALIZABLE')
        await a.query(`SELECT v FROM ${table} WHERE id = 1`)
        await b.query(`SELECT v FROM ${table} WHERE id = 1`)
        await a.query(`UPDATE ${table} SET v = v + 1 WHERE id = 1`)
        await a.query('COMMIT')
        const error = await failure(b.query(`UPDATE ${table} SET v = v + 1 WHERE id = 1`))
        expectVerdict(error, { category: 'conflict', code: '40001', connectionLost: false })
        await b.query('ROLLBACK')
      } else {
        // Without innodb_snapshot_isolation (MariaDB before 10.6.18/10.11.8, MySQL), InnoDB has no
        // serialization failure: SERIALIZABLE takes locks and reports deadlocks (tested above).
        const available = await a.query('SELECT @@innodb_snapshot_isolation AS on_').then(
          () => true,
          () => false,
        )
        if (!available) context.skip('this server has no innodb_snapshot_isolation')
        await a.query('SET SESSION innodb_snapshot_isolation = ON')
        await a.query('SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ')
        await a.query('BEGIN')
        await a.query(`INSERT INTO ${table} (id, v) VALUES (3, 0)`)
        await a.query(`SELECT v FROM ${table} WHERE id = 1`)
        await b.query(`UPDATE ${table} SET v = v + 1 WHERE id = 1`)
        const error = await failure(a.query(`UPDATE ${table} SET v = v + 1 WHERE id = 1`))
        expectVerdict(error, { category: 'conflict', code: '1020', connectionLost: false })
        // The whole transaction was rolled back, including the earlier insert.
        expect(
          await a.query(
            `SELECT @@in_transaction AS open, (SELECT count(*) FROM ${table} WHERE id = 3) AS mine`,
          ),
        ).toEqual([{ open: 0, mine: 0 }])
      }
    } finally {
      await Promise.all([a.close(), b.close()])
    }
  })

  it('a lock wait timeout is a conflict (only the statement was rolled back)', async () => {
    const table = 'clf_lockwait'
    await recreateTable(engine, info.writerUrl, table)
    const [holder, waiter] = await Promise.all([
      openSession(engine, info.writerUrl),
      openSession(engine, info.writerUrl),
    ])
    try {
      await holder.query('BEGIN')
      await holder.query(`UPDATE ${table} SET v = v + 1 WHERE id = 1`)
      await waiter.query(isPostgres ? 'SET lock_timeout = 100' : 'SET SESSION innodb_lock_wait_timeout = 1')
      await waiter.query('BEGIN')
      await waiter.query(`INSERT INTO ${table} (id, v) VALUES (3, 0)`)
      const error = await failure(waiter.query(`UPDATE ${table} SET v = v + 1 WHERE id = 1`))
      expectVerdict(error, { category: 'conflict', code: code('55P03', '1205'), connectionLost: false })
      if (!isPostgres) {
        // Default innodb_rollback_on_timeout=OFF: the transaction is still open with its insert, so a
        // retry must start with ROLLBACK (Kysely's transaction() does).
        expect(
          await waiter.query(
            `SELECT @@in_transaction AS open, (SELECT count(*) FROM ${table} WHERE id = 3) AS mine`,
          ),
        ).toEqual([{ open: 1, mine: 1 }])
      }
      await Promise.all([holder.query('ROLLBACK'), waiter.query('ROLLBACK')])
    } finally {
      await Promise.all([holder.close(), waiter.close()])
    }
  })

  it.skipIf(!hasReplica(info))('a write on the replica is read-only', async () => {
    const table = 'clf_readonly'
    await recreateTable(engine, info.writerUrl, table)
    await waitForReplica(engine)
    const replica = await openSession(engine, info.readerUrl)
    try {
      const error = await failure(replica.query(`INSERT INTO ${table} (id, v) VALUES (9, 9)`))
      expectVerdict(error, { category: 'read-only', code: code('25006', '1290'), connectionLost: true })
    } finally {
      await replica.close()
    }
  })

  itFor(!isPostgres)('a write in a READ ONLY transaction is read-only (errno 1792)', async () => {
    const session = await openSession(engine, info.writerUrl)
    try {
      await session.query('START TRANSACTION READ ONLY')
      const error = await failure(session.query('CREATE TEMPORARY TABLE clf_ro_trx (id int)'))
      expectVerdict(error, { category: 'read-only', code: '1792', connectionLost: true })
      await session.query('ROLLBACK')
    } finally {
      await session.close()
    }
  })

  it('syntax errors, unique violations and unknown tables are fatal; the session stays usable', async () => {
    const table = 'clf_fatal'
    await recreateTable(engine, info.writerUrl, table)
    const session = await openSession(engine, info.writerUrl)
    try {
      const cases: ReadonlyArray<readonly [string, string]> = [
        ['SELEC 1', code('42601', '1064')],
        [`INSERT INTO ${table} (id, v) VALUES (1, 0)`, code('23505', '1062')],
        ['SELECT * FROM clf_no_such_table', code('42P01', '1146')],
      ]
      for (const [statement, expectedCode] of cases) {
        expectVerdict(await failure(session.query(statement)), {
          category: 'fatal',
          code: expectedCode,
          connectionLost: false,
        })
      }
      expect(await session.query('SELECT 1 AS one')).toHaveLength(1)
    } finally {
      await session.close()
    }
  })

  it('a statement timeout is fatal (not retried) and leaves the session usable', async () => {
    const session = await openSession(engine, info.writerUrl)
    try {
      await session.query(isPostgres ? 'SET statement_timeout = 100' : 'SET SESSION max_statement_time = 0.1')
      const error = await failure(session.query(sleepSql(engine, 2)))
      expectVerdict(error, { category: 'fatal', code: code('57014', '1969'), connectionLost: false })
      expect(await session.query('SELECT 1 AS one')).toHaveLength(1)
    } finally {
      await session.close()
    }
  })

  it("a driver's own query timeout is ambiguous: the statement may still run", async () => {
    const session = await openSession(engine, info.writerUrl)
    try {
      const error = await failure(session.query(sleepSql(engine, 0.5), { timeoutMs: 100 }))
      expectVerdict(error, {
        category: 'ambiguous',
        code: isPostgres ? undefined : 'PROTOCOL_SEQUENCE_TIMEOUT',
        connectionLost: true,
      })
    } finally {
      await session.close()
    }
  })

  it('killing a session mid-query is ambiguous; the next statement on it is unavailable', async () => {
    const [victim, admin] = await Promise.all([
      openSession(engine, info.writerUrl),
      openSession(engine, info.adminWriterUrl),
    ])
    try {
      const running = failure(victim.query(sleepSql(engine, 5)))
      await delay(200)
      await admin.query(killSql(engine, victim.id))
      const error = await running
      // pg: the server's FATAL 57P01. mysql2: MariaDB closes the socket (PROTOCOL_CONNECTION_LOST);
      // some versions send ER_CONNECTION_KILLED (1927) first.
      const verdict = classifyError(error)
      expect(verdict).toMatchObject({ category: 'ambiguous', connectionLost: true, retryable: false })
      expect(isPostgres ? ['57P01'] : ['PROTOCOL_CONNECTION_LOST', '1927']).toContain(verdict.code)

      if (isPostgres) await victim.dead
      // The driver refuses the next statement before sending it.
      expectVerdict(await failure(victim.query('SELECT 1')), {
        category: 'unavailable',
        code: undefined,
        connectionLost: true,
      })
    } finally {
      await Promise.all([victim.close(), admin.close()])
    }
  })

  it('killing an idle session: the next statement is unavailable', async () => {
    const [victim, admin] = await Promise.all([
      openSession(engine, info.writerUrl),
      openSession(engine, info.adminWriterUrl),
    ])
    try {
      await admin.query(killSql(engine, victim.id))
      await victim.dead
      expectVerdict(await failure(victim.query('SELECT 1')), {
        category: 'unavailable',
        code: undefined,
        connectionLost: true,
      })
      // What the driver emitted while idle. pg: the FATAL 57P01, which on its own cannot say whether
      // a statement was running, so it stays ambiguous.
      const verdict = classifyError(victim.events[0])
      expect(verdict).toMatchObject({ category: 'ambiguous', connectionLost: true, retryable: false })
      expect(isPostgres ? ['57P01'] : ['PROTOCOL_CONNECTION_LOST', '1927']).toContain(verdict.code)
    } finally {
      await Promise.all([victim.close(), admin.close()])
    }
  })

  it.skipIf(info.password === undefined)('a wrong password is fatal', async () => {
    const error = await failure(connectOnce(engine, withPassword(info.writerUrl, 'clf-wrong-password')))
    const verdict = expectVerdict(error, {
      category: 'fatal',
      code: code('28P01', '1045'),
      connectionLost: true,
    })
    expect(verdict.reason).not.toContain((error as Error).message)
    expect(verdict.reason).not.toContain('clf-wrong-password')
  })

  it('connection refused is unavailable, raw and through createDb', async () => {
    const port = await getFreePort()
    const url = `${SCHEME[engine]}://app:pw@127.0.0.1:${port}/app`
    const expected: Expected = { category: 'unavailable', code: 'ECONNREFUSED', connectionLost: true }
    expectVerdict(await failure(connectOnce(engine, url)), expected)
    const db = createDb({ dialect: engine, writer: url })
    try {
      expectVerdict(await failure(db.selectNoFrom(sql<number>`1`.as('one')).execute()), expected)
    } finally {
      await db.destroy()
    }
  })

  it('a DNS failure is unavailable (fails fast offline: .invalid never resolves)', async () => {
    const started = Date.now()
    const error = await failure(
      connectOnce(engine, `${SCHEME[engine]}://app:pw@nonexistent.invalid:5432/app`, 3_000),
    )
    const verdict = classifyError(error)
    expect(verdict).toMatchObject({ category: 'unavailable', connectionLost: true, retryable: true })
    // ENOTFOUND when the resolver answers NXDOMAIN; EAI_AGAIN when no resolver is reachable.
    expect(['ENOTFOUND', 'EAI_AGAIN']).toContain(verdict.code)
    expect(Date.now() - started).toBeLessThan(3_000)
  })

  it('a server that never answers: connect timeouts are unavailable', async () => {
    const silent = await fakeServer()
    const url = `${SCHEME[engine]}://app:pw@127.0.0.1:${silent.port}/app`
    try {
      // pg: "timeout expired" (connectionTimeoutMillis); mysql2: ETIMEDOUT with syscall 'connect'.
      expectVerdict(await failure(connectOnce(engine, url, 200)), {
        category: 'unavailable',
        code: isPostgres ? undefined : 'ETIMEDOUT',
        connectionLost: true,
      })
      const db = createDb({ dialect: engine, writer: url, pool: { connectTimeoutMs: 200 } })
      try {
        const error = await failure(db.selectNoFrom(sql<number>`1`.as('one')).execute())
        expect(error).toBeInstanceOf(ConnectTimeoutError)
        expectVerdict(error, { category: 'unavailable', code: 'CONNECT_TIMEOUT', connectionLost: true })
      } finally {
        await db.destroy()
      }
    } finally {
      await silent.close()
    }
  })

  it('a connection that breaks while connecting is unavailable when the caller says so', async () => {
    // Accepts, then closes without a word: a proxy with no backend, or a server going down.
    const closing = await fakeServer((socket) => socket.end())
    // Resets once the client is connected and waiting for the server's first reply.
    const resetting = await fakeServer((socket) => setTimeout(() => socket.resetAndDestroy(), 50))
    try {
      const closed = await failure(
        connectOnce(engine, `${SCHEME[engine]}://app:pw@127.0.0.1:${closing.port}/app`),
      )
      const closedCode = isPostgres ? undefined : 'PROTOCOL_CONNECTION_LOST'
      // The error alone looks exactly like a connection lost mid-statement.
      expectVerdict(closed, { category: 'ambiguous', code: closedCode, connectionLost: true })
      expectVerdict(
        closed,
        { category: 'unavailable', code: closedCode, connectionLost: true },
        { phase: 'connect' },
      )

      const reset = await failure(
        connectOnce(engine, `${SCHEME[engine]}://app:pw@127.0.0.1:${resetting.port}/app`),
      )
      expect((reset as { syscall?: string }).syscall).toBe('read')
      expectVerdict(reset, { category: 'ambiguous', code: 'ECONNRESET', connectionLost: true })
      expectVerdict(
        reset,
        { category: 'unavailable', code: 'ECONNRESET', connectionLost: true },
        { phase: 'connect' },
      )
    } finally {
      await Promise.all([closing.close(), resetting.close()])
    }
  })

  it('PoolTimeoutError, DatabaseDestroyedError, NoResultError and aborts, through createDb', async () => {
    const db = createDb({ dialect: engine, writer: info.writerUrl, pool: { max: 1, acquireTimeoutMs: 200 } })
    const one = () => db.selectNoFrom(sql<number>`1`.as('one'))
    try {
      const held = await db.startTransaction().execute()
      try {
        await held.selectNoFrom(sql<number>`1`.as('one')).execute()
        const error = await failure(one().execute())
        expect(error).toBeInstanceOf(PoolTimeoutError)
        expectVerdict(error, { category: 'unavailable', code: 'POOL_ACQUIRE_TIMEOUT', connectionLost: false })
      } finally {
        await held.rollback().execute()
      }

      const none = await failure(one().where(sql<boolean>`1 = 0`).executeTakeFirstOrThrow())
      expect((none as Error).constructor.name).toBe('NoResultError')
      expectVerdict(none, { category: 'fatal', code: undefined, connectionLost: false })

      const aborted = await failure(one().execute({ signal: AbortSignal.abort() }))
      expect((aborted as Error).name).toBe('AbortError')
      expectVerdict(aborted, { category: 'fatal', code: 'ABORT_ERR', connectionLost: false })

      const nap = isPostgres ? sql<unknown>`pg_sleep(0.5)` : sql<unknown>`SLEEP(0.5)`
      const sleeping = db.selectNoFrom(nap.as('slept'))
      const timedOut = await failure(sleeping.execute({ signal: AbortSignal.timeout(50) }))
      expect((timedOut as Error).name).toBe('TimeoutError')
      expectVerdict(timedOut, { category: 'fatal', code: 'TIMEOUT_ERR', connectionLost: false })
    } finally {
      await db.destroy()
    }
    const destroyed = await failure(db.selectNoFrom(sql<number>`1`.as('one')).execute())
    expect(destroyed).toBeInstanceOf(DatabaseDestroyedError)
    expectVerdict(destroyed, { category: 'fatal', code: 'DB_DESTROYED', connectionLost: false })
  })

  it("this library's query timeout is ambiguous and loses the connection", async () => {
    const db = createDb({ dialect: engine, writer: info.writerUrl, pool: { queryTimeoutMs: 100 } })
    try {
      const nap = isPostgres ? sql<unknown>`pg_sleep(0.5)` : sql<unknown>`SLEEP(0.5)`
      const error = await failure(db.selectNoFrom(nap.as('slept')).execute())
      expect(error).toBeInstanceOf(QueryTimeoutError)
      expectVerdict(error, { category: 'ambiguous', code: 'QUERY_TIMEOUT', connectionLost: true })
    } finally {
      await db.destroy()
    }
  })

  itFor(isPostgres)('PostgreSQL session timeouts end the session: idle vs idle in transaction', async () => {
    const [idle, inTransaction] = await Promise.all([
      openSession(engine, info.writerUrl),
      openSession(engine, info.writerUrl),
    ])
    try {
      await idle.query('SET idle_session_timeout = 100')
      await inTransaction.query('SET idle_in_transaction_session_timeout = 100')
      await inTransaction.query('BEGIN')
      await Promise.all([idle.dead, inTransaction.dead])
      // The server's own reason, emitted while no statement ran.
      expectVerdict(idle.events[0], { category: 'unavailable', code: '57P05', connectionLost: true })
      expectVerdict(inTransaction.events[0], { category: 'conflict', code: '25P03', connectionLost: true })
      for (const session of [idle, inTransaction]) {
        expectVerdict(await failure(session.query('SELECT 1')), {
          category: 'unavailable',
          code: undefined,
          connectionLost: true,
        })
      }
    } finally {
      await Promise.all([idle.close(), inTransaction.close()])
    }
  })

  itFor(isPostgres)("pg-pool's connect timeout wraps pg's: the wrapper is recognised", async () => {
    const silent = await fakeServer()
    const pool = new pg.Pool({
      connectionString: `postgres://app:pw@127.0.0.1:${silent.port}/app`,
      connectionTimeoutMillis: 200,
    })
    try {
      const error = await failure(pool.query('SELECT 1'))
      expect((error as Error).message).toBe('Connection terminated due to connection timeout')
      expectVerdict(error, { category: 'unavailable', code: undefined, connectionLost: true })
    } finally {
      await pool.end()
      await silent.close()
    }
  })
})

// Too many connections needs a server whose limit we can exhaust without starving the other test
// files: clusters of our own, started side by side.
describe('classifyError on too many connections (own clusters)', () => {
  const postgresAvailable = findPostgresBinDir() !== undefined
  const mariaDbAvailable = findMariaDbBinaries() !== undefined
  let postgres: PostgresCluster | undefined
  let mariaDb: MariaDbCluster | undefined

  beforeAll(async () => {
    const [pgCluster, myCluster] = await Promise.all([
      postgresAvailable ? startPostgresCluster({ replica: false, maxConnections: 5 }) : undefined,
      mariaDbAvailable ? startMariaDbCluster({ replica: false, maxConnections: 10 }) : undefined,
    ])
    postgres = pgCluster
    mariaDb = myCluster
  })

  afterAll(async () => {
    await Promise.all([postgres?.stop(), mariaDb?.stop()])
  })

  /** Opens sessions until the server refuses one; returns them and the refusal. */
  async function exhaust(engine: Engine, url: string, limit: number) {
    const sessions: Session[] = []
    for (let attempt = 0; attempt < limit; attempt++) {
      try {
        sessions.push(await openSession(engine, url))
      } catch (error) {
        return { sessions, error }
      }
    }
    await Promise.all(sessions.map((session) => session.close()))
    throw new Error(`the server accepted ${limit} connections`)
  }

  async function expectTooMany(engine: Engine, url: string) {
    // PostgreSQL keeps 3 of 5 slots for superusers, so `app` gets 2. MariaDB allows 10 plus one for
    // CONNECTION ADMIN, which `app` holds.
    const { sessions, error } = await exhaust(engine, url, 15)
    try {
      expect(sessions.length).toBe(engine === 'postgres' ? 2 : 11)
      const expected: Expected = {
        category: 'unavailable',
        code: engine === 'postgres' ? '53300' : '1040',
        connectionLost: true,
      }
      expectVerdict(error, expected)
      // Through createDb the caller waits for a slot until acquireTimeoutMs, then gets a
      // PoolTimeoutError ('unavailable', not retried) whose cause is the server's refusal.
      const db = createDb({ dialect: engine, writer: url, pool: { acquireTimeoutMs: 500 } })
      try {
        const timeout = await failure(db.selectNoFrom(sql<number>`1`.as('one')).execute())
        expectVerdict(timeout, {
          category: 'unavailable',
          code: 'POOL_ACQUIRE_TIMEOUT',
          connectionLost: false,
        })
        expectVerdict((timeout as Error).cause, expected)
      } finally {
        await db.destroy()
      }
    } finally {
      await Promise.all(sessions.map((session) => session.close()))
    }
  }

  it.skipIf(!postgresAvailable)('postgres: 53300 is unavailable', async () => {
    if (postgres === undefined) throw new Error('no PostgreSQL cluster')
    await expectTooMany('postgres', postgres.writerUrl)
  })

  it.skipIf(!mariaDbAvailable)('mysql: 1040 is unavailable', async () => {
    if (mariaDb === undefined) throw new Error('no MariaDB cluster')
    await expectTooMany('mysql', mariaDb.writerUrl)
  })

  it.skipIf(!mariaDbAvailable)(
    'mysql: a per-account MAX_USER_CONNECTIONS (1226) is unavailable',
    async () => {
      const cluster = mariaDb
      if (cluster === undefined) throw new Error('no MariaDB cluster')
      const admin = cluster.adminWriterUrl
      await queryOnce('mysql', admin, "CREATE USER 'clf_capped'@'127.0.0.1' IDENTIFIED BY 'clf-pw'")
      await queryOnce(
        'mysql',
        admin,
        "GRANT USAGE ON *.* TO 'clf_capped'@'127.0.0.1' WITH MAX_USER_CONNECTIONS 1",
      )
      // No database in the URL: this user may log in and nothing else.
      const url = new URL(cluster.writerUrl)
      url.username = 'clf_capped'
      url.password = 'clf-pw'
      url.pathname = ''
      const first = await openSession('mysql', url.toString())
      try {
        const error = await failure(openSession('mysql', url.toString()))
        expectVerdict(error, { category: 'unavailable', code: '1226', connectionLost: true })
      } finally {
        await first.close()
      }

      // The global max_user_connections (1203) cannot be produced here: MariaDB refuses to change it
      // at runtime when the server started with 0, answering with 1290, which names an option that has
      // nothing to do with read-only and so must stay fatal.
      const refused = await failure(queryOnce('mysql', admin, 'SET GLOBAL max_user_connections = 1'))
      expect((refused as Error).message).toContain('--max-user-connections')
      expectVerdict(refused, { category: 'fatal', code: '1290', connectionLost: false })
    },
  )
})

describe('classifyError on real Node.js errors and this library', () => {
  it('an AggregateError of refused addresses (Happy Eyeballs) is unavailable', async () => {
    const port = await getFreePort()
    // A host with an IPv6 and an IPv4 address, both refusing: Node tries both and throws an AggregateError.
    const error = await new Promise<unknown>((resolve) => {
      const socket = netConnect({
        port,
        host: 'db.clf.test',
        autoSelectFamily: true,
        lookup: (_host, _options, callback) =>
          (callback as (err: null, addresses: Array<{ address: string; family: number }>) => void)(null, [
            { address: '::1', family: 6 },
            { address: '127.0.0.1', family: 4 },
          ]),
      })
      socket.on('error', resolve)
    })
    expect(error).toBeInstanceOf(AggregateError)
    expect((error as AggregateError).errors).toHaveLength(2)
    const verdict = classifyError(error)
    expect(verdict).toMatchObject({ category: 'unavailable', connectionLost: true, retryable: true })
    // ::1 answers EADDRNOTAVAIL (or ENETUNREACH) on a host without IPv6, e.g. some containers.
    expect(['ECONNREFUSED', 'EADDRNOTAVAIL', 'ENETUNREACH']).toContain(verdict.code)
  })

  it('a write after the server closed the socket was never sent: unavailable', async () => {
    const closing = await fakeServer((socket) => socket.end())
    try {
      const error = await new Promise<unknown>((resolve) => {
        const socket = netConnect(closing.port, '127.0.0.1')
        socket.on('error', () => {})
        // Once the FIN has arrived (and our side ended, a tick later) Node refuses every write.
        socket.on('end', () => setImmediate(() => socket.write('SELECT 1', resolve)))
      })
      expect((error as Error).message).toBe('This socket has been ended by the other party')
      expectVerdict(error, { category: 'unavailable', code: 'EPIPE', connectionLost: true })
    } finally {
      await closing.close()
    }
  })

  it('any other system error from connect() is unavailable', () => {
    // Shape of libuv's connect errors (syscall 'connect'), e.g. ::1 on a host without IPv6.
    const error = Object.assign(new Error('connect EADDRNOTAVAIL ::1:5432 - Local (:::0)'), {
      code: 'EADDRNOTAVAIL',
      errno: -99,
      syscall: 'connect',
    })
    expectVerdict(error, { category: 'unavailable', code: 'EADDRNOTAVAIL', connectionLost: true })
  })

  it('an ordinary EPIPE from write() is ambiguous', () => {
    // Shape of libuv's EPIPE: a system error with syscall 'write' (bytes may have left before it).
    const error = Object.assign(new Error('write EPIPE'), { code: 'EPIPE', errno: -32, syscall: 'write' })
    expectVerdict(error, { category: 'ambiguous', code: 'EPIPE', connectionLost: true })
  })

  it("this library's configuration, driver and routing errors", () => {
    const config = (() => {
      try {
        createDb({ dialect: 'postgres', writer: 'not a url' })
      } catch (error) {
        return error
      }
      throw new Error('expected a ConfigError')
    })()
    expect(config).toBeInstanceOf(ConfigError)
    expectVerdict(config, { category: 'fatal', code: 'CONFIG_INVALID', connectionLost: false })
    const missing = new MissingDriverError(
      'pg',
      "the 'postgres' dialect",
      new Error("Cannot find package 'pg'"),
    )
    expectVerdict(missing, { category: 'fatal', code: 'DRIVER_MISSING', connectionLost: false })
    // Thrown before any connection is chosen (routing.fallback: 'error'); constructed here.
    expectVerdict(new NoReaderAvailableError(), {
      category: 'unavailable',
      code: 'NO_READER_AVAILABLE',
      connectionLost: false,
    })
  })

  it('follows cause chains and survives cycles and non-errors', async () => {
    const port = await getFreePort()
    const refused = await failure(connectOnce('postgres', `postgres://app:pw@127.0.0.1:${port}/app`))
    const wrapped = new Error('could not load the user', {
      cause: new Error('query failed', { cause: refused }),
    })
    expectVerdict(wrapped, { category: 'unavailable', code: 'ECONNREFUSED', connectionLost: true })

    const cycle = new Error('a')
    cycle.cause = new Error('b', { cause: cycle })
    expectVerdict(cycle, { category: 'fatal', code: undefined, connectionLost: false })
    expectVerdict('a string', { category: 'fatal', code: undefined, connectionLost: false })
    expectVerdict(undefined, { category: 'fatal', code: undefined, connectionLost: false })
    const hostile = new Proxy(
      {},
      {
        get() {
          throw new Error('no')
        },
      },
    )
    expectVerdict(hostile, { category: 'fatal', code: undefined, connectionLost: false })
  })

  it('an AggregateError with an unrecognised member is as cautious as that member', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED ::1:5432'), {
      code: 'ECONNREFUSED',
      syscall: 'connect',
    })
    expectVerdict(new AggregateError([refused, new Error('boom')]), {
      category: 'fatal',
      code: undefined,
      connectionLost: false,
    })
  })
})

// Errors we cannot produce locally, built with exactly the fields the drivers set: pg's
// DatabaseError (pg-protocol: name 'error', severity, code = SQLSTATE, message) and mysql2's server
// error (packets/packet.js asError: code = name from its table (undefined for MariaDB-only numbers),
// errno, sqlState, sqlMessage). Each case names where the shape comes from.
describe('classifyError on error shapes we cannot produce here', () => {
  function postgresError(code: string, severity: string, message: string): pg.DatabaseError {
    const error = new pg.DatabaseError(message, message.length, 'error')
    return Object.assign(error, { code, severity })
  }

  function mysqlError(errno: number, sqlState: string, message: string, name?: string) {
    return Object.assign(new Error(message), { code: name, errno, sqlState, sqlMessage: message })
  }

  it.each([
    // PostgreSQL Appendix A; messages from the server source (postmaster.c, postgres.c).
    [
      '57P03 starting up',
      postgresError('57P03', 'FATAL', 'the database system is starting up'),
      'unavailable',
      true,
    ],
    [
      '57P02 crash of another backend',
      postgresError('57P02', 'FATAL', 'terminating connection because of crash of another server process'),
      'ambiguous',
      true,
    ],
    [
      '40001 recovery conflict ending the session (hot standby)',
      postgresError('40001', 'FATAL', 'terminating connection due to conflict with recovery'),
      'conflict',
      true,
    ],
    ['08006 connection failure', postgresError('08006', 'FATAL', 'connection failure'), 'ambiguous', true],
    [
      '08P01 protocol violation',
      postgresError('08P01', 'FATAL', 'invalid frontend message type 0'),
      'fatal',
      true,
    ],
    ['53200 out of memory in a statement', postgresError('53200', 'ERROR', 'out of memory'), 'fatal', false],
    [
      '57P04 database dropped',
      postgresError('57P04', 'FATAL', 'terminating connection due to database drop'),
      'fatal',
      true,
    ],
    [
      '22P02 bad input',
      postgresError('22P02', 'ERROR', 'invalid input syntax for type integer'),
      'fatal',
      false,
    ],
  ] as const)('postgres %s', (_name, error, category, connectionLost) => {
    expectVerdict(error, { category, code: error.code, connectionLost })
  })

  // PgBouncer (1.18 and later) sends every failure of its own as 08P01 with a fixed message; these
  // are the texts of its source (the reachable ones are also produced for real in
  // test/proxy/pgbouncer.test.ts). RDS Proxy's borrow timeout is documented with its text only.
  it.each([
    ['no more connections allowed (max_client_conn)', 'unavailable', true],
    ['query_wait_timeout', 'unavailable', true],
    ['server login has been failing, try again later (server_login_retry)', 'unavailable', true],
    ['pgbouncer cannot connect to server', 'unavailable', true],
    ['client_login_timeout (server down)', 'unavailable', true],
    ['database "orders" is disabled', 'unavailable', true],
    ['client_idle_timeout', 'unavailable', true],
    ['server conn crashed?', 'ambiguous', false],
    ['database removed', 'ambiguous', false],
    ['query timeout', 'ambiguous', false],
    ['idle transaction timeout', 'conflict', true],
    ['unsupported startup parameter: statement_timeout', 'fatal', false],
    ['no such database: orders', 'fatal', false],
    ['SASL authentication failed', 'fatal', false],
  ] as const)('PgBouncer 08P01 %s', (message, category, retryable) => {
    const verdict = classifyError(postgresError('08P01', 'FATAL', message))
    expect(verdict).toMatchObject({ category, code: '08P01', connectionLost: true, retryable })
    // Fixed phrases only: never the message's variable part (a database, user or parameter name).
    expect(verdict.reason).not.toMatch(/orders|statement_timeout/)
  })

  it("RDS Proxy's borrow timeout: nothing was sent, on PostgreSQL (text only) and MySQL (9501)", () => {
    const text = 'Timed-out waiting to acquire database connection'
    expectVerdict(postgresError('XX000', 'ERROR', text), {
      category: 'unavailable',
      code: 'XX000',
      connectionLost: false,
    })
    expectVerdict(mysqlError(9501, 'HY000', text), {
      category: 'unavailable',
      code: '9501',
      connectionLost: false,
    })
    for (const limit of [
      'The maximum number of client connections to the proxy exceeded 1000.',
      'Rate of connection to proxy exceeded 100.',
    ]) {
      expectVerdict(postgresError('XX000', 'FATAL', limit), {
        category: 'unavailable',
        code: 'XX000',
        connectionLost: true,
      })
    }
  })

  it('postgres 53xxx while connecting is unavailable', () => {
    const error = postgresError('53200', 'FATAL', 'out of memory')
    expectVerdict(
      error,
      { category: 'unavailable', code: '53200', connectionLost: true },
      { phase: 'connect' },
    )
  })

  it.each([
    // Aurora MySQL reader / demoted writer: node-mysql2#2050, go-sql-driver/mysql#634.
    [
      'Aurora 1290 --read-only',
      mysqlError(
        1290,
        'HY000',
        'The MySQL server is running with the --read-only option so it cannot execute this statement',
        'ER_OPTION_PREVENTS_STATEMENT',
      ),
      'read-only',
      true,
    ],
    [
      'MySQL 1290 --super-read-only',
      mysqlError(
        1290,
        'HY000',
        'The MySQL server is running with the --super-read-only option so it cannot execute this statement',
        'ER_OPTION_PREVENTS_STATEMENT',
      ),
      'read-only',
      true,
    ],
    [
      '1290 --secure-file-priv (not read-only)',
      mysqlError(
        1290,
        'HY000',
        'The MySQL server is running with the --secure-file-priv option so it cannot execute this statement',
        'ER_OPTION_PREVENTS_STATEMENT',
      ),
      'fatal',
      false,
    ],
    // innodb_read_only (Aurora readers): go-sql-driver/mysql#1660.
    [
      '1836 read-only mode',
      mysqlError(1836, 'HY000', 'Running in read-only mode', 'ER_READ_ONLY_MODE'),
      'read-only',
      true,
    ],
    [
      '1874 InnoDB read-only',
      mysqlError(1874, 'HY000', 'InnoDB is in read only mode', 'ER_INNODB_READ_ONLY'),
      'read-only',
      true,
    ],
    // MariaDB-only numbers: mysql2 has no name for them, so `code` is undefined.
    ['MariaDB 1927 connection killed', mysqlError(1927, '70100', 'Connection was killed'), 'ambiguous', true],
    [
      '1053 server shutdown',
      mysqlError(1053, '08S01', 'Server shutdown in progress', 'ER_SERVER_SHUTDOWN'),
      'ambiguous',
      true,
    ],
    // The global max_user_connections (MySQL and MariaDB error reference; see the 1226 test above).
    [
      '1203 max_user_connections',
      mysqlError(
        1203,
        '42000',
        "User app already has more than 'max_user_connections' active connections",
        'ER_TOO_MANY_USER_CONNECTIONS',
      ),
      'unavailable',
      true,
    ],
    // MySQL 8.0.24+ wait_timeout notice (WL#12999).
    [
      'MySQL 4031 inactivity',
      mysqlError(
        4031,
        'HY000',
        'The client was disconnected by the server because of inactivity. See wait_timeout and interactive_timeout for configuring this behavior.',
        'ER_CLIENT_INTERACTION_TIMEOUT',
      ),
      'unavailable',
      true,
    ],
    [
      'MariaDB 4031 (a trigger error)',
      mysqlError(
        4031,
        'HY000',
        "Referenced trigger 'trg' for the given action time and event type does not exist",
      ),
      'fatal',
      false,
    ],
    [
      'MySQL 3572 NOWAIT',
      mysqlError(
        3572,
        'HY000',
        'Statement aborted because lock(s) could not be acquired immediately and NOWAIT is set.',
        'ER_LOCK_NOWAIT',
      ),
      'conflict',
      false,
    ],
    [
      'MySQL 3101 group replication rollback',
      mysqlError(
        3101,
        'HY000',
        'Plugin instructed the server to rollback the current transaction.',
        'ER_TRANSACTION_ROLLBACK_DURING_COMMIT',
      ),
      'conflict',
      false,
    ],
    [
      'MySQL 3024 max_execution_time',
      mysqlError(
        3024,
        'HY000',
        'Query execution was interrupted, maximum statement execution time exceeded',
        'ER_QUERY_TIMEOUT',
      ),
      'fatal',
      false,
    ],
    [
      'Galera 1047 node not ready',
      mysqlError(
        1047,
        '08S01',
        'WSREP has not yet prepared node for application use',
        'ER_UNKNOWN_COM_ERROR',
      ),
      'unavailable',
      false,
    ],
    // libmysqlclient's client codes (other drivers, proxies); mysql2 reports PROTOCOL_CONNECTION_LOST.
    [
      '2013 lost connection',
      mysqlError(2013, 'HY000', 'Lost connection to MySQL server during query'),
      'ambiguous',
      true,
    ],
  ] as const)('mysql %s', (_name, error, category, connectionLost) => {
    expectVerdict(error, { category, code: String(error.errno), connectionLost })
  })

  it('a fatal mysql2 error (err.fatal) always loses the connection', () => {
    const error = Object.assign(mysqlError(1064, '42000', 'You have an error in your SQL syntax'), {
      fatal: true,
    })
    expectVerdict(error, { category: 'fatal', code: '1064', connectionLost: true })
  })

  it('a second copy of this library (dual ESM/CJS) is still recognised by name and code', () => {
    const foreign = Object.assign(new Error('Timed out waiting for a free connection'), {
      name: 'PoolTimeoutError',
      code: 'POOL_ACQUIRE_TIMEOUT',
    })
    expectVerdict(foreign, { category: 'unavailable', code: 'POOL_ACQUIRE_TIMEOUT', connectionLost: false })
    const lookalike = Object.assign(new Error('x'), { code: 'POOL_ACQUIRE_TIMEOUT' })
    expectVerdict(lookalike, { category: 'fatal', code: 'POOL_ACQUIRE_TIMEOUT', connectionLost: false })
  })
})
