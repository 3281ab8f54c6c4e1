import { afterEach, describe, expect, test, vi } from 'vitest'
import type { PoolConfig, RoutingConfig } from '../../src/config/create-db-config.js'
import type { ResilientDb } from '../../src/create-db.js'
import { endpoint, FakePg, type FakeServer, fakeDb } from '../support/fake-pg.js'
import { collectEvents, failureOf } from '../support/fault-helpers.js'

// Reader health without a server: a reader that cannot be reached leaves rotation for the cooldown,
// is probed over a fresh connection, and comes back once it answers; with maxReplicaLagMs, a lagging
// reader leaves and comes back the same way. Cooldowns and check intervals are a few ms here;
// reader-health.test.ts shows the same against real servers.

interface Database {
  person: { id: number; server: string }
}

const opened: Array<ResilientDb<Database>> = []
afterEach(async () => {
  await Promise.all(opened.splice(0).map((db) => db.destroy()))
})

const COOLDOWN_MS = 30

function setup(options: { routing?: RoutingConfig; pool?: PoolConfig } = {}) {
  const fake = new FakePg()
  const writer = fake.server('writer')
  const readers = [fake.server('reader-0', 'standby'), fake.server('reader-1', 'standby')] as const
  const { db, cluster } = fakeDb<Database>(fake, {
    writer: endpoint('writer'),
    readers: readers.map((reader) => endpoint(reader.name)),
    pool: { connectTimeoutMs: 50, ...options.pool },
    retry: { minDelayMs: 0, maxDelayMs: 5 },
    routing: { readerCooldownMs: COOLDOWN_MS, ...options.routing },
  })
  opened.push(db)
  const events = collectEvents(db)
  const read = async (): Promise<string | undefined> =>
    (await db.selectFrom('person').selectAll().execute())[0]?.server
  /** Where the next `count` reads go. */
  const reads = async (count: number): Promise<Array<string | undefined>> => {
    const served: Array<string | undefined> = []
    for (let i = 0; i < count; i++) served.push(await read())
    return served
  }
  return { fake, writer, readers, db, cluster, events, read, reads }
}

const healthy = (db: ResilientDb<Database>) => db.stats().readers.map((reader) => reader.healthy)

describe('an unreachable reader', () => {
  test('is ejected, skipped, probed after the cooldown until it answers, then restored', async () => {
    const { readers, db, events, reads } = setup()
    const [r0] = readers as readonly [FakeServer, FakeServer]
    r0.connectBehaviour = 'refuse'
    expect(await reads(4)).toEqual(['reader-1', 'reader-1', 'reader-1', 'reader-1'])
    expect(events['reader-ejected']).toEqual([
      { endpoint: 'reader-0', reason: 'unreachable', lagMs: undefined, cooldownMs: COOLDOWN_MS },
    ])
    expect(healthy(db)).toEqual([false, true])
    // Still refusing at the first probe: reported, and it stays out for another cooldown.
    await vi.waitFor(() =>
      expect(events.error).toContainEqual({
        endpoint: 'reader-0',
        category: 'unavailable',
        code: 'ECONNREFUSED',
        reason: 'reader probe failed',
      }),
    )
    expect(events['reader-restored']).toEqual([])
    expect(healthy(db)).toEqual([false, true])

    r0.connectBehaviour = 'accept'
    await vi.waitFor(() => expect(events['reader-restored']).toHaveLength(1))
    expect(events['reader-restored'][0]).toMatchObject({ endpoint: 'reader-0' })
    expect(events['reader-restored'][0]?.ejectedForMs).toBeGreaterThanOrEqual(2 * COOLDOWN_MS - 5)
    expect(healthy(db)).toEqual([true, true])
    // The probe's statement, then reads again.
    expect(r0.count(/^select 1$/)).toBe(1)
    expect(new Set(await reads(4))).toEqual(new Set(['reader-0', 'reader-1']))
    // Ejected once: the reads that failed over did not eject it again.
    expect(events['reader-ejected']).toHaveLength(1)
  })

  test('its idle connections are closed when it leaves rotation', async () => {
    // A cooldown the assertions cannot outlast on a loaded machine: the probe after it would open a
    // connection again (and restore the reader).
    const { readers, db, reads } = setup({ routing: { readerCooldownMs: 60_000 } })
    const [r0] = readers as readonly [FakeServer, FakeServer]
    await reads(2)
    expect(db.stats().readers[0]?.idle).toBe(1)
    r0.failNext(/^select/, 'not-queryable')
    await reads(1)
    expect(db.stats().readers[0]).toMatchObject({ healthy: false, idle: 0 })
    expect(r0.sessions.size).toBe(0)
  })

  test('with every reader out, reads go to the writer (fallback: writer) and come back after the restore', async () => {
    const { readers, events, read, reads } = setup()
    for (const reader of readers) reader.connectBehaviour = 'refuse'
    expect(await reads(3)).toEqual(['writer', 'writer', 'writer'])
    expect(events['reader-ejected'].map((event) => event.endpoint).sort()).toEqual(['reader-0', 'reader-1'])
    for (const reader of readers) reader.connectBehaviour = 'accept'
    await vi.waitFor(() => expect(events['reader-restored']).toHaveLength(2))
    expect(await read()).toMatch(/^reader-/)
  })

  test("with every reader out and fallback: 'error', reads fail with NO_READER_AVAILABLE until one is back", async () => {
    const { readers, events, read } = setup({ routing: { fallback: 'error' } })
    for (const reader of readers) reader.connectBehaviour = 'refuse'
    expect(await failureOf(read())).toMatchObject({ code: 'NO_READER_AVAILABLE' })
    expect(await failureOf(read())).toMatchObject({ code: 'NO_READER_AVAILABLE' })
    readers[1].connectBehaviour = 'accept'
    await vi.waitFor(() => expect(events['reader-restored']).toHaveLength(1))
    expect(await read()).toBe('reader-1')
  })

  test('a probe answered with a server error counts as reachable: the reader is restored', async () => {
    const { readers, events, db, reads } = setup()
    const [r0] = readers as readonly [FakeServer, FakeServer]
    r0.failNextConnect('refuse')
    await reads(1)
    expect(healthy(db)).toEqual([false, true])
    r0.failNext(/^select 1$/, 'permission-denied')
    await vi.waitFor(() => expect(events['reader-restored']).toHaveLength(1))
    expect(events.error).toContainEqual(
      expect.objectContaining({ endpoint: 'reader-0', code: '42501', reason: 'reader probe failed' }),
    )
    expect(healthy(db)).toEqual([true, true])
  })

  test('a reader whose server stops answering is ejected by the liveness monitor', async () => {
    const { readers, events, db, read, reads } = setup({ pool: { probeAfterMs: 20, probeTimeoutMs: 20 } })
    const [r0] = readers as readonly [FakeServer, FakeServer]
    // Connected first: a server frozen before its first connection answers no platform detection,
    // and its connect deadline ejects it (ConnectTimeoutError), not the liveness monitor.
    expect(await reads(2)).toEqual(['reader-0', 'reader-1'])
    r0.frozen = true
    expect(await read()).toBe('reader-1')
    expect(events['endpoint-unresponsive']).toEqual([expect.objectContaining({ endpoint: 'reader-0' })])
    expect(events['reader-ejected']).toEqual([
      expect.objectContaining({ endpoint: 'reader-0', reason: 'unreachable' }),
    ])
    r0.frozen = false
    await vi.waitFor(() => expect(events['reader-restored']).toHaveLength(1))
    expect(healthy(db)).toEqual([true, true])
  })

  test('no probe runs once the db is destroyed', async () => {
    const { readers, db, reads } = setup()
    const [r0] = readers as readonly [FakeServer, FakeServer]
    r0.connectBehaviour = 'refuse'
    await reads(1)
    const attempts = r0.connectAttempts
    await db.destroy()
    await new Promise((resolve) => setTimeout(resolve, 3 * COOLDOWN_MS))
    expect(r0.connectAttempts).toBe(attempts)
  })
})

describe('a lagging reader (routing.maxReplicaLagMs)', () => {
  const LAG = { maxReplicaLagMs: 100, lagCheckIntervalMs: 10 } as const

  test('is ejected while its lag is above the limit, kept out while it stays behind, and restored once it caught up', async () => {
    const { readers, events, db, cluster, reads } = setup({ routing: LAG })
    const [r0] = readers as readonly [FakeServer, FakeServer]
    r0.lagMs = 500
    // Lag checks run from the moment the pools exist (the first statement, or open()).
    await cluster.open()
    await vi.waitFor(() => expect(events['reader-ejected']).toHaveLength(1))
    expect(events['reader-ejected']).toEqual([
      { endpoint: 'reader-0', reason: 'lagging', lagMs: 500, cooldownMs: COOLDOWN_MS },
    ])
    expect(db.stats().readers[0]).toMatchObject({ healthy: false, lagMs: 500 })
    expect(await reads(3)).toEqual(['reader-1', 'reader-1', 'reader-1'])
    // Probed again after each cooldown: still behind, still out, nothing reported.
    const lagChecks = r0.count(/as lag_ms/)
    await vi.waitFor(() => expect(r0.count(/as lag_ms/)).toBeGreaterThan(lagChecks + 1))
    expect(events['reader-restored']).toEqual([])
    expect(healthy(db)).toEqual([false, true])

    r0.lagMs = 20
    await vi.waitFor(() => expect(events['reader-restored']).toHaveLength(1))
    expect(db.stats().readers[0]).toMatchObject({ healthy: true, lagMs: 20 })
    expect(new Set(await reads(4))).toEqual(new Set(['reader-0', 'reader-1']))
  })

  test('a replica that reports no lag is ejected as lag-unknown, never taken for 0, and restored once it reports one', async () => {
    const { readers, events, db, cluster, reads } = setup({ routing: LAG })
    const [r0] = readers as readonly [FakeServer, FakeServer]
    r0.lagMs = null
    await cluster.open()
    await vi.waitFor(() => expect(events['reader-ejected']).toHaveLength(1))
    expect(events['reader-ejected']).toEqual([
      { endpoint: 'reader-0', reason: 'lag-unknown', lagMs: undefined, cooldownMs: COOLDOWN_MS },
    ])
    expect(db.stats().readers[0]).toMatchObject({ healthy: false, lagSource: 'postgres' })
    expect(db.stats().readers[0]?.lagMs).toBeUndefined()
    expect(await reads(2)).toEqual(['reader-1', 'reader-1'])
    // Probed after each cooldown, still silent: still out.
    const lagChecks = r0.count(/as lag_ms/)
    await vi.waitFor(() => expect(r0.count(/as lag_ms/)).toBeGreaterThan(lagChecks + 1))
    expect(events['reader-restored']).toEqual([])

    r0.lagMs = 5
    await vi.waitFor(() => expect(events['reader-restored']).toHaveLength(1))
    expect(db.stats().readers[0]).toMatchObject({ healthy: true, lagMs: 5 })
  })

  test('a lag check that cannot reach the reader ejects it as unreachable', async () => {
    const { readers, events, cluster } = setup({ routing: LAG })
    const [r0] = readers as readonly [FakeServer, FakeServer]
    r0.connectBehaviour = 'refuse'
    await cluster.open()
    await vi.waitFor(() => expect(events['reader-ejected']).toHaveLength(1))
    expect(events['reader-ejected'][0]).toMatchObject({ endpoint: 'reader-0', reason: 'unreachable' })
    expect(events.error).toContainEqual(
      expect.objectContaining({ endpoint: 'reader-0', code: 'ECONNREFUSED', reason: 'lag check failed' }),
    )
  })

  test('a lag check the reader answers with an error (no privilege) keeps it in rotation', async () => {
    const { readers, events, db, cluster } = setup({ routing: LAG })
    const [r0] = readers as readonly [FakeServer, FakeServer]
    r0.failNext(/as lag_ms/, 'permission-denied', 3)
    await cluster.open()
    await vi.waitFor(() => expect(r0.count(/as lag_ms/)).toBeGreaterThanOrEqual(4))
    expect(events.error.filter((event) => event.reason === 'lag check failed')).toEqual([
      { endpoint: 'reader-0', category: 'fatal', code: '42501', reason: 'lag check failed' },
      { endpoint: 'reader-0', category: 'fatal', code: '42501', reason: 'lag check failed' },
      { endpoint: 'reader-0', category: 'fatal', code: '42501', reason: 'lag check failed' },
    ])
    expect(events['reader-ejected']).toEqual([])
    expect(healthy(db)).toEqual([true, true])
  })
})
