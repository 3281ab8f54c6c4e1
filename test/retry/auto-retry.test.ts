import { randomUUID } from 'node:crypto'
import { sql } from 'kysely'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import {
  type CreateDbConfig,
  classifyError,
  createDb,
  type ResilientDb,
  ResilientError,
  type RetryEvent,
} from '../../src/index.js'
import { describeEngines, type Engine, hasReplica, waitForReplica } from '../support/database.js'
import {
  collectEvents,
  EVENT_NAMES,
  type EventLog,
  failureOf,
  marker,
  sessionId,
  sleepExpr,
} from '../support/fault-helpers.js'
import { portOf } from '../support/fault-proxy.js'
import { proxiesClosedAfterEachTest } from '../support/per-test.js'
import { pollUntil } from '../support/poll.js'
import { queryOnce, serverErrorCode } from '../support/sql.js'

// The automatic-retry contract of createDb, against real servers: a single statement outside a
// transaction is retried when nothing was sent ('unavailable') or it hit a read-only node
// ('read-only'); a SELECT also when its connection broke ('ambiguous'); a write never on 'ambiguous';
// nothing inside a transaction; nothing with `retry: false`.

interface Database {
  ar_rows: { k: string; note: string | null }
}

const READ_ONLY_CODE: Record<Engine, string> = { postgres: '25006', mysql: '1290' }

interface Recorded {
  readonly db: ResilientDb<Database>
  /** Every event of every kind, by name. */
  readonly events: EventLog
  readonly retries: RetryEvent[]
}

describeEngines('automatic retries', (engine, cluster) => {
  const password = cluster.password ?? decodeURIComponent(new URL(cluster.writerUrl).password)
  const opened: Recorded[] = []

  const admin = (statement: string, params?: readonly unknown[]) =>
    queryOnce(engine, cluster.adminWriterUrl, statement, params)

  /** createDb, with a listener on every event (checked for secrets after each test). */
  const open = (config: Omit<CreateDbConfig, 'dialect'>): Recorded => {
    const db = createDb<Database>({ dialect: engine, ...config })
    const events = collectEvents(db)
    const recorded = { db, events, retries: events.retry }
    opened.push(recorded)
    return recorded
  }

  const startProxy = proxiesClosedAfterEachTest()
  const proxy = () => startProxy(portOf(cluster.writerUrl))

  /** Server session ids running a statement that contains `text`, other than the admin's own. */
  const sessionsRunning = async (text: string): Promise<number[]> => {
    const rows =
      engine === 'postgres'
        ? await admin(
            `select pid as id from pg_stat_activity
              where state = 'active' and pid <> pg_backend_pid() and strpos(query, $1) > 0`,
            [text],
          )
        : await admin(
            `select id from information_schema.processlist
              where id <> connection_id() and locate(?, info) > 0`,
            [text],
          )
    return rows.map((row) => Number(row.id))
  }

  const sessionExists = async (id: number): Promise<boolean> => {
    const rows =
      engine === 'postgres'
        ? await admin('select 1 as one from pg_stat_activity where pid = $1', [id])
        : await admin('select 1 as one from information_schema.processlist where id = ?', [id])
    return rows.length > 0
  }

  /** Ends the server session `id` from an admin connection and waits until the server has let it go. */
  const terminate = async (id: number): Promise<void> => {
    if (engine === 'postgres') await admin('select pg_terminate_backend($1)', [id])
    else await admin(`kill ${Number(id)}`)
    await pollUntil(async () => ((await sessionExists(id)) ? undefined : true), {
      timeoutMs: 10_000,
      what: `server session ${id} to end`,
    })
  }

  const waitUntilRunning = (text: string) =>
    pollUntil(async () => ((await sessionsRunning(text)).length > 0 ? true : undefined), {
      timeoutMs: 10_000,
      intervalMs: 10,
      what: `a statement containing ${text} to run on the server`,
    })

  const waitUntilFinished = (text: string) =>
    pollUntil(async () => ((await sessionsRunning(text)).length === 0 ? true : undefined), {
      timeoutMs: 15_000,
      what: `every statement containing ${text} to finish on the server`,
    })

  const countRows = async (k: string): Promise<number> => {
    const rows = await queryOnce(
      engine,
      cluster.adminWriterUrl,
      engine === 'postgres'
        ? 'select count(*)::int as n from ar_rows where k = $1'
        : 'select count(*) as n from ar_rows where k = ?',
      [k],
    )
    return Number(rows[0]?.n)
  }

  const expectNoSecrets = (recorded: Recorded) => {
    expect(password.length).toBeGreaterThan(0)
    for (const name of EVENT_NAMES) {
      for (const payload of recorded.events[name]) {
        expect(JSON.stringify(payload), `'${name}' event`).not.toContain(password)
      }
    }
  }

  const expectRetryShape = (event: RetryEvent) => {
    expect(Object.keys(event).sort()).toEqual(
      ['attempt', 'category', 'code', 'delayMs', 'endpoint', 'statement'].sort(),
    )
    expect(event.attempt).toBeGreaterThanOrEqual(1)
    expect(event.delayMs).toBeGreaterThanOrEqual(0)
    expect(Number.isFinite(event.delayMs)).toBe(true)
  }

  beforeAll(async () => {
    // Created by the app user, which owns it (on PostgreSQL the admin's table would be off limits).
    await queryOnce(engine, cluster.writerUrl, 'drop table if exists ar_rows')
    await queryOnce(
      engine,
      cluster.writerUrl,
      'create table ar_rows (k varchar(64) not null, note varchar(64))',
    )
    // The read-only test writes to ar_rows on the replica: it must exist there.
    await waitForReplica(engine)
  })

  afterEach(async () => {
    try {
      for (const recorded of opened) expectNoSecrets(recorded)
    } finally {
      await Promise.all(opened.splice(0).map(({ db }) => db.destroy()))
    }
  })

  afterAll(async () => {
    await queryOnce(engine, cluster.writerUrl, 'drop table if exists ar_rows')
  })

  it("retries a read refused while connecting ('unavailable') and returns its rows", async () => {
    const p = await proxy()
    const { db, retries } = open({ writer: p.url(cluster.writerUrl) })
    p.setMode('refuse')
    // The first attempt is refused; the network heals as soon as the library decides to retry.
    db.on('retry', () => p.setMode('pass'))
    const row = await db.selectNoFrom(sql<number>`1`.as('one')).executeTakeFirstOrThrow()
    expect(Number(row.one)).toBe(1)
    expect(retries).toHaveLength(1)
    const [event] = retries
    expect(event).toMatchObject({
      endpoint: 'writer',
      category: 'unavailable',
      attempt: 1,
      statement: 'read',
    })
    expectRetryShape(event as RetryEvent)
    expect(event?.code).toBeTypeOf('string')
    expect(p.stats().refused).toBeGreaterThanOrEqual(1)
  })

  it('serves the next write and the next read after the idle pooled connection was terminated', async () => {
    const { db } = open({ writer: cluster.writerUrl })
    const k = randomUUID()

    const before = await db.selectNoFrom(sessionId(engine).as('id')).executeTakeFirstOrThrow()
    expect(db.stats().writer).toMatchObject({ total: 1, idle: 1 })
    await terminate(Number(before.id))
    const inserted = await db
      .insertInto('ar_rows')
      .values({ k, note: 'after-kill' })
      .executeTakeFirstOrThrow()
    expect(inserted.numInsertedOrUpdatedRows).toBe(1n)
    expect(await countRows(k)).toBe(1)

    const again = await db.selectNoFrom(sessionId(engine).as('id')).executeTakeFirstOrThrow()
    expect(Number(again.id)).not.toBe(Number(before.id))
    await terminate(Number(again.id))
    const read = await db.selectFrom('ar_rows').select('note').where('k', '=', k).execute()
    expect(read).toEqual([{ note: 'after-kill' }])
  })

  it("retries a SELECT whose connection is cut mid-query ('ambiguous', statement 'read')", async () => {
    const p = await proxy()
    const { db, retries } = open({ writer: p.url(cluster.writerUrl) })
    const alias = marker('ar_m_')
    const started = performance.now()
    const pending = db.selectNoFrom(sleepExpr(engine, 1).as(alias)).execute()
    await waitUntilRunning(alias)
    p.resetAll()
    const rows = await pending
    expect(rows).toHaveLength(1)
    expect(retries).toHaveLength(1)
    expect(retries[0]).toMatchObject({
      endpoint: 'writer',
      category: 'ambiguous',
      attempt: 1,
      statement: 'read',
    })
    expectRetryShape(retries[0] as RetryEvent)
    // The retry ran the whole statement again.
    expect(performance.now() - started).toBeGreaterThanOrEqual(1_000)
  })

  it('never retries an INSERT whose connection is cut mid-statement: the driver error surfaces', async () => {
    const p = await proxy()
    const { db, retries } = open({ writer: p.url(cluster.writerUrl) })
    const k = randomUUID()
    const alias = marker('ar_m_')
    // The server keeps running (and commits) the INSERT after the client's connection is gone.
    const insert =
      engine === 'postgres'
        ? sql`insert into ar_rows (k, note) select ${k}, ${sql.lit(alias)} from pg_sleep(1)`
        : sql`insert into ar_rows (k, note) select ${k}, ${sql.lit(alias)} from dual where sleep(1) = 0`
    const pending = failureOf(insert.execute(db))
    await waitUntilRunning(alias)
    p.resetAll()
    const error = await pending
    expect(error).not.toBeInstanceOf(ResilientError)
    expect(classifyError(error)).toMatchObject({ category: 'ambiguous', connectionLost: true })
    expect(retries).toEqual([])
    // Applied at most once: the interrupted attempt may have committed, a retry would make it two.
    await waitUntilFinished(alias)
    expect(await countRows(k)).toBeLessThanOrEqual(1)
  })

  it('never retries inside a transaction: a statement whose connection is cut fails the transaction', async () => {
    const p = await proxy()
    const { db, retries } = open({ writer: p.url(cluster.writerUrl) })
    const k = randomUUID()
    const alias = marker('ar_m_')
    let statementsRun = 0
    const pending = failureOf(
      db.transaction().execute(async (trx) => {
        await trx.insertInto('ar_rows').values({ k, note: 'trx' }).execute()
        statementsRun++
        await trx.selectNoFrom(sleepExpr(engine, 1).as(alias)).execute()
        statementsRun++
      }),
    )
    await waitUntilRunning(alias)
    p.resetAll()
    const error = await pending
    expect(statementsRun).toBe(1)
    expect(error).not.toBeInstanceOf(ResilientError)
    expect(classifyError(error).connectionLost).toBe(true)
    expect(retries).toEqual([])
    await waitUntilFinished(alias)
    expect(await countRows(k)).toBe(0)
  })

  it('reports a cut COMMIT as ambiguous, never as an error that claims nothing was sent', async () => {
    const p = await proxy()
    const { db, retries } = open({ writer: p.url(cluster.writerUrl), pool: { queryTimeoutMs: 500 } })
    const k = randomUUID()
    const pending = failureOf(
      db.transaction().execute(async (trx) => {
        await trx.insertInto('ar_rows').values({ k, note: 'commit' }).execute()
        // The COMMIT Kysely sends next never gets an answer.
        p.setMode('stall')
      }),
    )
    const error = await pending
    // A caller deciding whether to run the transaction again relies on this: 'unavailable' would
    // tell it the COMMIT never left, which nobody can know.
    expect(classifyError(error).category).toBe('ambiguous')
    expect(retries).toEqual([])
  })

  if (hasReplica(cluster)) {
    it("surfaces the read-only error of a writer that is a replica after bounded 'read-only' retries", async () => {
      const { db, retries, events } = open({ writer: cluster.readerUrl })
      const k = randomUUID()
      const started = performance.now()
      const error = await failureOf(db.insertInto('ar_rows').values({ k, note: 'replica' }).execute())
      const elapsedMs = performance.now() - started
      expect(serverErrorCode(error)).toBe(READ_ONLY_CODE[engine])
      expect(classifyError(error).category).toBe('read-only')
      // Retried until the time budget is spent, not for a fixed count.
      expect(retries.length).toBeGreaterThanOrEqual(4)
      expect(retries.map((e) => e.attempt)).toEqual(retries.map((_, i) => i + 1))
      for (const event of retries) {
        expect(event).toMatchObject({
          endpoint: 'writer',
          category: 'read-only',
          code: READ_ONLY_CODE[engine],
          statement: 'write',
        })
        expectRetryShape(event)
      }
      expect(events.error.length).toBeGreaterThan(0)
      // Default options: retries end once retry.maxElapsedMs (10 s, discovery waits included) is spent.
      expect(elapsedMs).toBeGreaterThan(5_000)
      expect(elapsedMs).toBeLessThan(10_000 + 1_000)
      expect(await countRows(k)).toBe(0)
    })
  }

  it('with retry: false, a refused connection fails at once with the original error', async () => {
    const p = await proxy()
    const { db, retries } = open({ writer: p.url(cluster.writerUrl), retry: false })
    p.setMode('refuse')
    const started = performance.now()
    const error = await failureOf(db.selectNoFrom(sql<number>`1`.as('one')).execute())
    const elapsedMs = performance.now() - started
    expect(error).not.toBeInstanceOf(ResilientError)
    expect(classifyError(error, { phase: 'connect' }).category).toBe('unavailable')
    expect(retries).toEqual([])
    expect(elapsedMs).toBeLessThan(1_000)
    // The same db retries nothing, but works again once the network does.
    p.setMode('pass')
    const row = await db.selectNoFrom(sql<number>`1`.as('one')).executeTakeFirstOrThrow()
    expect(Number(row.one)).toBe(1)
  })
})
