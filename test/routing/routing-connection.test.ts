import { afterEach, describe, expect, test } from 'vitest'
import type { AutoRetryConfig, PoolConfig, RoutingConfig } from '../../src/config/create-db-config.js'
import type { ResilientDb } from '../../src/create-db.js'
import { classifyError } from '../../src/retry/classify-error.js'
import type { ErrorCategory } from '../../src/retry/error-classification.js'
import type { Cluster } from '../../src/routing/cluster.js'
import {
  type ConnectBehaviour,
  endpoint,
  FakePg,
  type FakeServer,
  fakeDb,
  type StatementFault,
} from '../support/fake-pg.js'
import { collectEvents, type EventLog, failureOf } from '../support/fault-helpers.js'

// The routing connection's retry decisions, without a server: every fault a single statement can
// meet, for a read and for a write, says whether the statement runs again, where, and what the
// endpoint's failure does to the topology (reader ejected, writer suspected, or nothing). Sessions
// and transactions are never retried; only opening them is. The fake servers are in
// test/support/fake-pg.ts; auto-retry.test.ts shows the same contract against real servers.

interface Database {
  person: { id: number; server: string }
}

const opened: Array<ResilientDb<Database>> = []
afterEach(async () => {
  await Promise.all(opened.splice(0).map((db) => db.destroy()))
})

interface Options {
  readonly readers?: number
  readonly pool?: PoolConfig
  readonly retry?: AutoRetryConfig | false
  readonly routing?: RoutingConfig
}

interface Setup {
  readonly fake: FakePg
  readonly writer: FakeServer
  readonly readers: FakeServer[]
  readonly db: ResilientDb<Database>
  readonly cluster: Cluster
  readonly events: EventLog
}

/** A writer and `readers` readers (one by default), with short timeouts and retry delays. */
function setup(options: Options = {}): Setup {
  const fake = new FakePg()
  const writer = fake.server('writer')
  const readers = Array.from({ length: options.readers ?? 1 }, (_, i) =>
    fake.server(`reader-${i}`, 'standby'),
  )
  const { db, cluster } = fakeDb<Database>(fake, {
    writer: endpoint('writer'),
    readers: readers.map((reader) => endpoint(reader.name)),
    pool: { connectTimeoutMs: 50, acquireTimeoutMs: 1_000, ...options.pool },
    retry:
      options.retry === false
        ? false
        : { minDelayMs: 0, maxDelayMs: 5, maxElapsedMs: 2_000, ...options.retry },
    routing: { readerCooldownMs: 60_000, ...options.routing },
  })
  opened.push(db)
  return { fake, writer, readers, db, cluster, events: collectEvents(db) }
}

const read = (db: ResilientDb<Database>) => db.selectFrom('person').selectAll().execute()
const write = (db: ResilientDb<Database>) => db.insertInto('person').values({ id: 1, server: 'x' }).execute()
const INSERT = /^insert/

// ---------------------------------------------------------------------------------------------
// Single statements: the decision table.

/**
 * What the statement's failure does. `retried`: it runs again and succeeds. `thrown`: the caller
 * gets the error. `absorbed`: the pool waits out a session refusal and opens again; the routing layer
 * sees no error at all.
 */
type Decision = 'retried' | 'thrown' | 'absorbed'

/**
 * What the failure does to the endpoint it happened on. `ejected`: an 'error' event and the reader
 * leaves rotation. `suspected`: an 'error' event and writer discovery probes the writer. `noted`: an
 * 'error' event only. `ignored`: no event at all.
 */
type Report = 'ejected' | 'suspected' | 'noted' | 'ignored'

interface Row {
  readonly fault: string
  /** Makes the next attempt on `server` fail (`db` for faults that need a connection held). */
  readonly inject: (
    server: FakeServer,
    db: ResilientDb<Database>,
    kind: 'read' | 'write',
  ) => void | Promise<void>
  readonly pool?: PoolConfig
  /** The failed attempt's classification (the 'retry' event's, or the thrown error's). */
  readonly code: string | undefined
  readonly category: ErrorCategory
  readonly read: readonly [Decision, Report]
  readonly write: readonly [Decision, Report]
}

/** The fake's faults each table injects, to check below that no fault the fake can play is left out. */
const injected = {
  connect: new Set<ConnectBehaviour>(),
  statement: new Set<StatementFault>(),
  session: new Set<StatementFault>(),
}

const onConnect = (behaviour: ConnectBehaviour): Row['inject'] => {
  injected.connect.add(behaviour)
  return (server) => {
    server.failNextConnect(behaviour)
  }
}
const onStatement = (fault: StatementFault): Row['inject'] => {
  injected.statement.add(fault)
  return (server) => {
    server.failNext(/^(select|insert)/, fault)
  }
}

/** Takes the endpoint's only connection (pool.max 1) with a session that stays open until the test ends. */
const holdOnlyConnection: Row['inject'] = async (_server, db, kind) => {
  const target = kind === 'read' ? db.reader : db
  let bound = (): void => {}
  const holding = new Promise<void>((resolve) => {
    bound = resolve
  })
  const held = new Promise<void>((resolve) => holders.push(resolve))
  void target.connection().execute(async (connection) => {
    await connection.selectFrom('person').selectAll().execute()
    bound()
    await held
  })
  await holding
}
const holders: Array<() => void> = []
afterEach(() => {
  for (const release of holders.splice(0)) release()
})

const TABLE: readonly Row[] = [
  // Before anything was sent: opening the connection failed.
  {
    fault: 'connection refused (ECONNREFUSED)',
    inject: onConnect('refuse'),
    code: 'ECONNREFUSED',
    category: 'unavailable',
    read: ['retried', 'ejected'],
    write: ['retried', 'suspected'],
  },
  {
    fault: 'reset during the handshake (ECONNRESET)',
    inject: onConnect('reset'),
    code: 'ECONNRESET',
    category: 'unavailable',
    read: ['retried', 'ejected'],
    write: ['retried', 'suspected'],
  },
  {
    fault: 'connect hangs (connectTimeoutMs)',
    inject: onConnect('hang'),
    code: 'CONNECT_TIMEOUT',
    category: 'unavailable',
    read: ['retried', 'ejected'],
    write: ['retried', 'suspected'],
  },
  {
    fault: 'too many connections (53300)',
    inject: onConnect('too-many'),
    code: undefined,
    category: 'unavailable',
    read: ['absorbed', 'ignored'],
    write: ['absorbed', 'ignored'],
  },
  {
    fault: 'server starting up (57P03)',
    inject: onConnect('starting-up'),
    code: undefined,
    category: 'unavailable',
    read: ['absorbed', 'ignored'],
    write: ['absorbed', 'ignored'],
  },
  {
    // A wrong password ends the session attempt (connectionLost), which is reported like a lost
    // connection: the writer is probed, a reader stays (its category is not 'unavailable').
    fault: 'password rejected (28P01)',
    inject: onConnect('auth-failed'),
    code: '28P01',
    category: 'fatal',
    read: ['thrown', 'noted'],
    write: ['thrown', 'suspected'],
  },
  // No free connection in the pool: overload, never a reason to move or retry.
  {
    fault: 'pool exhausted (acquireTimeoutMs)',
    inject: holdOnlyConnection,
    pool: { max: 1, acquireTimeoutMs: 30 },
    code: 'POOL_ACQUIRE_TIMEOUT',
    category: 'unavailable',
    read: ['thrown', 'ignored'],
    write: ['thrown', 'ignored'],
  },
  // Sent, and the connection broke before the answer: it may have run.
  {
    fault: 'connection terminated mid-statement',
    inject: onStatement('terminate'),
    code: undefined,
    category: 'ambiguous',
    read: ['retried', 'noted'],
    write: ['thrown', 'suspected'],
  },
  {
    fault: 'session terminated by an administrator (57P01)',
    inject: onStatement('admin-shutdown'),
    code: '57P01',
    category: 'ambiguous',
    read: ['retried', 'noted'],
    write: ['thrown', 'suspected'],
  },
  {
    fault: 'socket reset mid-statement (ECONNRESET)',
    inject: onStatement('reset'),
    code: 'ECONNRESET',
    category: 'ambiguous',
    read: ['retried', 'noted'],
    write: ['thrown', 'suspected'],
  },
  {
    fault: 'no answer within queryTimeoutMs',
    inject: onStatement('hang'),
    pool: { queryTimeoutMs: 30 },
    code: 'QUERY_TIMEOUT',
    category: 'ambiguous',
    read: ['thrown', 'noted'],
    write: ['thrown', 'suspected'],
  },
  {
    // The liveness monitor's ping over a connection of its own hangs too: the server is silent.
    fault: 'server stopped answering (liveness probe)',
    inject: async (server, db, kind) => {
      // Connected first: a server silent from its first connection on fails that connection's
      // platform detection by the connect deadline instead (a connect-phase row).
      await (kind === 'read' ? read(db) : db.writer.selectFrom('person').selectAll().execute())
      server.frozen = true
      setTimeout(() => {
        server.frozen = false
      }, 150)
    },
    pool: { probeAfterMs: 20, probeTimeoutMs: 20 },
    code: 'SERVER_UNRESPONSIVE',
    category: 'ambiguous',
    read: ['retried', 'ejected'],
    write: ['thrown', 'suspected'],
  },
  // Not sent: the session was already gone.
  {
    fault: 'client already broken (not queryable)',
    inject: onStatement('not-queryable'),
    code: undefined,
    category: 'unavailable',
    read: ['retried', 'ejected'],
    write: ['retried', 'suspected'],
  },
  {
    fault: 'idle session ended by the server (57P05)',
    inject: onStatement('idle-session-timeout'),
    code: '57P05',
    category: 'unavailable',
    read: ['retried', 'ejected'],
    write: ['retried', 'suspected'],
  },
  // The server answered with an error.
  {
    fault: 'read-only server (25006)',
    inject: onStatement('read-only'),
    code: '25006',
    category: 'read-only',
    read: ['retried', 'noted'],
    write: ['retried', 'suspected'],
  },
  {
    fault: 'serialization failure (40001)',
    inject: onStatement('serialization'),
    code: '40001',
    category: 'conflict',
    read: ['thrown', 'ignored'],
    write: ['thrown', 'ignored'],
  },
  {
    fault: 'statement_timeout (57014)',
    inject: onStatement('statement-timeout'),
    code: '57014',
    category: 'fatal',
    read: ['thrown', 'ignored'],
    write: ['thrown', 'ignored'],
  },
  {
    fault: 'syntax error (42601)',
    inject: onStatement('syntax'),
    code: '42601',
    category: 'fatal',
    read: ['thrown', 'ignored'],
    write: ['thrown', 'ignored'],
  },
  {
    fault: 'permission denied (42501)',
    inject: onStatement('permission-denied'),
    code: '42501',
    category: 'fatal',
    read: ['thrown', 'ignored'],
    write: ['thrown', 'ignored'],
  },
  {
    fault: 'unique violation (23505)',
    inject: onStatement('unique-violation'),
    code: '23505',
    category: 'fatal',
    read: ['thrown', 'ignored'],
    write: ['thrown', 'ignored'],
  },
]

const CASES = TABLE.flatMap((row) =>
  (['read', 'write'] as const).map((kind) => {
    const [decision, report] = row[kind]
    return [
      `${kind}, ${row.fault}: ${decision}, endpoint ${report}`,
      { ...row, kind, decision, report },
    ] as const
  }),
)

describe('a single statement', () => {
  test.each(CASES)('%s', async (_name, row) => {
    const { writer, readers, db, cluster, events } = setup({ pool: row.pool })
    const target = row.kind === 'read' ? (readers[0] as FakeServer) : writer
    await row.inject(target, db, row.kind)
    const statement = row.kind === 'read' ? read(db) : write(db)

    if (row.decision === 'thrown') {
      const error = await failureOf(statement)
      expect(classifyError(error)).toMatchObject({ category: row.category, code: row.code })
    } else {
      const rows = await statement
      // A retried read is served by the next endpoint in line: the writer once the only reader is out.
      if (row.kind === 'read') {
        expect(rows).toEqual([{ server: row.report === 'ejected' ? 'writer' : 'reader-0' }])
      } else {
        expect(writer.count(INSERT)).toBeGreaterThanOrEqual(1)
      }
    }

    if (row.decision === 'retried') {
      expect(events.retry).toEqual([
        expect.objectContaining({
          endpoint: target.name,
          category: row.category,
          code: row.code,
          attempt: 1,
          statement: row.kind,
        }),
      ])
    } else {
      expect(events.retry).toEqual([])
    }
    // A write that was sent and may have run is never sent again.
    if (row.kind === 'write' && row.category === 'ambiguous') expect(writer.count(INSERT)).toBe(1)

    await cluster.writerSettled(1_000)
    const failed = { endpoint: target.name, category: row.category, code: row.code }
    switch (row.report) {
      case 'ejected':
        expect(events.error).toContainEqual(expect.objectContaining(failed))
        expect(events['reader-ejected']).toEqual([
          expect.objectContaining({ endpoint: target.name, reason: 'unreachable' }),
        ])
        expect(db.stats().readers[0]?.healthy).toBe(false)
        break
      case 'suspected':
        expect(events.error).toContainEqual(expect.objectContaining(failed))
        expect(writer.roleProbes).toBeGreaterThanOrEqual(1)
        break
      case 'noted':
        expect(events.error).toContainEqual(expect.objectContaining(failed))
        expect(events['reader-ejected']).toEqual([])
        expect(writer.roleProbes).toBe(0)
        break
      case 'ignored':
        expect(events.error).toEqual([])
        expect(events['reader-ejected']).toEqual([])
        expect(writer.roleProbes).toBe(0)
        break
    }
    expect(events.failover).toEqual([])
  })
})

describe('retry budget and routing of retries', () => {
  test('a read retried after its reader was ejected goes to the other reader, and so do later reads', async () => {
    const { readers, db, events } = setup({ readers: 2 })
    readers[0]?.failNextConnect('refuse')
    expect(await read(db)).toEqual([{ server: 'reader-1' }])
    expect(events['reader-ejected'].map((event) => event.endpoint)).toEqual(['reader-0'])
    for (let i = 0; i < 4; i++) expect(await read(db)).toEqual([{ server: 'reader-1' }])
    expect(readers[0]?.connectAttempts).toBe(1)
  })

  test('a read whose connection broke mid-statement is retried; the broken connection is not pooled', async () => {
    const { readers, db } = setup()
    const reader = readers[0] as FakeServer
    reader.failNext(/^select/, 'terminate')
    expect(await read(db)).toEqual([{ server: 'reader-0' }])
    // The retry opened a fresh connection: the first one was destroyed, not pooled.
    expect(reader.connectAttempts).toBe(2)
    expect(reader.sessions.size).toBe(1)
    expect(db.stats().readers[0]).toMatchObject({ idle: 1, inUse: 0 })
  })

  test.each([
    ['read', 'retried'],
    ['write', 'thrown'],
  ] as const)(
    'without readers, a %s whose connection broke mid-statement is %s: the verdict is taken after the failure',
    async (_kind, decision) => {
      // With no reader, statements are not classified on the way in (everything runs on the writer);
      // the read/write verdict that decides the retry is taken after the failure instead.
      const { writer, db, events } = setup({ readers: 0 })
      writer.failNext(/^(select|insert)/, 'terminate')
      if (decision === 'retried') {
        expect(await read(db)).toEqual([{ server: 'writer' }])
        expect(events.retry).toEqual([expect.objectContaining({ statement: 'read', attempt: 1 })])
      } else {
        expect(classifyError(await failureOf(write(db)))).toMatchObject({ category: 'ambiguous' })
        expect(events.retry).toEqual([])
        expect(writer.count(INSERT)).toBe(1)
      }
    },
  )

  test('a connection that failed at the connection level is destroyed even while its socket is open', async () => {
    const { readers, db } = setup()
    const reader = readers[0] as FakeServer
    // 25006 leaves the session open, but pinned to a server that takes no writes.
    reader.failNext(/^select/, 'read-only')
    expect(await read(db)).toEqual([{ server: 'reader-0' }])
    expect(reader.connectAttempts).toBe(2)
    expect(reader.sessions.size).toBe(1)
  })

  test('retries stop after retry.retries, and the last error is thrown', async () => {
    const { writer, db, events } = setup({ retry: { retries: 2 } })
    writer.connectBehaviour = 'refuse'
    const error = await failureOf(write(db))
    expect(classifyError(error).code).toBe('ECONNREFUSED')
    expect(events.retry.map((event) => event.attempt)).toEqual([1, 2])
    // Three attempts, plus the discovery probes that suspecting the writer started.
    expect(writer.connectAttempts).toBeGreaterThanOrEqual(3)
    expect(writer.count(INSERT)).toBe(0)
  })

  test('retries stop when the next delay would pass retry.maxElapsedMs', async () => {
    const { writer, db, events } = setup({ retry: { minDelayMs: 20, maxDelayMs: 20, maxElapsedMs: 100 } })
    writer.connectBehaviour = 'refuse'
    const started = performance.now()
    const error = await failureOf(write(db))
    const elapsedMs = performance.now() - started
    expect(classifyError(error).code).toBe('ECONNREFUSED')
    // Each round waits at most 20 ms of backoff and 20 ms for discovery: several rounds fit in 100 ms.
    expect(events.retry.length).toBeGreaterThanOrEqual(2)
    expect(elapsedMs).toBeGreaterThanOrEqual(60)
    expect(elapsedMs).toBeLessThan(1_000)
  })

  test('retry: false turns every retry off', async () => {
    const { readers, db, events } = setup({ retry: false })
    readers[0]?.failNextConnect('refuse')
    const error = await failureOf(read(db))
    expect(classifyError(error).code).toBe('ECONNREFUSED')
    expect(events.retry).toEqual([])
    // The failure is still reported: the reader left rotation.
    expect(events['reader-ejected']).toHaveLength(1)
  })

  test('an aborted caller is not retried: the wait before the retry ends with the abort', async () => {
    const { writer, db, events } = setup({ retry: { minDelayMs: 100, maxDelayMs: 100 } })
    writer.connectBehaviour = 'refuse'
    const controller = new AbortController()
    db.on('retry', () => controller.abort(new Error('caller gave up')))
    const error = await failureOf(
      db.insertInto('person').values({ id: 1, server: 'x' }).execute({ signal: controller.signal }),
    )
    expect((error as Error).message).toBe('caller gave up')
    // Past the longest backoff: no second attempt was made.
    await new Promise((resolve) => setTimeout(resolve, 150))
    expect(events.retry).toHaveLength(1)
  })

  test("with routing.fallback 'error' and no reader in rotation, a read fails at once: NO_READER_AVAILABLE is not retried", async () => {
    const { readers, db, events } = setup({ routing: { fallback: 'error' } })
    readers[0]?.failNextConnect('refuse')
    // The first read ejects the only reader, and its retry finds no reader.
    const error = await failureOf(read(db))
    expect(classifyError(error)).toMatchObject({ category: 'unavailable', code: 'NO_READER_AVAILABLE' })
    expect(events.retry).toHaveLength(1)
    const next = await failureOf(read(db))
    expect(classifyError(next).code).toBe('NO_READER_AVAILABLE')
    expect(events.retry).toHaveLength(1)
  })
})

// ---------------------------------------------------------------------------------------------
// Sessions and transactions: their statements share one server session, so a failure ends the
// unit of work and the caller retries it as a whole. Only opening the session is retried.

interface SessionRow {
  readonly fault: string
  readonly inject: (writer: FakeServer) => void
  readonly pool?: PoolConfig
  readonly code: string | undefined
  readonly category: ErrorCategory
  /** `suspected`: an 'error' event and writer discovery; `ignored`: neither. */
  readonly report: 'suspected' | 'ignored'
  /** Whether a transaction sends ROLLBACK: not on a session that is gone (the server rolls back). */
  readonly rollback: boolean
  /** False when the driver rejects the statement without sending it. */
  readonly sent?: false
}

const inSession = (fault: StatementFault): SessionRow['inject'] => {
  injected.session.add(fault)
  return (writer) => {
    writer.failNext(INSERT, fault)
  }
}

const SESSION_TABLE: readonly SessionRow[] = [
  {
    fault: 'connection terminated mid-statement',
    inject: inSession('terminate'),
    code: undefined,
    category: 'ambiguous',
    report: 'suspected',
    rollback: false,
  },
  {
    fault: 'session terminated by an administrator (57P01)',
    inject: inSession('admin-shutdown'),
    code: '57P01',
    category: 'ambiguous',
    report: 'suspected',
    rollback: false,
  },
  {
    fault: 'no answer within queryTimeoutMs',
    inject: inSession('hang'),
    pool: { queryTimeoutMs: 30 },
    code: 'QUERY_TIMEOUT',
    category: 'ambiguous',
    report: 'suspected',
    rollback: false,
  },
  {
    fault: 'socket reset mid-statement (ECONNRESET)',
    inject: inSession('reset'),
    code: 'ECONNRESET',
    category: 'ambiguous',
    report: 'suspected',
    rollback: false,
  },
  {
    fault: 'client already broken (not queryable)',
    inject: inSession('not-queryable'),
    code: undefined,
    category: 'unavailable',
    report: 'suspected',
    rollback: false,
    sent: false,
  },
  {
    fault: 'idle session ended by the server (57P05)',
    inject: inSession('idle-session-timeout'),
    code: '57P05',
    category: 'unavailable',
    report: 'suspected',
    rollback: false,
  },
  {
    fault: 'read-only server (25006)',
    inject: inSession('read-only'),
    code: '25006',
    category: 'read-only',
    report: 'suspected',
    rollback: false,
  },
  {
    fault: 'serialization failure (40001)',
    inject: inSession('serialization'),
    code: '40001',
    category: 'conflict',
    report: 'ignored',
    rollback: true,
  },
  {
    fault: 'statement_timeout (57014)',
    inject: inSession('statement-timeout'),
    code: '57014',
    category: 'fatal',
    report: 'ignored',
    rollback: true,
  },
  {
    fault: 'syntax error (42601)',
    inject: inSession('syntax'),
    code: '42601',
    category: 'fatal',
    report: 'ignored',
    rollback: true,
  },
  {
    fault: 'permission denied (42501)',
    inject: inSession('permission-denied'),
    code: '42501',
    category: 'fatal',
    report: 'ignored',
    rollback: true,
  },
  {
    fault: 'unique violation (23505)',
    inject: inSession('unique-violation'),
    code: '23505',
    category: 'fatal',
    report: 'ignored',
    rollback: true,
  },
]

test('the tables leave out no fault the fake can play (a new fault fails to compile here until it is placed)', () => {
  const statementFaults: Record<StatementFault, true> = {
    terminate: true,
    'admin-shutdown': true,
    reset: true,
    'not-queryable': true,
    'idle-session-timeout': true,
    'read-only': true,
    syntax: true,
    'unique-violation': true,
    serialization: true,
    'statement-timeout': true,
    'permission-denied': true,
    hang: true,
  }
  const connectFaults: Record<Exclude<ConnectBehaviour, 'accept'>, true> = {
    refuse: true,
    reset: true,
    hang: true,
    'too-many': true,
    'starting-up': true,
    'auth-failed': true,
  }
  expect([...injected.statement].sort()).toEqual(Object.keys(statementFaults).sort())
  expect([...injected.session].sort()).toEqual(Object.keys(statementFaults).sort())
  expect([...injected.connect].sort()).toEqual(Object.keys(connectFaults).sort())
})

const SESSION_CASES = SESSION_TABLE.flatMap((row) =>
  (['transaction', 'connection'] as const).map(
    (scope) => [`db.${scope}(), ${row.fault}: thrown, writer ${row.report}`, { ...row, scope }] as const,
  ),
)

describe('a session or transaction', () => {
  test.each(SESSION_CASES)('%s', async (_name, row) => {
    const { writer, db, cluster, events } = setup({ pool: row.pool })
    row.inject(writer)
    const work =
      row.scope === 'transaction'
        ? db.transaction().execute(async (trx) => {
            await trx.insertInto('person').values({ id: 1, server: 'x' }).execute()
          })
        : db.connection().execute(async (connection) => {
            await connection.insertInto('person').values({ id: 1, server: 'x' }).execute()
          })
    const error = await failureOf(work)
    expect(classifyError(error)).toMatchObject({ category: row.category, code: row.code })
    expect(events.retry).toEqual([])
    expect(writer.count(INSERT)).toBe(row.sent === false ? 0 : 1)
    if (row.scope === 'transaction') {
      expect([writer.count(/^begin/), writer.count(/^commit/), writer.count(/^rollback/)]).toEqual([
        1,
        0,
        row.rollback ? 1 : 0,
      ])
    }
    await cluster.writerSettled(1_000)
    if (row.report === 'suspected') {
      expect(events.error).toContainEqual(
        expect.objectContaining({ endpoint: 'writer', category: row.category, code: row.code }),
      )
      expect(writer.roleProbes).toBeGreaterThanOrEqual(1)
    } else {
      expect(events.error).toEqual([])
      expect(writer.roleProbes).toBe(0)
    }
  })

  test.each(['transaction', 'connection'] as const)(
    'db.%s(): opening the session is retried, since nothing was sent yet',
    async (scope) => {
      const { writer, db, events } = setup()
      writer.failNextConnect('refuse')
      const insert = { id: 1, server: 'x' }
      if (scope === 'transaction') {
        await db.transaction().execute((trx) => trx.insertInto('person').values(insert).execute())
      } else {
        await db
          .connection()
          .execute((connection) => connection.insertInto('person').values(insert).execute())
      }
      expect(events.retry).toEqual([
        expect.objectContaining({
          endpoint: 'writer',
          category: 'unavailable',
          code: 'ECONNREFUSED',
          attempt: 1,
        }),
      ])
      expect(writer.count(INSERT)).toBe(1)
      expect(writer.count(/^begin/)).toBe(scope === 'transaction' ? 1 : 0)
    },
  )

  test('opening a session is not retried after a fatal error', async () => {
    const { writer, db, events } = setup()
    writer.failNextConnect('auth-failed')
    const error = await failureOf(
      db.transaction().execute((trx) => trx.insertInto('person').values({ id: 1, server: 'x' }).execute()),
    )
    expect(classifyError(error).code).toBe('28P01')
    expect(events.retry).toEqual([])
    expect(writer.count(/^begin/)).toBe(0)
  })

  test('a COMMIT that lost its connection is thrown, not retried and not rolled back', async () => {
    const { writer, db, events } = setup()
    writer.failNext(/^commit/, 'terminate')
    const error = await failureOf(
      db.transaction().execute((trx) => trx.insertInto('person').values({ id: 1, server: 'x' }).execute()),
    )
    expect((error as Error).message).toBe('Connection terminated unexpectedly')
    expect(classifyError(error).category).toBe('ambiguous')
    expect(events.retry).toEqual([])
    expect([writer.count(/^commit/), writer.count(/^rollback/)]).toEqual([1, 0])
  })

  test('a write in a read-only transaction fails on its reader and says nothing about any endpoint', async () => {
    const { writer, readers, db, cluster, events } = setup()
    const reader = readers[0] as FakeServer
    const error = await failureOf(
      db
        .transaction()
        .setAccessMode('read only')
        .execute((trx) => trx.insertInto('person').values({ id: 1, server: 'x' }).execute()),
    )
    expect(classifyError(error)).toMatchObject({ category: 'read-only', code: '25006' })
    expect(reader.count(/^start transaction read only/)).toBe(1)
    expect(events.retry).toEqual([])
    await cluster.writerSettled(1_000)
    expect(events.error).toEqual([])
    expect(writer.roleProbes).toBe(0)
    expect(db.stats().readers[0]?.healthy).toBe(true)
  })
})

describe('a stream', () => {
  test('opening it is retried: a refused reader is ejected and the rows come from the writer', async () => {
    const { readers, db, events } = setup()
    readers[0]?.failNextConnect('refuse')
    const rows: unknown[] = []
    for await (const row of db.selectFrom('person').selectAll().stream()) rows.push(row)
    expect(rows).toEqual([{ server: 'writer' }])
    expect(events.retry).toEqual([
      expect.objectContaining({ endpoint: 'reader-0', code: 'ECONNREFUSED', statement: 'read' }),
    ])
    expect(events['reader-ejected']).toHaveLength(1)
  })

  test('once its statement was sent it is not retried, even for a read', async () => {
    const { readers, db, events } = setup()
    const reader = readers[0] as FakeServer
    reader.failNext(/^select/, 'terminate')
    const rows: unknown[] = []
    const error = await failureOf(
      (async () => {
        for await (const row of db.selectFrom('person').selectAll().stream()) rows.push(row)
      })(),
    )
    expect((error as Error).message).toBe('Connection terminated unexpectedly')
    expect(rows).toEqual([])
    expect(events.retry).toEqual([])
    expect(reader.count(/^select \* from "person"/)).toBe(1)
    expect(events.error).toContainEqual(
      expect.objectContaining({ endpoint: 'reader-0', category: 'ambiguous' }),
    )
  })
})
