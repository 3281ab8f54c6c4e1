import { sql } from 'kysely'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createDb, type ResilientDb } from '../../src/index.js'
import { collectEvents } from '../support/fault-helpers.js'
import type { FaultProxy } from '../support/fault-proxy.js'
import { proxiesClosedAfterEachTest } from '../support/per-test.js'
import { msUntil, pollUntil } from '../support/poll.js'
import {
  rejoinAsStandby,
  type SimulatedPlatform,
  SimulatedPostgresCluster,
} from '../support/simulated-topology.js'
import { pgQuery } from '../support/sql.js'
import { idempotentWriteLoop } from '../support/write-loop.js'

// Topology discovery on simulated Aurora PostgreSQL and RDS Multi-AZ DB clusters (real primary and
// streaming replica answering each platform's topology view; see test/support/simulated-topology.ts).
// The cluster endpoint the application is given is a TCP proxy: its target is "DNS", which a test can
// leave pointing at the old writer after a failover.

interface Database {
  beat: { id: number; note: string }
}

const dbs: Array<ResilientDb<Database>> = []
// Registered first so that it runs last (after hooks run in reverse): the dbs close through live proxies.
const startProxy = proxiesClosedAfterEachTest()
afterEach(async () => {
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
})

const serverPort = sql<number>`inet_server_port()`

/** How the platform names an instance: Aurora by its identifier (the port here), Multi-AZ by its resource id. */
function idOf(platform: SimulatedPlatform, port: number): string {
  return platform === 'aurora-postgres' ? String(port) : `db-${port}`
}

describe.each(['aurora-postgres', 'rds-multi-az-postgres'] as const)(
  'topology discovery on a simulated %s cluster',
  (platform) => {
    let aurora: SimulatedPostgresCluster
    let primaryId: string
    let replicaId: string

    beforeAll(async () => {
      aurora = await SimulatedPostgresCluster.start(platform)
      primaryId = idOf(platform, aurora.cluster.primary.port)
      replicaId = idOf(platform, aurora.cluster.replica?.port as number)
    }, 120_000)

    afterAll(async () => {
      await aurora?.stop()
    })

    function open(clusterEndpoint: FaultProxy, refreshIntervalMs = 30_000): ResilientDb<Database> {
      const db = createDb<Database>({
        dialect: 'postgres',
        writer: clusterEndpoint.url(aurora.cluster.writerUrl),
        topology: { discovery: true, instanceHostPattern: '127.0.0.1:?', refreshIntervalMs },
      })
      dbs.push(db)
      return db
    }

    it('reads the instances from the view: writes go to the writer instance, reads to the reader instances, not through the cluster endpoint', async () => {
      const clusterEndpoint = await startProxy(aurora.cluster.primary.port)
      const db = open(clusterEndpoint)
      const events = collectEvents(db)

      const read = await db.selectNoFrom(serverPort.as('port')).executeTakeFirstOrThrow()
      expect(Number(read.port)).toBe(aurora.cluster.replica?.port)
      const written = await db
        .insertInto('beat')
        .values({ id: 1, note: 'first' })
        .returning(serverPort.as('port'))
        .executeTakeFirstOrThrow()
      expect(Number(written.port)).toBe(aurora.cluster.primary.port)

      const stats = db.stats()
      expect(stats.topology).toEqual({
        platform,
        instances: [
          { id: primaryId, role: 'writer', address: `127.0.0.1:${aurora.cluster.primary.port}/app` },
          { id: replicaId, role: 'reader', address: `127.0.0.1:${aurora.cluster.replica?.port}/app` },
        ],
        readAt: expect.any(Number),
      })
      expect(stats.writer).toMatchObject({ name: primaryId, role: 'writer', platform })
      expect(stats.readers.map((reader) => reader.name)).toEqual([replicaId])
      // The cluster endpoint served the discovery only; the statements went to the instances directly.
      expect(stats.writers.find((writer) => writer.name === 'writer')?.queries).toBe(0)
      // Moving to the instance endpoint of the same server is not a failover.
      expect(events.failover).toEqual([])
      expect(events.error).toEqual([])
    })

    it('adds a reader within one refresh interval, and sends no read to a removed one after the next refresh', async () => {
      const clusterEndpoint = await startProxy(aurora.cluster.primary.port)
      // A new reader instance: another route to the replica, so its traffic can be told apart.
      const added = await startProxy(aurora.cluster.replica?.port as number)
      const addedId = idOf(platform, added.port)
      const refreshIntervalMs = 500
      const db = open(clusterEndpoint, refreshIntervalMs)
      const readPorts = async (count: number) => {
        for (let i = 0; i < count; i++) await db.selectNoFrom(serverPort.as('port')).execute()
      }
      await readPorts(2)
      expect(db.stats().readers.map((reader) => reader.name)).toEqual([replicaId])

      try {
        await aurora.setInstances([
          { id: String(aurora.cluster.primary.port), writer: true },
          { id: String(aurora.cluster.replica?.port), writer: false },
          { id: String(added.port), writer: false },
        ])
        // Reads keep flowing; the new instance gets its share once the refresh has listed it.
        const firstReadMs = await msUntil(
          () => readPorts(2),
          () => added.stats().bytesUp > 0,
          'a read on the added reader',
        )
        console.info(`[cluster-topology] added reader: first read after ${Math.round(firstReadMs)} ms`)
        // One refresh interval, plus the time to open its pool on this (possibly loaded) machine.
        expect(firstReadMs).toBeLessThan(refreshIntervalMs + 1_500)
        expect(db.stats().readers.map((reader) => reader.name)).toEqual([replicaId, addedId])

        await aurora.setInstances([
          { id: String(aurora.cluster.primary.port), writer: true },
          { id: String(aurora.cluster.replica?.port), writer: false },
        ])
        await pollUntil(
          async () => (db.stats().readers.some((reader) => reader.name === addedId) ? undefined : true),
          { timeoutMs: 10_000, intervalMs: 20, what: 'the removed reader out of rotation' },
        )
        // Its pool is closed (the sessions' goodbyes are the last bytes it gets) ...
        await pollUntil(async () => (added.stats().live === 0 ? true : undefined), {
          timeoutMs: 5_000,
          what: 'the removed reader’s connections closed',
        })
        // ... and no read goes there any more.
        const sentBefore = added.stats().bytesUp
        await readPorts(20)
        expect(added.stats().bytesUp).toBe(sentBefore)
      } finally {
        await aurora.setInstances([
          { id: String(aurora.cluster.primary.port), writer: true },
          { id: String(aurora.cluster.replica?.port), writer: false },
        ])
      }
    })
  },
)

describe.each(['aurora-postgres', 'rds-multi-az-postgres'] as const)(
  'failover on a simulated %s cluster, with the cluster endpoint’s DNS still on the old writer',
  (platform) => {
    let aurora: SimulatedPostgresCluster

    beforeAll(async () => {
      aurora = await SimulatedPostgresCluster.start(platform)
    }, 120_000)

    afterAll(async () => {
      await aurora?.stop()
    })

    it('writes to the promoted instance within 1 s, with no error surfaced (idempotent retry) and no write on the demoted node', async ({
      annotate,
    }) => {
      const { cluster } = aurora
      const primary = cluster.primary
      const replica = cluster.replica as NonNullable<typeof cluster.replica>
      const clusterEndpoint = await startProxy(primary.port)
      const db = createDb<Database>({
        dialect: 'postgres',
        writer: clusterEndpoint.url(cluster.writerUrl),
        pool: { connectTimeoutMs: 2_000 },
        topology: { discovery: true, instanceHostPattern: '127.0.0.1:?', refreshIntervalMs: 30_000 },
      })
      dbs.push(db)
      const events = collectEvents(db)

      // Idempotent writes (an upsert by key), retried by withRetry through the outage.
      const writes = idempotentWriteLoop(async (id) => {
        const row = await db
          .insertInto('beat')
          .values({ id, note: 'steady' })
          .onConflict((oc) => oc.column('id').doUpdateSet({ note: 'steady' }))
          .returning(serverPort.as('port'))
          .executeTakeFirstOrThrow()
        return Number(row.port)
      })
      const { successes, errors } = writes
      try {
        await writes.acknowledged(5, 'steady writes before the failover')
        expect(db.stats().writer.name).toBe(idOf(platform, primary.port))

        // Aurora's failover: the writer goes down, a reader is promoted, the cluster volume says so,
        // and the old writer comes back as a reader. DNS (the proxy) keeps pointing at it.
        await primary.stop('fast')
        const stoppedAt = performance.now()
        await replica.promote()
        const promotedAt = performance.now()
        await aurora.setInstances([
          { id: String(replica.port), writer: true },
          { id: String(primary.port), writer: false },
        ])
        const resumed = await writes.firstAfter(promotedAt, 'a write after the promotion')
        await rejoinAsStandby(primary.dataDir, replica.port)
        await primary.start()
        await writes.acknowledged(5, 'writes after the old writer came back as a reader', performance.now())
        await writes.stop()

        const promoteToWriteMs = Math.round(resumed.at - promotedAt)
        const message =
          `${platform} failover: promote() -> first write ${promoteToWriteMs} ms; stop -> first write ` +
          `${Math.round(resumed.at - stoppedAt)} ms; ${errors.length} errors surfaced; failover event ` +
          `durationMs ${events.failover[0]?.durationMs}`
        console.info(`[cluster-topology] ${message}`)
        await annotate(message, 'timing')

        expect(errors).toEqual([])
        expect(promoteToWriteMs).toBeLessThan(1_000)
        expect(events.failover).toEqual([
          expect.objectContaining({ from: idOf(platform, primary.port), to: idOf(platform, replica.port) }),
        ])
        expect(db.stats().writer.name).toBe(idOf(platform, replica.port))
        // Every write acknowledged after the promotion ran on the promoted instance.
        const late = successes.filter((write) => write.at > promotedAt)
        expect(new Set(late.map((write) => write.port))).toEqual(new Set([replica.port]))
        // No statement at all went through the stale cluster endpoint (only discovery's role probes,
        // which found a reader there).
        expect(db.stats().writers.find((writer) => writer.name === 'writer')?.queries).toBe(0)
        // The stale cluster endpoint leads to a reader, and the library says so if asked to write there.
        const [role] = await pgQuery(
          `postgres://postgres@127.0.0.1:${clusterEndpoint.port}/app`,
          'select pg_is_in_recovery() as standby',
        )
        expect(role?.standby).toBe(true)
        // The topology was read again after the failover and lists the new roles.
        await pollUntil(
          async () =>
            db.stats().topology?.instances.find((instance) => instance.role === 'writer')?.id ===
            idOf(platform, replica.port)
              ? true
              : undefined,
          { timeoutMs: 5_000, what: 'the topology read after the failover' },
        )
        expect(db.stats().readers.map((reader) => reader.name)).toEqual([idOf(platform, primary.port)])
      } finally {
        await writes.stop()
      }
    })
  },
)
