import { type Generated, type RawBuilder, sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { type CreateDbConfig, createDb, NoReaderAvailableError, type ResilientDb } from '../../src/index.js'
import { collectEvents, type EventLog } from '../support/fault-helpers.js'
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
import { type Engine, queryOnce } from '../support/sql.js'

// Reader health through createDb: unreachable readers are ejected and probed back in, lagging readers
// are ejected until they catch up, and reads fall back to the writer (or fail) when no reader is left.
// Replication is paused and servers are stopped here, so the clusters are this file's own.

interface Database {
  probe_rows: { id: Generated<number>; note: string }
}

/** 'main' is always restored to a healthy state; 'outage' loses its primary. */
const SCENARIOS = ['main', 'outage'] as const
type Scenario = (typeof SCENARIOS)[number]

const CREATE_TABLE: Record<Engine, string> = {
  postgres: 'CREATE TABLE probe_rows (id serial PRIMARY KEY, note varchar(100) NOT NULL)',
  mysql: 'CREATE TABLE probe_rows (id integer PRIMARY KEY AUTO_INCREMENT, note varchar(100) NOT NULL)',
}

/**
 * MariaDB only: reading the replica's lag (SHOW SLAVE STATUS) needs SLAVE MONITOR, which the cluster's
 * `app` user deliberately lacks, as an application user on RDS would. Lag tests log in as `monitor`,
 * which is `app` plus SLAVE MONITOR, with the same password.
 */
const MONITOR_USER = 'monitor'

const clusters = ownClustersForThisFile({
  variants: SCENARIOS,
  prepare: async (engine, cluster) => {
    await queryOnce(engine, cluster.writerUrl, CREATE_TABLE[engine])
    if (engine === 'mysql') {
      // On the primary; replication creates the user on the replica too.
      const password = cluster.password.replaceAll("'", "''")
      for (const statement of [
        `CREATE USER '${MONITOR_USER}'@'127.0.0.1' IDENTIFIED BY '${password}'`,
        `GRANT ALL PRIVILEGES ON app.* TO '${MONITOR_USER}'@'127.0.0.1'`,
        `GRANT SLAVE MONITOR ON *.* TO '${MONITOR_USER}'@'127.0.0.1'`,
      ]) {
        await queryOnce(engine, cluster.adminWriterUrl, statement)
      }
    }
    await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
  },
})

const clusterFor = (engine: Engine, scenario: Scenario): OwnCluster => clusters.of(engine, scenario)

/** `url` logged in as the user that may read replication status (the app user on PostgreSQL). */
function monitorUrl(engine: Engine, url: string): string {
  if (engine === 'postgres') return url
  const monitor = new URL(url)
  monitor.username = MONITOR_USER
  return monitor.toString()
}

/** Which server ran the statement: the replica reports recovery / read_only. */
function served(engine: Engine): RawBuilder<string> {
  return engine === 'postgres'
    ? sql<string>`case when pg_is_in_recovery() then 'reader' else 'writer' end`
    : sql<string>`case when @@global.read_only = 1 then 'reader' else 'writer' end`
}

/** Every db a test creates, with the password its events must never contain (checked after each test). */
const recorded: Array<{ readonly events: EventLog; readonly password: string }> = []

function recordEvents(db: ResilientDb<Database>, password: string): EventLog {
  const events = collectEvents(db)
  recorded.push({ events, password })
  return events
}

function untilEvent<T>(events: T[], matches: (event: T) => boolean, what: string): Promise<T> {
  return pollUntil(async () => events.find(matches), { timeoutMs: 5_000, intervalMs: 10, what })
}

afterEach(() => {
  // No event may carry the password: they go to logs and metrics.
  for (const { events, password } of recorded.splice(0)) {
    expect(JSON.stringify(events)).not.toContain(password)
  }
})

for (const engine of ENGINES) {
  describe(`reader health [${engine}]`, () => {
    if (!AVAILABLE[engine]) {
      it.skip(`!!! SKIPPED: no local ${engine} server binaries to start clusters with !!!`, () => {})
      return
    }
    const role = served(engine)

    /** createDb on this engine with the given writer, readers and routing; events recorded. */
    const open = (cluster: OwnCluster, config: Omit<CreateDbConfig, 'dialect'>) => {
      const db = createDb<Database>({ dialect: engine, ...config })
      return { db, events: recordEvents(db, cluster.password) }
    }
    const readRole = async (db: ResilientDb<Database>) =>
      (await db.selectNoFrom(role.as('role')).executeTakeFirstOrThrow()).role

    it('ejects an unreachable reader and probes it back in after the cooldown', async () => {
      const cluster = clusterFor(engine, 'main')
      const proxy = await FaultProxy.start({ targetPort: replicaOf(cluster).port })
      proxy.setMode('refuse')
      const { db, events } = open(cluster, {
        writer: cluster.writerUrl,
        readers: [proxy.url(cluster.readerUrl), cluster.readerUrl],
        routing: { readerCooldownMs: 200 },
      })
      try {
        for (let i = 0; i < 4; i++) expect(await readRole(db)).toBe('reader')
        expect(events['reader-ejected']).toEqual([
          expect.objectContaining({ endpoint: 'reader-0', reason: 'unreachable', cooldownMs: 200 }),
        ])
        const ejected = db.stats()
        expect(ejected.readers.map((reader) => [reader.name, reader.healthy])).toEqual([
          ['reader-0', false],
          ['reader-1', true],
        ])
        expect(ejected.readers[0]?.queries).toBe(0)
        expect(ejected.readers[1]?.queries).toBe(4)
        expect(ejected.writer.queries).toBe(0)
        // Probes after each cooldown keep failing while the proxy refuses.
        await untilEvent(
          events.error,
          (e) => e.endpoint === 'reader-0' && e.reason === 'reader probe failed',
          'a failed probe of reader-0',
        )
        expect(db.stats().readers[0]?.healthy).toBe(false)

        proxy.setMode('pass')
        const restored = await untilEvent(
          events['reader-restored'],
          (e) => e.endpoint === 'reader-0',
          'reader-0 to be restored',
        )
        // Not before the cooldown (a little slack: Node timers may fire a millisecond or so early).
        expect(restored.ejectedForMs).toBeGreaterThanOrEqual(190)
        expect(db.stats().readers[0]?.healthy).toBe(true)
        const before = db.stats().readers.map((reader) => reader.queries)
        for (let i = 0; i < 4; i++) expect(await readRole(db)).toBe('reader')
        const after = db.stats().readers.map((reader) => reader.queries)
        // Round-robin over both readers again.
        expect(after).toEqual([(before[0] ?? 0) + 2, (before[1] ?? 0) + 2])
      } finally {
        await db.destroy()
        await proxy.close()
      }
    })

    it('sends reads to the writer when every reader is unreachable', async () => {
      const cluster = clusterFor(engine, 'main')
      const proxies = await Promise.all([
        FaultProxy.start({ targetPort: replicaOf(cluster).port }),
        FaultProxy.start({ targetPort: replicaOf(cluster).port }),
      ])
      for (const proxy of proxies) proxy.setMode('refuse')
      const { db, events } = open(cluster, {
        writer: cluster.writerUrl,
        readers: proxies.map((proxy) => proxy.url(cluster.readerUrl)),
      })
      try {
        for (let i = 0; i < 3; i++) expect(await readRole(db)).toBe('writer')
        expect(events['reader-ejected'].map((e) => [e.endpoint, e.reason])).toEqual([
          ['reader-0', 'unreachable'],
          ['reader-1', 'unreachable'],
        ])
        const stats = db.stats()
        expect(stats.readers.map((reader) => reader.healthy)).toEqual([false, false])
        expect(stats.writer.queries).toBe(3)
      } finally {
        await db.destroy()
        await Promise.all(proxies.map((proxy) => proxy.close()))
      }
    })

    it("fails reads at once with NoReaderAvailableError when every reader is unreachable and fallback is 'error'", async () => {
      const cluster = clusterFor(engine, 'main')
      const proxies = await Promise.all([
        FaultProxy.start({ targetPort: replicaOf(cluster).port }),
        FaultProxy.start({ targetPort: replicaOf(cluster).port }),
      ])
      for (const proxy of proxies) proxy.setMode('refuse')
      const { db, events } = open(cluster, {
        writer: cluster.writerUrl,
        readers: proxies.map((proxy) => proxy.url(cluster.readerUrl)),
        routing: { fallback: 'error' },
      })
      const failedRead = () =>
        readRole(db).then(
          (value) => {
            throw new Error(`expected the read to fail, it was served by the ${value}`)
          },
          (error: unknown) => error,
        )
      try {
        // The first read finds both readers unreachable (and ejects them).
        expect(await failedRead()).toBeInstanceOf(NoReaderAvailableError)
        expect(db.stats().readers.map((reader) => reader.healthy)).toEqual([false, false])

        // With both ejected, a read fails at once: not retried, nothing sent anywhere.
        const retriesBefore = events.retry.length
        const startedAt = performance.now()
        expect(await failedRead()).toBeInstanceOf(NoReaderAvailableError)
        const elapsedMs = performance.now() - startedAt
        expect(events.retry.slice(retriesBefore)).toEqual([])
        expect(elapsedMs).toBeLessThan(50)
        expect(db.stats().writer.queries).toBe(0)
      } finally {
        await db.destroy()
        await Promise.all(proxies.map((proxy) => proxy.close()))
      }
    })

    it('ejects a lagging reader, reads from the writer meanwhile, and restores it once caught up', async () => {
      const cluster = clusterFor(engine, 'main')
      const maxReplicaLagMs = engine === 'postgres' ? 300 : 1_000
      const { db, events } = open(cluster, {
        writer: cluster.writerUrl,
        readers: [monitorUrl(engine, cluster.readerUrl)],
        routing: { maxReplicaLagMs, lagCheckIntervalMs: 100, readerCooldownMs: 200 },
      })
      const admin = (statement: string) => queryOnce(engine, cluster.adminReaderUrl, statement)
      const pauseReplay = async () => {
        if (engine === 'postgres') {
          await admin('SELECT pg_wal_replay_pause()')
          await pollUntil(
            async () => {
              const [row] = await admin('SELECT pg_get_wal_replay_pause_state() AS state')
              return row?.state === 'paused' ? true : undefined
            },
            { timeoutMs: 5_000, what: 'WAL replay to pause' },
          )
        } else {
          await admin('STOP SLAVE SQL_THREAD')
        }
      }
      const resumeReplay = () =>
        admin(engine === 'postgres' ? 'SELECT pg_wal_replay_resume()' : 'START SLAVE SQL_THREAD')
      try {
        await db.insertInto('probe_rows').values({ note: 'replicated' }).execute()
        await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
        expect(await readRole(db)).toBe('reader')

        await pauseReplay()
        await db.insertInto('probe_rows').values({ note: 'not replayed' }).execute()
        // The replica's own view of its lag, as the library reads it.
        const observed = await pollUntil(
          async () => {
            if (engine === 'postgres') {
              const [row] = await admin(
                `SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn() AS pending,
                        extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000 AS lag_ms`,
              )
              return row?.pending === true && Number(row.lag_ms) > maxReplicaLagMs
                ? `${Math.round(Number(row.lag_ms))} ms since the last replayed commit`
                : undefined
            }
            const [status] = await admin('SHOW SLAVE STATUS')
            // With the SQL thread stopped, Seconds_Behind_Master is NULL (the library: infinite lag).
            return status?.Slave_SQL_Running === 'No'
              ? `Seconds_Behind_Master ${String(status.Seconds_Behind_Master)}`
              : undefined
          },
          { timeoutMs: 10_000, what: 'the replica to lag past maxReplicaLagMs' },
        )
        console.info(`[reader-health] ${engine} lagging replica: ${observed}`)

        const ejected = await untilEvent(
          events['reader-ejected'],
          (e) => e.endpoint === 'reader-0',
          'the lagging reader to be ejected',
        )
        expect(ejected.reason).toBe('lagging')
        expect(ejected.lagMs).toBeGreaterThan(maxReplicaLagMs)
        expect(db.stats().readers[0]?.healthy).toBe(false)
        // The lag the ejection was decided on is what a health endpoint reads from stats.
        expect(db.stats().readers[0]?.lagMs).toBeGreaterThan(maxReplicaLagMs)
        // PostgreSQL's WAL replay; MariaDB 10.11 answers SHOW REPLICA STATUS (MySQL 8.4's only form).
        expect(db.stats().readers[0]?.lagSource).toBe(engine === 'postgres' ? 'postgres' : 'mysql-replica')
        // Reads go to the writer meanwhile, and see the row the replica has not replayed.
        const writerQueries = db.stats().writer.queries
        const row = await db
          .selectFrom('probe_rows')
          .select(['note', role.as('role')])
          .where('note', '=', 'not replayed')
          .executeTakeFirstOrThrow()
        expect(row).toEqual({ note: 'not replayed', role: 'writer' })
        expect(db.stats().writer.queries).toBe(writerQueries + 1)

        await resumeReplay()
        await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
        await untilEvent(events['reader-restored'], (e) => e.endpoint === 'reader-0', 'the reader restored')
        expect(db.stats().readers[0]?.healthy).toBe(true)
        expect(db.stats().readers[0]?.lagMs).toBeLessThanOrEqual(maxReplicaLagMs)
        const readerQueries = db.stats().readers[0]?.queries ?? 0
        expect(await readRole(db)).toBe('reader')
        expect(db.stats().readers[0]?.queries).toBe(readerQueries + 1)
        expect(events['reader-ejected']).toHaveLength(1)
      } finally {
        await resumeReplay().catch(() => undefined)
        await db.destroy()
      }
    })

    if (engine === 'mysql') {
      it('reads a caught-up reader’s lag from GTID positions, and keeps a reader whose lag it cannot read', async () => {
        const cluster = clusterFor(engine, 'main')
        const { db, events } = open(cluster, {
          writer: cluster.writerUrl,
          readers: [cluster.readerUrl],
          routing: { maxReplicaLagMs: 1_000, lagCheckIntervalMs: 100, readerCooldownMs: 200 },
        })
        const admin = (statement: string) => queryOnce(engine, cluster.adminReaderUrl, statement)
        try {
          expect(await readRole(db)).toBe('reader')
          // Caught up: the GTID positions say so, and reading them needs no privilege, so the lag
          // check succeeds without SHOW SLAVE STATUS.
          await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
          await pollUntil(async () => (db.stats().readers[0]?.lagMs === 0 ? true : undefined), {
            timeoutMs: 5_000,
            what: 'a lag check from positions',
          })
          expect(db.stats().readers[0]?.replayPosition).toMatch(/^\d+-\d+-\d+/)
          expect(events.error).toEqual([])

          // Behind: only a time-based lag could say by how much, and `app` may not read it.
          await admin('STOP SLAVE SQL_THREAD')
          await db.insertInto('probe_rows').values({ note: 'behind' }).execute()
          const failed = await untilEvent(events.error, (e) => e.endpoint === 'reader-0', 'a lag check')
          expect(failed.code).toBe('1227')
          // The reader answers; it must not be reported unreachable and taken out of rotation for good.
          expect(events['reader-ejected']).toEqual([])
          expect(db.stats().readers[0]?.healthy).toBe(true)
          expect(await readRole(db)).toBe('reader')
        } finally {
          await admin('START SLAVE SQL_THREAD').catch(() => undefined)
          await db.destroy()
        }
      })
    }

    it('keeps a caught-up reader serving reads while the primary is down (lag checks on)', async () => {
      const cluster = clusterFor(engine, 'outage')
      const { db, events } = open(cluster, {
        writer: cluster.writerUrl,
        readers: [monitorUrl(engine, cluster.readerUrl)],
        routing: { maxReplicaLagMs: 1_000, lagCheckIntervalMs: 100, readerCooldownMs: 200 },
      })
      const admin = (statement: string) => queryOnce(engine, cluster.adminReaderUrl, statement)
      try {
        await db.insertInto('probe_rows').values({ note: 'before the outage' }).execute()
        await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
        expect(await readRole(db)).toBe('reader')

        await cluster.primary.stop('immediate')
        // Wait until the replica knows its primary is gone, then for lag checks made after that.
        let checksSeen = 0
        if (engine === 'postgres') {
          await pollUntil(
            async () => {
              const rows = await admin('SELECT pid FROM pg_stat_wal_receiver')
              return rows.length === 0 ? true : undefined
            },
            { timeoutMs: 10_000, what: 'the replica to lose its WAL receiver' },
          )
          const [{ since } = {}] = await admin('SELECT clock_timestamp()::text AS since')
          const seen = new Set<string>()
          await pollUntil(
            async () => {
              // The library's lag statement, finished after `since` (state_change moves on every check).
              const [row] = await queryOnce(
                engine,
                cluster.adminReaderUrl,
                `SELECT max(state_change)::text AS at FROM pg_stat_activity
                  WHERE application_name = 'kysely-resilient' AND state = 'idle'
                    AND query LIKE '%pg_last_wal_replay_lsn%' AND state_change > $1::timestamptz`,
                [since],
              )
              if (typeof row?.at === 'string') seen.add(row.at)
              return seen.size >= 3 ? true : undefined
            },
            { timeoutMs: 10_000, intervalMs: 20, what: 'three lag checks after the primary went down' },
          )
          checksSeen = seen.size
        } else {
          await pollUntil(
            async () => {
              const [status] = await admin('SHOW SLAVE STATUS')
              return status?.Slave_IO_Running !== 'Yes' ? true : undefined
            },
            { timeoutMs: 10_000, what: 'the replica IO thread to lose the primary' },
          )
          // From here only the library runs SHOW SLAVE STATUS on the replica (SHOW STATUS does not count).
          const checks = async () => {
            const [row] = await admin("SHOW GLOBAL STATUS LIKE 'Com_show_slave_status'")
            return Number(row?.Value)
          }
          const baseline = await checks()
          await pollUntil(async () => ((await checks()) >= baseline + 3 ? true : undefined), {
            timeoutMs: 10_000,
            intervalMs: 20,
            what: 'three lag checks after the primary went down',
          })
          checksSeen = (await checks()) - baseline
        }
        expect(checksSeen).toBeGreaterThanOrEqual(3)
        // Everything the replica received is applied: it is not lagging, only cut off from a dead primary.
        expect(events['reader-ejected']).toEqual([])
        expect(db.stats().readers[0]?.healthy).toBe(true)
        const row = await db
          .selectFrom('probe_rows')
          .select(['note', role.as('role')])
          .where('note', '=', 'before the outage')
          .executeTakeFirstOrThrow()
        expect(row).toEqual({ note: 'before the outage', role: 'reader' })
      } finally {
        await db.destroy()
      }
    })

    it('never puts the password in an event payload', async () => {
      const cluster = clusterFor(engine, 'main')
      const proxy = await FaultProxy.start({ targetPort: replicaOf(cluster).port })
      proxy.setMode('refuse')
      const { db, events } = open(cluster, {
        writer: cluster.writerUrl,
        readers: [proxy.url(cluster.readerUrl), cluster.readerUrl],
        routing: { readerCooldownMs: 50 },
      })
      try {
        for (let i = 0; i < 3; i++) await readRole(db)
        await untilEvent(events.error, (e) => e.reason === 'reader probe failed', 'a failed reader probe')
        expect(events.retry.length).toBeGreaterThan(0)
        expect(events['reader-ejected'].length).toBeGreaterThan(0)
        const json = JSON.stringify(events)
        expect(json).not.toContain(cluster.password)
        expect(json).not.toContain(encodeURIComponent(cluster.password))
      } finally {
        await db.destroy()
        await proxy.close()
      }
    })
  })
}
