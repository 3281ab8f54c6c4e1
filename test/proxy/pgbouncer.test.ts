import { randomInt } from 'node:crypto'
import { setTimeout as pause } from 'node:timers/promises'
import { sql } from 'kysely'
import pg from 'pg'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  type AuthConfig,
  type CreateDbConfig,
  classifyError,
  createDb,
  QueryTimeoutError,
  type ResilientDb,
  withRetry,
} from '../../src/index.js'
import { newAppPassword, setAppPassword } from '../support/app-password.js'
import { clusterFor, waitForReplica } from '../support/database.js'
import { collectEvents } from '../support/fault-helpers.js'
import { PGBOUNCER_AVAILABLE, type PgBouncer, startPgBouncer } from '../support/pgbouncer.js'
import { pollUntil } from '../support/poll.js'
import { type PostgresCluster, startPostgresCluster } from '../support/postgres-cluster.js'
import { registerSecret } from '../support/secrets.js'
import { pgQuery } from '../support/sql.js'

// Everything that works direct, through a real PgBouncer (Debian's package) in transaction mode, the
// mode that multiplexes: routing, transactions and savepoints, streams, timeouts, validation, RYW,
// reader health, writer discovery and credentials, plus PgBouncer's own faults (PAUSE, restart, its
// error messages) under load. The features run in session mode too; PgBouncer's own faults only in
// transaction mode. The shared cluster's servers are never broken here: PgBouncers are
// this file's own, and the tests that kill a server start a cluster of their own.

interface Database {
  proxy_notes: { id: number; note: string }
}

const TABLE = 'proxy_notes'
const dbs: Array<ResilientDb<Database>> = []
const bouncers: PgBouncer[] = []

afterEach(async () => {
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
})

afterAll(async () => {
  await Promise.all(bouncers.splice(0).map((bouncer) => bouncer.stop()))
})

function track(db: ResilientDb<Database>): ResilientDb<Database> {
  dbs.push(db)
  return db
}

async function bouncer(
  backend: { readonly port: number; readonly appUrl: string },
  options: Parameters<typeof startPgBouncer>[1] = {},
): Promise<PgBouncer> {
  const started = await startPgBouncer(backend, options)
  bouncers.push(started)
  return started
}

function portOf(url: string): number {
  return Number(new URL(url).port)
}

/** A raw pg client through the proxy, for what the library does not do itself (PgBouncer's own errors). */
async function rawClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
  client.on('error', () => {})
  await client.connect()
  return client
}

async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a failure')
    },
    (error: unknown) => error,
  )
}

/**
 * Keeps `workers` loops of reads and idempotent writes running until `stop` resolves, and returns
 * what they saw. A write is an upsert under `withRetry({ idempotent: true })`: running it twice is
 * harmless, so the layer may retry it even when the commit's fate is unknown.
 */
async function underLoad(
  db: ResilientDb<Database>,
  workers: number,
  stop: Promise<void>,
): Promise<{ ok: number; errors: unknown[]; slowestMs: number }> {
  let stopped = false
  void stop.then(() => {
    stopped = true
  })
  const errors: unknown[] = []
  let ok = 0
  let slowestMs = 0
  await Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      for (let round = 0; !stopped; round++) {
        const startedAt = performance.now()
        const id = 1_000_000 + worker
        try {
          if (round % 2 === 0) {
            await db.selectFrom(TABLE).selectAll().where('id', '=', id).execute()
          } else {
            await withRetry(
              () =>
                db
                  .insertInto(TABLE)
                  .values({ id, note: `round ${round}` })
                  .onConflict((conflict) => conflict.column('id').doUpdateSet({ note: `round ${round}` }))
                  .execute(),
              { idempotent: true, maxElapsedMs: 30_000 },
            )
          }
          ok++
        } catch (error) {
          errors.push(error)
        }
        slowestMs = Math.max(slowestMs, performance.now() - startedAt)
        await pause(5)
      }
    }),
  )
  return { ok, errors, slowestMs }
}

function errorSummary(errors: readonly unknown[]): string[] {
  return errors.map((error) => {
    const verdict = classifyError(error)
    return `${(error as Error).name}: ${verdict.code ?? ''} ${verdict.category} (${verdict.reason})`
  })
}

for (const mode of ['transaction', 'session'] as const) {
  describe.skipIf(!PGBOUNCER_AVAILABLE)(`behind PgBouncer in ${mode} mode`, () => {
    const info = clusterFor('postgres')
    let writer: PgBouncer
    let reader: PgBouncer

    beforeAll(async () => {
      ;[writer, reader] = await Promise.all([
        bouncer({ port: portOf(info.writerUrl), appUrl: info.writerUrl }, { poolMode: mode }),
        bouncer({ port: portOf(info.readerUrl), appUrl: info.readerUrl }, { poolMode: mode }),
      ])
      await pgQuery(
        info.adminWriterUrl,
        `create table if not exists ${TABLE} (id int primary key, note text not null)`,
      )
      await pgQuery(info.adminWriterUrl, `grant all on ${TABLE} to app`)
      await waitForReplica('postgres')
    }, 60_000)

    function routed(extra: Partial<CreateDbConfig> = {}): ResilientDb<Database> {
      return track(
        createDb<Database>({
          dialect: 'postgres',
          writer: writer.url,
          readers: reader.url,
          proxy: 'pgbouncer',
          ...extra,
        }),
      )
    }

    it('routes reads to the replica and writes to the primary, each through its own PgBouncer', async () => {
      const db = routed()
      const id = randomInt(1, 1_000_000)
      await db.insertInto(TABLE).values({ id, note: 'routed' }).execute()
      const [read] = await db.selectNoFrom(sql<boolean>`pg_is_in_recovery()`.as('standby')).execute()
      expect(read?.standby).toBe(true)
      // A raw statement may write: the writer.
      const { rows } = await sql<{ standby: boolean }>`select pg_is_in_recovery() as standby`.execute(db)
      expect(rows[0]?.standby).toBe(false)
      const stats = db.stats()
      expect(stats.writer.proxy).toBe('pgbouncer')
      expect(stats.readers[0]?.proxy).toBe('pgbouncer')
      expect(stats.writer.address).toContain(`:${writer.port}/`)
      // PgBouncer served them: its pools saw the app's transactions.
      const pools = await writer.admin('SHOW STATS')
      expect(Number(pools.find((row) => row.database === 'app')?.total_xact_count)).toBeGreaterThan(0)
    })

    it('keeps a transaction on one server session, with savepoints and rollback to them', async () => {
      const db = routed()
      const [a, b] = [randomInt(1, 1_000_000), randomInt(1_000_001, 2_000_000)]
      const trx = await db.startTransaction().execute()
      const pid = async (): Promise<number> =>
        Number((await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]?.pid)
      const first = await pid()
      await trx.insertInto(TABLE).values({ id: a, note: 'kept' }).execute()
      const saved = await trx.savepoint('before_b').execute()
      await saved.insertInto(TABLE).values({ id: b, note: 'rolled back' }).execute()
      // Other clients' traffic in between: in transaction mode PgBouncer must not lend this session out.
      await Promise.all(Array.from({ length: 10 }, () => sql`select 1`.execute(db)))
      const back = await saved.rollbackToSavepoint('before_b').execute()
      expect(await pid()).toBe(first)
      await back.commit().execute()

      const { rows } = await sql<{ id: number }>`select id from proxy_notes where id in (${a}, ${b})`.execute(
        db,
      )
      expect(rows.map((row) => row.id)).toEqual([a])
    })

    it('refuses writes in a read-only transaction and serves reads in it', async () => {
      const db = routed()
      const error = await failure(
        db
          .transaction()
          .setAccessMode('read only')
          .execute((trx) =>
            trx
              .insertInto(TABLE)
              .values({ id: randomInt(1, 1_000_000), note: 'no' })
              .execute(),
          ),
      )
      expect((error as { code?: string }).code).toBe('25006')
      const rows = await db
        .transaction()
        .setAccessMode('read only')
        .execute((trx) => trx.selectNoFrom(sql<number>`1`.as('one')).execute())
      expect(rows).toEqual([{ one: 1 }])
    })

    it('streams with a cursor outside and inside a transaction while other statements share the proxy', async () => {
      const db = routed({ pool: { max: 4 } })
      const series = sql<{ g: number }>`(select generate_series(1, 500) as g)`.as('s')
      let seen = 0
      let sum = 0
      for await (const row of db.selectFrom(series).selectAll().stream(50)) {
        seen++
        sum += Number(row.g)
        // Between chunks, other statements run through the same PgBouncer.
        if (seen % 100 === 0) await sql`select 1`.execute(db)
      }
      expect([seen, sum]).toEqual([500, (500 * 501) / 2])

      const inside = await db.transaction().execute(async (trx) => {
        let count = 0
        for await (const _ of trx.selectFrom(series).selectAll().stream(100)) count++
        return count
      })
      expect(inside).toBe(500)
    })

    it('ends a statement at queryTimeoutMs and the connection is replaced', async () => {
      const db = routed({ pool: { queryTimeoutMs: 300 } })
      const startedAt = performance.now()
      const error = await failure(sql`select pg_sleep(30)`.execute(db))
      expect(error).toBeInstanceOf(QueryTimeoutError)
      expect(performance.now() - startedAt).toBeLessThan(3_000)
      // The client connection was destroyed; PgBouncer dropped the server session it had lent.
      await expect(sql`select 1`.execute(db)).resolves.toBeDefined()
    })

    it.each(['cancel query', 'kill session'] as const)(
      "an aborted statement with '%s' rejects at once, and its connection is never reused",
      async (strategy) => {
        let opened = 0
        const db = track(
          createDb<Database>({
            dialect: 'postgres',
            writer: writer.url,
            proxy: 'pgbouncer',
            onCreateConnection: async () => {
              opened++
            },
          }),
        )
        await sql`select 1`.execute(db)
        expect(opened).toBe(1)
        const controller = new AbortController()
        const statement = db
          .selectNoFrom(sql<number>`pg_sleep(30)`.as('slept'))
          .execute({ signal: controller.signal, inflightQueryAbortStrategy: strategy })
        statement.catch(() => {})
        await pause(300)
        const reason = new Error('caller gave up')
        const abortedAt = performance.now()
        controller.abort(reason)
        expect(await failure(statement)).toBe(reason)
        expect(performance.now() - abortedAt).toBeLessThan(1_000)
        // The cancel went out as a CancelRequest that PgBouncer forwards when it can (1.18 was seen to
        // deliver one late, to the client's next statement): that connection is gone, a new one serves.
        await pollUntil(async () => (db.stats().writer.total <= 1 ? true : undefined), {
          timeoutMs: 5_000,
          what: 'the cancelled connection to be closed',
        })
        await expect(sql`select 1`.execute(db)).resolves.toBeDefined()
        expect(opened).toBe(2)
        // PgBouncer 1.18 aborted when a cancelled client hung up while it still forwarded the cancel;
        // the library waits for the proxy to close the cancel connection first.
        expect(await writer.admin('SHOW VERSION')).toHaveLength(1)
      },
    )

    it('reads its own writes on the replica through the proxies, in a scope and by token', async () => {
      const db = routed()
      const id = randomInt(1, 1_000_000)
      await db.withReadYourWrites(async () => {
        await db
          .insertInto(TABLE)
          .values({ id, note: 'mine' })
          .onConflict((c) => c.column('id').doNothing())
          .execute()
        const row = await db.selectFrom(TABLE).selectAll().where('id', '=', id).executeTakeFirst()
        expect(row?.id).toBe(id)
      })
      await sql`update proxy_notes set note = 'updated' where id = ${id}`.execute(db)
      const token = await db.consistencyToken()
      const other = routed()
      const note = await other.withReadYourWrites(
        () => other.selectFrom(TABLE).select('note').where('id', '=', id).executeTakeFirst(),
        { after: token },
      )
      expect(note?.note).toBe('updated')
    })

    it("measures the replica's lag and finds the writer among candidates, through the proxies", async () => {
      const db = routed({
        writer: [reader.url, writer.url],
        routing: { maxReplicaLagMs: 30_000, lagCheckIntervalMs: 100 },
      })
      await db
        .insertInto(TABLE)
        .values({ id: randomInt(1, 1_000_000), note: 'found' })
        .execute()
      expect(db.stats().writer.address).toContain(`:${writer.port}/`)
      await pollUntil(async () => (db.stats().readers[0]?.lagMs !== undefined ? true : undefined), {
        timeoutMs: 10_000,
        what: 'a lag measurement of the reader behind PgBouncer',
      })
      expect(db.stats().readers[0]?.lagMs).toBeGreaterThanOrEqual(0)
    })

    // PgBouncer's own faults and errors: transaction mode, the multiplexing one, is where they matter.
    if (mode === 'transaction') {
      it('validates idle connections across a PgBouncer restart and a RECONNECT', async () => {
        const own = await bouncer({ port: portOf(info.writerUrl), appUrl: info.writerUrl })
        const db = track(
          createDb<Database>({
            dialect: 'postgres',
            writer: own.url,
            proxy: 'pgbouncer',
            pool: { validateAfterIdleMs: 1 },
          }),
        )
        const events = collectEvents(db)
        await sql`select 1`.execute(db)
        await own.admin('RECONNECT app')
        await sql`select 1`.execute(db)
        await own.process.kill('SIGKILL')
        await own.process.start()
        await pause(5)
        const { rows } = await sql<{ one: number }>`select 1 as one`.execute(db)
        expect(rows[0]?.one).toBe(1)
        expect(events.error).toEqual([])
      })

      it('without the proxy setting, the startup parameter PgBouncer refuses is explained, not retried', async () => {
        const db = track(
          createDb<Database>({
            dialect: 'postgres',
            writer: writer.url,
            pool: { statementTimeoutMs: 5_000 },
          }),
        )
        const error = await failure(sql`select 1`.execute(db))
        const verdict = classifyError(error)
        expect(verdict).toMatchObject({ category: 'fatal', retryable: false, code: '08P01' })
        expect(verdict.reason).toContain('proxy setting')
        // And with it, createDb refuses the setting up front.
        expect(() =>
          createDb({
            dialect: 'postgres',
            writer: writer.url,
            proxy: 'pgbouncer',
            pool: { statementTimeoutMs: 5_000 },
          }),
        ).toThrow(/pool\.statementTimeoutMs: cannot be used behind PgBouncer/)
      })

      it("classifies PgBouncer's own errors, as it sends them, by whether the statement was sent", async () => {
        const own = await bouncer(
          { port: portOf(info.writerUrl), appUrl: info.writerUrl },
          { defaultPoolSize: 1, maxClientConn: 3, queryWaitTimeoutS: 1 },
        )
        const holder = await rawClient(own.url)
        const waiter = await rawClient(own.url)
        try {
          // The pool's one server session is held by an open transaction: the next client waits, then
          // PgBouncer gives up. Nothing was sent to the server.
          await holder.query('begin')
          await holder.query('select 1')
          const waited = await failure(waiter.query('select 1'))
          expect(classifyError(waited)).toMatchObject({
            category: 'unavailable',
            retryable: true,
            connectionLost: true,
          })
          await holder.query('commit')

          // max_client_conn (3; the waiter was disconnected, the holder stays): refused at login.
          const extra = await Promise.allSettled([rawClient(own.url), rawClient(own.url), rawClient(own.url)])
          const refused = extra.flatMap((result) => (result.status === 'rejected' ? [result.reason] : []))
          expect(refused.length).toBeGreaterThan(0)
          for (const error of refused) {
            expect(classifyError(error, { phase: 'connect' })).toMatchObject({
              category: 'unavailable',
              retryable: true,
            })
            expect(String((error as Error).message)).toMatch(/max_client_conn/)
          }
          await Promise.all(
            extra.map((result) => (result.status === 'fulfilled' ? result.value.end() : undefined)),
          )

          // KILL drops the database under a running statement: its fate is unknown.
          const running = holder.query('select pg_sleep(2)')
          running.catch(() => {})
          await pause(200)
          await own.admin('KILL app')
          const killed = await failure(running)
          expect(classifyError(killed)).toMatchObject({
            category: 'ambiguous',
            code: '08P01',
            connectionLost: true,
          })
          await own.admin('RESUME app')

          // DISABLE refuses new clients: unavailable.
          await own.admin('DISABLE app')
          const disabled = await failure(rawClient(own.url))
          expect(classifyError(disabled)).toMatchObject({ category: 'unavailable', retryable: true })
          await own.admin('ENABLE app')
        } finally {
          await Promise.all([holder.end().catch(() => {}), waiter.end().catch(() => {})])
        }
      })

      it('a 3 s PAUSE under load surfaces no error for reads and idempotent writes', async () => {
        const own = await bouncer({ port: portOf(info.writerUrl), appUrl: info.writerUrl })
        const db = track(createDb<Database>({ dialect: 'postgres', writer: own.url, proxy: 'pgbouncer' }))
        const events = collectEvents(db)
        const load = underLoad(
          db,
          8,
          (async () => {
            await pause(500)
            await own.admin('PAUSE app')
            await pause(3_000)
            await own.admin('RESUME app')
            await pause(1_000)
          })(),
        )
        const { ok, errors, slowestMs } = await load
        expect(errorSummary(errors)).toEqual([])
        expect(ok).toBeGreaterThan(50)
        // The pause really held statements back.
        expect(slowestMs).toBeGreaterThan(2_000)
        // Statements queued in PgBouncer look like a server that stopped answering: the liveness monitor
        // said so (the operator sees it), failed them, and the layer retried them past the RESUME.
        expect(new Set(events.error.map((event) => event.code))).toEqual(new Set(['SERVER_UNRESPONSIVE']))
      }, 30_000)

      it("a reader's PgBouncer going down ejects the reader, reads keep working, and it is restored when PgBouncer is back", async () => {
        const ownReader = await bouncer({ port: portOf(info.readerUrl), appUrl: info.readerUrl })
        const db = track(
          createDb<Database>({
            dialect: 'postgres',
            writer: writer.url,
            readers: [ownReader.url],
            proxy: 'pgbouncer',
            routing: { readerCooldownMs: 200, maxReplicaLagMs: 30_000, lagCheckIntervalMs: 100 },
          }),
        )
        const events = collectEvents(db)
        const standby = () => db.selectNoFrom(sql<boolean>`pg_is_in_recovery()`.as('standby')).execute()
        expect((await standby())[0]?.standby).toBe(true)
        await ownReader.process.kill('SIGKILL')
        // Every read still answers: the refused reader is ejected and the read runs on the writer.
        for (let i = 0; i < 5; i++) expect(await standby()).toHaveLength(1)
        await pollUntil(async () => (events['reader-ejected'].length > 0 ? true : undefined), {
          timeoutMs: 5_000,
          what: 'the reader behind the dead PgBouncer to be ejected',
        })
        expect(events['reader-ejected'][0]).toMatchObject({ endpoint: 'reader-0', reason: 'unreachable' })
        expect((await standby())[0]?.standby).toBe(false)
        await ownReader.process.start()
        await pollUntil(async () => (events['reader-restored'].length > 0 ? true : undefined), {
          timeoutMs: 10_000,
          what: 'the reader to be restored once its PgBouncer is back',
        })
        expect((await standby())[0]?.standby).toBe(true)
        // Its lag is measured through the PgBouncer again.
        await pollUntil(async () => (db.stats().readers[0]?.lagMs !== undefined ? true : undefined), {
          timeoutMs: 5_000,
          what: 'a lag measurement through the restarted PgBouncer',
        })
      }, 30_000)

      it('a PgBouncer restart under load surfaces no error for reads and idempotent writes', async () => {
        const own = await bouncer({ port: portOf(info.writerUrl), appUrl: info.writerUrl })
        const db = track(createDb<Database>({ dialect: 'postgres', writer: own.url, proxy: 'pgbouncer' }))
        const load = underLoad(
          db,
          8,
          (async () => {
            await pause(500)
            await own.process.kill('SIGTERM')
            await pause(1_000)
            await own.process.start()
            await pause(1_500)
          })(),
        )
        const { ok, errors } = await load
        expect(errorSummary(errors)).toEqual([])
        expect(ok).toBeGreaterThan(50)
      }, 30_000)
    }
  })
}

describe.skipIf(!PGBOUNCER_AVAILABLE)('behind PgBouncer in session mode, session state', () => {
  const info = clusterFor('postgres')

  it('keeps session state in db.connection() across transactions', async () => {
    const own = await bouncer(
      { port: portOf(info.writerUrl), appUrl: info.writerUrl },
      { poolMode: 'session' },
    )
    const db = track(createDb<Database>({ dialect: 'postgres', writer: own.url, proxy: 'pgbouncer' }))
    const value = await db.connection().execute(async (connection) => {
      await sql`select set_config('app.marker', 'session-kept', false)`.execute(connection)
      await connection.transaction().execute((trx) => sql`select 1`.execute(trx))
      return (await sql<{ v: string }>`select current_setting('app.marker', true) as v`.execute(connection))
        .rows[0]?.v
    })
    expect(value).toBe('session-kept')
  })
})

describe.skipIf(!PGBOUNCER_AVAILABLE)('behind PgBouncer, when the server fails', () => {
  let cluster: PostgresCluster
  let front: PgBouncer
  let standbyFront: PgBouncer

  beforeAll(async () => {
    cluster = await startPostgresCluster()
    registerSecret(cluster.password)
    await pgQuery(
      cluster.adminWriterUrl,
      `create table ${TABLE} (id int primary key, note text not null); grant all on ${TABLE} to app`,
    )
    front = await bouncer({ port: cluster.primary.port, appUrl: cluster.writerUrl })
    standbyFront = await bouncer({
      port: (cluster.replica as { port: number }).port,
      appUrl: cluster.readerUrl,
    })
  }, 120_000)

  afterAll(async () => {
    await cluster?.stop()
  })

  it('the server killed under a statement: "server conn crashed?" is ambiguous; reads come back after the restart', async () => {
    const db = track(createDb<Database>({ dialect: 'postgres', writer: front.url, proxy: 'pgbouncer' }))
    await sql`select 1`.execute(db)
    const running = sql`select pg_sleep(5)`.execute(db)
    running.catch(() => {})
    await pause(300)
    await cluster.primary.kill('SIGKILL')
    const crashed = await failure(running)
    expect(classifyError(crashed)).toMatchObject({ category: 'ambiguous', connectionLost: true })
    expect(String((crashed as Error).message)).toMatch(/server conn crashed/)
    await cluster.primary.start()
    // PgBouncer logs in again after server_login_retry (1 s here; 15 s by default): reads retry past it.
    const rows = await db.selectFrom(TABLE).selectAll().execute()
    expect(rows).toEqual([])
  }, 60_000)

  it('a credential rotation through PgBouncer costs one refetch and no error', async () => {
    const original = newAppPassword()
    await setAppPassword('postgres', cluster, original)
    let current = original
    let calls = 0
    const auth: AuthConfig = {
      type: 'token',
      getToken: async () => {
        calls++
        return current
      },
      ttlMs: 3_600_000,
    }
    const url = new URL(front.url)
    url.password = ''
    const db = track(
      createDb<Database>({ dialect: 'postgres', writer: url.toString(), auth, proxy: 'pgbouncer' }),
    )
    const events = collectEvents(db)
    try {
      await db.connection().execute(async (held) => {
        await sql`select 1`.execute(held)
        const rotated = newAppPassword()
        await setAppPassword('postgres', cluster, rotated)
        current = rotated
        // New client connections to PgBouncer present the old password, are refused, refetch once.
        await Promise.all(
          Array.from({ length: 20 }, () => db.connection().execute((c) => sql`select 1`.execute(c))),
        )
        await sql`select 1`.execute(held)
      })
    } finally {
      await setAppPassword('postgres', cluster, cluster.password)
    }
    expect(calls).toBe(2)
    expect(events.error).toEqual([])
  })

  it('after a failover, writes find the promoted replica behind its own PgBouncer', async () => {
    const db = track(
      createDb<Database>({ dialect: 'postgres', writer: [front.url, standbyFront.url], proxy: 'pgbouncer' }),
    )
    await db.insertInto(TABLE).values({ id: 1, note: 'before' }).execute()
    await pollUntil(
      async () =>
        (await pgQuery(cluster.adminReaderUrl, `select count(*)::int as n from ${TABLE}`))[0]?.n === 1
          ? true
          : undefined,
      { timeoutMs: 10_000, what: 'the replica to replay the first write' },
    )
    await cluster.primary.kill('SIGKILL')
    await (cluster.replica as { promote(): Promise<void> }).promote()
    await withRetry(
      () =>
        db
          .insertInto(TABLE)
          .values({ id: 2, note: 'after' })
          .onConflict((c) => c.column('id').doNothing())
          .execute(),
      { idempotent: true, maxElapsedMs: 30_000 },
    )
    expect(db.stats().writer.address).toContain(`:${standbyFront.port}/`)
    const rows = await pgQuery(cluster.adminReaderUrl, `select id from ${TABLE} order by id`)
    expect(rows.map((row) => row.id)).toEqual([1, 2])
  }, 60_000)
})
