import { randomUUID } from 'node:crypto'
import { setTimeout as pause } from 'node:timers/promises'
import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { classifyError, createDb, type ResilientDb, withRetry } from '../../src/index.js'
import { collectEvents, type EventLog, marker, sleepExpr } from '../support/fault-helpers.js'
import { freezeServer } from '../support/freeze-server.js'
import {
  AVAILABLE,
  ENGINES,
  type OwnCluster,
  ownClustersForThisFile,
  replicaOf,
} from '../support/own-clusters.js'
import { pollUntil } from '../support/poll.js'
import { waitForReplica } from '../support/replication.js'
import { type Engine, queryOnce } from '../support/sql.js'

// A server that stops answering (SIGSTOP: a frozen VM, stuck storage, a partition where the kernel
// still acknowledges) and a server that restarts, with the default settings: nothing hangs, reads
// move elsewhere, writes in flight fail as 'ambiguous', and a slow statement on a healthy server is
// never cut short. Every server here is this file's own, because the tests freeze and restart them.

interface Database {
  stall_rows: { k: string; note: string }
}

const CREATE_TABLE = 'create table stall_rows (k varchar(64) primary key, note varchar(64) not null)'

const clusters = ownClustersForThisFile({
  prepare: async (engine, cluster) => {
    await queryOnce(engine, cluster.writerUrl, CREATE_TABLE)
    await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
  },
})
const opened: Array<{ db: ResilientDb<Database>; events: EventLog; password: string }> = []

const clusterOf = (engine: Engine): OwnCluster => clusters.of(engine)

function open(engine: Engine, readers: boolean) {
  const cluster = clusterOf(engine)
  const db = createDb<Database>({
    dialect: engine,
    writer: cluster.writerUrl,
    readers: readers ? [cluster.readerUrl] : [],
  })
  const events = collectEvents(db)
  opened.push({ db, events, password: cluster.password })
  return { db, events }
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0
}

/** Runs `work` in `concurrency` loops until stopped; records each call's latency and error. */
function loops(concurrency: number, work: () => Promise<unknown>) {
  const latencies: number[] = []
  const errors: unknown[] = []
  let running = true
  const done = Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (running) {
        const startedAt = performance.now()
        try {
          await work()
        } catch (error) {
          errors.push(error)
        }
        latencies.push(performance.now() - startedAt)
      }
    }),
  )
  return {
    latencies,
    errors,
    stop: async () => {
      running = false
      await done
    },
  }
}

afterEach(async () => {
  for (const { db, events, password } of opened.splice(0)) {
    await db.destroy()
    // Events go to logs and metrics: never the password.
    expect(JSON.stringify(events)).not.toContain(password)
  }
  // A test that froze or stopped a server must not leave it so for the next one.
  for (const cluster of clusters.all()) {
    for (const server of [cluster.primary, replicaOf(cluster)])
      if (server.pid !== undefined) freezeServer(server, 'SIGCONT')
    await cluster.primary.start()
    await replicaOf(cluster).start()
  }
})

for (const engine of ENGINES) {
  describe(`a server that stops answering or restarts [${engine}]`, () => {
    if (!AVAILABLE[engine]) {
      it.skip(`!!! SKIPPED: no local ${engine} server binaries to start clusters with !!!`, () => {})
      return
    }

    it('a frozen reader: reads in flight and after are served elsewhere, p99 within 2.5 s, no error', async () => {
      const cluster = clusterOf(engine)
      const { db, events } = open(engine, true)
      const read = () => db.selectNoFrom(sleepExpr(engine, 0.05).as('s')).execute()
      // Warm: the reader holds pooled connections the freeze will strand.
      await Promise.all(Array.from({ length: 8 }, read))
      expect(db.stats().readers[0]?.total).toBeGreaterThan(0)

      const traffic = loops(16, read)
      await pause(300)
      freezeServer(replicaOf(cluster), 'SIGSTOP')
      await pause(4_000)
      freezeServer(replicaOf(cluster), 'SIGCONT')
      await pause(300)
      await traffic.stop()

      expect(traffic.errors).toEqual([])
      const p99 = percentile(traffic.latencies, 99)
      console.info(
        `[unresponsive] ${engine} frozen reader: ${traffic.latencies.length} reads, p99 ${Math.round(p99)} ms`,
      )
      expect(p99).toBeLessThan(2_500)
      expect(events['endpoint-unresponsive']).toMatchObject([{ endpoint: 'reader-0', role: 'reader' }])
      expect(events['reader-ejected']).toMatchObject([{ endpoint: 'reader-0', reason: 'unreachable' }])
    })

    it('a frozen writer: writes in flight fail as ambiguous within 2.5 s, idempotent ones succeed, none hangs', async () => {
      const cluster = clusterOf(engine)
      const { db, events } = open(engine, false)
      // A write that is still running when the server freezes; its note (a literal, so it shows in
      // the statement's text on the server) finds it in pg_stat_activity / the processlist.
      const note = marker('frozen')
      const slowInsert = (k: string) =>
        engine === 'postgres'
          ? sql`insert into stall_rows (k, note) select ${k}, ${sql.lit(note)} from pg_sleep(1)`.execute(db)
          : sql`insert into stall_rows (k, note) select ${k}, ${sql.lit(note)} from (select sleep(1)) as t`.execute(
              db,
            )
      await slowInsert(randomUUID())

      const plain = Array.from({ length: 4 }, () =>
        slowInsert(randomUUID()).then(
          () => ({ endedAt: performance.now(), error: undefined as unknown }),
          (error: unknown) => ({ endedAt: performance.now(), error }),
        ),
      )
      const idempotentKeys = Array.from({ length: 4 }, () => randomUUID())
      const idempotent = idempotentKeys.map((k) =>
        withRetry(
          () => {
            const insert = db.insertInto('stall_rows').values({ k, note: 'idempotent' })
            // Keyed: running it twice inserts one row.
            return (
              engine === 'postgres' ? insert.onConflict((oc) => oc.column('k').doNothing()) : insert.ignore()
            ).execute()
          },
          { idempotent: true, retries: 10 },
        ),
      )
      // Frozen once all four are running on the server: a write still waiting for a connection then
      // was never sent, and is retried until the budget (see the fresh write below), not failed.
      await pollUntil(
        async () => {
          const [row] = await queryOnce(
            engine,
            cluster.writerUrl,
            engine === 'postgres'
              ? "select count(*)::int as n from pg_stat_activity where state = 'active' and query like $1"
              : "select count(*) as n from information_schema.processlist where command = 'Query' and id <> connection_id() and info like ?",
            [`%${note}%`],
          )
          return Number(row?.n) >= 4 ? true : undefined
        },
        { timeoutMs: 10_000, what: 'the four writes to run on the server' },
      )
      const frozenAt = performance.now()
      freezeServer(cluster.primary, 'SIGSTOP')
      const outcomes = await Promise.all(plain)
      console.info(
        `[unresponsive] ${engine} frozen writer: in-flight writes ended after ${outcomes.map((o) => Math.round(o.endedAt - frozenAt)).join(', ')} ms`,
      )
      for (const outcome of outcomes) {
        // Within 2.5 s of the freeze (probeAfterMs 500 + probeTimeoutMs 1,000, and a tick).
        expect(outcome.endedAt - frozenAt).toBeLessThan(2_500)
        if (outcome.error !== undefined) {
          expect(classifyError(outcome.error)).toMatchObject({
            category: 'ambiguous',
            code: 'SERVER_UNRESPONSIVE',
          })
        }
      }
      expect(outcomes.some((o) => o.error !== undefined)).toBe(true)
      expect(events['endpoint-unresponsive']).toMatchObject([{ endpoint: 'writer', role: 'writer' }])

      // A new write fails at once instead of waiting on the frozen server for a connect timeout.
      const freshStarted = performance.now()
      const fresh = await db
        .insertInto('stall_rows')
        .values({ k: randomUUID(), note: 'fresh' })
        .execute()
        .then(
          () => undefined,
          (error: unknown) => error,
        )
      // Retried (nothing sent) until the budget, or served once the server answers again.
      if (fresh !== undefined) {
        expect(classifyError(fresh).category).toBe('unavailable')
      }
      expect(performance.now() - freshStarted).toBeLessThan(10_000 + 2_000)

      freezeServer(cluster.primary, 'SIGCONT')
      await Promise.all(idempotent)
      const rows = await db.writer
        .selectFrom('stall_rows')
        .select('k')
        .where('k', 'in', idempotentKeys)
        .execute()
      expect(rows).toHaveLength(idempotentKeys.length)
      await pollUntil(async () => (events['endpoint-responsive'].length > 0 ? true : undefined), {
        timeoutMs: 5_000,
        what: 'the writer to answer again',
      })
      await db.insertInto('stall_rows').values({ k: randomUUID(), note: 'after' }).execute()
    })

    it('a long statement on a healthy server is not cut short', async () => {
      const { db, events } = open(engine, false)
      const startedAt = performance.now()
      // Other statements run meanwhile, as in a real app.
      const traffic = loops(2, () => db.selectNoFrom(sql<number>`1`.as('one')).execute())
      const rows = await db.selectNoFrom(sleepExpr(engine, 5).as('s')).execute()
      await traffic.stop()
      expect(rows).toHaveLength(1)
      expect(performance.now() - startedAt).toBeGreaterThanOrEqual(4_900)
      expect(traffic.errors).toEqual([])
      expect(events['endpoint-unresponsive']).toEqual([])
    })

    it('a writer restart surfaces no error to reads and idempotent writes', async () => {
      const cluster = clusterOf(engine)
      const { db } = open(engine, false)
      const reads = loops(4, () => db.selectNoFrom(sql<number>`1`.as('one')).execute())
      const writes = loops(4, () =>
        withRetry(() => db.insertInto('stall_rows').values({ k: randomUUID(), note: 'restart' }).execute(), {
          idempotent: true,
          retries: 20,
          maxElapsedMs: 15_000,
        }),
      )
      await pause(300)
      // An outage of several seconds: stopped, down for 3 s, started again (up to 5 s in all).
      const restartStarted = performance.now()
      await cluster.primary.stop('fast')
      await pause(3_000)
      await cluster.primary.start()
      const restartMs = performance.now() - restartStarted
      await pause(500)
      await Promise.all([reads.stop(), writes.stop()])
      console.info(`[unresponsive] ${engine} writer restart took ${Math.round(restartMs)} ms`)
      expect(restartMs).toBeGreaterThan(3_000)
      // Below retry.maxElapsedMs (10 s), which is what the reads ride on.
      expect(restartMs).toBeLessThan(8_000)
      expect(reads.errors).toEqual([])
      expect(writes.errors).toEqual([])
      expect(reads.latencies.length).toBeGreaterThan(10)
    })

    it('a reader restart surfaces no error to reads', async () => {
      const cluster = clusterOf(engine)
      const { db } = open(engine, true)
      const reads = loops(4, () => db.selectNoFrom(sql<number>`1`.as('one')).execute())
      await pause(300)
      await replicaOf(cluster).stop('fast')
      await pause(3_000)
      await replicaOf(cluster).start()
      await pause(500)
      await reads.stop()
      expect(reads.errors).toEqual([])
      expect(reads.latencies.length).toBeGreaterThan(10)
    })
  })
}
