import { randomUUID } from 'node:crypto'
import { setTimeout as delay } from 'node:timers/promises'
import { sql } from 'kysely'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import {
  type CreateDbConfig,
  classifyError,
  createDb,
  QueryTimeoutError,
  type ResilientDb,
  type RetryEvent,
} from '../../src/index.js'
import { describeEngines, type Engine } from '../support/database.js'
import {
  collectEvents,
  EVENT_NAMES,
  type EventLog,
  failureOf,
  marker,
  sessionId,
  sleepExpr,
} from '../support/fault-helpers.js'
import { type FaultMode, portOf } from '../support/fault-proxy.js'
import { killWhileFrozen } from '../support/freeze.js'
import { type MariaDbCluster, startMariaDbCluster } from '../support/mariadb-cluster.js'
import { proxiesClosedAfterEachTest } from '../support/per-test.js'
import { pollUntil } from '../support/poll.js'
import { type PostgresCluster, startPostgresCluster } from '../support/postgres-cluster.js'
import { queryOnce, serverErrorCode } from '../support/sql.js'

// Pools that heal themselves: broken connections are destroyed, never reused; a silent server is cut
// off by pool.queryTimeoutMs; a server that refuses sessions, restarts, or keeps killing sessions is
// served again by the same db, with no acknowledged write lost or applied twice.

interface Database {
  sh_rows: { k: string; note: string | null }
  sh_chaos: { k: string }
}

const TOO_MANY_CONNECTIONS: Record<Engine, string> = { postgres: '53300', mysql: '1040' }

interface Recorded {
  readonly db: ResilientDb<Database>
  /** Every event of every kind, by name. */
  readonly events: EventLog
  readonly retries: RetryEvent[]
}

const TABLE_DDL = 'create table sh_rows (k varchar(64) not null, note varchar(64))'

/** createDb plus a listener on every event; every payload is checked for the password afterwards. */
function recorder(engine: Engine) {
  const opened: Recorded[] = []
  const open = (config: Omit<CreateDbConfig, 'dialect'>): Recorded => {
    const db = createDb<Database>({ dialect: engine, ...config })
    const events = collectEvents(db)
    const recorded = { db, events, retries: events.retry }
    opened.push(recorded)
    return recorded
  }
  const closeAll = async (password: string): Promise<void> => {
    try {
      expect(password.length).toBeGreaterThan(0)
      for (const { events } of opened) {
        for (const name of EVENT_NAMES) {
          for (const payload of events[name]) {
            expect(JSON.stringify(payload), `'${name}' event`).not.toContain(password)
          }
        }
      }
    } finally {
      await Promise.all(opened.splice(0).map(({ db }) => db.destroy()))
    }
  }
  return { open, closeAll }
}

describeEngines('self-healing pools', (engine, cluster) => {
  const password = cluster.password ?? decodeURIComponent(new URL(cluster.writerUrl).password)
  const { open, closeAll } = recorder(engine)
  const startProxy = proxiesClosedAfterEachTest()
  const proxy = () => startProxy(portOf(cluster.writerUrl))

  const waitUntilRunning = (text: string) =>
    pollUntil(
      async () => {
        const rows =
          engine === 'postgres'
            ? await queryOnce(
                engine,
                cluster.adminWriterUrl,
                `select 1 as one from pg_stat_activity
                  where state = 'active' and pid <> pg_backend_pid() and strpos(query, $1) > 0`,
                [text],
              )
            : await queryOnce(
                engine,
                cluster.adminWriterUrl,
                'select 1 as one from information_schema.processlist where id <> connection_id() and locate(?, info) > 0',
                [text],
              )
        return rows.length > 0 ? true : undefined
      },
      { timeoutMs: 10_000, intervalMs: 10, what: `a statement containing ${text} to run on the server` },
    )

  beforeAll(async () => {
    await queryOnce(engine, cluster.writerUrl, 'drop table if exists sh_rows')
    await queryOnce(engine, cluster.writerUrl, TABLE_DDL)
  })

  afterEach(async () => {
    await closeAll(password)
  })

  afterAll(async () => {
    await queryOnce(engine, cluster.writerUrl, 'drop table if exists sh_rows')
  })

  it('destroys a connection that failed mid-statement instead of pooling it; a new session serves next', async () => {
    const p = await proxy()
    // No retries, so the failure reaches the caller and nothing else touches the pool meanwhile.
    const { db } = open({ writer: p.url(cluster.writerUrl), retry: false })
    const first = await db.selectNoFrom(sessionId(engine).as('id')).executeTakeFirstOrThrow()
    expect(db.stats().writer).toMatchObject({ total: 1, idle: 1 })

    const alias = marker('sh_m_')
    const pending = failureOf(db.selectNoFrom(sleepExpr(engine, 1).as(alias)).execute())
    await waitUntilRunning(alias)
    p.resetAll()
    const error = await pending
    expect(classifyError(error).connectionLost).toBe(true)
    expect(db.stats().writer).toMatchObject({ total: 0, idle: 0, inUse: 0 })

    const next = await db.selectNoFrom(sessionId(engine).as('id')).executeTakeFirstOrThrow()
    expect(Number(next.id)).not.toBe(Number(first.id))
    expect(db.stats().writer).toMatchObject({ total: 1, idle: 1 })
  })

  it('drops idle connections whose socket was reset, without waiting for a statement to trip on them', async () => {
    const p = await proxy()
    const { db } = open({ writer: p.url(cluster.writerUrl) })
    // Three connections at once, so three sit idle afterwards.
    const warm = await Promise.all(
      [1, 2, 3].map(() =>
        db.selectNoFrom([sessionId(engine).as('id'), sleepExpr(engine, 0.2).as('s')]).execute(),
      ),
    )
    const before = new Set(warm.map((rows) => Number(rows[0]?.id)))
    expect(before.size).toBe(3)
    expect(db.stats().writer).toMatchObject({ total: 3, idle: 3 })

    p.resetAll()
    // No statement in between: a health check reading stats() must not count dead connections.
    await pollUntil(async () => (db.stats().writer.total === 0 ? true : undefined), {
      timeoutMs: 2_000,
      what: 'db.stats().writer.total to drop to 0 after the idle connections were reset',
    })

    const next = await db.selectNoFrom(sessionId(engine).as('id')).executeTakeFirstOrThrow()
    expect(before.has(Number(next.id))).toBe(false)
    expect(db.stats().writer.total).toBe(1)
  })

  const queryTimeoutMs = 500
  // Timers, a destroyed socket and a promise chain: generous, but far below a second attempt.
  const marginMs = 400

  for (const mode of ['blackhole', 'stall'] satisfies FaultMode[]) {
    for (const kind of ['read', 'write'] as const) {
      it(`gives a ${kind} QueryTimeoutError within queryTimeoutMs on a ${mode} network, then heals`, async () => {
        const p = await proxy()
        const { db } = open({
          writer: p.url(cluster.writerUrl),
          // A short connect timeout keeps a wrongly retried attempt from hanging the test for long.
          pool: { queryTimeoutMs, connectTimeoutMs: 1_000 },
        })
        const first = await db.selectNoFrom(sessionId(engine).as('id')).executeTakeFirstOrThrow()
        expect(db.stats().writer).toMatchObject({ total: 1, idle: 1 })

        p.setMode(mode)
        const started = performance.now()
        const error = await failureOf(
          kind === 'read'
            ? db.selectNoFrom(sql<number>`1`.as('one')).execute()
            : db.insertInto('sh_rows').values({ k: randomUUID(), note: mode }).execute(),
        )
        const elapsedMs = performance.now() - started
        expect(error).toBeInstanceOf(QueryTimeoutError)
        expect(elapsedMs).toBeGreaterThanOrEqual(queryTimeoutMs - 5)
        expect(elapsedMs).toBeLessThan(queryTimeoutMs + marginMs)
        // The silent connection was destroyed, not pooled.
        expect(db.stats().writer).toMatchObject({ total: 0, idle: 0, inUse: 0 })

        p.setMode('pass')
        const next = await db.selectNoFrom(sessionId(engine).as('id')).executeTakeFirstOrThrow()
        expect(Number(next.id)).not.toBe(Number(first.id))
        await db.insertInto('sh_rows').values({ k: randomUUID(), note: 'healed' }).execute()
      })
    }
  }
})

type OwnCluster = PostgresCluster | MariaDbCluster

describeEngines('self-healing against a server of its own', (engine) => {
  let own: OwnCluster
  let password = ''
  const { open, closeAll } = recorder(engine)

  const admin = (statement: string, params?: readonly unknown[]) =>
    queryOnce(engine, own.adminWriterUrl, statement, params)

  const appSessions = async (): Promise<number> => {
    const rows =
      engine === 'postgres'
        ? await admin("select count(*)::int as n from pg_stat_activity where usename = 'app'")
        : await admin("select count(*) as n from information_schema.processlist where user = 'app'")
    return Number(rows[0]?.n)
  }

  beforeAll(async () => {
    // Few connections, so exhausting them is quick; no replica: nothing here needs one.
    own =
      engine === 'postgres'
        ? await startPostgresCluster({ replica: false, maxConnections: 10 })
        : await startMariaDbCluster({ replica: false, maxConnections: 10 })
    password = own.password
    await queryOnce(engine, own.writerUrl, TABLE_DDL)
  })

  afterEach(async () => {
    await closeAll(password)
    // A test that stopped the server must not leave it down for the next one.
    await own.primary.start()
  })

  afterAll(async () => {
    await own?.stop()
  })

  /** Opens app sessions until the server refuses one; returns them and the refusal. */
  const exhaust = async () => {
    const held: Array<{ close(): Promise<void> }> = []
    let refusal: unknown
    for (let i = 0; i < 50 && refusal === undefined; i++) {
      try {
        held.push(await openRaw(engine, own.writerUrl))
      } catch (error) {
        refusal = error
      }
    }
    expect(serverErrorCode(refusal)).toBe(TOO_MANY_CONNECTIONS[engine])
    return held
  }

  it('with no slot free, waits for one until acquireTimeoutMs instead of failing, and never suspects the writer', async () => {
    const held = await exhaust()
    try {
      const acquireTimeoutMs = 1_500
      const { db, events } = open({ writer: own.writerUrl, pool: { acquireTimeoutMs } })
      const started = performance.now()
      const error = await failureOf(db.selectNoFrom(sql<number>`1`.as('one')).execute())
      const elapsedMs = performance.now() - started
      // A refusal is overload: the caller waits (the pool retries the open with backoff) until its
      // deadline, and then learns why.
      expect(error).toMatchObject({ name: 'PoolTimeoutError', code: 'POOL_ACQUIRE_TIMEOUT' })
      expect((error as Error).message).toMatch(/refuses new sessions \(too many connections\)/)
      expect(serverErrorCode((error as Error).cause)).toBe(TOO_MANY_CONNECTIONS[engine])
      expect(elapsedMs).toBeGreaterThanOrEqual(acquireTimeoutMs - 50)
      expect(elapsedMs).toBeLessThan(acquireTimeoutMs + 1_000)
      // Not writer loss: no discovery, no retry storm of the statement.
      expect(events.retry).toEqual([])
      expect(events.failover).toEqual([])
    } finally {
      await Promise.all(held.map((connection) => connection.close()))
    }
  })

  it('a caller waiting in a too-many-connections refusal gets the slot another process frees', async () => {
    const held = await exhaust()
    try {
      const { db, events } = open({ writer: own.writerUrl })
      const query = db.selectNoFrom(sql<number>`1`.as('one')).executeTakeFirstOrThrow()
      // Let the pool be refused a few times, then free one session elsewhere.
      await pollUntil(async () => (db.stats().writer.waiting === 1 ? true : undefined), {
        timeoutMs: 5_000,
        what: 'the statement to wait for a connection',
      })
      await delay(300)
      await held.pop()?.close()
      const row = await query
      expect(Number(row.one)).toBe(1)
      expect(events.retry).toEqual([])
      await db.insertInto('sh_rows').values({ k: randomUUID(), note: 'after-exhaustion' }).execute()

      await Promise.all(held.splice(0).map((connection) => connection.close()))
      await pollUntil(async () => ((await appSessions()) <= 1 ? true : undefined), {
        timeoutMs: 10_000,
        what: 'the held sessions to end on the server',
      })
      // Room again: the pool grows past its old ceiling.
      const sessions = await Promise.all(
        [1, 2, 3].map(() =>
          db.selectNoFrom([sessionId(engine).as('id'), sleepExpr(engine, 0.2).as('s')]).execute(),
        ),
      )
      expect(sessions).toHaveLength(3)
    } finally {
      await Promise.all(held.map((connection) => connection.close()))
    }
  })

  const maxElapsedMs = 3_000

  it('keeps serving across a server restart: stale idle connections never reach the caller', async () => {
    const { db } = open({ writer: own.writerUrl, retry: { maxElapsedMs } })
    const warm = await Promise.all(
      [1, 2, 3].map(() =>
        db.selectNoFrom([sessionId(engine).as('id'), sleepExpr(engine, 0.2).as('s')]).execute(),
      ),
    )
    expect(new Set(warm.map((rows) => Number(rows[0]?.id))).size).toBe(3)
    expect(db.stats().writer.idle).toBe(3)

    // Restart with the pool full of idle connections to the old server process.
    await own.primary.stop('fast')
    await own.primary.start()
    const row = await db.selectNoFrom(sql<number>`1`.as('one')).executeTakeFirstOrThrow()
    expect(Number(row.one)).toBe(1)
    await db.insertInto('sh_rows').values({ k: randomUUID(), note: 'after-restart' }).execute()

    // While the server is down, statements fail as 'unavailable' once retry.maxElapsedMs is spent
    // (plus one attempt: a refused connect is instant).
    await own.primary.stop('fast')
    for (const statement of [
      () => db.selectNoFrom(sql<number>`1`.as('one')).execute(),
      () => db.insertInto('sh_rows').values({ k: randomUUID(), note: 'during-outage' }).execute(),
    ]) {
      const started = performance.now()
      const error = await failureOf(statement())
      const elapsedMs = performance.now() - started
      expect(classifyError(error, { phase: 'connect' }).category).toBe('unavailable')
      expect(elapsedMs).toBeLessThan(maxElapsedMs + 1_000)
    }

    await own.primary.start()
    const again = await db.selectNoFrom(sql<number>`1`.as('one')).executeTakeFirstOrThrow()
    expect(Number(again.one)).toBe(1)
    const k = randomUUID()
    await db.insertInto('sh_rows').values({ k, note: 'after-second-restart' }).execute()
    const rows = await db.selectFrom('sh_rows').select('note').where('k', '=', k).execute()
    expect(rows).toEqual([{ note: 'after-second-restart' }])
  })

  it('idle sessions the server closed while the event loop was blocked never fail a statement (defaults)', async () => {
    const { db } = open({ writer: own.writerUrl })
    // Several idle connections: each statement holds its session a moment.
    const warm = await Promise.all(
      Array.from({ length: 6 }, () =>
        db.selectNoFrom([sessionId(engine).as('id'), sleepExpr(engine, 0.2).as('s')]).execute(),
      ),
    )
    const ids = [...new Set(warm.map((rows) => Number(rows[0]?.id)))]
    expect(ids.length).toBeGreaterThanOrEqual(3)
    expect(db.stats().writer.idle).toBe(ids.length)

    // Like a long GC pause or a CPU-starved container: the server ends the sessions while this
    // process cannot run; their closes wait unread in the sockets when the statements start.
    killWhileFrozen(engine, own.adminWriterUrl, ids)
    const results = await Promise.allSettled(
      // Raw writes: a dead connection would fail them as 'ambiguous', never retried.
      Array.from({ length: 10 }, () =>
        sql`insert into sh_rows (k, note) values (${randomUUID()}, 'after-freeze')`.execute(db),
      ),
    )
    expect(results.filter((result) => result.status === 'rejected')).toEqual([])
  })

  it('never loses or doubles an acknowledged write while sessions are killed every ~50 ms', async () => {
    await queryOnce(engine, own.writerUrl, 'drop table if exists sh_chaos')
    await queryOnce(engine, own.writerUrl, 'create table sh_chaos (k varchar(64) not null)')
    const { db, retries } = open({ writer: own.writerUrl })
    const killer = await startKiller(engine, own.adminWriterUrl, 50)

    const acknowledged: string[] = []
    const failed: Array<{ k: string; category: string }> = []
    try {
      for (let i = 0; i < 200; i++) {
        const k = `key-${i}`
        // Spreads the inserts over ~2 s so the killer gets dozens of rounds; it only paces the load.
        await delay(Math.random() * 20)
        try {
          await db.insertInto('sh_chaos').values({ k }).execute()
          acknowledged.push(k)
        } catch (error) {
          failed.push({ k, category: classifyError(error).category })
        }
      }
    } finally {
      await killer.stop()
    }

    const rows = await admin(
      engine === 'postgres'
        ? 'select k, count(*)::int as n from sh_chaos group by k'
        : 'select k, count(*) as n from sh_chaos group by k',
    )
    const counts = new Map(rows.map((row) => [String(row.k), Number(row.n)]))
    const summary = {
      acknowledged: acknowledged.length,
      failed: failed.length,
      failedButApplied: failed.filter(({ k }) => counts.get(k) === 1).length,
      failedCategories: [...new Set(failed.map(({ category }) => category))],
      retries: retries.length,
      sessionsKilled: killer.killed(),
    }
    expect(summary.acknowledged + summary.failed).toBe(200)
    // The chaos did happen: sessions were killed while the inserts ran.
    expect(summary.sessionsKilled).toBeGreaterThanOrEqual(5)
    expect(acknowledged.filter((k) => counts.get(k) !== 1)).toEqual([])
    expect([...counts].filter(([, n]) => n > 1)).toEqual([])
    // A failed insert is reported as such only when it may not have happened: never a retryable
    // verdict for a statement that did commit.
    for (const { k, category } of failed) {
      if (counts.get(k) === 1) expect(category, k).toBe('ambiguous')
    }
  })
})

/** One raw driver connection as the given user, outside any pool. */
async function openRaw(engine: Engine, url: string): Promise<{ close(): Promise<void> }> {
  if (engine === 'postgres') {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
    client.on('error', () => {})
    await client.connect()
    return { close: () => client.end().catch(() => undefined) }
  }
  const connection = await mysql.createConnection({ uri: url, connectTimeout: 5_000 })
  connection.on('error', () => {})
  return { close: () => connection.end().catch(() => connection.destroy()) }
}

/** Kills every session of `app` every `intervalMs`, over one admin connection, until stopped. */
async function startKiller(
  engine: Engine,
  adminUrl: string,
  intervalMs: number,
): Promise<{ stop(): Promise<void>; killed(): number }> {
  let killed = 0
  let running = true
  let kill: () => Promise<number>
  let close: () => Promise<void>
  if (engine === 'postgres') {
    const client = new pg.Client({ connectionString: adminUrl })
    client.on('error', () => {})
    await client.connect()
    kill = async () => {
      const { rows } = await client.query<{ n: number }>(
        `select count(*) filter (where pg_terminate_backend(pid))::int as n
           from pg_stat_activity where usename = 'app'`,
      )
      return rows[0]?.n ?? 0
    }
    close = () => client.end()
  } else {
    const connection = await mysql.createConnection({ uri: adminUrl })
    connection.on('error', () => {})
    kill = async () => {
      const [rows] = await connection.query(
        "select id from information_schema.processlist where user = 'app'",
      )
      let n = 0
      for (const row of rows as Array<{ id: number }>) {
        // The session may have ended on its own meanwhile (1094: unknown thread id).
        await connection.query(`kill ${Number(row.id)}`).then(
          () => n++,
          () => undefined,
        )
      }
      return n
    }
    close = () => connection.end()
  }
  const loop = (async () => {
    while (running) {
      killed += await kill()
      await delay(intervalMs)
    }
  })()
  return {
    killed: () => killed,
    stop: async () => {
      running = false
      try {
        await loop
      } finally {
        await close()
      }
    },
  }
}
