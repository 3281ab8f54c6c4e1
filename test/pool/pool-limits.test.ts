import { createServer, type Server, type Socket } from 'node:net'
import { sql } from 'kysely'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { ConnectTimeoutError, createDb, PoolTimeoutError } from '../../src/index.js'
import { MAX_TIMER_MS } from '../../src/validation/number-setting.js'
import { describeEngines } from '../support/database.js'
import { queryOnce } from '../support/sql.js'

/** The server-side id of the session that runs the statement. */
function sessionId(engine: 'postgres' | 'mysql') {
  return engine === 'postgres' ? sql<number>`pg_backend_pid()` : sql<number>`connection_id()`
}

describeEngines('pool limits against a real server', (engine, cluster) => {
  it('fails a caller with PoolTimeoutError after acquireTimeoutMs when every connection is in use', async () => {
    const db = createDb({
      dialect: engine,
      writer: cluster.writerUrl,
      pool: { max: 1, acquireTimeoutMs: 300 },
    })
    try {
      const held = await db.startTransaction().execute()
      await held.selectNoFrom(sql<number>`1`.as('one')).execute()
      const started = Date.now()
      const error = await db
        .selectNoFrom(sql<number>`1`.as('one'))
        .execute()
        .catch((e: unknown) => e)
      const waited = Date.now() - started
      expect(error).toBeInstanceOf(PoolTimeoutError)
      expect(waited).toBeGreaterThanOrEqual(250)
      expect(waited).toBeLessThan(3_000)
      expect(db.stats().writer.waiting).toBe(0)
      await held.commit().execute()
      // The slot is usable again once released.
      const { rows } = await sql<{ one: number }>`select 1 as one`.execute(db)
      expect(Number(rows[0]?.one)).toBe(1)
    } finally {
      await db.destroy()
    }
  })

  it('never opens more than max connections under a burst, and queues the rest', async () => {
    const db = createDb({ dialect: engine, writer: cluster.writerUrl, pool: { max: 3 } })
    try {
      let peak = 0
      const burst = Array.from({ length: 30 }, async () => {
        const result = await db.selectNoFrom(sessionId(engine).as('id')).execute()
        peak = Math.max(peak, db.stats().writer.total)
        return result
      })
      const results = await Promise.all(burst)
      const sessions = new Set(results.map((rows) => Number(rows[0]?.id)))
      expect(sessions.size).toBeLessThanOrEqual(3)
      expect(peak).toBeLessThanOrEqual(3)
      // A connection opened for the burst may arrive after the queue drained: it stays idle.
      expect(db.stats().writer.total).toBeLessThanOrEqual(3)
      expect(db.stats().writer).toMatchObject({ inUse: 0, waiting: 0 })
    } finally {
      await db.destroy()
    }
  })

  it('recycles a connection older than maxLifetimeMs', async () => {
    const db = createDb({ dialect: engine, writer: cluster.writerUrl, pool: { maxLifetimeMs: 200 } })
    try {
      const first = await db.selectNoFrom(sessionId(engine).as('id')).executeTakeFirstOrThrow()
      const again = await db.selectNoFrom(sessionId(engine).as('id')).executeTakeFirstOrThrow()
      expect(again.id).toBe(first.id)
      await new Promise((resolve) => setTimeout(resolve, 250))
      const later = await db.selectNoFrom(sessionId(engine).as('id')).executeTakeFirstOrThrow()
      expect(later.id).not.toBe(first.id)
      expect(db.stats().writer.total).toBe(1)
    } finally {
      await db.destroy()
    }
  })

  it('closes idle connections after idleTimeoutMs but keeps min', async () => {
    const db = createDb({ dialect: engine, writer: cluster.writerUrl, pool: { idleTimeoutMs: 100, min: 1 } })
    try {
      await Promise.all(Array.from({ length: 4 }, () => db.selectNoFrom(sql<number>`1`.as('one')).execute()))
      expect(db.stats().writer.total).toBeGreaterThan(1)
      const deadline = Date.now() + 5_000
      while (db.stats().writer.total > 1 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
      expect(db.stats().writer).toMatchObject({ total: 1, idle: 1 })
    } finally {
      await db.destroy()
    }
  })

  it('applies statementTimeoutMs on the server', async () => {
    const db = createDb({ dialect: engine, writer: cluster.writerUrl, pool: { statementTimeoutMs: 200 } })
    try {
      const started = Date.now()
      const sleep = engine === 'postgres' ? sql`select pg_sleep(5)` : sql`select sleep(5)`
      const error = (await sleep.execute(db).catch((e: unknown) => e)) as { code?: string; errno?: number }
      expect(Date.now() - started).toBeLessThan(3_000)
      if (engine === 'postgres') {
        expect(error.code).toBe('57014') // query_canceled (statement timeout)
      } else {
        expect(error.errno).toBe(1969) // ER_STATEMENT_TIMEOUT (max_statement_time exceeded)
      }
      // The connection is still usable afterwards.
      const { rows } = await sql<{ one: number }>`select 1 as one`.execute(db)
      expect(Number(rows[0]?.one)).toBe(1)
    } finally {
      await db.destroy()
    }
  })
})

describeEngines('the longest server-side timeouts createDb accepts', (engine, cluster) => {
  it('reach the server unchanged: the cap (2^31 - 1 ms) is within what the server takes', async () => {
    const db = createDb({
      dialect: engine,
      writer: cluster.writerUrl,
      pool: { max: 1, statementTimeoutMs: MAX_TIMER_MS, sessionIdleTimeoutMs: MAX_TIMER_MS },
    })
    try {
      if (engine === 'postgres') {
        // Startup parameters: a value the server refused would fail the connection itself.
        const { rows } = await sql<{ statement: string; idle: string }>`select
          current_setting('statement_timeout') as statement,
          current_setting('idle_session_timeout') as idle`.execute(db)
        expect(rows[0]).toEqual({ statement: '2147483647ms', idle: '2147483647ms' })
        // And the cap is PostgreSQL's own limit: one millisecond more is refused.
        await expect(
          queryOnce(engine, cluster.adminWriterUrl, 'SET statement_timeout = 2147483648'),
        ).rejects.toMatchObject({
          message: 'invalid value for parameter "statement_timeout": "2147483648"',
          hint: 'Value exceeds integer range.',
        })
      } else {
        const { rows } = await sql<{ version: string; idle: unknown }>`
          select @@version as version, @@session.wait_timeout as idle`.execute(db)
        // Whole seconds, rounded up.
        expect(Number(rows[0]?.idle)).toBe(2_147_484)
        // MariaDB takes seconds (it would silently truncate anything above 31536000), MySQL milliseconds.
        const mariaDb = /mariadb/i.test(rows[0]?.version ?? '')
        const { rows: timeout } = await (mariaDb
          ? sql<{ value: unknown }>`select @@session.max_statement_time as value`
          : sql<{ value: unknown }>`select @@session.max_execution_time as value`
        ).execute(db)
        expect(Number(timeout[0]?.value)).toBe(mariaDb ? MAX_TIMER_MS / 1000 : MAX_TIMER_MS)
      }
    } finally {
      await db.destroy()
    }
  })
})

describeEngines('connect timeout', (engine) => {
  let server: Server
  let port = 0
  const sockets = new Set<Socket>()

  beforeAll(async () => {
    // Accepts TCP connections and never says a word: a server that hangs during the handshake.
    server = createServer((socket) => {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    port = (server.address() as { port: number }).port
  })

  afterAll(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  })

  it('gives up on a silent server after connectTimeoutMs with ConnectTimeoutError', async () => {
    const scheme = engine === 'postgres' ? 'postgres' : 'mysql'
    const db = createDb({
      dialect: engine,
      writer: `${scheme}://app:pw@127.0.0.1:${port}/app`,
      pool: { connectTimeoutMs: 300 },
      // One attempt: this test is about the deadline, not the retries (covered in test/retry).
      retry: false,
    })
    try {
      const started = Date.now()
      const error = await db
        .selectNoFrom(sql<number>`1`.as('one'))
        .execute()
        .catch((e: unknown) => e)
      expect(Date.now() - started).toBeLessThan(2_000)
      expect(error).toBeInstanceOf(ConnectTimeoutError)
      expect((error as ConnectTimeoutError).endpoint).toBe('writer')
      expect(db.stats().writer.total).toBe(0)
    } finally {
      await db.destroy()
    }
  })
})
