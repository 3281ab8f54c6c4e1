import { afterEach, describe, expect, test, vi } from 'vitest'
import { POOL_DEFAULTS, type ResolvedPoolOptions } from '../../src/config/pool-options.js'
import { DatabaseDestroyedError, PoolTimeoutError } from '../../src/errors.js'
import { ConnectionPool, type PoolConnector, type RemovalReason } from '../../src/pool/connection-pool.js'

interface FakeConnection {
  readonly id: number
  broken: boolean
}

type ConnectPlan = 'ok' | 'fail' | 'hang' | 'refuse'

interface HangingConnect {
  readonly succeed: () => void
  readonly fail: (error: Error) => void
}

/**
 * A connector that hands out plain objects. Each `connect` follows the next entry of `plan` (then
 * `'ok'` once the plan is used up): `'fail'` rejects, `'hang'` waits until the test settles it.
 */
class FakeConnector implements PoolConnector<FakeConnection> {
  readonly plan: ConnectPlan[] = []
  readonly opened: FakeConnection[] = []
  readonly closed: FakeConnection[] = []
  readonly hanging: HangingConnect[] = []
  /** How each `validate` call ends, in order (then `'ok'`); `validated` records the calls. */
  readonly validatePlan: ConnectPlan[] = []
  readonly validated: FakeConnection[] = []
  /** When set, every `close` waits for it before it completes. */
  closeGate: Promise<void> | undefined
  connectCalls = 0
  /** Opens the "server" refused with too-many-connections. */
  refused = 0
  /** Connections being opened or open and not yet closed. */
  live = 0
  maxLive = 0
  #nextId = 1

  connect(): Promise<FakeConnection> {
    this.connectCalls++
    this.live++
    this.maxLive = Math.max(this.maxLive, this.live)
    const step = this.plan.shift() ?? 'ok'
    const open = (): FakeConnection => {
      const connection = { id: this.#nextId++, broken: false }
      this.opened.push(connection)
      return connection
    }
    if (step === 'fail') {
      this.live--
      return Promise.reject(new Error('connection refused'))
    }
    if (step === 'refuse') {
      this.live--
      this.refused++
      return Promise.reject(tooManyConnections())
    }
    if (step === 'hang') {
      return new Promise((resolve, reject) => {
        this.hanging.push({
          succeed: () => resolve(open()),
          fail: (error) => {
            this.live--
            reject(error)
          },
        })
      })
    }
    return Promise.resolve().then(open)
  }

  async close(connection: FakeConnection): Promise<void> {
    await Promise.resolve()
    await this.closeGate
    this.live--
    this.closed.push(connection)
  }

  isBroken(connection: FakeConnection): boolean {
    return connection.broken
  }

  destroy(connection: FakeConnection): void {
    connection.broken = true
  }

  validate(connection: FakeConnection): Promise<void> {
    this.validated.push(connection)
    const step = this.validatePlan.shift() ?? 'ok'
    if (step === 'fail') return Promise.reject(new Error('server closed the connection'))
    if (step === 'hang') return new Promise(() => {})
    return Promise.resolve()
  }
}

/** What pg rejects a connect with when max_connections is reached. */
function tooManyConnections(): Error {
  return Object.assign(new Error('sorry, too many clients already'), { code: '53300', severity: 'FATAL' })
}

function makePool(options: Partial<ResolvedPoolOptions> = {}) {
  const connector = new FakeConnector()
  const removals: Array<{ id: number; reason: RemovalReason }> = []
  const pool = new ConnectionPool<FakeConnection>(
    'writer',
    connector,
    { ...POOL_DEFAULTS, ...options },
    { onRemove: (connection, reason) => removals.push({ id: connection.id, reason }) },
  )
  return { pool, connector, removals }
}

/** Lets every pending promise callback run (setImmediate is never faked in this file). */
function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

/** Tracks whether a promise has settled, without attaching a rejection the test did not expect. */
function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false }
  promise.then(
    (value) => {
      state.settled = true
      state.value = value
    },
    (error: unknown) => {
      state.settled = true
      state.error = error
    },
  )
  return state
}

function useFakeClock(): void {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] })
}

afterEach(() => {
  vi.useRealTimers()
  vi.restoreAllMocks()
})

describe('size limit', () => {
  test('never has more than max connections open or opening under 100 concurrent acquires', async () => {
    const { pool, connector } = makePool({ max: 5 })
    let inUse = 0
    let maxInUse = 0
    let countsViolations = 0

    const worker = async (): Promise<number> => {
      const connection = await pool.acquire()
      inUse++
      maxInUse = Math.max(maxInUse, inUse)
      const counts = pool.counts()
      if (counts.total > 5 || counts.inUse > 5) countsViolations++
      await flush()
      inUse--
      pool.release(connection)
      return connection.id
    }

    const ids = await Promise.all(Array.from({ length: 100 }, worker))

    expect(ids).toHaveLength(100)
    expect(maxInUse).toBe(5)
    expect(connector.maxLive).toBeLessThanOrEqual(5)
    expect(connector.opened.length).toBeLessThanOrEqual(5)
    expect(countsViolations).toBe(0)
    expect(pool.counts()).toEqual({
      total: connector.opened.length,
      idle: connector.opened.length,
      inUse: 0,
      waiting: 0,
      connecting: 0,
    })
  })
})

describe('reuse', () => {
  test('reuses the most recently released connection first (LIFO) and opens nothing new', async () => {
    const { pool, connector } = makePool({ max: 3 })
    const a = await pool.acquire()
    const b = await pool.acquire()
    const c = await pool.acquire()
    pool.release(a)
    pool.release(b)
    pool.release(c)

    expect(await pool.acquire()).toBe(c)
    expect(await pool.acquire()).toBe(b)
    expect(await pool.acquire()).toBe(a)
    expect(connector.connectCalls).toBe(3)
  })

  test('a caller waits while all connections are in use and gets the one released', async () => {
    const { pool, connector } = makePool({ max: 1 })
    const a = await pool.acquire()
    const waiting = track(pool.acquire())
    await flush()

    expect(waiting.settled).toBe(false)
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 1, connecting: 0 })

    pool.release(a)
    await flush()

    expect(waiting.value).toBe(a)
    expect(connector.connectCalls).toBe(1)
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })

  test('releasing a connection twice is a no-op', async () => {
    const { pool, connector } = makePool({ max: 2 })
    const a = await pool.acquire()
    pool.release(a)
    pool.release(a)

    expect(pool.counts()).toEqual({ total: 1, idle: 1, inUse: 0, waiting: 0, connecting: 0 })
    const first = await pool.acquire()
    const second = await pool.acquire()
    expect(first).toBe(a)
    expect(second).not.toBe(a)
    expect(connector.closed).toEqual([])
  })

  test('releasing a connection the pool does not know is a no-op', async () => {
    const { pool, connector } = makePool({ max: 2 })
    await pool.acquire()
    pool.release({ id: 999, broken: false })
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
    expect(connector.closed).toEqual([])
  })
})

describe('acquire timeout', () => {
  test('rejects with PoolTimeoutError after acquireTimeoutMs and removes the waiter', async () => {
    useFakeClock()
    const { pool } = makePool({ max: 1, acquireTimeoutMs: 1_000 })
    const a = await pool.acquire()
    const waiting = track(pool.acquire())

    await vi.advanceTimersByTimeAsync(999)
    expect(waiting.settled).toBe(false)
    expect(pool.counts().waiting).toBe(1)

    await vi.advanceTimersByTimeAsync(1)
    expect(waiting.error).toBeInstanceOf(PoolTimeoutError)
    expect((waiting.error as PoolTimeoutError).endpoint).toBe('writer')
    expect((waiting.error as PoolTimeoutError).code).toBe('POOL_ACQUIRE_TIMEOUT')
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })

    // The timed-out caller must not be handed the connection later.
    pool.release(a)
    expect(pool.counts()).toEqual({ total: 1, idle: 1, inUse: 0, waiting: 0, connecting: 0 })
  })

  test('callers that started waiting at different times each time out acquireTimeoutMs after their own start', async () => {
    useFakeClock()
    const { pool } = makePool({ max: 1, acquireTimeoutMs: 1_000 })
    const a = await pool.acquire()
    const first = track(pool.acquire())
    await vi.advanceTimersByTimeAsync(300)
    const second = track(pool.acquire())
    await vi.advanceTimersByTimeAsync(400)
    const third = track(pool.acquire())

    await vi.advanceTimersByTimeAsync(300) // t = 1000
    expect(first.error).toBeInstanceOf(PoolTimeoutError)
    expect([second.settled, third.settled]).toEqual([false, false])
    // The second is served before its deadline; the third still times out at its own.
    pool.release(a)
    await vi.advanceTimersByTimeAsync(0)
    expect(second.value).toBe(a)
    await vi.advanceTimersByTimeAsync(699) // t = 1699
    expect(third.settled).toBe(false)
    await vi.advanceTimersByTimeAsync(1)
    expect(third.error).toBeInstanceOf(PoolTimeoutError)
    expect(pool.timeouts).toBe(2)
    expect(pool.counts().waiting).toBe(0)
  })

  test('a waiter served in time is not rejected when its deadline passes', async () => {
    useFakeClock()
    const { pool } = makePool({ max: 1, acquireTimeoutMs: 1_000 })
    const a = await pool.acquire()
    const waiting = track(pool.acquire())
    await vi.advanceTimersByTimeAsync(500)
    pool.release(a)
    await vi.advanceTimersByTimeAsync(5_000)

    expect(waiting.value).toBe(a)
    expect(waiting.error).toBeUndefined()
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })
})

describe('broken and discarded connections', () => {
  test('an idle connection that broke is closed and never handed out again', async () => {
    const { pool, connector, removals } = makePool({ max: 2 })
    const a = await pool.acquire()
    pool.release(a)
    a.broken = true

    const b = await pool.acquire()
    await flush()

    expect(b).not.toBe(a)
    expect(connector.closed).toEqual([a])
    expect(removals).toEqual([{ id: a.id, reason: 'broken' }])
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })

  test('a connection that broke while in use is closed on release, not given to a waiter', async () => {
    const { pool, connector, removals } = makePool({ max: 1 })
    const a = await pool.acquire()
    const waiting = track(pool.acquire())
    a.broken = true
    pool.release(a)
    await flush()

    expect(connector.closed).toEqual([a])
    expect(removals).toEqual([{ id: a.id, reason: 'broken' }])
    expect(waiting.value).toBeDefined()
    expect(waiting.value).not.toBe(a)
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })

  test('release(connection, true) closes the connection instead of keeping it', async () => {
    const { pool, connector, removals } = makePool({ max: 2 })
    const a = await pool.acquire()
    pool.release(a, true)
    await flush()

    expect(connector.closed).toEqual([a])
    expect(removals).toEqual([{ id: a.id, reason: 'discarded' }])
    expect(pool.counts()).toEqual({ total: 0, idle: 0, inUse: 0, waiting: 0, connecting: 0 })
    const b = await pool.acquire()
    expect(b).not.toBe(a)
    expect(connector.connectCalls).toBe(2)
  })
})

describe('maxLifetimeMs', () => {
  // Lifetime is shortened by up to 10%: with maxLifetimeMs 10 s a connection is always alive
  // before 9 s and always expired at 10 s.
  test('a connection past its lifetime is closed on release instead of kept', async () => {
    useFakeClock()
    const { pool, connector, removals } = makePool({ max: 2, maxLifetimeMs: 10_000, idleTimeoutMs: 0 })
    const a = await pool.acquire()

    await vi.advanceTimersByTimeAsync(8_500)
    pool.release(a)
    expect(pool.counts().idle).toBe(1)
    expect(await pool.acquire()).toBe(a)

    await vi.advanceTimersByTimeAsync(1_500)
    pool.release(a)
    await flush()

    expect(connector.closed).toEqual([a])
    expect(removals).toEqual([{ id: a.id, reason: 'expired' }])
    expect(pool.counts()).toEqual({ total: 0, idle: 0, inUse: 0, waiting: 0, connecting: 0 })
  })

  test('an idle connection past its lifetime is closed on acquire and a fresh one is returned', async () => {
    useFakeClock()
    const { pool, connector, removals } = makePool({ max: 2, maxLifetimeMs: 10_000, idleTimeoutMs: 0 })
    const a = await pool.acquire()
    pool.release(a)

    await vi.advanceTimersByTimeAsync(10_000)
    const b = await pool.acquire()
    await flush()

    expect(b).not.toBe(a)
    expect(connector.closed).toEqual([a])
    expect(removals).toEqual([{ id: a.id, reason: 'expired' }])
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })

  test('an expired connection released while callers wait is replaced for the waiter', async () => {
    useFakeClock()
    const { pool, connector } = makePool({ max: 1, maxLifetimeMs: 10_000, acquireTimeoutMs: 60_000 })
    const a = await pool.acquire()
    const waiting = track(pool.acquire())

    await vi.advanceTimersByTimeAsync(10_000)
    pool.release(a)
    await flush()

    expect(connector.closed).toEqual([a])
    expect(waiting.value).toBeDefined()
    expect(waiting.value).not.toBe(a)
  })

  test('maxLifetimeMs 0 never recycles', async () => {
    useFakeClock()
    const { pool, connector } = makePool({ max: 1, maxLifetimeMs: 0, idleTimeoutMs: 0 })
    const a = await pool.acquire()
    await vi.advanceTimersByTimeAsync(365 * 24 * 3_600_000)
    pool.release(a)
    expect(await pool.acquire()).toBe(a)
    expect(connector.closed).toEqual([])
  })
})

describe('idle timeout', () => {
  test('closes idle connections above min after idleTimeoutMs and keeps min open', async () => {
    useFakeClock()
    const { pool, connector, removals } = makePool({ max: 3, min: 1, idleTimeoutMs: 1_000 })
    const a = await pool.acquire()
    const b = await pool.acquire()
    const c = await pool.acquire()
    pool.release(a)
    pool.release(b)
    pool.release(c)

    await vi.advanceTimersByTimeAsync(999)
    expect(pool.counts().idle).toBe(3)

    await vi.advanceTimersByTimeAsync(1)
    await flush()
    expect(connector.closed).toHaveLength(2)
    expect(removals.map((removal) => removal.reason)).toEqual(['idle', 'idle'])
    expect(pool.counts()).toEqual({ total: 1, idle: 1, inUse: 0, waiting: 0, connecting: 0 })

    // The floor stays however long the pool sits idle.
    await vi.advanceTimersByTimeAsync(60_000)
    await flush()
    expect(connector.closed).toHaveLength(2)
    expect(pool.counts()).toEqual({ total: 1, idle: 1, inUse: 0, waiting: 0, connecting: 0 })
    const survivor = await pool.acquire()
    expect(connector.closed).not.toContain(survivor)
    expect(connector.connectCalls).toBe(3)
  })

  test('with min 0 every idle connection is closed after idleTimeoutMs', async () => {
    useFakeClock()
    const { pool, connector } = makePool({ max: 2, min: 0, idleTimeoutMs: 1_000 })
    const a = await pool.acquire()
    const b = await pool.acquire()
    pool.release(a)
    pool.release(b)

    await vi.advanceTimersByTimeAsync(1_000)
    await flush()

    expect(connector.closed).toHaveLength(2)
    expect(pool.counts()).toEqual({ total: 0, idle: 0, inUse: 0, waiting: 0, connecting: 0 })
  })

  test('using a connection restarts its idle timer', async () => {
    useFakeClock()
    const { pool, connector } = makePool({ max: 1, min: 0, idleTimeoutMs: 1_000 })
    const a = await pool.acquire()
    pool.release(a)

    await vi.advanceTimersByTimeAsync(900)
    expect(await pool.acquire()).toBe(a)
    pool.release(a)

    await vi.advanceTimersByTimeAsync(900)
    expect(connector.closed).toEqual([])
    await vi.advanceTimersByTimeAsync(100)
    await flush()
    expect(connector.closed).toEqual([a])
  })

  describe('takeReady: the synchronous hand-out of a connection reused at once', () => {
    const any = () => true

    test('hands out the most recently released connection, in use until released again', async () => {
      useFakeClock()
      const { pool } = makePool({ max: 2 })
      const a = await pool.acquire()
      const b = await pool.acquire()
      pool.release(a)
      pool.release(b)
      expect(pool.takeReady(any)).toBe(b)
      expect(pool.counts()).toMatchObject({ idle: 1, inUse: 1 })
      pool.release(b)
      expect(pool.counts()).toMatchObject({ idle: 2, inUse: 0 })
    })

    test('leaves the pool unchanged for acquire() when the connection is not ready at once', async () => {
      useFakeClock()
      const { pool, connector } = makePool({ max: 1, validateAfterIdleMs: 10, maxLifetimeMs: 1_000 })
      expect(pool.takeReady(any)).toBeUndefined() // nothing idle
      const a = await pool.acquire()
      pool.release(a)
      expect(pool.takeReady(() => false)).toBeUndefined() // refused by the caller
      await vi.advanceTimersByTimeAsync(11)
      expect(pool.takeReady(any)).toBeUndefined() // validation due: acquire() pings first
      expect(connector.validated).toEqual([])
      expect(await pool.acquire()).toBe(a)
      expect(connector.validated).toEqual([a])
      pool.release(a)

      a.broken = true
      expect(pool.takeReady(any)).toBeUndefined() // broken: acquire() closes it and opens another
      expect(pool.counts()).toMatchObject({ idle: 1, inUse: 0 })
      const b = await pool.acquire()
      expect(b).not.toBe(a)
      expect(connector.closed).toEqual([a])
    })

    test('a connection idle for 50 ms or more is not handed out synchronously: acquire() settles it first', async () => {
      useFakeClock()
      const { pool } = makePool({ max: 1 })
      const a = await pool.acquire()
      pool.release(a)
      await vi.advanceTimersByTimeAsync(49)
      expect(pool.takeReady(any)).toBe(a)
      pool.release(a)
      await vi.advanceTimersByTimeAsync(50)
      expect(pool.takeReady(any)).toBeUndefined()
    })

    test('an ended pool hands out nothing', async () => {
      const { pool } = makePool({ max: 1 })
      pool.release(await pool.acquire())
      await pool.end()
      expect(pool.takeReady(any)).toBeUndefined()
    })
  })

  test('each idle connection is closed idleTimeoutMs after its own release, one timer for all', async () => {
    useFakeClock()
    const { pool, connector } = makePool({ max: 3, min: 0, idleTimeoutMs: 1_000 })
    const a = await pool.acquire()
    const b = await pool.acquire()
    const c = await pool.acquire()
    const before = vi.getTimerCount() // the acquire-timeout timer, if still armed
    pool.release(a)
    await vi.advanceTimersByTimeAsync(400)
    pool.release(b)
    await vi.advanceTimersByTimeAsync(300)
    pool.release(c)
    expect(vi.getTimerCount()).toBe(before + 1)

    await vi.advanceTimersByTimeAsync(300) // t = 1000: a's deadline
    await flush()
    expect(connector.closed).toEqual([a])
    await vi.advanceTimersByTimeAsync(399) // t = 1399: b has 1 ms left
    expect(connector.closed).toEqual([a])
    await vi.advanceTimersByTimeAsync(1)
    await flush()
    expect(connector.closed).toEqual([a, b])
    await vi.advanceTimersByTimeAsync(300) // t = 1700
    await flush()
    expect(connector.closed).toEqual([a, b, c])
    // Nothing idle, no idle timer armed.
    expect(vi.getTimerCount()).toBe(before)
  })

  test('idleTimeoutMs 0 keeps idle connections open', async () => {
    useFakeClock()
    const { pool, connector } = makePool({ max: 1, idleTimeoutMs: 0, maxLifetimeMs: 0 })
    const a = await pool.acquire()
    pool.release(a)
    await vi.advanceTimersByTimeAsync(24 * 3_600_000)
    expect(connector.closed).toEqual([])
    expect(pool.counts().idle).toBe(1)
  })

  test('min connections are opened in the background after the first acquire', async () => {
    const { pool, connector } = makePool({ max: 5, min: 3 })
    expect(pool.counts().total).toBe(0)
    await pool.acquire()
    await flush()
    expect(connector.connectCalls).toBe(3)
    expect(pool.counts()).toEqual({ total: 3, idle: 2, inUse: 1, waiting: 0, connecting: 0 })
  })
})

describe('connect failures', () => {
  test('a failed connect rejects only that acquire and frees its slot', async () => {
    const { pool, connector } = makePool({ max: 1 })
    connector.plan.push('fail')

    await expect(pool.acquire()).rejects.toThrow('connection refused')
    expect(pool.counts()).toEqual({ total: 0, idle: 0, inUse: 0, waiting: 0, connecting: 0 })

    const a = await pool.acquire()
    expect(a.id).toBe(1)
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })

  test('of two concurrent acquires, only the one whose connect fails is rejected', async () => {
    const { pool, connector } = makePool({ max: 2 })
    connector.plan.push('fail', 'ok')
    const first = track(pool.acquire())
    const second = track(pool.acquire())
    await flush()

    expect((first.error as Error).message).toBe('connection refused')
    expect(second.value).toBe(connector.opened[0])
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })

  test('a connection being opened counts towards total and connecting', async () => {
    const { pool, connector } = makePool({ max: 1 })
    connector.plan.push('hang')
    const pending = track(pool.acquire())
    await flush()

    // The caller waits for the connection being opened for it.
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 0, waiting: 1, connecting: 1 })
    connector.hanging[0]?.succeed()
    await flush()
    expect(pending.value).toBe(connector.opened[0])
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })

  test('when a connect fails while callers wait, the freed slot is used for the first waiter', async () => {
    // Fake clock so the waiter's acquireTimeoutMs can never be what settles it.
    useFakeClock()
    const { pool, connector } = makePool({ max: 1, acquireTimeoutMs: 10_000 })
    connector.plan.push('hang')
    const opening = track(pool.acquire())
    const waiting = track(pool.acquire())
    await flush()
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 0, waiting: 2, connecting: 1 })

    connector.hanging[0]?.fail(new Error('connection reset'))
    await flush()

    expect((opening.error as Error).message).toBe('connection reset')
    expect(connector.connectCalls).toBe(2)
    expect(waiting.value).toBe(connector.opened[0])
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })

  test('a failed replacement connect rejects the first waiter and the next waiter still gets a try', async () => {
    useFakeClock()
    const { pool, connector } = makePool({ max: 1, acquireTimeoutMs: 10_000 })
    const a = await pool.acquire()
    const first = track(pool.acquire())
    const second = track(pool.acquire())
    await flush()

    connector.plan.push('fail')
    pool.release(a, true)
    await flush()

    expect((first.error as Error).message).toBe('connection refused')
    // The slot is free again and the server answers: the second waiter must not sit out its
    // whole acquireTimeoutMs.
    expect(second.value).toBeDefined()
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })
})

describe('serving waiters', () => {
  test('when a slot frees while callers wait, a new connection is opened for the first waiter', async () => {
    const { pool, connector } = makePool({ max: 1 })
    const a = await pool.acquire()
    const first = track(pool.acquire())
    const second = track(pool.acquire())
    await flush()
    expect(pool.counts().waiting).toBe(2)

    pool.release(a, true)
    await flush()

    expect(connector.connectCalls).toBe(2)
    const b = connector.opened[1]
    expect(first.value).toBe(b)
    expect(second.settled).toBe(false)
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 1, connecting: 0 })

    pool.release(b as FakeConnection)
    await flush()
    expect(second.value).toBe(b)
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })

  test('waiters are served first come, first served', async () => {
    const { pool } = makePool({ max: 1 })
    const a = await pool.acquire()
    const order: number[] = []
    const waiters = [1, 2, 3].map((n) =>
      pool.acquire().then((connection) => {
        order.push(n)
        pool.release(connection)
      }),
    )
    await flush()
    pool.release(a)
    await Promise.all(waiters)
    expect(order).toEqual([1, 2, 3])
  })
})

describe('end()', () => {
  test('rejects waiting callers with DatabaseDestroyedError and closes in-use connections on release', async () => {
    const { pool, connector, removals } = makePool({ max: 1 })
    const a = await pool.acquire()
    const waiting = track(pool.acquire())
    await flush()

    await pool.end()
    await flush()

    expect(waiting.error).toBeInstanceOf(DatabaseDestroyedError)
    // Never closes a connection out from under the caller holding it.
    expect(connector.closed).toEqual([])
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })

    pool.release(a)
    await flush()
    expect(connector.closed).toEqual([a])
    expect(removals).toEqual([{ id: a.id, reason: 'pool-ended' }])
    expect(pool.counts()).toEqual({ total: 0, idle: 0, inUse: 0, waiting: 0, connecting: 0 })
  })

  test('closes idle connections before it resolves', async () => {
    const { pool, connector } = makePool({ max: 2 })
    const a = await pool.acquire()
    const b = await pool.acquire()
    pool.release(a)
    pool.release(b)

    await pool.end()

    expect(new Set(connector.closed)).toEqual(new Set([a, b]))
    expect(connector.live).toBe(0)
    expect(pool.counts()).toEqual({ total: 0, idle: 0, inUse: 0, waiting: 0, connecting: 0 })
  })

  test('acquire after end rejects with DatabaseDestroyedError and opens nothing', async () => {
    const { pool, connector } = makePool({ max: 1 })
    await pool.end()
    await expect(pool.acquire()).rejects.toBeInstanceOf(DatabaseDestroyedError)
    expect(connector.connectCalls).toBe(0)
  })

  test('a connection still being opened at end() is closed and its acquire rejected', async () => {
    const { pool, connector } = makePool({ max: 1 })
    connector.plan.push('hang')
    const opening = track(pool.acquire())
    await flush()

    const ending = pool.end()
    const ended = track(ending)
    await flush()
    expect(ended.settled).toBe(false)

    connector.hanging[0]?.succeed()
    await ending
    await flush()

    expect(opening.error).toBeInstanceOf(DatabaseDestroyedError)
    expect(connector.closed).toEqual(connector.opened)
    expect(connector.live).toBe(0)
    expect(pool.counts()).toEqual({ total: 0, idle: 0, inUse: 0, waiting: 0, connecting: 0 })
  })

  test('waits for a slow close started by an open that completes after end()', async () => {
    const { pool, connector } = makePool({ max: 1 })
    connector.plan.push('hang')
    const opening = track(pool.acquire())
    await flush()
    let finishCloses = (): void => {}
    connector.closeGate = new Promise((resolve) => {
      finishCloses = resolve
    })

    const ended = track(pool.end())
    connector.hanging[0]?.succeed()
    for (let turn = 0; turn < 5; turn++) await flush()
    expect(ended.settled).toBe(false)
    expect(connector.live).toBe(1)

    finishCloses()
    for (let turn = 0; turn < 2; turn++) await flush()
    expect(ended.settled).toBe(true)
    expect(opening.error).toBeInstanceOf(DatabaseDestroyedError)
    expect(connector.live).toBe(0)
    expect(connector.closed).toEqual(connector.opened)
  })

  test('calling end() twice is harmless', async () => {
    const { pool, connector } = makePool({ max: 1 })
    const a = await pool.acquire()
    pool.release(a)
    await pool.end()
    await pool.end()
    expect(connector.closed).toEqual([a])
  })
})

describe('validateAfterIdleMs', () => {
  test('unset: an idle connection is handed out without a check, however long it sat', async () => {
    useFakeClock()
    const { pool, connector } = makePool({ max: 1, idleTimeoutMs: 0, maxLifetimeMs: 0 })
    const a = await pool.acquire()
    pool.release(a)
    await vi.advanceTimersByTimeAsync(3_600_000)
    expect(await pool.acquire()).toBe(a)
    expect(connector.validated).toEqual([])
  })

  test('a connection idle for less than the threshold is not checked; one idle longer is', async () => {
    useFakeClock()
    const { pool, connector } = makePool({ max: 1, idleTimeoutMs: 0, validateAfterIdleMs: 5_000 })
    const a = await pool.acquire()
    pool.release(a)
    await vi.advanceTimersByTimeAsync(4_000)
    expect(await pool.acquire()).toBe(a)
    expect(connector.validated).toEqual([])

    pool.release(a)
    await vi.advanceTimersByTimeAsync(6_000)
    expect(await pool.acquire()).toBe(a)
    expect(connector.validated).toEqual([a])
  })

  test('a connection that fails the check is destroyed and the caller gets the next one', async () => {
    useFakeClock()
    const { pool, connector, removals } = makePool({ max: 3, idleTimeoutMs: 0, validateAfterIdleMs: 1 })
    const a = await pool.acquire()
    const b = await pool.acquire()
    pool.release(a)
    pool.release(b)
    await vi.advanceTimersByTimeAsync(10)
    // Both idle connections died (e.g. the server restarted while the container was frozen).
    connector.validatePlan.push('fail', 'fail')

    const c = await pool.acquire()
    await flush()

    expect(c).not.toBe(a)
    expect(c).not.toBe(b)
    expect(connector.validated).toEqual([b, a])
    expect(removals).toEqual([
      { id: b.id, reason: 'failed-validation' },
      { id: a.id, reason: 'failed-validation' },
    ])
    expect(a.broken && b.broken).toBe(true)
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })

  test('a check that never answers gives up after connectTimeoutMs and opens a new connection', async () => {
    useFakeClock()
    const { pool, connector, removals } = makePool({
      max: 1,
      idleTimeoutMs: 0,
      connectTimeoutMs: 2_000,
      validateAfterIdleMs: 1,
    })
    const a = await pool.acquire()
    pool.release(a)
    await vi.advanceTimersByTimeAsync(10)
    connector.validatePlan.push('hang')

    const next = track(pool.acquire())
    await vi.advanceTimersByTimeAsync(1_999)
    expect(next.settled).toBe(false)
    await vi.advanceTimersByTimeAsync(1)
    await flush()

    expect(next.value).toBeDefined()
    expect(next.value).not.toBe(a)
    expect(removals).toEqual([{ id: a.id, reason: 'failed-validation' }])
    expect(pool.counts()).toEqual({ total: 1, idle: 0, inUse: 1, waiting: 0, connecting: 0 })
  })

  test('a connection handed straight from a release to a waiter is not checked', async () => {
    const { pool, connector } = makePool({ max: 1, validateAfterIdleMs: 0 })
    const a = await pool.acquire()
    const waiting = pool.acquire()
    pool.release(a)
    expect(await waiting).toBe(a)
    expect(connector.validated).toEqual([])
  })
})

describe('when the server refuses sessions (too many connections)', () => {
  test('a cold pool opens one connection at a time, then one more per round of successful opens', async () => {
    const { pool, connector } = makePool({ max: 10 })
    connector.plan.push(...Array<ConnectPlan>(10).fill('hang'))
    const callers = Array.from({ length: 10 }, () => track(pool.acquire()))
    await flush()
    expect(pool.counts().connecting).toBe(1)

    connector.hanging[0]?.succeed()
    await flush()
    expect(pool.counts().connecting).toBe(2)
    connector.hanging[1]?.succeed()
    connector.hanging[2]?.succeed()
    await flush()
    expect(pool.counts().connecting).toBe(3)
    expect(callers.filter((caller) => caller.settled)).toHaveLength(3)
  })

  test('a refusal fails nobody: callers wait for the connections the pool holds, and it stops opening', async () => {
    useFakeClock()
    vi.spyOn(Math, 'random').mockReturnValue(0.5)
    const { pool, connector } = makePool({ max: 5, acquireTimeoutMs: 10_000 })
    const held = [await pool.acquire(), await pool.acquire()]
    connector.plan.push(...Array<ConnectPlan>(100).fill('refuse'))
    const waiting = Array.from({ length: 6 }, () => track(pool.acquire()))
    await flush()
    expect(connector.refused).toBeGreaterThanOrEqual(1)
    expect(waiting.some((caller) => caller.settled)).toBe(false)

    // Paused (3 s ceiling, equal jitter at 0.5: 2.25 s): releases serve every waiter, nothing is opened.
    const callsAtRefusal = connector.connectCalls
    let served = 0
    while (served < waiting.length) {
      const connection = held.shift() as FakeConnection
      pool.release(connection)
      await flush()
      const next = waiting[served]
      expect(next?.value).toBe(connection)
      held.push(connection)
      served++
    }
    expect(connector.connectCalls).toBe(callsAtRefusal)
    expect(pool.saturated).toBe(true)
    expect(waiting.filter((caller) => caller.error !== undefined)).toEqual([])
  })

  test('after the pause it tries one open; a second refusal doubles the pause', async () => {
    useFakeClock()
    vi.spyOn(Math, 'random').mockReturnValue(1)
    const { pool, connector } = makePool({ max: 5, acquireTimeoutMs: 60_000 })
    const a = await pool.acquire()
    connector.plan.push('refuse', 'refuse', 'ok')
    // One waiter: the pool holds one connection, so after the refusal it opens one at a time.
    const waiters = [track(pool.acquire())]
    await flush()
    expect(connector.refused).toBe(1)

    // Holding a connection: the first pause's ceiling is 3 s (Math.random() = 1: the whole ceiling).
    await vi.advanceTimersByTimeAsync(2_999)
    expect(connector.connectCalls).toBe(2)
    await vi.advanceTimersByTimeAsync(1)
    expect(connector.connectCalls).toBe(3)
    expect(connector.refused).toBe(2)

    await vi.advanceTimersByTimeAsync(5_999)
    expect(connector.connectCalls).toBe(3)
    await vi.advanceTimersByTimeAsync(1)
    await flush()
    // Room again: the open succeeded and the pool grows on.
    expect(connector.connectCalls).toBeGreaterThanOrEqual(4)
    expect(waiters[0]?.value).toBeDefined()
    expect(pool.saturated).toBe(false)
    pool.release(a)
  })

  test('past the size at which the server refused, it tries one open at a time, however many wait', async () => {
    useFakeClock()
    vi.spyOn(Math, 'random').mockReturnValue(1)
    const { pool, connector } = makePool({ max: 10, acquireTimeoutMs: 60_000 })
    const held = [await pool.acquire(), await pool.acquire(), await pool.acquire()]
    // An open that succeeds after the refusal (it was in flight with it) must not widen the next try.
    connector.plan.push('refuse', 'ok', 'hang', 'hang')
    const waiters = Array.from({ length: 6 }, () => track(pool.acquire()))
    await flush()
    expect(connector.refused).toBe(1)
    await vi.advanceTimersByTimeAsync(3_000)
    expect(pool.counts().connecting).toBe(1)
    expect(waiters.filter((waiter) => waiter.settled)).toHaveLength(1)
    for (const connection of held) pool.release(connection)
  })

  test("holding no connection, it retries refused opens with jittered backoff until the caller's deadline", async () => {
    useFakeClock()
    const { pool, connector } = makePool({ max: 5, acquireTimeoutMs: 3_000 })
    connector.plan.push(...Array<ConnectPlan>(100).fill('refuse'))
    const caller = track(pool.acquire())
    await vi.advanceTimersByTimeAsync(2_999)
    expect(caller.settled).toBe(false)
    // Full jitter capped at 1 s: several tries within the deadline, far from a tight loop.
    expect(connector.refused).toBeGreaterThanOrEqual(3)
    expect(connector.refused).toBeLessThan(60)
    await vi.advanceTimersByTimeAsync(1)
    expect(caller.error).toBeInstanceOf(PoolTimeoutError)
    const error = caller.error as PoolTimeoutError
    expect(error.message).toMatch(/refuses new sessions \(too many connections\)/)
    expect((error.cause as { code?: string }).code).toBe('53300')
  })

  test('holding no connection, a slot that frees up serves the caller', async () => {
    useFakeClock()
    const { pool, connector } = makePool({ max: 5, acquireTimeoutMs: 10_000 })
    connector.plan.push('refuse', 'refuse', 'refuse')
    const caller = track(pool.acquire())
    await vi.advanceTimersByTimeAsync(5_000)
    expect(caller.value).toBeDefined()
    expect(connector.refused).toBe(3)
  })

  test('while the server is short of slots, idle connections are closed after 1 s instead of idleTimeoutMs', async () => {
    useFakeClock()
    const { pool, connector, removals } = makePool({
      max: 5,
      idleTimeoutMs: 30_000,
      acquireTimeoutMs: 60_000,
    })
    const held = [await pool.acquire(), await pool.acquire(), await pool.acquire()]
    connector.plan.push('refuse')
    const waiter = track(pool.acquire())
    await flush()
    expect(pool.saturated).toBe(true)
    pool.release(held[0] as FakeConnection)
    await flush()
    expect(waiter.value).toBe(held[0])
    // Demand drops: the released connections go idle, and are closed after 1 s, not 30 s.
    pool.release(held[1] as FakeConnection)
    pool.release(held[2] as FakeConnection)
    await vi.advanceTimersByTimeAsync(1_000)
    expect(removals.map((removal) => removal.reason)).toEqual(['idle', 'idle'])
  })

  test('while the server is short of slots, one connection is given back now and then, never the last', async () => {
    useFakeClock()
    vi.spyOn(Math, 'random').mockReturnValue(0)
    const { pool, connector, removals } = makePool({ max: 5, acquireTimeoutMs: 60_000 })
    const held = [await pool.acquire(), await pool.acquire()]
    connector.plan.push(...Array<ConnectPlan>(100).fill('refuse'))
    const waiter = track(pool.acquire())
    await flush()
    expect(pool.saturated).toBe(true)

    // Before the give-back interval (5 s), a release serves the waiter.
    pool.release(held[0] as FakeConnection)
    await flush()
    expect(waiter.value).toBe(held[0])
    expect(removals).toEqual([])

    await vi.advanceTimersByTimeAsync(5_000)
    pool.release(held[1] as FakeConnection)
    expect(removals).toEqual([{ id: (held[1] as FakeConnection).id, reason: 'given-back' }])

    // The pool still holds one: that one is never given back.
    await vi.advanceTimersByTimeAsync(60_000)
    pool.release(waiter.value as FakeConnection)
    expect(removals).toHaveLength(1)
    expect(pool.counts().idle).toBe(1)
  })
})

describe('instruments (OpenTelemetry timings)', () => {
  test('with instruments, every open goes through connect and every acquire and release is timed', async () => {
    const { pool, connector } = makePool({ max: 2 })
    const calls: string[] = []
    pool.instrument({
      connect: (open) => {
        calls.push('connect')
        return open()
      },
      waited: (ms) => calls.push(ms >= 0 ? 'waited' : 'negative wait'),
      used: (ms) => calls.push(ms >= 0 ? 'used' : 'negative use'),
    })
    const first = await pool.acquire()
    pool.release(first)
    const again = await pool.acquire()
    expect(again).toBe(first)
    pool.release(again)
    expect(calls).toEqual(['connect', 'waited', 'used', 'waited', 'used'])
    expect(connector.connectCalls).toBe(1)

    // A failed open is seen by connect too, and its error reaches the caller unchanged.
    connector.plan.push('fail')
    const held = await pool.acquire()
    await expect(pool.acquire()).rejects.toThrow('connection refused')
    pool.release(held)
    expect(calls.slice(5)).toEqual(['waited', 'connect', 'used'])
  })

  test('without instruments (after instrument(undefined)), nothing is timed', async () => {
    const { pool } = makePool()
    const calls: string[] = []
    pool.instrument({
      connect: (open) => {
        calls.push('connect')
        return open()
      },
      waited: () => calls.push('waited'),
      used: () => calls.push('used'),
    })
    pool.instrument(undefined)
    pool.release(await pool.acquire())
    expect(calls).toEqual([])
  })
})
