import { sql } from 'kysely'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createDb, type ResilientDb } from '../../src/index.js'
import { collectEvents } from '../support/fault-helpers.js'
import { type MariaDbCluster, startMariaDbCluster } from '../support/mariadb-cluster.js'
import { proxiesClosedAfterEachTest } from '../support/per-test.js'
import { pollUntil } from '../support/poll.js'
import { waitForReplica } from '../support/replication.js'
import { registerSecret } from '../support/secrets.js'
import { mysqlQuery } from '../support/sql.js'
import { type BeatDatabase, idempotentWriteLoop, mysqlBeatWrite } from '../support/write-loop.js'

// Topology discovery on a simulated RDS Multi-AZ DB cluster (MySQL). Such a cluster cannot run here;
// its topology is a plain table, `mysql.rds_topology` (id = the instance's server id, endpoint,
// port), which the AWS Advanced NodeJS Wrapper reads for it, and its writer is the source its
// readers replicate from (`SHOW REPLICA STATUS`'s Source_Server_Id; MariaDB names it
// Master_Server_Id), or the instance asked when it replicates from nobody. See "Multi-AZ DB cluster
// deployments" (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/multi-az-db-clusters-concepts.html).
// So on this file's own MariaDB cluster (a real primary and GTID replica) the table is created for
// real, and everything else is the real replication state: no shim. Its endpoints are the servers
// themselves; the cluster endpoint the application is given is a TCP proxy ("DNS").

type Database = BeatDatabase

const serverPort = sql<number>`@@port`

const dbs: Array<ResilientDb<Database>> = []
// Registered first so that it runs last (after hooks run in reverse): the dbs close through live proxies.
const startProxy = proxiesClosedAfterEachTest()
afterEach(async () => {
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
})

async function serverId(adminUrl: string): Promise<string> {
  const [row] = await mysqlQuery(adminUrl, 'select @@server_id as id')
  return String(row?.id)
}

async function startMultiAz(): Promise<{ cluster: MariaDbCluster; primaryId: string; replicaId: string }> {
  const cluster = await startMariaDbCluster()
  registerSecret(cluster.password)
  const replica = cluster.replica as NonNullable<MariaDbCluster['replica']>
  const [primaryId, replicaId] = await Promise.all([
    serverId(cluster.adminWriterUrl),
    serverId(cluster.adminReaderUrl),
  ])
  for (const statement of [
    'create table mysql.rds_topology (id int primary key, endpoint varchar(255) not null, port int not null)',
    `insert into mysql.rds_topology values (${primaryId}, '127.0.0.1', ${cluster.primary.port}), (${replicaId}, '127.0.0.1', ${replica.port})`,
    `grant select on mysql.rds_topology to 'app'@'127.0.0.1'`,
    `grant select on mysql.rds_topology to 'app'@'localhost'`,
    // SHOW REPLICA STATUS, as RDS lets its master user run it.
    `grant slave monitor on *.* to 'app'@'127.0.0.1'`,
    'create table app.beat (id int primary key, note varchar(100) not null)',
  ]) {
    await mysqlQuery(cluster.adminWriterUrl, statement)
  }
  await waitForReplica('mysql', cluster.adminWriterUrl, cluster.adminReaderUrl, 30_000)
  return { cluster, primaryId, replicaId }
}

describe('topology discovery on a simulated RDS Multi-AZ DB cluster (MySQL)', () => {
  let multiAz: Awaited<ReturnType<typeof startMultiAz>>

  beforeAll(async () => {
    multiAz = await startMultiAz()
  }, 120_000)

  afterAll(async () => {
    await multiAz?.cluster.stop()
  })

  it('detects it by mysql.rds_topology: writes go to the writer instance, reads to the reader, by the endpoints the table lists', async () => {
    const { cluster, primaryId, replicaId } = multiAz
    const clusterEndpoint = await startProxy(cluster.primary.port)
    const db = createDb<Database>({
      dialect: 'mysql',
      writer: clusterEndpoint.url(cluster.writerUrl),
      // Multi-AZ clusters list their endpoints; the pattern is there for Aurora and unused here.
      topology: { discovery: true, instanceHostPattern: '?.unused.invalid' },
    })
    dbs.push(db)
    const events = collectEvents(db)

    const read = await db.selectNoFrom(serverPort.as('port')).executeTakeFirstOrThrow()
    expect(Number(read.port)).toBe(cluster.replica?.port)
    await db.insertInto('beat').values({ id: 1, note: 'first' }).execute()
    const written = await db.writer.selectNoFrom(serverPort.as('port')).executeTakeFirstOrThrow()
    expect(Number(written.port)).toBe(cluster.primary.port)

    const stats = db.stats()
    expect(stats.topology?.platform).toBe('rds-multi-az-mysql')
    expect(stats.topology?.instances).toEqual(
      expect.arrayContaining([
        { id: primaryId, role: 'writer', address: `127.0.0.1:${cluster.primary.port}/app` },
        { id: replicaId, role: 'reader', address: `127.0.0.1:${cluster.replica?.port}/app` },
      ]),
    )
    expect(stats.writer).toMatchObject({ name: primaryId, platform: 'rds-multi-az-mysql' })
    expect(stats.readers.map((reader) => reader.name)).toEqual([replicaId])
    expect(stats.writers.find((writer) => writer.name === 'writer')?.queries).toBe(0)
    expect(events.failover).toEqual([])
    expect(events.error).toEqual([])
  })

  it('follows a failover to the promoted instance with the cluster endpoint still on the old writer: no error surfaced, the new writer found by its own replication state', async ({
    annotate,
  }) => {
    const { cluster, primaryId, replicaId } = multiAz
    const primary = cluster.primary
    const replica = cluster.replica as NonNullable<MariaDbCluster['replica']>
    const clusterEndpoint = await startProxy(primary.port)
    const db = createDb<Database>({
      dialect: 'mysql',
      writer: clusterEndpoint.url(cluster.writerUrl),
      pool: { connectTimeoutMs: 2_000 },
      topology: { discovery: true, instanceHostPattern: '?.unused.invalid' },
    })
    dbs.push(db)
    const events = collectEvents(db)

    const writes = idempotentWriteLoop(mysqlBeatWrite(db))
    const { successes, errors } = writes
    try {
      await writes.acknowledged(5, 'steady writes before the failover')
      expect(db.stats().writer.name).toBe(primaryId)
      await primary.kill()
      await replica.promote()
      const promotedAt = performance.now()
      const resumed = await writes.firstAfter(promotedAt, 'a write after the promotion')
      await writes.stop()
      const message = `rds-multi-az-mysql failover: promote() -> first write ${Math.round(resumed.at - promotedAt)} ms; ${errors.length} errors surfaced`
      console.info(`[multi-az-mysql] ${message}`)
      await annotate(message, 'timing')
      expect(errors).toEqual([])
      expect(events.failover).toEqual([expect.objectContaining({ from: primaryId, to: replicaId })])
      expect(new Set(successes.filter((write) => write.at > promotedAt).map((write) => write.port))).toEqual(
        new Set([replica.port]),
      )
      // The view read after the failover names the promoted instance the writer (it replicates from
      // nobody now).
      await pollUntil(
        async () =>
          db.stats().topology?.instances.find((instance) => instance.role === 'writer')?.id === replicaId
            ? true
            : undefined,
        { timeoutMs: 5_000, what: 'the topology read after the failover' },
      )
    } finally {
      await writes.stop()
    }
  })
})
