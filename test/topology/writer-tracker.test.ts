import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest'
import type { ResilientDb } from '../../src/create-db.js'
import type { Endpoint } from '../../src/endpoint/endpoint.js'
import { ResilientEvents } from '../../src/events/resilient-events.js'
import { classifyError } from '../../src/retry/classify-error.js'
import { WriterTracker } from '../../src/topology/writer-tracker.js'
import { endpoint, FakePg, type FakeServer, fakeDb, systemError } from '../support/fake-pg.js'
import { collectEvents, failureOf } from '../support/fault-helpers.js'

// Writer discovery without a server. First through createDb over fake servers (a demoted writer, a
// crashed one, a promotion that takes a while, a candidate that hangs), then the WriterTracker alone
// over stub endpoints and fake timers, for its schedule: probe intervals, giving up, one discovery
// at a time. writer-discovery.test.ts shows the same against real servers.

interface Database {
  person: { id: number; server: string }
}

const INSERT = /^insert/

describe('writer discovery through createDb', () => {
  const opened: Array<ResilientDb<Database>> = []
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((db) => db.destroy()))
  })

  /** Candidates `names`, the first primary and the others standbys, unless `roles` says otherwise. */
  function setup(
    names: string[],
    roles: Array<'primary' | 'standby'> = names.map((_, i) => (i === 0 ? 'primary' : 'standby')),
  ) {
    const fake = new FakePg()
    const servers = names.map((name, i) => fake.server(name, roles[i]))
    const { db, cluster } = fakeDb<Database>(fake, {
      writer: names.map(endpoint),
      pool: { connectTimeoutMs: 40 },
      retry: { minDelayMs: 0, maxDelayMs: 20, maxElapsedMs: 3_000 },
    })
    opened.push(db)
    const events = collectEvents(db)
    const order: string[] = []
    db.on('retry', () => order.push('retry'))
    db.on('failover', () => order.push('failover'))
    db.on('error', (event) => order.push(`error: ${event.endpoint} ${event.reason}`))
    const write = (id = 1) => db.insertInto('person').values({ id, server: 'x' }).execute()
    return {
      fake,
      servers: servers as [FakeServer, FakeServer, ...FakeServer[]],
      db,
      cluster,
      events,
      order,
      write,
    }
  }

  test('at startup, the candidate that answers writer is used; the others are asked once', async () => {
    const { servers, db, events, write } = setup(['a', 'b', 'c'], ['standby', 'standby', 'primary'])
    const [a, b, c] = servers
    a.connectBehaviour = 'refuse'
    await write()
    expect(c?.count(INSERT)).toBe(1)
    expect([a.roleProbes, b.roleProbes, c?.roleProbes]).toEqual([0, 1, 1])
    expect(a.connectAttempts).toBe(1)
    expect(db.stats().writer.name).toBe('c')
    expect(events.failover).toEqual([])
    expect(events.error).toEqual([
      { endpoint: 'a', category: 'unavailable', code: 'ECONNREFUSED', reason: 'writer probe failed' },
    ])
  })

  test('a demoted writer answers read-only: discovery finds the new one, the write moves there, a failover is reported', async () => {
    const { servers, db, events, order, write } = setup(['a', 'b'])
    const [a, b] = servers
    await write(1)
    a.role = 'standby'
    b.role = 'primary'
    await write(2)
    expect([a.count(INSERT), b.count(INSERT)]).toEqual([2, 1])
    expect(order).toEqual(['error: a writer is read-only', 'retry', 'failover'])
    expect(events.retry).toEqual([
      expect.objectContaining({ endpoint: 'a', category: 'read-only', code: '25006' }),
    ])
    expect(events.failover).toEqual([expect.objectContaining({ from: 'a', to: 'b', reason: 'read-only' })])
    // The demoted writer's connections are closed (drained), not kept for later.
    expect(db.stats().writers.map((stats) => [stats.name, stats.idle])).toEqual([
      ['a', 0],
      ['b', 1],
    ])
    expect(a.sessions.size).toBe(0)
    await write(3)
    expect([a.count(INSERT), b.count(INSERT)]).toEqual([2, 2])
  })

  test('a writer that crashed and refuses connections: the promoted replica takes the writes', async () => {
    const { servers, events, write } = setup(['a', 'b'])
    const [a, b] = servers
    await write(1)
    a.crash()
    a.connectBehaviour = 'refuse'
    b.role = 'primary'
    await write(2)
    expect(b.count(INSERT)).toBe(1)
    expect(events.failover).toEqual([
      expect.objectContaining({ from: 'a', to: 'b', reason: 'connection-lost' }),
    ])
    expect(events.retry).toEqual([
      expect.objectContaining({
        endpoint: 'a',
        category: 'unavailable',
        code: 'ECONNREFUSED',
        statement: 'write',
      }),
    ])
  })

  test('while no candidate accepts writes, discovery keeps probing; a promotion is found and the waiting write lands', async () => {
    const { servers, events, write } = setup(['a', 'b'])
    const [a, b] = servers
    await write(1)
    a.role = 'standby'
    setTimeout(() => {
      b.role = 'primary'
    }, 250)
    const started = performance.now()
    await write(2)
    expect(performance.now() - started).toBeGreaterThanOrEqual(240)
    expect(b.count(INSERT)).toBe(1)
    // Probed at 0, 100, 300 ms (give or take a busy machine): a later round sees the promotion.
    expect(b.roleProbes).toBeGreaterThanOrEqual(2)
    expect(events.failover).toEqual([expect.objectContaining({ from: 'a', to: 'b', reason: 'read-only' })])
    expect(events.failover[0]?.durationMs).toBeGreaterThanOrEqual(240)
    // Every attempt on the old writer was refused as read-only and retried; none was applied.
    expect(events.retry.every((event) => event.category === 'read-only')).toBe(true)
  })

  test('a candidate that accepts connections but never answers does not hold discovery up', async () => {
    const { servers, events, order, write, cluster } = setup(['a', 'b', 'c'])
    const [a, b, c] = servers
    await write(1)
    b.frozen = true
    a.role = 'standby'
    c!.role = 'primary'
    await write(2)
    expect(c?.count(INSERT)).toBe(1)
    expect(events.failover).toEqual([expect.objectContaining({ from: 'a', to: 'c' })])
    // Its probe times out only later (2 x connectTimeoutMs), after the failover: nobody waited for it.
    await vi.waitFor(() => expect(order).toContain('error: b writer probe failed'), { timeout: 1_000 })
    expect(order.indexOf('failover')).toBeLessThan(order.indexOf('error: b writer probe failed'))
    expect(events.error).toContainEqual(expect.objectContaining({ endpoint: 'b', code: 'CONNECT_TIMEOUT' }))
    await cluster.writerSettled(0)
  })

  test('a writer that lost a connection but still accepts writes stays the writer', async () => {
    const { servers, events, write } = setup(['a', 'b'])
    const [a, b] = servers
    await write(1)
    a.failNext(INSERT, 'terminate')
    const error = await failureOf(write(2))
    expect((error as Error).message).toBe('Connection terminated unexpectedly')
    await write(3)
    expect([a.count(INSERT), b.count(INSERT)]).toEqual([3, 0])
    expect(a.roleProbes).toBe(2)
    expect(events.failover).toEqual([])
  })

  test('transactions are not retried across a failover; the next one runs on the new writer', async () => {
    const { servers, events, db, write } = setup(['a', 'b'])
    const [a, b] = servers
    await write(1)
    a.role = 'standby'
    b.role = 'primary'
    const run = () =>
      db.transaction().execute(async (trx) => {
        await trx.insertInto('person').values({ id: 1, server: 'x' }).execute()
      })
    const error = await failureOf(run())
    expect(classifyError(error)).toMatchObject({ category: 'read-only', code: '25006' })
    expect(events.retry).toEqual([])
    await vi.waitFor(() => expect(events.failover).toHaveLength(1))
    await run()
    expect([a.count(INSERT), b.count(INSERT)]).toEqual([2, 1])
    expect([a.count(/^begin/), b.count(/^begin/)]).toEqual([1, 1])
  })
})

// ---------------------------------------------------------------------------------------------
// The WriterTracker alone: its schedule, with fake timers.

type ProbeAnswer = 'writer' | 'reader' | Error

class StubEndpoint {
  readonly settings = { pool: { connectTimeoutMs: 100 } }
  answer: ProbeAnswer = 'reader'
  readonly probedAt: number[] = []
  draining = false
  evictions = 0

  constructor(readonly name: string) {}

  probeRole(): Promise<'writer' | 'reader'> {
    this.probedAt.push(Math.round(performance.now()))
    const answer = this.answer
    return answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer)
  }

  drain(): void {
    this.draining = true
    this.evictions++
  }

  stopDraining(): void {
    this.draining = false
  }

  evictIdle(): number {
    this.evictions++
    return 0
  }
}

describe('WriterTracker', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] })
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  function tracker(...names: string[]) {
    const stubs = names.map((name) => new StubEndpoint(name))
    const events = new ResilientEvents()
    const log = collectEvents(events)
    const writers = new WriterTracker(stubs as unknown as Endpoint[], events)
    return { writers, stubs: stubs as [StubEndpoint, StubEndpoint, ...StubEndpoint[]], log }
  }

  test('with no writer, probes after 100, 200, 400 ms, then every 500 ms, and gives up after 60 s', async () => {
    const { writers, stubs } = tracker('a', 'b')
    const [a] = stubs
    writers.suspect(a as unknown as Endpoint, 'connection-lost')
    await vi.advanceTimersByTimeAsync(2_300)
    expect(a.probedAt).toEqual([0, 100, 300, 700, 1_200, 1_700, 2_200])
    await vi.advanceTimersByTimeAsync(60_000)
    const probes = a.probedAt.length
    // Every 500 ms from 700 ms on; the first round that ends past 60 s is the last.
    expect(a.probedAt.at(-1)).toBe(60_200)
    expect(a.probedAt.at(-2)).toBe(59_700)
    expect(probes).toBe(4 + (60_200 - 700) / 500)
    await vi.advanceTimersByTimeAsync(5_000)
    expect(a.probedAt.length).toBe(probes)
    // Given up: a new failure starts over.
    writers.suspect(a as unknown as Endpoint, 'connection-lost')
    expect(a.probedAt.length).toBe(probes + 1)
    writers.close()
  })

  test('a promotion is found on the next round, and reported as a failover from the suspected writer', async () => {
    const { writers, stubs, log } = tracker('a', 'b')
    const [a, b] = stubs
    writers.suspect(a as unknown as Endpoint, 'read-only')
    await vi.advanceTimersByTimeAsync(150)
    b.answer = 'writer'
    await vi.advanceTimersByTimeAsync(200)
    expect(writers.current.name).toBe('b')
    expect(log.failover).toEqual([{ from: 'a', to: 'b', durationMs: 300, reason: 'read-only' }])
    // The new writer's connections are good; the old one's are closed as they come back.
    expect([a.draining, b.draining]).toEqual([true, false])
  })

  test('one discovery at a time: suspicions during a discovery join it', async () => {
    const { writers, stubs } = tracker('a', 'b')
    const [a, b] = stubs
    for (let i = 0; i < 5; i++) writers.suspect(a as unknown as Endpoint, 'connection-lost')
    expect([a.probedAt.length, b.probedAt.length]).toEqual([1, 1])
    writers.close()
  })

  test('only the current writer can be suspected', async () => {
    const { writers, stubs } = tracker('a', 'b')
    const [, b] = stubs
    writers.suspect(b as unknown as Endpoint, 'read-only')
    expect(b.probedAt).toEqual([])
    expect(b.evictions).toBe(0)
  })

  test('what a suspicion closes: read-only drains every connection, a lost connection closes the idle ones, startup nothing', async () => {
    for (const [reason, draining, evictions] of [
      ['read-only', true, 1],
      ['connection-lost', false, 1],
      ['unresponsive', false, 1],
      ['startup', false, 0],
    ] as const) {
      const { writers, stubs } = tracker('a', 'b')
      const [a] = stubs
      writers.suspect(a as unknown as Endpoint, reason)
      expect([reason, a.draining, a.evictions]).toEqual([reason, draining, evictions])
      writers.close()
    }
  })

  test('the writer kept after a discovery stops draining; startup discovery reports no failover', async () => {
    const { writers, stubs, log } = tracker('a', 'b')
    const [a, b] = stubs
    a.answer = 'writer'
    writers.suspect(a as unknown as Endpoint, 'read-only')
    expect(a.draining).toBe(true)
    await vi.advanceTimersByTimeAsync(0)
    expect([a.draining, b.draining]).toEqual([false, true])
    expect(writers.current.name).toBe('a')

    const startup = tracker('x', 'y')
    startup.stubs[1].answer = 'writer'
    const initialized = startup.writers.initialize()
    await vi.advanceTimersByTimeAsync(0)
    await initialized
    expect(startup.writers.current.name).toBe('y')
    expect(startup.log.failover).toEqual([])
    expect(log.failover).toEqual([])
  })

  test('a failed probe is reported with its classification; the other candidates still answer', async () => {
    const { writers, stubs, log } = tracker('a', 'b')
    const [a, b] = stubs
    a.answer = systemError('ECONNREFUSED', 'connect', -111)
    b.answer = 'writer'
    writers.suspect(a as unknown as Endpoint, 'connection-lost')
    await vi.advanceTimersByTimeAsync(0)
    expect(writers.current.name).toBe('b')
    expect(log.error).toEqual([
      { endpoint: 'a', category: 'unavailable', code: 'ECONNREFUSED', reason: 'writer probe failed' },
    ])
  })

  test('settled() waits for the discovery, at most maxWaitMs; at once when none runs', async () => {
    const { writers, stubs } = tracker('a', 'b')
    const [a, b] = stubs
    let resolved = false
    void writers.settled(1_000).then(() => {
      resolved = true
    })
    await vi.advanceTimersByTimeAsync(0)
    expect(resolved).toBe(true)

    writers.suspect(a as unknown as Endpoint, 'connection-lost')
    resolved = false
    void writers.settled(50).then(() => {
      resolved = true
    })
    await vi.advanceTimersByTimeAsync(49)
    expect(resolved).toBe(false)
    await vi.advanceTimersByTimeAsync(1)
    expect(resolved).toBe(true)

    resolved = false
    void writers.settled(10_000).then(() => {
      resolved = true
    })
    b.answer = 'writer'
    await vi.advanceTimersByTimeAsync(100)
    expect(resolved).toBe(true)
    expect(writers.current.name).toBe('b')
  })

  test('close() stops a running discovery and ignores later suspicions', async () => {
    const { writers, stubs } = tracker('a', 'b')
    const [a] = stubs
    writers.suspect(a as unknown as Endpoint, 'connection-lost')
    writers.close()
    await vi.advanceTimersByTimeAsync(1_000)
    expect(a.probedAt.length).toBe(1)
    const after = a.probedAt.length
    writers.suspect(a as unknown as Endpoint, 'connection-lost')
    await vi.advanceTimersByTimeAsync(1_000)
    expect(a.probedAt.length).toBe(after)
  })
})
