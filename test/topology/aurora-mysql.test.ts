import { sql } from 'kysely'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createDb, type ResilientDb } from '../../src/index.js'
import { AuroraMySqlShim, SimulatedAuroraMySqlView } from '../support/aurora-mysql-shim.js'
import { collectEvents } from '../support/fault-helpers.js'
import { type MariaDbCluster, startMariaDbCluster } from '../support/mariadb-cluster.js'
import { proxiesClosedAfterEachTest } from '../support/per-test.js'
import { msUntil, pollUntil } from '../support/poll.js'
import { waitForReplica } from '../support/replication.js'
import { registerSecret } from '../support/secrets.js'
import { mysqlQuery } from '../support/sql.js'
import { type BeatDatabase, idempotentWriteLoop, mysqlBeatWrite } from '../support/write-loop.js'

// Topology discovery and the lag check on a simulated Aurora MySQL cluster: each of this file's own
// MariaDB clusters (a real primary and GTID replica) is reached through one AuroraMySqlShim per
// server (test/support/aurora-mysql-shim.ts), which answers Aurora's `aurora_version` variable,
// `information_schema.replica_host_status` (a real table written on every server, as Aurora's
// shared cluster volume would report it) and `@@aurora_server_id`. The library sends exactly what
// it sends to Aurora MySQL. Instance identifiers are the shims' ports, and the instance host pattern
// '127.0.0.1:?' maps them to the shims, as '?.<cluster-id>.<region>.rds.amazonaws.com' maps Aurora's
// to its instances. The cluster endpoint the application is given is a FaultProxy in front of the
// writer's shim: its target is "DNS", which a failover leaves pointing at the old writer.

type Database = BeatDatabase

const serverPort = sql<number>`@@port`

/** A MariaDB cluster dressed as Aurora MySQL: a shim per server and the simulated view. */
class SimulatedAuroraMySql {
  private constructor(
    readonly cluster: MariaDbCluster,
    readonly writerShim: AuroraMySqlShim,
    readonly readerShim: AuroraMySqlShim,
    readonly view: SimulatedAuroraMySqlView,
  ) {}

  static async start(options: { replicaApplyDelayMs?: number } = {}): Promise<SimulatedAuroraMySql> {
    const cluster = await startMariaDbCluster(options)
    registerSecret(cluster.password)
    const replica = cluster.replica as NonNullable<MariaDbCluster['replica']>
    const [writerShim, readerShim] = await Promise.all([
      AuroraMySqlShim.start({ targetPort: cluster.primary.port }),
      AuroraMySqlShim.start({ targetPort: replica.port }),
    ])
    await SimulatedAuroraMySqlView.install(cluster.adminWriterUrl, ['127.0.0.1', 'localhost'])
    await mysqlQuery(
      cluster.adminWriterUrl,
      'create table app.beat (id int primary key, note varchar(100) not null)',
    )
    await waitForReplica('mysql', cluster.adminWriterUrl, cluster.adminReaderUrl, 30_000)
    const view = new SimulatedAuroraMySqlView([cluster.adminWriterUrl, cluster.adminReaderUrl])
    const aurora = new SimulatedAuroraMySql(cluster, writerShim, readerShim, view)
    await aurora.setLag(0)
    return aurora
  }

  get writerId(): string {
    return this.writerShim.instanceId
  }

  get readerId(): string {
    return this.readerShim.instanceId
  }

  /** The view as it stands between failovers: the primary's shim the writer, the replica's a reader. */
  setLag(lagMs: number | null): Promise<void> {
    return this.view.set([
      { serverId: this.writerId, writer: true },
      { serverId: this.readerId, writer: false, lagMs },
    ])
  }

  async stop(): Promise<void> {
    await Promise.all([this.writerShim.close(), this.readerShim.close()])
    await this.cluster.stop()
  }
}

const dbs: Array<ResilientDb<Database>> = []
// Registered first so that it runs last (after hooks run in reverse): the dbs close through live proxies.
const startProxy = proxiesClosedAfterEachTest()
afterEach(async () => {
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
})

describe('topology discovery on a simulated Aurora MySQL cluster', () => {
  let aurora: SimulatedAuroraMySql

  beforeAll(async () => {
    aurora = await SimulatedAuroraMySql.start()
  }, 120_000)

  afterAll(async () => {
    await aurora?.stop()
  })

  it('detects Aurora MySQL and reads replica_host_status: writes go to the writer instance, reads to the reader, not through the cluster endpoint', async () => {
    const { cluster, writerId, readerId } = aurora
    const clusterEndpoint = await startProxy(aurora.writerShim.port)
    const db = createDb<Database>({
      dialect: 'mysql',
      writer: clusterEndpoint.url(cluster.writerUrl),
      topology: { discovery: true, instanceHostPattern: '127.0.0.1:?', refreshIntervalMs: 30_000 },
    })
    dbs.push(db)
    const events = collectEvents(db)
    const rewrittenBefore = aurora.writerShim.stats().rewritten + aurora.readerShim.stats().rewritten

    const read = await db.selectNoFrom(serverPort.as('port')).executeTakeFirstOrThrow()
    expect(Number(read.port)).toBe(cluster.replica?.port)
    await db.insertInto('beat').values({ id: 1, note: 'first' }).execute()
    const written = await db.writer.selectNoFrom(serverPort.as('port')).executeTakeFirstOrThrow()
    expect(Number(written.port)).toBe(cluster.primary.port)
    // The write ran on the primary: the replica has it once replicated.
    await waitForReplica('mysql', cluster.adminWriterUrl, cluster.adminReaderUrl)
    const [row] = await mysqlQuery(cluster.adminReaderUrl, 'select note from app.beat where id = 1')
    expect(row?.note).toBe('first')

    const stats = db.stats()
    expect(stats.topology).toEqual({
      platform: 'aurora-mysql',
      // In the view's order, which Aurora does not define.
      instances: expect.arrayContaining([
        { id: writerId, role: 'writer', address: `127.0.0.1:${writerId}/app` },
        { id: readerId, role: 'reader', address: `127.0.0.1:${readerId}/app` },
      ]),
      readAt: expect.any(Number),
    })
    expect(stats.topology?.instances).toHaveLength(2)
    expect(stats.writer).toMatchObject({ name: writerId, role: 'writer', platform: 'aurora-mysql' })
    expect(stats.readers.map((reader) => reader.name)).toEqual([readerId])
    // The cluster endpoint served the discovery only; the statements went to the instances directly.
    expect(stats.writers.find((writer) => writer.name === 'writer')?.queries).toBe(0)
    // The platform came from Aurora's variable and the topology from its view, through the shims.
    expect(aurora.writerShim.stats().rewritten + aurora.readerShim.stats().rewritten).toBeGreaterThan(
      rewrittenBefore,
    )
    expect(events.failover).toEqual([])
    expect(events.error).toEqual([])
  })

  it('adds a reader within one refresh interval, and drops one that stopped reporting for 5 minutes at the next refresh', async () => {
    const { cluster, writerId, readerId } = aurora
    // A new reader instance: another shim on the replica, so its traffic can be told apart.
    const added = await AuroraMySqlShim.start({ targetPort: cluster.replica?.port as number })
    try {
      const addedId = added.instanceId
      const refreshIntervalMs = 500
      const db = createDb<Database>({
        dialect: 'mysql',
        writer: aurora.writerShim.url(cluster.writerUrl),
        topology: { discovery: true, instanceHostPattern: '127.0.0.1:?', refreshIntervalMs },
      })
      dbs.push(db)
      const events = collectEvents(db)
      const readPorts = async (count: number) => {
        for (let i = 0; i < count; i++) await db.selectNoFrom(serverPort.as('port')).execute()
      }
      await readPorts(2)
      expect(db.stats().readers.map((reader) => reader.name)).toEqual([readerId])

      await aurora.view.set([
        { serverId: writerId, writer: true },
        { serverId: readerId, writer: false, lagMs: 0 },
        { serverId: addedId, writer: false, lagMs: 0 },
      ])
      const firstReadMs = await msUntil(
        () => readPorts(2),
        () => added.stats().queries > 0,
        'a read on the added reader',
      )
      console.info(`[aurora-mysql] added reader: first read after ${Math.round(firstReadMs)} ms`)
      // One refresh interval, plus the time to open its pool on this (possibly loaded) machine.
      expect(firstReadMs).toBeLessThan(refreshIntervalMs + 1_500)
      expect(new Set(db.stats().readers.map((reader) => reader.name))).toEqual(new Set([readerId, addedId]))

      // The added instance last reported 6 minutes ago: the topology query leaves it out.
      await aurora.view.set([
        { serverId: writerId, writer: true },
        { serverId: readerId, writer: false, lagMs: 0 },
        { serverId: addedId, writer: false, lagMs: 0, ageSeconds: 360 },
      ])
      await pollUntil(
        async () => (db.stats().readers.some((reader) => reader.name === addedId) ? undefined : true),
        { timeoutMs: 10_000, intervalMs: 20, what: 'the silent reader out of rotation' },
      )
      const sentBefore = added.stats().queries
      await readPorts(20)
      expect(added.stats().queries).toBe(sentBefore)
      await pollUntil(async () => (added.stats().live === 0 ? true : undefined), {
        timeoutMs: 5_000,
        what: 'the removed reader’s connections closed',
      })
      expect(events.error).toEqual([])
    } finally {
      await aurora.setLag(0)
      await added.close()
    }
  })
})

describe('the lag check on a simulated Aurora MySQL reader', () => {
  let aurora: SimulatedAuroraMySql

  beforeAll(async () => {
    // The replica applies each transaction 2 s late (MariaDB counts whole seconds: 1-2 s), so after
    // a write it is really behind by position, and the lag check asks the view for its lag.
    aurora = await SimulatedAuroraMySql.start({ replicaApplyDelayMs: 2_000 })
  }, 120_000)

  afterAll(async () => {
    await aurora?.stop()
  })

  it('ejects the reader when replica_host_status reports lag above maxReplicaLagMs, restores it when the lag is small again, and ejects it while the lag is NULL', async () => {
    const { cluster, readerId } = aurora
    const maxReplicaLagMs = 500
    const db = createDb<Database>({
      dialect: 'mysql',
      writer: aurora.writerShim.url(cluster.writerUrl),
      topology: { discovery: true, instanceHostPattern: '127.0.0.1:?', refreshIntervalMs: 30_000 },
      routing: { maxReplicaLagMs, lagCheckIntervalMs: 100, readerCooldownMs: 200 },
    })
    dbs.push(db)
    const events = collectEvents(db)
    let nextId = 1
    /** A write the replica applies 1-2 s late: behind by position meanwhile. */
    const fallBehind = () => db.insertInto('beat').values({ id: nextId++, note: 'lag' }).execute()

    await aurora.setLag(5_000)
    await fallBehind()
    const ejected = await pollUntil(async () => events['reader-ejected'][0], {
      timeoutMs: 10_000,
      what: 'the lagging reader to be ejected',
    })
    expect(ejected).toMatchObject({ endpoint: readerId, reason: 'lagging', lagMs: 5_000 })
    expect(db.stats().readers[0]).toMatchObject({ name: readerId, healthy: false, lagSource: 'aurora-mysql' })

    // The view reports a small lag again: the probe after the cooldown restores it (the replica may
    // still be behind by position: Aurora's own lag is what counts).
    await aurora.setLag(20)
    await pollUntil(async () => events['reader-restored'][0], {
      timeoutMs: 10_000,
      what: 'the reader to be restored once the view reports a small lag',
    })
    expect(db.stats().readers[0]).toMatchObject({ healthy: true, lagSource: 'aurora-mysql' })

    // Aurora reports no lag for it (NULL): unknown, never taken for 0.
    await waitForReplica('mysql', cluster.adminWriterUrl, cluster.adminReaderUrl, 10_000)
    await aurora.setLag(null)
    await fallBehind()
    const unknown = await pollUntil(async () => events['reader-ejected'][1], {
      timeoutMs: 10_000,
      what: 'the reader with no reported lag to be ejected',
    })
    expect(unknown).toMatchObject({ endpoint: readerId, reason: 'lag-unknown', lagMs: undefined })
    expect(db.stats().readers[0]?.lagMs).toBeUndefined()

    await aurora.setLag(10)
    await pollUntil(async () => events['reader-restored'][1], {
      timeoutMs: 10_000,
      what: 'the reader to be restored once the view reports its lag again',
    })
    expect(db.stats().readers[0]).toMatchObject({ healthy: true, lagSource: 'aurora-mysql' })
    expect(events.error).toEqual([])
  }, 60_000)
})

describe('failover on a simulated Aurora MySQL cluster, with the cluster endpoint’s DNS still on the old writer', () => {
  let aurora: SimulatedAuroraMySql

  beforeAll(async () => {
    aurora = await SimulatedAuroraMySql.start()
  }, 120_000)

  afterAll(async () => {
    await aurora?.stop()
  })

  it('writes to the promoted instance within 1 s, with no error surfaced (idempotent retry) and no write on the demoted node', async ({
    annotate,
  }) => {
    const { cluster, writerId, readerId } = aurora
    const primary = cluster.primary
    const replica = cluster.replica as NonNullable<MariaDbCluster['replica']>
    const clusterEndpoint = await startProxy(aurora.writerShim.port)
    const db = createDb<Database>({
      dialect: 'mysql',
      writer: clusterEndpoint.url(cluster.writerUrl),
      pool: { connectTimeoutMs: 2_000 },
      topology: { discovery: true, instanceHostPattern: '127.0.0.1:?', refreshIntervalMs: 30_000 },
    })
    dbs.push(db)
    const events = collectEvents(db)

    // Idempotent writes (an upsert by key), retried by withRetry through the outage.
    const writes = idempotentWriteLoop(mysqlBeatWrite(db))
    const { successes, errors } = writes
    try {
      await writes.acknowledged(5, 'steady writes before the failover')
      expect(db.stats().writer.name).toBe(writerId)

      // Aurora's failover: the writer goes down, a reader is promoted and the cluster volume says
      // so. DNS (the proxy) keeps pointing at the old writer.
      await primary.stop('immediate')
      const stoppedAt = performance.now()
      await replica.promote()
      const promotedAt = performance.now()
      await aurora.view.set([
        { serverId: readerId, writer: true },
        { serverId: writerId, writer: false, lagMs: null },
      ])
      const resumed = await writes.firstAfter(promotedAt, 'a write after the promotion')

      // The old writer comes back as a reader (read_only, its view rows the cluster's), while the
      // cluster endpoint still leads to it. The endpoint turns connections away until it is read-only,
      // as an instance still starting up would.
      clusterEndpoint.setMode('refuse')
      await primary.start()
      await mysqlQuery(cluster.adminWriterUrl, 'set global read_only = 1')
      await aurora.view.set(
        [
          { serverId: readerId, writer: true },
          { serverId: writerId, writer: false, lagMs: null },
        ],
        [cluster.adminWriterUrl],
      )
      clusterEndpoint.setMode('pass')
      const [before] = await mysqlQuery(cluster.adminWriterUrl, 'select count(*) as n from app.beat')
      await writes.acknowledged(5, 'writes after the old writer came back as a reader', performance.now())
      await writes.stop()
      // Nothing was written on the demoted node since it came back.
      const [now] = await mysqlQuery(cluster.adminWriterUrl, 'select count(*) as n from app.beat')
      expect(Number(now?.n)).toBe(Number(before?.n))
      // The stale cluster endpoint leads to a reader.
      const [role] = await mysqlQuery(
        clusterEndpoint.url(cluster.writerUrl),
        'select @@global.read_only as ro',
      )
      expect(Number(role?.ro)).toBe(1)

      const promoteToWriteMs = Math.round(resumed.at - promotedAt)
      const message =
        `aurora-mysql failover: promote() -> first write ${promoteToWriteMs} ms; stop -> first write ` +
        `${Math.round(resumed.at - stoppedAt)} ms; ${errors.length} errors surfaced; failover event ` +
        `durationMs ${events.failover[0]?.durationMs}`
      console.info(`[aurora-mysql] ${message}`)
      await annotate(message, 'timing')

      expect(errors).toEqual([])
      expect(promoteToWriteMs).toBeLessThan(1_000)
      expect(events.failover).toEqual([expect.objectContaining({ from: writerId, to: readerId })])
      expect(db.stats().writer.name).toBe(readerId)
      // Every write acknowledged after the promotion ran on the promoted instance.
      const late = successes.filter((write) => write.at > promotedAt)
      expect(new Set(late.map((write) => write.port))).toEqual(new Set([replica.port]))
      // No statement went through the stale cluster endpoint.
      expect(db.stats().writers.find((writer) => writer.name === 'writer')?.queries).toBe(0)
      // The topology was read again after the failover and lists the new roles.
      await pollUntil(
        async () =>
          db.stats().topology?.instances.find((instance) => instance.role === 'writer')?.id === readerId
            ? true
            : undefined,
        { timeoutMs: 5_000, what: 'the topology read after the failover' },
      )
      expect(db.stats().topology?.platform).toBe('aurora-mysql')
      expect(db.stats().readers.map((reader) => reader.name)).toEqual([writerId])
    } finally {
      await writes.stop()
    }
  })
})
