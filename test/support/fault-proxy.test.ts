import mysql from 'mysql2/promise'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import { describeEngines, type Engine, hasReplica } from './database.js'
import { FaultProxy, portOf } from './fault-proxy.js'
import { proxiesClosedAfterEachTest } from './per-test.js'
import { pollUntil, withTimeout } from './poll.js'
import { getFreePort, isPortOpen } from './ports.js'
import type { Row } from './sql.js'

interface RawConnection {
  query(sql: string): Promise<Row[]>
  /** Drops the socket without a protocol goodbye (which a blackholed server would never answer). */
  destroy(): void
  /**
   * Settles once the driver has seen its socket die and will not touch it again, with the error the
   * driver emitted on its own (what a pool's idle-connection 'error' listener would get).
   */
  readonly gone: Promise<Error & { code?: string }>
}

async function connect(engine: Engine, url: string, connectTimeoutMs = 5_000): Promise<RawConnection> {
  if (engine === 'postgres') {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: connectTimeoutMs })
    // An idle client whose socket dies emits 'error'; unhandled, that would crash the worker.
    let emitted: Error | undefined
    client.on('error', (error) => {
      emitted ??= error
    })
    // pg emits 'end' from the socket's 'close', after any 'error'.
    const gone = new Promise<Error>((resolve) =>
      client.once('end', () => resolve(emitted ?? new Error('(no error emitted)'))),
    )
    await client.connect()
    return {
      query: async (sql) => (await client.query<Row>(sql)).rows,
      destroy: () => client.connection.stream.destroy(),
      gone,
    }
  }
  const connection = await mysql.createConnection({ uri: url, connectTimeout: connectTimeoutMs })
  // mysql2 emits one fatal 'error' for an idle connection: on an RST at once, after a FIN once the socket
  // has closed. Either way it refuses new commands from then on.
  const gone = new Promise<Error>((resolve) => connection.once('error', resolve))
  connection.on('error', () => {})
  return {
    query: async (sql) => {
      const [rows] = await connection.query(sql)
      return Array.isArray(rows) ? (rows as Row[]) : []
    },
    destroy: () => connection.destroy(),
    gone,
  }
}

/** The rejection of `promise`; fails the test if it resolves instead. */
async function errorOf(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  return promise.then(
    () => {
      throw new Error('expected a failure')
    },
    (error: Error & { code?: string }) => error,
  )
}

/** `'settled'` or `'pending'` after `ms`: proves something did NOT happen within a short window. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<'settled' | 'pending'> {
  let timer: NodeJS.Timeout | undefined
  const pending = new Promise<'pending'>((resolve) => {
    timer = setTimeout(() => resolve('pending'), ms)
  })
  const settled = promise.then(
    () => 'settled' as const,
    () => 'settled' as const,
  )
  try {
    return await Promise.race([settled, pending])
  } finally {
    clearTimeout(timer)
  }
}

type Failure =
  | 'cutInFlight'
  | 'cutIdle'
  | 'resetInFlight'
  | 'resetIdle'
  | 'usedAfterDeath'
  | 'connectTimeout'
  | 'refused'

/**
 * What each driver reports for each fault, as observed against real servers through this proxy. An error
 * classifier must recognise all of these; pg gives several without a `code`, so it needs the message.
 */
const EXPECTED: Record<Engine, Record<Failure, { code?: string; message?: string | RegExp }>> = {
  postgres: {
    // pg's own error on the socket's 'end'; no code.
    cutInFlight: { message: 'Connection terminated unexpectedly' },
    // What an idle client emits as 'error' (a pool's idle listener sees this).
    cutIdle: { message: 'Connection terminated unexpectedly' },
    resetInFlight: { code: 'ECONNRESET' },
    resetIdle: { code: 'ECONNRESET', message: 'read ECONNRESET' },
    // A query on a client that already emitted 'error' (FIN or RST alike).
    usedAfterDeath: { message: 'Client has encountered a connection error and is not queryable' },
    connectTimeout: { message: 'timeout expired' },
    refused: { code: 'ECONNRESET' },
  },
  mysql: {
    cutInFlight: { code: 'PROTOCOL_CONNECTION_LOST' },
    cutIdle: { code: 'PROTOCOL_CONNECTION_LOST' },
    resetInFlight: { code: 'ECONNRESET' },
    resetIdle: { code: 'ECONNRESET', message: 'read ECONNRESET' },
    usedAfterDeath: { message: "Can't add new command when connection is in closed state" },
    connectTimeout: { code: 'ETIMEDOUT' },
    refused: { code: 'ECONNRESET' },
  },
}

const ONE = 'SELECT 1 AS one'

describeEngines('FaultProxy', (engine, info) => {
  const connections: RawConnection[] = []
  const startProxyOn = proxiesClosedAfterEachTest()
  const startProxy = () => startProxyOn(portOf(info.writerUrl))

  async function open(proxy: FaultProxy, connectTimeoutMs?: number): Promise<RawConnection> {
    const connection = await connect(engine, proxy.url(info.writerUrl), connectTimeoutMs)
    connections.push(connection)
    return connection
  }

  afterEach(async () => {
    for (const connection of connections.splice(0)) connection.destroy()
  })

  it('pass: forwards queries both ways', async () => {
    const proxy = await startProxy()
    const connection = await open(proxy)
    expect(await connection.query(ONE)).toEqual([{ one: 1 }])
    expect(proxy.connections).toBe(1)
    const stats = proxy.stats()
    expect(stats).toMatchObject({ accepted: 1, live: 1, refused: 0, bytesDropped: 0 })
    expect(stats.bytesUp).toBeGreaterThan(0)
    expect(stats.bytesDown).toBeGreaterThan(0)
  })

  it('pass: a graceful close by the client goes through both ways', async () => {
    const proxy = await startProxy()
    const url = proxy.url(info.writerUrl)
    if (engine === 'postgres') {
      const client = new pg.Client({ connectionString: url })
      client.on('error', () => {})
      await client.connect()
      // Resolves only when the server's FIN, relayed by the proxy, reaches the client.
      await withTimeout(client.end(), 2_000, 'pg client.end()')
    } else {
      const connection = await mysql.createConnection({ uri: url })
      connection.on('error', () => {})
      await withTimeout(connection.end(), 2_000, 'mysql2 connection.end()')
    }
    await pollUntil(async () => (proxy.connections === 0 ? true : undefined), {
      timeoutMs: 2_000,
      what: 'the proxy to see the connection close',
    })
  })

  it('cutAll: a query in flight fails, new connections work', async () => {
    const proxy = await startProxy()
    const connection = await open(proxy)
    proxy.cutAll()
    const error = await errorOf(connection.query(ONE))
    expect(error).toMatchObject(EXPECTED[engine].cutInFlight)
    // The driver answers our FIN with its own, and then the proxy's side closes too.
    await pollUntil(async () => (proxy.connections === 0 ? true : undefined), {
      timeoutMs: 2_000,
      what: 'the cut connection to close',
    })
    const fresh = await open(proxy)
    expect(await fresh.query(ONE)).toEqual([{ one: 1 }])
  })

  it('cutAll: an idle connection the driver saw close fails on its next query', async () => {
    const proxy = await startProxy()
    const connection = await open(proxy)
    proxy.cutAll()
    expect(await connection.gone).toMatchObject(EXPECTED[engine].cutIdle)
    const error = await errorOf(connection.query(ONE))
    expect(error).toMatchObject(EXPECTED[engine].usedAfterDeath)
  })

  it('resetAll: a query in flight fails, new connections work', async () => {
    const proxy = await startProxy()
    const connection = await open(proxy)
    proxy.resetAll()
    const error = await errorOf(connection.query(ONE))
    expect(error).toMatchObject(EXPECTED[engine].resetInFlight)
    const fresh = await open(proxy)
    expect(await fresh.query(ONE)).toEqual([{ one: 1 }])
  })

  it('resetAll: an idle connection the driver saw reset fails on its next query', async () => {
    const proxy = await startProxy()
    const connection = await open(proxy)
    proxy.resetAll()
    expect(await connection.gone).toMatchObject(EXPECTED[engine].resetIdle)
    const error = await errorOf(connection.query(ONE))
    expect(error).toMatchObject(EXPECTED[engine].usedAfterDeath)
  })

  it('blackhole: a running query never completes; new connections work again after pass', async () => {
    const proxy = await startProxy()
    const connection = await open(proxy)
    proxy.setMode('blackhole')
    const query = connection.query(ONE)
    query.catch(() => {})
    expect(await settlesWithin(query, 500)).toBe('pending')
    expect(proxy.stats().bytesDropped).toBeGreaterThan(0)
    connection.destroy()

    proxy.setMode('pass')
    const fresh = await open(proxy)
    expect(await fresh.query(ONE)).toEqual([{ one: 1 }])
  })

  it('blackhole: a new connection does not finish its handshake', async () => {
    const proxy = await startProxy()
    proxy.setMode('blackhole')
    const startedAt = performance.now()
    const error = await errorOf(open(proxy, 300))
    expect(error).toMatchObject(EXPECTED[engine].connectTimeout)
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(290)
  })

  it('stall then pass: a query issued during the stall completes afterwards', async () => {
    const proxy = await startProxy()
    const connection = await open(proxy)
    proxy.setMode('stall')
    const query = connection.query('SELECT 2 AS two')
    expect(await settlesWithin(query, 200)).toBe('pending')
    proxy.setMode('pass')
    expect(await query).toEqual([{ two: 2 }])
  })

  it('stall then pass: a connection opened during the stall completes afterwards', async () => {
    const proxy = await startProxy()
    proxy.setMode('stall')
    const opening = open(proxy)
    expect(await settlesWithin(opening, 200)).toBe('pending')
    proxy.setMode('pass')
    const connection = await opening
    expect(await connection.query(ONE)).toEqual([{ one: 1 }])
  })

  it('refuse: new connections fail fast, existing ones keep working', async () => {
    const proxy = await startProxy()
    const existing = await open(proxy)
    proxy.setMode('refuse')
    const startedAt = performance.now()
    const error = await errorOf(open(proxy))
    expect(error).toMatchObject(EXPECTED[engine].refused)
    expect(performance.now() - startedAt).toBeLessThan(1_000)
    expect(await existing.query(ONE)).toEqual([{ one: 1 }])
    expect(proxy.stats()).toMatchObject({ accepted: 2, refused: 1, live: 1 })
  })

  it('a target that is down: new connections are reset', async () => {
    const proxy = await startProxy()
    proxy.retarget(await getFreePort())
    const error = await errorOf(open(proxy))
    expect(error).toMatchObject(EXPECTED[engine].refused)
  })

  it.skipIf(!hasReplica(info))('retarget: new connections land on the replica, old ones stay', async () => {
    const proxy = await startProxy()
    const old = await open(proxy)
    proxy.retarget(portOf(info.readerUrl))
    const fresh = await open(proxy)
    if (engine === 'postgres') {
      const sql = 'SELECT pg_is_in_recovery() AS recovering'
      expect(await fresh.query(sql)).toEqual([{ recovering: true }])
      expect(await old.query(sql)).toEqual([{ recovering: false }])
    } else {
      const sql = 'SELECT @@read_only AS readOnly'
      expect(await fresh.query(sql)).toEqual([{ readOnly: 1 }])
      expect(await old.query(sql)).toEqual([{ readOnly: 0 }])
    }
  })

  it('close: idempotent, stops listening and closes every socket', async () => {
    const proxy = await startProxy()
    const connection = await open(proxy)
    proxy.setMode('stall')
    await Promise.all([proxy.close(), proxy.close()])
    await withTimeout(connection.gone, 2_000, 'the driver to see the proxy close')
    expect(proxy.connections).toBe(0)
    expect(await isPortOpen(proxy.port)).toBe(false)
  })
})

describe('FaultProxy without a server', () => {
  it('rewrites only host and port of a URL', async () => {
    const proxy = await FaultProxy.start({ targetPort: 1 })
    try {
      expect(proxy.url('postgres://app:p%40ss@127.0.0.1:5432/app?sslmode=disable')).toBe(
        `postgres://app:p%40ss@127.0.0.1:${proxy.port}/app?sslmode=disable`,
      )
      expect(proxy.url('mysql://app:pw@localhost:3306/app')).toBe(
        `mysql://app:pw@127.0.0.1:${proxy.port}/app`,
      )
    } finally {
      await proxy.close()
    }
  })

  it('refuses to proxy anywhere but loopback', async () => {
    await expect(FaultProxy.start({ targetPort: 5432, targetHost: '10.0.0.1' })).rejects.toThrow(/loopback/)
    const proxy = await FaultProxy.start({ targetPort: 5432 })
    try {
      expect(() => proxy.retarget(5432, 'example.com')).toThrow(/loopback/)
      expect(proxy.target).toEqual({ host: '127.0.0.1', port: 5432 })
    } finally {
      await proxy.close()
    }
  })
})
