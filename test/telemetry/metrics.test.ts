import { metrics } from '@opentelemetry/api'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import { sql } from 'kysely'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createDb, type ResilientDb } from '../../src/index.js'
import { credentialFailoverDrill } from '../support/credential-failover-drill.js'
import { describeEngines } from '../support/database.js'
import {
  CollectingReader,
  collectLibraryPoints,
  type MetricPoint as Point,
} from '../support/metric-points.js'
import { pollUntil } from '../support/poll.js'
import { getFreePort } from '../support/ports.js'
import { type PostgresCluster, startPostgresCluster } from '../support/postgres-cluster.js'
import { registerSecret } from '../support/secrets.js'

// OpenTelemetry metrics through the application's meter provider (the SDK's own reader, in memory),
// on real servers: the semantic conventions' connection pool metrics and the library's own, with the
// attributes an operator filters by and never a secret.

const reader = new CollectingReader()
const provider = new MeterProvider({ readers: [reader] })

beforeAll(() => {
  metrics.setGlobalMeterProvider(provider)
})
afterAll(async () => {
  await provider.shutdown()
  metrics.disable()
})

const dbs: Array<ResilientDb<Record<string, never>>> = []
afterEach(async () => {
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
})

const collect = (): Promise<Point[]> => collectLibraryPoints(reader)

/** The points of one metric for one endpoint (`port` tells this test's endpoints from earlier ones). */
function points(all: Point[], name: string, pool: string, port: number): Point[] {
  return all.filter(
    (point) =>
      point.name === name &&
      point.attributes['db.client.connection.pool.name'] === pool &&
      point.attributes['server.port'] === port,
  )
}

describeEngines('OpenTelemetry metrics', (engine, info) => {
  it('pool connection counts, limits and waiters, per endpoint, with server address and no secret', async () => {
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: info.writerUrl,
      readers: [info.readerUrl],
      pool: { max: 7, min: 0 },
    })
    dbs.push(db)
    // Two statements at once on the writer: two connections, then idle.
    await Promise.all([sql`select 1`.execute(db), sql`select 2`.execute(db)])
    const writerPort = Number(new URL(info.writerUrl).port)
    const readerPort = Number(new URL(info.readerUrl).port)
    await pollUntil(
      async () =>
        points(await collect(), 'db.client.connection.count', 'writer', writerPort).length > 0
          ? true
          : undefined,
      {
        timeoutMs: 5_000,
        what: 'the metrics to be recorded once the db opened',
      },
    )
    const all = await collect()
    const writerCounts = points(all, 'db.client.connection.count', 'writer', writerPort)
    const byState = Object.fromEntries(
      writerCounts.map((point) => [point.attributes['db.client.connection.state'], point.value]),
    )
    expect(byState).toEqual({ idle: db.stats().writer.idle, used: 0 })
    expect(db.stats().writer.idle).toBeGreaterThanOrEqual(1)
    expect(points(all, 'db.client.connection.max', 'writer', writerPort)[0]?.value).toBe(7)
    expect(points(all, 'db.client.connection.idle.min', 'writer', writerPort)[0]?.value).toBe(0)
    expect(points(all, 'db.client.connection.pending_requests', 'writer', writerPort)[0]?.value).toBe(0)
    const url = new URL(info.writerUrl)
    expect(writerCounts[0]?.attributes).toMatchObject({
      'db.system.name': engine === 'postgres' ? 'postgresql' : 'mysql',
      'kysely_resilient.endpoint.role': 'writer',
      'server.address': url.hostname,
      'server.port': Number(url.port),
    })
    expect(points(all, 'kysely_resilient.reader.healthy', 'reader-0', readerPort)[0]?.value).toBe(1)
    if (info.password !== undefined) expect(JSON.stringify(all)).not.toContain(info.password)
    // The user name never appears; the test database is called 'app' too, and db.client.operation.duration
    // names it (db.namespace), rightly.
    const withoutNamespace = all.map(({ attributes: { 'db.namespace': _, ...attributes }, ...point }) => ({
      ...point,
      attributes,
    }))
    expect(JSON.stringify(withoutNamespace)).not.toContain('"app"')
  })

  it('counts callers that waited acquireTimeoutMs for a connection in vain', async () => {
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: info.writerUrl,
      pool: { max: 1, acquireTimeoutMs: 100 },
      retry: false,
    })
    dbs.push(db)
    const writerPort = Number(new URL(info.writerUrl).port)
    await db.connection().execute(async (held) => {
      await sql`select 1`.execute(held)
      // The only connection is held: this one waits 100 ms and gives up.
      await expect(sql`select 2`.execute(db)).rejects.toMatchObject({ code: 'POOL_ACQUIRE_TIMEOUT' })
    })
    const all = await collect()
    expect(points(all, 'db.client.connection.timeouts', 'writer', writerPort)[0]?.value).toBe(1)
  })

  it('retries, reader ejections and credential refreshes, from the events', async () => {
    const deadPort = await getFreePort()
    const url = new URL(info.writerUrl)
    const password = decodeURIComponent(url.password)
    url.password = ''
    const dead = new URL(url)
    dead.port = String(deadPort)
    const writerPort = Number(url.port)
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: url.toString(),
      readers: [dead.toString()],
      auth: { type: 'token', getToken: async () => password, ttlMs: 3_600_000 },
      routing: { readerCooldownMs: 60_000 },
    })
    dbs.push(db)
    // The read finds its reader refusing connections: retried on the writer, the reader ejected.
    await db.selectNoFrom(sql<number>`1`.as('one')).execute()
    const all = await collect()
    expect(points(all, 'kysely_resilient.reader.ejections', 'reader-0', deadPort)).toMatchObject([
      { value: 1, attributes: { 'kysely_resilient.reason': 'unreachable' } },
    ])
    expect(points(all, 'kysely_resilient.retries', 'reader-0', deadPort)).toMatchObject([
      { value: 1, attributes: { 'error.type': 'unavailable', 'kysely_resilient.statement': 'read' } },
    ])
    expect(points(all, 'kysely_resilient.reader.healthy', 'reader-0', deadPort)[0]?.value).toBe(0)
    expect(points(all, 'kysely_resilient.credential.refreshes', 'writer', writerPort)).toMatchObject([
      { value: 1, attributes: { 'kysely_resilient.reason': 'initial' } },
    ])
    expect(JSON.stringify(all)).not.toContain(password)
  })
})

describe('OpenTelemetry metrics of the storm back-off and of credential failures', () => {
  let small: PostgresCluster

  beforeAll(async () => {
    // max_connections 10: 7 sessions for the app role.
    small = await startPostgresCluster({ replica: false, maxConnections: 10 })
    registerSecret(small.password)
  }, 120_000)

  afterAll(async () => {
    await small?.stop()
  })

  it('counts sessions the server refused and shows the pool backing off, while every statement is served', async () => {
    const db = createDb<Record<string, never>>({
      dialect: 'postgres',
      writer: small.writerUrl,
      pool: { max: 12, acquireTimeoutMs: 20_000 },
    })
    dbs.push(db)
    const port = Number(new URL(small.writerUrl).port)
    await Promise.all(Array.from({ length: 12 }, () => sql`select pg_sleep(0.3)`.execute(db)))
    const all = await collect()
    const refusals = points(all, 'kysely_resilient.pool.session_refusals', 'writer', port)[0]?.value
    expect(refusals).toBeGreaterThan(0)
    // Right after the refusals the pool still holds back.
    expect(points(all, 'kysely_resilient.pool.backing_off', 'writer', port)[0]?.value).toBe(1)
  })

  it('counts a failed credential fetch by its code', async () => {
    const url = new URL(small.writerUrl)
    url.password = ''
    const db = createDb<Record<string, never>>({
      dialect: 'postgres',
      writer: url.toString(),
      auth: {
        type: 'token',
        getToken: async () => {
          throw new Error('the vault is sealed')
        },
        ttlMs: 60_000,
      },
      retry: false,
    })
    dbs.push(db)
    await expect(sql`select 1`.execute(db)).rejects.toMatchObject({
      code: expect.stringMatching(/^CREDENTIALS_/),
    })
    const all = await collect()
    const failures = points(all, 'kysely_resilient.credential.failures', 'writer', Number(url.port))
    expect(failures).toMatchObject([
      { value: 1, attributes: { 'kysely_resilient.error.code': expect.stringMatching(/^CREDENTIALS_/) } },
    ])
  })
})

describe('OpenTelemetry metrics through a failover drill and a credential rotation', () => {
  const runDrill = credentialFailoverDrill()

  it('counts the rejected password refetch, then the failover with its duration', async () => {
    await runDrill({
      opened: (db) => dbs.push(db as unknown as ResilientDb<Record<string, never>>),
      afterRotation: async ({ primaryPort }) => {
        const refreshes = Object.fromEntries(
          points(await collect(), 'kysely_resilient.credential.refreshes', 'writer-0', primaryPort).map(
            (point) => [point.attributes['kysely_resilient.reason'], point.value],
          ),
        )
        expect(refreshes).toEqual({ initial: 1, rejected: 1 })
      },
      afterFailover: async ({ replicaPort, original, rotated }) => {
        const all = await collect()
        expect(points(all, 'kysely_resilient.failovers', 'writer-1', replicaPort)).toMatchObject([
          { value: 1 },
        ])
        const [duration] = points(all, 'kysely_resilient.failover.duration', 'writer-1', replicaPort)
        const histogram = duration?.value as { count: number; sum: number } | undefined
        expect(histogram?.count).toBe(1)
        expect(histogram?.sum).toBeGreaterThan(0)
        expect(JSON.stringify(all)).not.toContain(rotated)
        expect(JSON.stringify(all)).not.toContain(original)
      },
    })
  }, 90_000)
})
