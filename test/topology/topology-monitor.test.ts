import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import type { ResilientDb } from '../../src/create-db.js'
import { FakePg, fakeDb } from '../support/fake-pg.js'
import { collectEvents } from '../support/fault-helpers.js'
import { pollUntil } from '../support/poll.js'

// Topology discovery's decisions without a server: a fake Aurora PostgreSQL cluster whose instances
// share one `aurora_replica_status()` (FakePg.auroraTopology) and a cluster endpoint that is a host
// alias ("DNS") of one of them. Instance ids are the fake servers' names, so the host pattern '?'
// maps them back. Real servers: test/topology/cluster-topology.test.ts.

interface Database {
  person: { id: number }
}

const opened: Array<ResilientDb<Database>> = []
afterEach(async () => {
  await Promise.all(opened.splice(0).map((db) => db.destroy()))
})

function auroraCluster(): {
  fake: FakePg
  node1: ReturnType<FakePg['server']>
  node2: ReturnType<FakePg['server']>
} {
  const fake = new FakePg()
  const node1 = fake.server('node-1', 'primary')
  const node2 = fake.server('node-2', 'standby')
  fake.alias('cluster', node1)
  fake.auroraTopology = [
    { id: 'node-1', writer: true },
    { id: 'node-2', writer: false },
  ]
  return { fake, node1, node2 }
}

function open(fake: FakePg, topology: { refreshIntervalMs?: number; discovery?: boolean } = {}) {
  const { db, cluster } = fakeDb<Database>(fake, {
    writer: { host: 'cluster', name: 'cluster', user: 'app', password: 'fake-password', database: 'app' },
    pool: { connectTimeoutMs: 500 },
    topology: { discovery: true, instanceHostPattern: '?', ...topology },
  })
  opened.push(db)
  return { db, cluster, events: collectEvents(db) }
}

const WRITE = /^insert into "person"/

describe('topology discovery decisions (fake Aurora PostgreSQL)', () => {
  it('moves writes from the cluster endpoint to the writer instance and reads to the reader instances, with no failover event', async () => {
    const { fake, node1, node2 } = auroraCluster()
    const { db, events } = open(fake)
    await db.insertInto('person').values({ id: 1 }).execute()
    await db.selectFrom('person').selectAll().execute()
    expect(db.stats().writer.name).toBe('node-1')
    expect(db.stats().readers.map((reader) => reader.name)).toEqual(['node-2'])
    expect(node1.count(WRITE)).toBe(1)
    expect(node2.count(/^select \* from "person"/)).toBe(1)
    // The write went to node-1 by its instance endpoint, not by the cluster endpoint's connections.
    expect(db.stats().writers.find((writer) => writer.name === 'cluster')?.queries).toBe(0)
    expect(events.failover).toEqual([])
    expect(db.stats().topology?.platform).toBe('aurora-postgres')
  })

  it('a switchover the view reports (no error on this side) moves writes at the next refresh, as a failover', async () => {
    const { fake, node1, node2 } = auroraCluster()
    const { db, events } = open(fake, { refreshIntervalMs: 100 })
    await db.insertInto('person').values({ id: 1 }).execute()
    node1.role = 'standby'
    node2.role = 'primary'
    fake.auroraTopology = [
      { id: 'node-2', writer: true },
      { id: 'node-1', writer: false },
    ]
    await pollUntil(async () => (db.stats().writer.name === 'node-2' ? true : undefined), {
      timeoutMs: 5_000,
      what: 'writes moved to node-2',
    })
    expect(events.failover).toEqual([
      expect.objectContaining({ from: 'node-1', to: 'node-2', reason: 'topology' }),
    ])
    await pollUntil(
      async () =>
        db
          .stats()
          .readers.map((reader) => reader.name)
          .join() === 'node-1'
          ? true
          : undefined,
      { timeoutMs: 5_000, what: 'node-1 in rotation as a reader' },
    )
    await db.insertInto('person').values({ id: 2 }).execute()
    expect(node2.count(WRITE)).toBe(1)
  })

  it('a view that names a writer which says it is a reader moves no write (the topology only proposes)', async () => {
    const { fake, node1 } = auroraCluster()
    const { db } = open(fake, { refreshIntervalMs: 100 })
    await db.insertInto('person').values({ id: 1 }).execute()
    // The view is ahead of (or wrong about) the instances: node-2 is still a standby.
    fake.auroraTopology = [
      { id: 'node-2', writer: true },
      { id: 'node-1', writer: false },
    ]
    // Discovery probes every candidate and keeps node-1, the one that accepts writes.
    await pollUntil(async () => (db.stats().topology?.instances[0]?.id === 'node-2' ? true : undefined), {
      timeoutMs: 5_000,
      what: 'the changed view read',
    })
    await db.insertInto('person').values({ id: 2 }).execute()
    expect(db.stats().writer.name).toBe('node-1')
    expect(node1.count(WRITE)).toBe(2)
  })

  it('a new instance is read from and a removed one dropped at the next refresh; the current writer is never dropped', async () => {
    const { fake } = auroraCluster()
    const node3 = fake.server('node-3', 'standby')
    const { db } = open(fake, { refreshIntervalMs: 100 })
    await db.selectFrom('person').selectAll().execute()
    fake.auroraTopology = [
      { id: 'node-1', writer: true },
      { id: 'node-2', writer: false },
      { id: 'node-3', writer: false },
    ]
    await pollUntil(async () => (db.stats().readers.length === 2 ? true : undefined), {
      timeoutMs: 5_000,
      what: 'node-3 added',
    })
    for (let i = 0; i < 4; i++) await db.selectFrom('person').selectAll().execute()
    expect(node3.count(/^select \* from "person"/)).toBe(2)

    // A view that lists neither node-2 nor the current writer: node-2 leaves; node-1 stays the writer.
    fake.auroraTopology = [{ id: 'node-3', writer: true }]
    await pollUntil(async () => (db.stats().readers.length === 0 ? true : undefined), {
      timeoutMs: 5_000,
      what: 'readers dropped',
    })
    expect(db.stats().writers.map((writer) => writer.name)).toContain('node-1')
    expect(db.stats().writer.name).toBe('node-1')
  })

  it('a view that cannot be read, or lists no writer, keeps the last topology and says so', async () => {
    const { fake } = auroraCluster()
    const { db, events } = open(fake, { refreshIntervalMs: 100 })
    await db.selectFrom('person').selectAll().execute()
    fake.auroraTopology = [{ id: 'node-2', writer: false }]
    await pollUntil(
      async () =>
        events.error.some((event) => /topology read failed/.test(event.reason)) ? true : undefined,
      { timeoutMs: 5_000, what: 'the error event' },
    )
    expect(db.stats().readers.map((reader) => reader.name)).toEqual(['node-2'])
    expect(db.stats().writer.name).toBe('node-1')
  })

  it('discovery on a server without a topology view: one error event, and the configured endpoints as given', async () => {
    const fake = new FakePg()
    fake.server('cluster', 'primary')
    const { db, events } = open(fake, { refreshIntervalMs: 100 })
    await db.insertInto('person').values({ id: 1 }).execute()
    await db.selectNoFrom(sql<number>`1`.as('one')).execute()
    expect(db.stats().writer.name).toBe('cluster')
    expect(db.stats().topology).toBeUndefined()
    const notices = events.error.filter((event) => /no topology view/.test(event.reason))
    expect(notices).toHaveLength(1)
    expect(notices[0]?.reason).toMatch(/the server is postgres/)
  })
})
