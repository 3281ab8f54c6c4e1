// Driver options (`pg`, `mysql2`) and Kysely's connection hooks through createDb, on real servers:
// each takes effect on the writer and on the readers, exactly as it would on the driver itself.
import { type Kysely, sql } from 'kysely'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import {
  ConnectionHookTimeoutError,
  type CreateDbConfig,
  classifyError,
  createDb,
  type ResilientDb,
} from '../../src/index.js'
import { type ClusterInfo, describeEngines, type Engine } from '../support/database.js'
import { queryOnce } from '../support/sql.js'

type Db = ResilientDb<Record<string, never>>

describeEngines('driver options and connection hooks', (engine, cluster) => {
  const dbs: Db[] = []
  afterEach(async () => {
    await Promise.all(dbs.splice(0).map((db) => db.destroy()))
  })

  const open = (extra: Partial<CreateDbConfig> = {}): Db => {
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: cluster.writerUrl,
      readers: [cluster.readerUrl],
      ...extra,
    } as CreateDbConfig)
    dbs.push(db)
    return db
  }

  /** Whether the server that ran a statement is the replica: by the port it serves on. */
  const readerPort = Number(new URL(cluster.readerUrl).port)
  const servedBy = engine === 'postgres' ? sql<unknown>`inet_server_port()` : sql<unknown>`@@port`
  const isReplica = (port: unknown) => Number(port) === readerPort

  /** One row from the auto-routed db (a read: a reader) and one from db.writer. */
  const onBoth = async <R extends Record<string, unknown>>(
    db: Db,
    select: (db: Kysely<Record<string, never>>) => Promise<R>,
  ): Promise<{ reader: R; writer: R }> => {
    const reader = await select(db)
    const writer = await select(db.writer)
    return { reader, writer }
  }

  if (engine === 'postgres') {
    it('pg types: a custom int8 parser turns count(*) into a number on the writer and the readers', async () => {
      const count = (db: Kysely<Record<string, never>>) =>
        db.selectNoFrom([sql<unknown>`count(*)`.as('n'), servedBy.as('standby')]).executeTakeFirstOrThrow()
      const plain = await onBoth(open(), count)
      expect(plain.reader.n).toBe('1')
      const types = {
        getTypeParser: (oid: number, format?: 'text' | 'binary') =>
          oid === 20 ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format),
      }
      const parsed = await onBoth(open({ pg: { types } }), count)
      expect(parsed).toMatchObject({ reader: { n: 1 }, writer: { n: 1 } })
      expect([isReplica(parsed.reader.standby), isReplica(parsed.writer.standby)]).toEqual([true, false])
    })

    it('pg application_name and options reach the session, an endpoint’s own winning; sessionIdleTimeoutMs still applies', async () => {
      const db = open({
        readers: [{ url: cluster.readerUrl, pg: { application_name: 'orders-api-reports' } }],
        pg: { application_name: 'orders-api', options: '-c search_path=app_schema,public' },
        pool: { sessionIdleTimeoutMs: 60_000 },
      })
      const settings = await onBoth(db, (on) =>
        on
          .selectNoFrom([
            sql<string>`current_setting('application_name')`.as('app'),
            sql<string>`current_setting('search_path')`.as('path'),
            sql<string>`current_setting('idle_session_timeout')`.as('idle'),
          ])
          .executeTakeFirstOrThrow(),
      )
      expect(settings).toEqual({
        reader: { app: 'orders-api-reports', path: 'app_schema,public', idle: '1min' },
        writer: { app: 'orders-api', path: 'app_schema,public', idle: '1min' },
      })
      // Without the option, the library's own name.
      const [row] = (
        await sql<{ app: string }>`select current_setting('application_name') as app`.execute(open())
      ).rows
      expect(row?.app).toBe('kysely-resilient')
    })
  } else {
    it('mysql2 supportBigNumbers + bigNumberStrings: count(*) comes back as a string on the writer and the readers', async () => {
      const count = (db: Kysely<Record<string, never>>) =>
        db.selectNoFrom([sql<unknown>`count(*)`.as('n'), servedBy.as('standby')]).executeTakeFirstOrThrow()
      const plain = await onBoth(open(), count)
      expect(plain.reader.n).toBe(1)
      const strings = await onBoth(
        open({ mysql2: { supportBigNumbers: true, bigNumberStrings: true } }),
        count,
      )
      expect(strings.reader.n).toBe('1')
      expect(strings.writer.n).toBe('1')
      expect(isReplica(strings.reader.standby)).toBe(true)
      expect(isReplica(strings.writer.standby)).toBe(false)
    })

    it('mysql2 dateStrings and typeCast change the values, an endpoint’s own options merged over the top level', async () => {
      const db = open({
        mysql2: { dateStrings: true },
        readers: [
          {
            url: cluster.readerUrl,
            mysql2: {
              typeCast: (field, next) =>
                field.type === 'VAR_STRING' ? (field.string() ?? '').toUpperCase() : next(),
            },
          },
        ],
      })
      const values = await onBoth(db, (on) =>
        on
          .selectNoFrom([
            sql<unknown>`cast('2024-01-02 03:04:05' as datetime)`.as('at'),
            sql<string>`'abc'`.as('text'),
          ])
          .executeTakeFirstOrThrow(),
      )
      expect(values).toEqual({
        reader: { at: '2024-01-02 03:04:05', text: 'ABC' },
        writer: { at: '2024-01-02 03:04:05', text: 'abc' },
      })
    })
  }

  describe('hooks', () => {
    /** Sets a session variable, so every statement can tell whether its connection was hooked. */
    const markSession = (value: string) =>
      engine === 'postgres'
        ? sql`select set_config('app.hooked', ${value}, false)`
        : sql`set @hooked = ${value}`
    // A SELECT built with the query builder: a read, so it is retried when its connection turns out
    // to be gone (raw SQL is treated as a possible write and is not).
    const readMark = (db: Kysely<Record<string, never>>) =>
      db
        .selectNoFrom(
          (engine === 'postgres'
            ? sql<string | null>`current_setting('app.hooked', true)`
            : sql<string | null>`@hooked`
          ).as('mark'),
        )
        .executeTakeFirstOrThrow()
        .then((row) => row.mark ?? null)

    it('onCreateConnection runs once on every new connection of every endpoint', async () => {
      const created: string[] = []
      const db = open({
        onCreateConnection: async (connection) => {
          created.push('top')
          await connection.executeQuery(markSession('top').compile(db))
        },
        readers: [
          {
            url: cluster.readerUrl,
            onCreateConnection: async (connection) => {
              created.push('reader')
              await connection.executeQuery(markSession('reader').compile(db))
            },
          },
        ],
      })
      expect(await readMark(db.writer)).toBe('top')
      expect(await readMark(db.reader as unknown as Kysely<Record<string, never>>)).toBe('reader')
      // Reused connections are not hooked again.
      for (let i = 0; i < 5; i++)
        await Promise.all([
          readMark(db.writer),
          readMark(db.reader as unknown as Kysely<Record<string, never>>),
        ])
      expect(created.sort()).toEqual(['reader', 'top'])
    })

    it('onCreateConnection runs again on the connection that replaces one the server ended', async () => {
      let created = 0
      const db = open({
        readers: [],
        onCreateConnection: async (connection) => {
          created++
          await connection.executeQuery(markSession(`hooked-${created}`).compile(db))
        },
      })
      expect(await readMark(db)).toBe('hooked-1')
      // The server ends the session (as a restart or a failover does): the read is retried on a new
      // connection, which is hooked before it runs.
      await terminateSessions(engine, cluster, db)
      expect(await readMark(db)).toBe('hooked-2')
      expect(created).toBe(2)
    })

    it('onReserveConnection runs each time a connection is taken from the pool', async () => {
      let reserved = 0
      const db = open({
        onReserveConnection: async () => {
          reserved++
        },
      })
      for (let i = 0; i < 4; i++) await readMark(db)
      await db.transaction().execute(async (trx) => {
        await readMark(trx)
        await readMark(trx)
      })
      // Four statements, one transaction: five reservations.
      expect(reserved).toBe(5)
    })

    it('a hook that fails fails the statement with its error and closes the connection', async () => {
      let failNext = true
      const failure = new Error('hook refused')
      const db = open({
        readers: [],
        retry: false,
        onCreateConnection: async () => {
          if (failNext) {
            failNext = false
            throw failure
          }
        },
      })
      await expect(readMark(db)).rejects.toBe(failure)
      expect(db.stats().writer.total).toBe(0)
      expect(await readMark(db)).toBeNull()
    })

    it('a hook that never finishes costs the caller pool.acquireTimeoutMs, then a ConnectionHookTimeoutError', async () => {
      let hang = true
      const db = open({
        readers: [],
        retry: false,
        pool: { acquireTimeoutMs: 300 },
        onReserveConnection: () => (hang ? new Promise<void>(() => {}) : Promise.resolve()),
      })
      const startedAt = performance.now()
      const error = await readMark(db).then(
        () => undefined,
        (caught: unknown) => caught,
      )
      const elapsedMs = performance.now() - startedAt
      expect(error).toBeInstanceOf(ConnectionHookTimeoutError)
      expect(error).toMatchObject({
        endpoint: 'writer',
        hook: 'onReserveConnection',
        code: 'CONNECTION_HOOK_TIMEOUT',
      })
      expect(classifyError(error)).toMatchObject({ category: 'unavailable', retryable: true })
      expect(elapsedMs).toBeGreaterThanOrEqual(290)
      expect(elapsedMs).toBeLessThan(3_000)
      // The connection it hung on was closed, and the pool serves again.
      hang = false
      expect(await readMark(db)).toBeNull()
    })
  })
})

/** Ends every session of `db`'s writer from the server side, as a failover or a restart would. */
async function terminateSessions(engine: Engine, cluster: ClusterInfo, db: Db): Promise<void> {
  const id =
    engine === 'postgres'
      ? sql<{ id: number }>`select pg_backend_pid() as id`
      : sql<{ id: number }>`select connection_id() as id`
  const [row] = (await id.execute(db.writer)).rows
  const sessionId = Number(row?.id)
  await queryOnce(
    engine,
    cluster.adminWriterUrl,
    engine === 'postgres' ? `select pg_terminate_backend(${sessionId})` : `kill ${sessionId}`,
  )
}
