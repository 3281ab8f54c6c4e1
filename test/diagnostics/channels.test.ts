import { subscribe, tracingChannel, unsubscribe } from 'node:diagnostics_channel'
import { sql } from 'kysely'
import { afterEach, expect, it } from 'vitest'
import {
  type ConnectTraceContext,
  createDb,
  DIAGNOSTICS_CHANNELS,
  type QueryTraceContext,
  type ResilientDb,
} from '../../src/index.js'
import { describeEngines } from '../support/database.js'

// Node's diagnostics_channel, for APMs that do not use OpenTelemetry: every statement attempt and
// every connection opened are traced, and every db.on event is published on its own channel, with
// the same secret-free payloads. Real servers, both engines.

const dbs: Array<ResilientDb<Record<string, never>>> = []
const cleanups: Array<() => void> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) cleanup()
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
})

interface Seen {
  readonly phase: string
  readonly context: QueryTraceContext | ConnectTraceContext
}

function record(name: string, into: Seen[]): void {
  const channels = tracingChannel<unknown, QueryTraceContext | ConnectTraceContext>(name)
  const handlers = {
    // A copy: diagnostics_channel later sets `result` (the rows) or `error` on the same object.
    start: (context: object) => into.push({ phase: 'start', context: { ...(context as QueryTraceContext) } }),
    end: () => {},
    asyncStart: () => {},
    asyncEnd: (context: object) => into.push({ phase: 'asyncEnd', context: context as QueryTraceContext }),
    error: (context: object) => into.push({ phase: 'error', context: context as QueryTraceContext }),
  }
  channels.subscribe(handlers)
  cleanups.push(() => channels.unsubscribe(handlers))
}

describeEngines('diagnostics channels', (engine, info) => {
  it('trace each statement attempt and each connection, with no SQL text and no parameters', async () => {
    const queries: Seen[] = []
    const connects: Seen[] = []
    record(DIAGNOSTICS_CHANNELS.query, queries)
    record(DIAGNOSTICS_CHANNELS.connect, connects)
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: info.writerUrl,
      readers: [info.readerUrl],
    })
    dbs.push(db)

    await db.selectNoFrom(sql<string>`${'a parameter value'}`.as('v')).execute()
    await sql`select 1 as one`.execute(db)
    await sql`select * from no_such_table_for_diagnostics`.execute(db).catch(() => undefined)

    const starts = queries
      .filter((seen) => seen.phase === 'start')
      .map((seen) => seen.context as QueryTraceContext)
    expect(
      starts.map(({ endpoint, role, operation, dialect }) => ({ endpoint, role, operation, dialect })),
    ).toEqual([
      { endpoint: 'reader-0', role: 'reader', operation: 'SELECT', dialect: engine },
      { endpoint: 'writer', role: 'writer', operation: 'SELECT', dialect: engine },
      { endpoint: 'writer', role: 'writer', operation: 'SELECT', dialect: engine },
    ])
    expect(starts[0]?.address).toBe(db.stats().readers[0]?.address)
    // asyncEnd closes every attempt, the failed one too (after its error).
    expect(queries.filter((seen) => seen.phase === 'asyncEnd')).toHaveLength(3)
    const failed = queries.filter((seen) => seen.phase === 'error')
    expect(failed).toHaveLength(1)
    expect(failed[0]?.context.error).toBeInstanceOf(Error)
    // Never the statement's text or its parameters (the rows reach asyncEnd as `result`, as
    // diagnostics_channel does for every traced promise).
    const printed = JSON.stringify(starts)
    expect(printed).not.toContain('a parameter value')
    expect(printed).not.toContain('no_such_table')

    // One connection per endpoint was opened, each traced.
    expect(
      connects
        .filter((seen) => seen.phase === 'asyncEnd')
        .map((seen) => seen.context.endpoint)
        .sort(),
    ).toEqual(['reader-0', 'writer'])
  })

  it('trace a stream as one attempt, from taking its connection to its last row or its error', async () => {
    const queries: Seen[] = []
    record(DIAGNOSTICS_CHANNELS.query, queries)
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: info.writerUrl,
      readers: [info.readerUrl],
    })
    dbs.push(db)
    const rows: unknown[] = []
    for await (const row of db.selectNoFrom(sql<number>`1`.as('one')).stream()) rows.push(row)
    expect(rows).toHaveLength(1)
    expect(queries.map((seen) => seen.phase)).toEqual(['start', 'asyncEnd'])
    expect(queries[0]?.context).toMatchObject({ endpoint: 'reader-0', role: 'reader', operation: 'SELECT' })

    queries.length = 0
    await expect(
      (async () => {
        for await (const _ of db.writer
          .selectFrom(sql`no_such_table_for_diagnostics`.as('t'))
          .selectAll()
          .stream()) {
          // no rows: the table does not exist
        }
      })(),
    ).rejects.toThrow()
    expect(queries.map((seen) => seen.phase)).toEqual(['start', 'error', 'asyncEnd'])
    expect(queries[1]?.context.error).toBeInstanceOf(Error)
  })

  it('publish each db.on event on kysely-resilient:<event> with the same payload', async () => {
    const published: unknown[] = []
    const onMessage = (message: unknown) => published.push(message)
    const name = `${DIAGNOSTICS_CHANNELS.eventPrefix}credentials-refreshed`
    subscribe(name, onMessage)
    cleanups.push(() => unsubscribe(name, onMessage))
    const url = new URL(info.writerUrl)
    const password = decodeURIComponent(url.password)
    url.password = ''
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: url.toString(),
      auth: { type: 'token', getToken: async () => password, ttlMs: 3_600_000 },
    })
    dbs.push(db)
    const viaOn: unknown[] = []
    db.on('credentials-refreshed', (event) => viaOn.push(event))
    await sql`select 1`.execute(db)
    expect(published).toHaveLength(1)
    expect(published).toEqual(viaOn)
    expect(published[0]).toMatchObject({ endpoint: 'writer', reason: 'initial' })
    expect(JSON.stringify(published)).not.toContain(password)
  })
})
