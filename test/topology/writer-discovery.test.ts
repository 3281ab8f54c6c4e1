import { setTimeout as pause } from 'node:timers/promises'
import { CompiledQuery, type Generated, type RawBuilder, sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import {
  type ConnectionHook,
  ConnectTimeoutError,
  classifyError,
  createDb,
  type ResilientDb,
} from '../../src/index.js'
import { collectEvents, type EventLog, sessionId, sleepExpr } from '../support/fault-helpers.js'
import { FaultProxy } from '../support/fault-proxy.js'
import {
  AVAILABLE,
  ENGINES,
  type OwnCluster,
  ownClustersForThisFile,
  replicaOf,
} from '../support/own-clusters.js'
import { pollUntil } from '../support/poll.js'
import { waitForReplica } from '../support/replication.js'
import { type Engine, queryOnce, serverErrorCode } from '../support/sql.js'

// Writer discovery through createDb: finding the writer among several candidates at startup, after a
// failover (a promoted replica), after a DNS flip, and after the writer turned read-only. These tests
// stop and promote servers, so every scenario runs on clusters of its own.

interface Database {
  beat: { id: Generated<number>; note: string }
}

/** One cluster per scenario that breaks servers; 'steady' is only ever restored to how it was. */
const SCENARIOS = ['steady', 'failover', 'dnsFlip', 'bounded'] as const
type Scenario = (typeof SCENARIOS)[number]

const READ_ONLY_ERROR: Record<Engine, string> = { postgres: '25006', mysql: '1290' }

const clusters = ownClustersForThisFile({
  variants: SCENARIOS,
  prepare: async (engine, cluster) => {
    await queryOnce(engine, cluster.writerUrl, CREATE_TABLE[engine])
    await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
  },
})

const clusterFor = (engine: Engine, scenario: Scenario): OwnCluster => clusters.of(engine, scenario)

/** The port of the server that ran the statement: tells the primary from the (promoted) replica. */
function serverPort(engine: Engine): RawBuilder<number> {
  return engine === 'postgres' ? sql<number>`inet_server_port()` : sql<number>`@@port`
}

/** onCreateConnection marks each new session with the port it was opened to; this reads the mark. */
function sessionMark(engine: Engine): RawBuilder<string | null> {
  return engine === 'postgres'
    ? sql<string | null>`current_setting('app.opened_on', true)`
    : sql<string | null>`@opened_on`
}

/** A hook that marks each new session with the port of its server, and counts the sessions. */
function markingHook(engine: Engine, opened: number[]): ConnectionHook {
  return async (connection) => {
    const [row] = (
      await connection.executeQuery<{ port: number }>(
        CompiledQuery.raw(
          engine === 'postgres' ? 'select inet_server_port() as port' : 'select @@port as port',
        ),
      )
    ).rows
    opened.push(Number(row?.port))
    await connection.executeQuery(
      CompiledQuery.raw(
        engine === 'postgres'
          ? `select set_config('app.opened_on', '${Number(row?.port)}', false)`
          : `set @opened_on = '${Number(row?.port)}'`,
      ),
    )
  }
}

const CREATE_TABLE: Record<Engine, string> = {
  postgres: 'CREATE TABLE beat (id serial PRIMARY KEY, note varchar(100) NOT NULL)',
  mysql: 'CREATE TABLE beat (id integer PRIMARY KEY AUTO_INCREMENT, note varchar(100) NOT NULL)',
}

/** Every db a test creates, with the password its events must never contain (checked after each test). */
const recorded: Array<{ readonly events: EventLog; readonly password: string }> = []

function recordEvents(db: ResilientDb<Database>, password: string): EventLog {
  const events = collectEvents(db)
  recorded.push({ events, password })
  return events
}

interface WriteLoop {
  /** performance.now() at the end of each successful write. */
  readonly successes: number[]
  /** Errors surfaced to the caller (after the library's own retries). */
  readonly errors: unknown[]
  stop(): Promise<void>
}

/** Writes steadily (one at a time, ~10 ms apart) and keeps going after errors, like a busy app. */
function writeSteadily(db: ResilientDb<Database>, note: string): WriteLoop {
  const successes: number[] = []
  const errors: unknown[] = []
  let running = true
  const done = (async () => {
    while (running) {
      try {
        await db.insertInto('beat').values({ note }).execute()
        successes.push(performance.now())
      } catch (error) {
        errors.push(error)
      }
      await pause(10)
    }
  })()
  return {
    successes,
    errors,
    stop: async () => {
      running = false
      await done
    },
  }
}

function firstSuccessAfter(loop: WriteLoop, since: number, what: string): Promise<number> {
  return pollUntil(async () => loop.successes.find((at) => at > since), {
    timeoutMs: 20_000,
    intervalMs: 5,
    what,
  })
}

afterEach(() => {
  // No event may carry the password: they go to logs and metrics.
  for (const { events, password } of recorded.splice(0)) {
    expect(JSON.stringify(events)).not.toContain(password)
  }
})

for (const engine of ENGINES) {
  describe(`writer discovery [${engine}]`, () => {
    if (!AVAILABLE[engine]) {
      it.skip(`!!! SKIPPED: no local ${engine} server binaries to start clusters with !!!`, () => {})
      return
    }
    const port = serverPort(engine)
    const session = sessionId(engine)

    it('finds the primary at startup when a replica is listed first', async () => {
      const cluster = clusterFor(engine, 'steady')
      const db = createDb<Database>({ dialect: engine, writer: [cluster.readerUrl, cluster.writerUrl] })
      const events = recordEvents(db, cluster.password)
      try {
        const result = await db.insertInto('beat').values({ note: 'startup' }).executeTakeFirstOrThrow()
        expect(result.numInsertedOrUpdatedRows).toBe(1n)
        const stats = db.stats()
        expect(stats.writer.name).toBe('writer-1')
        expect(stats.writers.map((writer) => [writer.name, writer.queries])).toEqual([
          ['writer-0', 0],
          ['writer-1', 1],
        ])
        const served = await db.writer.selectNoFrom(port.as('port')).executeTakeFirstOrThrow()
        expect(Number(served.port)).toBe(cluster.primary.port)
        // Finding the writer at startup is not a failover.
        expect(events.failover).toEqual([])
        expect(events.retry).toEqual([])
      } finally {
        await db.destroy()
      }
    })

    it('follows a failover to the promoted replica without any manual action', async ({ annotate }) => {
      const cluster = clusterFor(engine, 'failover')
      const replica = replicaOf(cluster)
      const opened: number[] = []
      const db = createDb<Database>({
        dialect: engine,
        writer: [cluster.writerUrl, cluster.readerUrl],
        pool: { connectTimeoutMs: 2_000 },
        onCreateConnection: markingHook(engine, opened),
      })
      const events = recordEvents(db, cluster.password)
      let loop: WriteLoop | undefined
      try {
        await db.insertInto('beat').values({ note: 'before' }).execute()
        expect(db.stats().writer.name).toBe('writer-0')
        loop = writeSteadily(db, 'steady')
        const writes = loop
        await pollUntil(async () => (writes.successes.length >= 5 ? true : undefined), {
          timeoutMs: 10_000,
          what: 'steady writes before the failover',
        })

        const stopAt = performance.now()
        await cluster.primary.stop('immediate')
        await replica.promote()
        const promotedAt = performance.now()
        const resumedAt = await firstSuccessAfter(writes, promotedAt, 'a write after the promotion')
        await writes.stop()

        const promoteToWriteMs = Math.round(resumedAt - promotedAt)
        const outageMs = Math.round(resumedAt - stopAt)
        const message =
          `${engine} failover: promote() -> first write ${promoteToWriteMs} ms; stop -> first write ` +
          `${outageMs} ms; ${writes.errors.length} errors surfaced; failover event durationMs ` +
          `${events.failover[0]?.durationMs}`
        console.info(`[writer-discovery] ${message}`)
        await annotate(message, 'timing')

        expect(events.failover).toEqual([
          expect.objectContaining({ from: 'writer-0', to: 'writer-1', reason: 'connection-lost' }),
        ])
        expect(db.stats().writer.name).toBe('writer-1')
        const served = await db.writer
          .selectNoFrom([port.as('port'), sessionMark(engine).as('mark')])
          .executeTakeFirstOrThrow()
        expect(Number(served.port)).toBe(replica.port)
        // onCreateConnection ran on the connections to the promoted replica too, before their first statement.
        expect(served.mark).toBe(String(replica.port))
        expect(opened).toContain(cluster.primary.port)
        expect(opened).toContain(replica.port)
        // Target < 1 s; the bound leaves room for a loaded CI machine.
        expect(promoteToWriteMs).toBeLessThan(3_000)
        for (const error of writes.errors) {
          // Only outage errors may surface: nothing the app did wrong, nothing unclassified.
          expect(['unavailable', 'ambiguous', 'read-only']).toContain(classifyError(error).category)
        }
      } finally {
        await loop?.stop()
        await db.destroy()
      }
    })

    it('follows a DNS flip: one writer endpoint that starts pointing at the promoted replica', async ({
      annotate,
    }) => {
      const cluster = clusterFor(engine, 'dnsFlip')
      const replica = replicaOf(cluster)
      const proxy = await FaultProxy.start({ targetPort: cluster.primary.port })
      const db = createDb<Database>({
        dialect: engine,
        writer: proxy.url(cluster.writerUrl),
        pool: { connectTimeoutMs: 2_000 },
      })
      const events = recordEvents(db, cluster.password)
      let loop: WriteLoop | undefined
      try {
        await db.insertInto('beat').values({ note: 'before' }).execute()
        loop = writeSteadily(db, 'steady')
        const writes = loop
        await pollUntil(async () => (writes.successes.length >= 5 ? true : undefined), {
          timeoutMs: 10_000,
          what: 'steady writes before the flip',
        })

        await cluster.primary.stop('immediate')
        await replica.promote()
        const promotedAt = performance.now()
        proxy.retarget(replica.port)
        const flippedAt = performance.now()
        const resumedAt = await firstSuccessAfter(writes, flippedAt, 'a write after the DNS flip')
        await writes.stop()

        const flipToWriteMs = Math.round(resumedAt - flippedAt)
        const message =
          `${engine} DNS flip: retarget -> first write ${flipToWriteMs} ms (promote() -> first write ` +
          `${Math.round(resumedAt - promotedAt)} ms); ${writes.errors.length} errors surfaced`
        console.info(`[writer-discovery] ${message}`)
        await annotate(message, 'timing')

        expect(db.stats().writer.name).toBe('writer')
        // Every pooled connection (old ones were evicted) now reaches the new primary.
        const total = db.stats().writer.total
        const servedBy = await Promise.all(
          Array.from({ length: total + 2 }, () =>
            db.writer.selectNoFrom(port.as('port')).executeTakeFirstOrThrow(),
          ),
        )
        expect(new Set(servedBy.map((row) => Number(row.port)))).toEqual(new Set([replica.port]))
        expect(flipToWriteMs).toBeLessThan(3_000)
        // Same endpoint before and after: not a failover between candidates.
        expect(events.failover).toEqual([])
      } finally {
        await loop?.stop()
        await db.destroy()
        await proxy.close()
      }
    })

    it('rediscovers and evicts idle writer connections when the writer turns read-only', async () => {
      const cluster = clusterFor(engine, 'steady')
      const replica = replicaOf(cluster)
      // The proxy lets the test count connections: discovery probes open fresh ones.
      const proxy = await FaultProxy.start({ targetPort: cluster.primary.port })
      const db = createDb<Database>({
        dialect: engine,
        writer: proxy.url(cluster.writerUrl),
        retry: { retries: 2, maxDelayMs: 100 },
      })
      const events = recordEvents(db, cluster.password)
      const makeReadOnly = async () => {
        // PostgreSQL: new connections reach the replica while the primary stays up (a DNS flip to a
        // read-only node). MariaDB: the primary itself turns read-only; `app` has no READ ONLY ADMIN.
        if (engine === 'postgres') proxy.retarget(replica.port)
        else await queryOnce(engine, cluster.adminWriterUrl, 'SET GLOBAL read_only = 1')
      }
      const makeWritable = async () => {
        if (engine === 'postgres') proxy.retarget(cluster.primary.port)
        else await queryOnce(engine, cluster.adminWriterUrl, 'SET GLOBAL read_only = 0')
      }
      try {
        // Three connections opened at once, left idle in the pool.
        // Each holds its connection a moment, so the pool (which opens one connection at a time when
        // cold) ends up with three.
        const warm = await Promise.all(
          Array.from({ length: 3 }, () =>
            db.writer
              .selectNoFrom([session.as('id'), sleepExpr(engine, 0.2).as('s')])
              .executeTakeFirstOrThrow(),
          ),
        )
        const oldSessions = new Set(warm.map((row) => Number(row.id)))
        expect(oldSessions.size).toBe(3)
        expect(db.stats().writer.idle).toBe(3)

        await makeReadOnly()
        // The three old connections are busy a moment, so the writes open new connections (which on
        // PostgreSQL reach the replica; the old ones still point at the primary).
        const holders = Promise.all(
          Array.from({ length: 3 }, () => db.writer.selectNoFrom(sleepExpr(engine, 0.4).as('s')).execute()),
        )
        await pollUntil(async () => (db.stats().writer.inUse === 3 ? true : undefined), {
          timeoutMs: 2_000,
          what: 'the old connections to be busy',
        })
        const results = await Promise.allSettled(
          Array.from({ length: 5 }, (_, i) =>
            db
              .insertInto('beat')
              .values({ note: `ro-${i}` })
              .execute(),
          ),
        )
        await holders
        const failures = results.flatMap((result) => (result.status === 'rejected' ? [result.reason] : []))
        expect(failures.length).toBeGreaterThan(0)
        for (const failure of failures) expect(serverErrorCode(failure)).toBe(READ_ONLY_ERROR[engine])
        expect(events.retry.length).toBeGreaterThan(0)
        expect(events.retry.every((retry) => retry.category === 'read-only')).toBe(true)

        // The read-only error evicted every idle connection, and the old ones were closed when released
        // while discovery ran...
        await pollUntil(async () => (db.stats().writer.idle === 0 ? true : undefined), {
          timeoutMs: 2_000,
          what: 'the idle writer connections to be evicted',
        })
        expect(db.stats().writer.total).toBe(0)
        // ...and started discovery, which keeps probing (fresh connections) while nothing accepts writes.
        const acceptedBefore = proxy.stats().accepted
        await pollUntil(async () => (proxy.stats().accepted >= acceptedBefore + 2 ? true : undefined), {
          timeoutMs: 5_000,
          what: 'discovery probes through the proxy',
        })

        await makeWritable()
        await db.insertInto('beat').values({ note: 'writable again' }).execute()
        const after = await db.writer
          .selectNoFrom([session.as('id'), port.as('port')])
          .executeTakeFirstOrThrow()
        expect(oldSessions.has(Number(after.id))).toBe(false)
        expect(Number(after.port)).toBe(cluster.primary.port)
      } finally {
        if (engine === 'mysql') await makeWritable()
        await db.destroy()
        await proxy.close()
      }
    })

    it('fails a write within a bounded time when no candidate is writable, then recovers', async ({
      annotate,
    }) => {
      const cluster = clusterFor(engine, 'bounded')
      const replica = replicaOf(cluster)
      const db = createDb<Database>({
        dialect: engine,
        writer: [cluster.writerUrl, cluster.readerUrl],
        pool: { connectTimeoutMs: 1_000 },
      })
      const events = recordEvents(db, cluster.password)
      try {
        await db.insertInto('beat').values({ note: 'before' }).execute()
        await Promise.all([cluster.primary.stop('immediate'), replica.stop('immediate')])

        // A write may first fail at once on a pooled connection the server closed as it stopped (and be
        // 'ambiguous': a write on a broken connection); the next must go through discovery, and fail too.
        const failures: Array<{ readonly ms: number; readonly category: string }> = []
        while (failures.length < 3 && failures.at(-1)?.category !== 'unavailable') {
          const startedAt = performance.now()
          const error = await db
            .insertInto('beat')
            .values({ note: 'nowhere' })
            .execute()
            .then(
              () => undefined,
              (caught: unknown) => caught,
            )
          expect(error).toBeDefined()
          failures.push({
            ms: Math.round(performance.now() - startedAt),
            category: classifyError(error).category,
          })
        }
        const message =
          `${engine} no writable candidate (both stopped): writes failed after ` +
          failures.map(({ ms, category }) => `${ms} ms (${category})`).join(', ')
        console.info(`[writer-discovery] ${message}`)
        await annotate(message, 'timing')

        expect(failures.at(-1)?.category).toBe('unavailable')
        // retry.maxElapsedMs (10 s) plus one attempt (connectTimeoutMs).
        for (const { ms } of failures) expect(ms).toBeLessThan(10_000 + 1_000)
        // Discovery reported its failed probes, for both candidates.
        const probed = new Set(
          events.error.filter((e) => e.reason === 'writer probe failed').map((e) => e.endpoint),
        )
        expect(probed).toEqual(new Set(['writer-0', 'writer-1']))

        // The old primary comes back (as a primary): discovery, still running, lets writes through again.
        await cluster.primary.start()
        await pollUntil(
          async () => {
            await db.insertInto('beat').values({ note: 'back' }).execute()
            return true
          },
          { timeoutMs: 15_000, intervalMs: 50, what: 'a write after the primary restarted' },
        )
        expect(db.stats().writer.name).toBe('writer-0')
      } finally {
        await db.destroy()
      }
    })

    it('bounds discovery probes by connectTimeoutMs when candidates never answer', async ({ annotate }) => {
      const cluster = clusterFor(engine, 'steady')
      // Blackholed: connections are accepted but nothing ever comes back, not even a greeting.
      const proxies = await Promise.all([
        FaultProxy.start({ targetPort: cluster.primary.port }),
        FaultProxy.start({ targetPort: replicaOf(cluster).port }),
      ])
      for (const proxy of proxies) proxy.setMode('blackhole')
      const [first, second] = proxies as [FaultProxy, FaultProxy]
      const db = createDb<Database>({
        dialect: engine,
        writer: [first.url(cluster.writerUrl), second.url(cluster.readerUrl)],
        pool: { connectTimeoutMs: 300 },
        // Fewer, shorter retries than the defaults keep the test short; the bound is what matters.
        retry: { retries: 2, maxDelayMs: 200 },
      })
      recordEvents(db, cluster.password)
      try {
        const startedAt = performance.now()
        const error = await db
          .insertInto('beat')
          .values({ note: 'blackholed' })
          .execute()
          .then(
            () => undefined,
            (caught: unknown) => caught,
          )
        const failedAfterMs = Math.round(performance.now() - startedAt)
        const message = `${engine} blackholed candidates (connectTimeoutMs 300, 2 retries): write failed after ${failedAfterMs} ms`
        console.info(`[writer-discovery] ${message}`)
        await annotate(message, 'timing')

        expect(error).toBeInstanceOf(ConnectTimeoutError)
        // startup discovery (<= 300 ms) + 3 connects (300 ms each) + 2 backoffs and waits (<= 400 ms each)
        expect(failedAfterMs).toBeLessThan(5_000)
      } finally {
        await db.destroy()
        await Promise.all(proxies.map((proxy) => proxy.close()))
      }
    })
  })
}
