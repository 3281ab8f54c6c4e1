import { tracingChannel } from 'node:diagnostics_channel'
import { context, metrics, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  type Sampler,
  SamplingDecision,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base'
import { sql } from 'kysely'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, createDb, type ResilientDb } from '../../src/index.js'
import { credentialFailoverDrill } from '../support/credential-failover-drill.js'
import { describeEngines } from '../support/database.js'
import { recordTelemetry } from '../support/leak-watch.js'
import {
  CollectingReader,
  collectLibraryPoints,
  type MetricPoint as Point,
} from '../support/metric-points.js'
import { getFreePort } from '../support/ports.js'

// OpenTelemetry spans and time histograms through the SDK's in-memory exporter and reader, on real
// servers, with an AsyncLocalStorage context manager as a Node application registers one: a span per
// statement nested under the application's span, the routing decision and retries as its events,
// spans for connection opens, writer discovery and credential fetches, the semantic conventions'
// time histograms, and never a secret, a parameter value or (unless asked for) the statement text.

/** While set, the sampler drops the statements' spans (those with `db.operation.name`), as a head sampler may. */
let dropStatementSpans = false
const sampler: Sampler = {
  shouldSample: (_context, _traceId, _name, _kind, attributes) => ({
    decision:
      dropStatementSpans && attributes['db.operation.name'] !== undefined
        ? SamplingDecision.NOT_RECORD
        : SamplingDecision.RECORD_AND_SAMPLED,
  }),
  toString: () => 'drops statement spans while asked to',
}
const exporter = new InMemorySpanExporter()
const tracerProvider = new BasicTracerProvider({
  sampler,
  spanProcessors: [new SimpleSpanProcessor(exporter)],
})
const contextManager = new AsyncLocalStorageContextManager()
const reader = new CollectingReader()
const meterProvider = new MeterProvider({ readers: [reader] })
const appTracer = () => trace.getTracer('the-app')

beforeAll(() => {
  context.setGlobalContextManager(contextManager.enable())
  trace.setGlobalTracerProvider(tracerProvider)
  metrics.setGlobalMeterProvider(meterProvider)
})
afterAll(async () => {
  await tracerProvider.shutdown()
  await meterProvider.shutdown()
  trace.disable()
  context.disable()
  metrics.disable()
})

const dbs: Array<ResilientDb<Record<string, never>>> = []
afterEach(async () => {
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
  exporter.reset()
})

/** The spans exported so far, each also handed to the leak watch: names, attributes, events, status. */
function spans(): ReadableSpan[] {
  const finished = exporter.getFinishedSpans()
  for (const span of finished) {
    const text = JSON.stringify({
      name: span.name,
      attributes: span.attributes,
      events: span.events.map((event) => ({ name: event.name, attributes: event.attributes })),
      status: span.status,
    })
    recordTelemetry(`span ${span.name}`, () => text)
  }
  return finished
}

const collect = (): Promise<Point[]> => collectLibraryPoints(reader)

/**
 * Calls `onQuery` where a driver instrumentation starts its span: inside pg's `Client.query` (which
 * `@opentelemetry/instrumentation-pg` patches), on mysql2's `mysql2:query` tracing channel (which
 * the mysql2 instrumentations read). Returns the function that stops watching.
 */
async function watchDriverQueries(engine: 'postgres' | 'mysql', onQuery: () => void): Promise<() => void> {
  if (engine === 'postgres') {
    const pg = (await import('pg')).default
    const prototype = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown }
    const original = prototype.query
    prototype.query = function (this: unknown, ...args: unknown[]) {
      onQuery()
      return original.apply(this, args)
    }
    return () => {
      prototype.query = original
    }
  }
  const channel = tracingChannel('mysql2:query')
  channel.start.subscribe(onQuery)
  return () => channel.start.unsubscribe(onQuery)
}

const isStatement = (span: ReadableSpan) => span.attributes['db.operation.name'] !== undefined
const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId

describeEngines('OpenTelemetry spans', (engine, info) => {
  const writer = new URL(info.writerUrl)
  const database = writer.pathname.slice(1)
  const system = engine === 'postgres' ? 'postgresql' : 'mysql'

  it('one span per statement under the application span, with the routing decision and the connection opens', async () => {
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: info.writerUrl,
      readers: [info.readerUrl],
    })
    dbs.push(db)
    // Where a driver instrumentation would start its span, ours must be the active one.
    const driverParents: Array<string | undefined> = []
    const stopWatching = await watchDriverQueries(engine, () =>
      driverParents.push(trace.getActiveSpan()?.spanContext().spanId),
    )
    const parent = await appTracer()
      .startActiveSpan('GET /people', async (span) => {
        await db.selectNoFrom(sql<number>`1`.as('one')).execute()
        await sql`select 2`.execute(db.writer)
        span.end()
        return span
      })
      .finally(stopWatching)
    const all = spans()
    const statements = all.filter(isStatement)
    expect(statements.map((span) => span.name)).toEqual([`SELECT ${database}`, `SELECT ${database}`])
    const [read, forced] = statements as [ReadableSpan, ReadableSpan]
    for (const span of statements) {
      expect(span.kind).toBe(SpanKind.CLIENT)
      expect(parentOf(span)).toBe(parent.spanContext().spanId)
      expect(span.spanContext().traceId).toBe(parent.spanContext().traceId)
      expect(span.status.code).not.toBe(SpanStatusCode.ERROR)
      expect(span.attributes).toMatchObject({
        'db.system': system,
        'db.system.name': system,
        'db.namespace': database,
        'db.operation.name': 'SELECT',
        'server.port': expect.any(Number),
        'server.address': expect.any(String),
      })
      expect(span.attributes['db.query.text']).toBeUndefined()
    }
    expect(read.attributes).toMatchObject({
      'kysely_resilient.endpoint.name': 'reader-0',
      'kysely_resilient.endpoint.role': 'reader',
      'server.port': Number(new URL(info.readerUrl).port),
    })
    expect(read.events.map((event) => [event.name, event.attributes])).toEqual([
      [
        'kysely_resilient.route',
        {
          'kysely_resilient.endpoint.name': 'reader-0',
          'kysely_resilient.endpoint.role': 'reader',
          'kysely_resilient.route.reason': 'read statement',
        },
      ],
    ])
    expect(forced.attributes).toMatchObject({
      'kysely_resilient.endpoint.name': 'writer',
      'kysely_resilient.endpoint.role': 'writer',
      'server.address': writer.hostname,
      'server.port': Number(writer.port),
    })
    expect(forced.events[0]?.attributes?.['kysely_resilient.route.reason']).toBe('forced db.writer')
    // Each statement opened its endpoint's first connection: a connect span under the statement's.
    const connects = all.filter((span) => span.name === 'kysely-resilient connect')
    // The driver's statements: each of ours under its statement span, and the platform detection
    // on each endpoint's first connection (one statement on PostgreSQL, two on MySQL) under that
    // connection's span.
    const connectIds = new Set(connects.map((span) => span.spanContext().spanId))
    expect(driverParents.filter((id) => id === undefined || !connectIds.has(id))).toEqual([
      read.spanContext().spanId,
      forced.spanContext().spanId,
    ])
    expect(driverParents.filter((id) => id !== undefined && connectIds.has(id))).toHaveLength(
      engine === 'postgres' ? 2 : 4,
    )
    expect(
      connects.map((span) => [span.attributes['kysely_resilient.endpoint.name'], parentOf(span)]),
    ).toEqual([
      ['reader-0', read.spanContext().spanId],
      ['writer', forced.spanContext().spanId],
    ])
    if (info.password !== undefined)
      expect(JSON.stringify(all.map((span) => span.attributes))).not.toContain(info.password)
  })

  it('a read retried on the writer: route and retry events, the failed connect, the credential fetch', async () => {
    const deadPort = await getFreePort()
    const url = new URL(info.writerUrl)
    const password = decodeURIComponent(url.password)
    url.password = ''
    const dead = new URL(url)
    dead.port = String(deadPort)
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: url.toString(),
      readers: [dead.toString()],
      auth: { type: 'token', getToken: async () => password, ttlMs: 3_600_000 },
      routing: { readerCooldownMs: 60_000 },
    })
    dbs.push(db)
    await db.selectNoFrom(sql<number>`1`.as('one')).execute()
    const all = spans()
    const [statement, ...others] = all.filter(isStatement)
    expect(others).toEqual([])
    expect(statement?.attributes['kysely_resilient.endpoint.name']).toBe('writer')
    const events = (statement?.events ?? []).map((event) => ({ name: event.name, ...event.attributes }))
    expect(events).toMatchObject([
      {
        name: 'kysely_resilient.route',
        'kysely_resilient.endpoint.name': 'reader-0',
        'kysely_resilient.route.reason': 'read statement',
      },
      {
        name: 'kysely_resilient.retry',
        'kysely_resilient.attempt': 1,
        'kysely_resilient.endpoint.name': 'reader-0',
        'kysely_resilient.error.category': 'unavailable',
        'kysely_resilient.error.code': 'ECONNREFUSED',
        'kysely_resilient.retry.delay_ms': expect.any(Number),
      },
      {
        name: 'kysely_resilient.route',
        'kysely_resilient.endpoint.name': 'writer',
        'kysely_resilient.route.reason': 'no healthy reader',
      },
    ])
    const connects = all.filter((span) => span.name === 'kysely-resilient connect')
    const failed = connects.find((span) => span.attributes['kysely_resilient.endpoint.name'] === 'reader-0')
    expect(failed?.status.code).toBe(SpanStatusCode.ERROR)
    expect(failed?.attributes).toMatchObject({ 'error.type': 'ECONNREFUSED', 'server.port': deadPort })
    expect(failed?.events.map((event) => event.name)).toEqual(['exception'])
    // Each endpoint fetched its token once, inside its first connect.
    const fetches = all.filter((span) => span.name === 'kysely-resilient credential fetch')
    expect(
      fetches.map((span) => [
        span.attributes['kysely_resilient.endpoint.name'],
        span.attributes['kysely_resilient.auth.type'],
        span.attributes['kysely_resilient.reason'],
      ]),
    ).toEqual(
      expect.arrayContaining([
        ['reader-0', 'token', 'initial'],
        ['writer', 'token', 'initial'],
      ]),
    )
    for (const fetch of fetches) {
      const connect = connects.find(
        (span) =>
          span.attributes['kysely_resilient.endpoint.name'] ===
          fetch.attributes['kysely_resilient.endpoint.name'],
      )
      expect(parentOf(fetch)).toBe(connect?.spanContext().spanId)
    }
    expect(JSON.stringify(all.map((span) => [span.attributes, span.events, span.status]))).not.toContain(
      password,
    )
  })

  it('a stream is one span, routed like a statement, ended with its last row', async () => {
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: info.writerUrl,
      readers: [info.readerUrl],
    })
    dbs.push(db)
    const parent = await appTracer().startActiveSpan('GET /export', async (span) => {
      for await (const _ of db.selectNoFrom(sql<number>`1`.as('one')).stream()) {
        // one row
      }
      span.end()
      return span
    })
    const statements = spans().filter(isStatement)
    expect(statements).toHaveLength(1)
    const [stream] = statements as [ReadableSpan]
    expect(parentOf(stream)).toBe(parent.spanContext().spanId)
    expect(stream.attributes).toMatchObject({
      'db.operation.name': 'SELECT',
      'kysely_resilient.endpoint.name': 'reader-0',
    })
    expect(stream.events.map((event) => event.attributes?.['kysely_resilient.route.reason'])).toEqual([
      'read statement',
    ])
    expect(stream.ended).toBe(true)
  })

  it('a failed statement: error status, error.type from the server, no driver message', async () => {
    const db = createDb<Record<string, never>>({ dialect: engine, writer: info.writerUrl, retry: false })
    dbs.push(db)
    await expect(sql`select * from no_such_table_for_spans`.execute(db)).rejects.toThrow()
    const [statement] = spans().filter(isStatement)
    const code = engine === 'postgres' ? '42P01' : '1146'
    expect(statement?.status.code).toBe(SpanStatusCode.ERROR)
    expect(statement?.attributes).toMatchObject({
      'error.type': code,
      'kysely_resilient.error.category': 'fatal',
      'db.operation.name': 'SELECT',
    })
    const exception = statement?.events.find((event) => event.name === 'exception')
    expect(exception?.attributes?.['exception.type']).toBe(code)
    // The server's message names the table (and, for other errors, may quote row values): not recorded.
    expect(JSON.stringify(statement?.events)).not.toContain('no_such_table_for_spans')
    expect(JSON.stringify(statement?.status)).not.toContain('no_such_table_for_spans')
  })

  it('statement text only with telemetry.statementText, never the parameter values', async () => {
    const value = 'parameter-value-never-in-spans'
    const plain = createDb<Record<string, never>>({ dialect: engine, writer: info.writerUrl })
    const withText = createDb<Record<string, never>>({
      dialect: engine,
      writer: info.writerUrl,
      telemetry: { statementText: true },
    })
    dbs.push(plain, withText)
    await plain.selectNoFrom(sql<string>`${value}`.as('v')).execute()
    await withText.selectNoFrom(sql<string>`${value}`.as('v')).execute()
    const [withoutText, text] = spans().filter(isStatement) as [ReadableSpan, ReadableSpan]
    expect(withoutText.attributes['db.query.text']).toBeUndefined()
    expect(text.attributes['db.query.text']).toBe(
      engine === 'postgres' ? 'select $1 as "v"' : 'select ? as `v`',
    )
    expect(JSON.stringify(spans().map((span) => [span.attributes, span.events]))).not.toContain(value)
    expect(withText.settings.telemetry).toEqual({ statementText: true })
  })

  it('a statement whose span the sampler drops: its trace context still reaches the spans under it, and its duration is still recorded', async () => {
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: info.writerUrl,
      readers: [info.readerUrl],
    })
    dbs.push(db)
    const durationsOnReader = async () =>
      (await collect())
        .filter(
          (point) =>
            point.name === 'db.client.operation.duration' &&
            point.attributes['db.client.connection.pool.name'] === 'reader-0' &&
            point.attributes['error.type'] === undefined,
        )
        .reduce((sum, point) => sum + (point.value as { count: number }).count, 0)
    const before = await durationsOnReader()
    dropStatementSpans = true
    const parent = await appTracer()
      .startActiveSpan('GET /people', async (span) => {
        const rows = await db.selectNoFrom(sql<number>`1`.as('one')).execute()
        expect(rows).toEqual([{ one: 1 }])
        span.end()
        return span
      })
      .finally(() => {
        dropStatementSpans = false
      })
    const all = spans()
    expect(all.filter(isStatement)).toEqual([])
    // The reader's first connection was opened under the dropped span: same trace, that span its parent.
    const connects = all.filter((span) => span.name === 'kysely-resilient connect')
    expect(connects.map((span) => span.attributes['kysely_resilient.endpoint.name'])).toEqual(['reader-0'])
    const [connect] = connects as [ReadableSpan]
    expect(connect.spanContext().traceId).toBe(parent.spanContext().traceId)
    expect(parentOf(connect)).toBeDefined()
    expect(parentOf(connect)).not.toBe(parent.spanContext().spanId)
    // Routed to the reader, and counted there, although its span recorded nothing.
    expect((await durationsOnReader()) - before).toBe(1)
  })

  it('the semantic conventions time histograms, per endpoint, with error.type on failure', async () => {
    const db = createDb<Record<string, never>>({ dialect: engine, writer: info.writerUrl, retry: false })
    dbs.push(db)
    const port = Number(writer.port)
    const ofWriter = (points: Point[]) =>
      points.filter(
        (point) =>
          point.attributes['server.port'] === port &&
          point.attributes['db.client.connection.pool.name'] === 'writer',
      )
    // The histograms add up over every db of this file (same endpoint name and port): compare counts.
    const before = ofWriter(await collect())
    await sql`select 1`.execute(db)
    await expect(sql`select * from no_such_table_for_metrics`.execute(db)).rejects.toThrow()
    const all = ofWriter(await collect())
    const countIn = (points: Point[], point: Point | undefined) =>
      (
        points.find(
          (other) =>
            other.name === point?.name &&
            JSON.stringify(other.attributes) === JSON.stringify(point?.attributes),
        )?.value as { count: number } | undefined
      )?.count ?? 0
    const added = (point: Point | undefined) =>
      ((point?.value as { count: number } | undefined)?.count ?? 0) - countIn(before, point)
    const histogram = (name: string, extra: Record<string, unknown> = {}) =>
      all.filter(
        (point) =>
          point.name === name &&
          Object.entries(extra).every(([key, expected]) => point.attributes[key] === expected),
      )
    const base = {
      'db.system.name': system,
      'db.client.connection.pool.name': 'writer',
      'kysely_resilient.endpoint.role': 'writer',
      'server.address': writer.hostname,
      'server.port': port,
    }
    for (const name of [
      'db.client.connection.create_time',
      'db.client.connection.wait_time',
      'db.client.connection.use_time',
    ]) {
      const [point, ...more] = histogram(name)
      expect(more).toEqual([])
      expect(point?.attributes).toEqual(base)
      expect(added(point)).toBeGreaterThanOrEqual(1)
    }
    const ok = histogram('db.client.operation.duration', { 'error.type': undefined })
    expect(ok.map((point) => point.attributes)).toEqual([
      { ...base, 'db.namespace': database, 'db.operation.name': 'SELECT' },
    ])
    expect(added(ok[0])).toBe(1)
    const failed = histogram('db.client.operation.duration', {
      'error.type': engine === 'postgres' ? '42P01' : '1146',
    })
    expect(added(failed[0])).toBe(1)
  })
})

describeEngines('OpenTelemetry writer discovery span', (engine, info) => {
  it('several writer candidates: the startup discovery is a span, nested under the first statement', async () => {
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: [info.writerUrl, info.readerUrl],
    })
    dbs.push(db)
    const parent = await appTracer().startActiveSpan('job', async (span) => {
      await sql`select 1`.execute(db.writer)
      span.end()
      return span
    })
    const [discovery, ...more] = spans().filter((span) => span.name === 'kysely-resilient writer discovery')
    expect(more).toEqual([])
    expect(discovery?.attributes).toEqual({
      'kysely_resilient.endpoint.name': 'writer-0',
      'kysely_resilient.reason': 'startup',
    })
    expect(discovery?.spanContext().traceId).toBe(parent.spanContext().traceId)
  })
})

describe('OpenTelemetry spans through a credential rotation and a failover drill', () => {
  const runDrill = credentialFailoverDrill()

  it('the refetch of rejected credentials and the discovery of the new writer are spans', async () => {
    await runDrill({
      opened: (db) => dbs.push(db as unknown as ResilientDb<Record<string, never>>),
      afterRotation: () => {
        const fetches = spans()
          .filter((span) => span.name === 'kysely-resilient credential fetch')
          .filter((span) => span.attributes['kysely_resilient.endpoint.name'] === 'writer-0')
          .map((span) => span.attributes['kysely_resilient.reason'])
        expect(fetches).toEqual(['initial', 'rejected'])
      },
      afterFailover: ({ original, rotated }) => {
        const all = spans()
        const discoveries = all.filter(
          (span) =>
            span.name === 'kysely-resilient writer discovery' &&
            span.attributes['kysely_resilient.reason'] !== 'startup',
        )
        expect(discoveries.length).toBeGreaterThanOrEqual(1)
        expect(discoveries[0]?.attributes['kysely_resilient.endpoint.name']).toBe('writer-0')
        expect(discoveries[0]?.status.code).not.toBe(SpanStatusCode.ERROR)
        // The insert that succeeded ran on the new writer.
        const inserts = all.filter((span) => span.attributes['db.operation.name'] === 'INSERT')
        expect(inserts.at(-1)?.attributes['kysely_resilient.endpoint.name']).toBe('writer-1')
        expect(inserts.at(-1)?.status.code).not.toBe(SpanStatusCode.ERROR)
        const printed = JSON.stringify(all.map((span) => [span.attributes, span.events, span.status]))
        expect(printed).not.toContain(original)
        expect(printed).not.toContain(rotated)
      },
    })
  }, 90_000)
})

describe('telemetry config', () => {
  it('is validated like every other setting', () => {
    const base = { dialect: 'postgres', writer: 'postgres://app@localhost/app' } as const
    expect(() => createDb({ ...base, telemetry: { statementText: 'yes' as never } })).toThrow(
      new ConfigError('telemetry.statementText', "expected true or false, got 'yes'"),
    )
    expect(() => createDb({ ...base, telemetry: { spans: false } as never })).toThrow(ConfigError)
    expect(() => createDb({ ...base, telemetry: true as never })).toThrow(
      expect.objectContaining({ message: expect.stringContaining('telemetry') }),
    )
    const db = createDb(base)
    expect(db.settings.telemetry).toEqual({ statementText: false })
    void db.destroy()
  })
})
