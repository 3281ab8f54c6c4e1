import { afterEach, describe, expect, test } from 'vitest'
import { resolveConfig } from '../../src/config/resolve-config.js'
import type { ResilientDb } from '../../src/create-db.js'
import {
  ConnectTimeoutError,
  CredentialSourceError,
  PoolTimeoutError,
  QueryTimeoutError,
  ServerUnresponsiveError,
} from '../../src/errors.js'
import { classifyError } from '../../src/retry/classify-error.js'
import type { ErrorPhase } from '../../src/retry/error-classification.js'
import { Cluster } from '../../src/routing/cluster.js'
import { endpoint, FakePg, fakeDb, pgError, systemError } from '../support/fake-pg.js'
import { collectEvents } from '../support/fault-helpers.js'

// Cluster.reportFailure without a server: what an endpoint's failure does to the topology, for
// every kind of failure the routing connection, the pool and the probes report. A writer is
// suspected (its idle connections closed, discovery started), a reader ejected for its cooldown, or
// the failure only noted or ignored (overload and credential problems say nothing about the server's
// role or reachability).

interface Database {
  person: { id: number; server: string }
}

const opened: Array<ResilientDb<Database>> = []
afterEach(async () => {
  await Promise.all(opened.splice(0).map((db) => db.destroy()))
})

/** mysql2's server error: a positive errno, the SQLSTATE and the server's message. */
function mysqlError(errno: number, code: string, sqlMessage: string, fatal = false): Error {
  return Object.assign(new Error(sqlMessage), { errno, code, sqlState: 'HY000', sqlMessage, fatal })
}

/**
 * `suspected`: an 'error' event; the writer's idle connections are closed and discovery runs (here it
 * finds writer-b, so a 'failover' event with `reason`). `ejected`: an 'error' event, and the reader
 * leaves rotation. `noted`: an 'error' event only. `ignored`: nothing at all.
 */
type WriterOutcome = 'suspected' | 'noted' | 'ignored'
type ReaderOutcome = 'ejected' | 'noted' | 'ignored'

interface Row {
  readonly failure: string
  readonly error: () => unknown
  readonly phase?: ErrorPhase
  readonly writer: WriterOutcome
  readonly reader: ReaderOutcome
  /** The 'error' event's reason, when there is one. */
  readonly reason?: string
  /** The failover's reason, for a suspected writer. */
  readonly suspicion?: 'read-only' | 'connection-lost'
}

const LOST = { reason: 'connection failed', suspicion: 'connection-lost' } as const
const READ_ONLY = { reason: 'writer is read-only', suspicion: 'read-only' } as const

const TABLE: readonly Row[] = [
  // Unreachable: nothing was sent.
  {
    failure: 'connection refused (ECONNREFUSED)',
    error: () => systemError('ECONNREFUSED', 'connect', -111),
    phase: 'connect',
    writer: 'suspected',
    reader: 'ejected',
    ...LOST,
  },
  {
    failure: 'host name does not resolve (ENOTFOUND)',
    error: () => systemError('ENOTFOUND', 'getaddrinfo', -3008),
    phase: 'connect',
    writer: 'suspected',
    reader: 'ejected',
    ...LOST,
  },
  {
    failure: 'connect timeout',
    error: () => new ConnectTimeoutError('endpoint', 50),
    phase: 'connect',
    writer: 'suspected',
    reader: 'ejected',
    ...LOST,
  },
  {
    failure: 'reset while connecting (ECONNRESET)',
    error: () => systemError('ECONNRESET', 'read', -104),
    phase: 'connect',
    writer: 'suspected',
    reader: 'ejected',
    ...LOST,
  },
  {
    failure: 'idle session ended by the server (57P05)',
    error: () => pgError('FATAL', '57P05', 'terminating connection due to idle-session timeout'),
    writer: 'suspected',
    reader: 'ejected',
    ...LOST,
  },
  // The connection broke with a statement in flight: the server may be fine, a reader stays.
  {
    failure: 'connection terminated mid-statement',
    error: () => new Error('Connection terminated unexpectedly'),
    writer: 'suspected',
    reader: 'noted',
    ...LOST,
  },
  {
    failure: 'session terminated by an administrator (57P01)',
    error: () => pgError('FATAL', '57P01', 'terminating connection due to administrator command'),
    writer: 'suspected',
    reader: 'noted',
    ...LOST,
  },
  {
    failure: 'reset mid-statement (ECONNRESET)',
    error: () => systemError('ECONNRESET', 'read', -104),
    phase: 'query',
    writer: 'suspected',
    reader: 'noted',
    ...LOST,
  },
  {
    failure: 'query timeout',
    error: () => new QueryTimeoutError('endpoint', 30),
    writer: 'suspected',
    reader: 'noted',
    ...LOST,
  },
  {
    failure: 'server unresponsive, statement in flight',
    error: () => new ServerUnresponsiveError('endpoint', 20),
    phase: 'query',
    writer: 'suspected',
    reader: 'noted',
    ...LOST,
  },
  {
    failure: 'MySQL server has gone away (PROTOCOL_CONNECTION_LOST)',
    error: () =>
      Object.assign(new Error('Connection lost: The server closed the connection.'), {
        code: 'PROTOCOL_CONNECTION_LOST',
        fatal: true,
      }),
    writer: 'suspected',
    reader: 'noted',
    ...LOST,
  },
  // The server takes no writes: a demoted writer.
  {
    failure: 'read-only transaction (25006)',
    error: () => pgError('ERROR', '25006', 'cannot execute INSERT in a read-only transaction'),
    writer: 'suspected',
    reader: 'noted',
    ...READ_ONLY,
  },
  {
    failure: 'MySQL --read-only (1290)',
    error: () =>
      mysqlError(
        1290,
        'ER_OPTION_PREVENTS_STATEMENT',
        'The MySQL server is running with the --read-only option so it cannot execute this statement',
      ),
    writer: 'suspected',
    reader: 'noted',
    ...READ_ONLY,
  },
  {
    failure: 'Aurora MySQL demoted writer (1792)',
    error: () =>
      mysqlError(
        1792,
        'ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION',
        'Cannot execute statement in a READ ONLY transaction.',
      ),
    writer: 'suspected',
    reader: 'noted',
    ...READ_ONLY,
  },
  // A wrong password ends the session attempt; it is reported like a lost connection.
  {
    failure: 'password rejected (28P01)',
    error: () => pgError('FATAL', '28P01', 'password authentication failed for user "app"'),
    phase: 'connect',
    writer: 'suspected',
    reader: 'noted',
    ...LOST,
  },
  // Overload: the server answers but has no session to spare. Nobody moves.
  {
    failure: 'pool exhausted (POOL_ACQUIRE_TIMEOUT)',
    error: () => new PoolTimeoutError('endpoint', 30, 1),
    writer: 'ignored',
    reader: 'ignored',
  },
  {
    failure: 'too many connections (53300)',
    error: () => pgError('FATAL', '53300', 'sorry, too many clients already'),
    phase: 'connect',
    writer: 'ignored',
    reader: 'ignored',
  },
  {
    failure: 'server starting up (57P03)',
    error: () => pgError('FATAL', '57P03', 'the database system is starting up'),
    phase: 'connect',
    writer: 'ignored',
    reader: 'ignored',
  },
  {
    failure: 'MySQL too many connections (1040)',
    error: () => mysqlError(1040, 'ER_CON_COUNT_ERROR', 'Too many connections', true),
    phase: 'connect',
    writer: 'ignored',
    reader: 'ignored',
  },
  {
    failure: 'MySQL max_user_connections (1226)',
    error: () =>
      mysqlError(
        1226,
        'ER_USER_LIMIT_REACHED',
        "User 'app' has exceeded the 'max_user_connections' resource",
        true,
      ),
    phase: 'connect',
    writer: 'ignored',
    reader: 'ignored',
  },
  // The credential source failed, not the server.
  {
    failure: 'credential source failed transiently (CREDENTIALS_UNAVAILABLE)',
    error: () => new CredentialSourceError('endpoint', 'secret', 'throttled', true),
    writer: 'noted',
    reader: 'noted',
    reason: 'credential source failed',
  },
  {
    failure: 'credential source cannot supply credentials (CREDENTIALS_FAILED)',
    error: () => new CredentialSourceError('endpoint', 'secret', 'access denied', false),
    writer: 'noted',
    reader: 'noted',
    reason: 'credential source failed',
  },
  // The server answered with an error about the statement: it is up, and in its role.
  {
    failure: 'syntax error (42601)',
    error: () => pgError('ERROR', '42601', 'syntax error'),
    writer: 'ignored',
    reader: 'ignored',
  },
  {
    failure: 'serialization failure (40001)',
    error: () => pgError('ERROR', '40001', 'could not serialize access'),
    writer: 'ignored',
    reader: 'ignored',
  },
  {
    failure: 'MySQL deadlock (1213)',
    error: () => mysqlError(1213, 'ER_LOCK_DEADLOCK', 'Deadlock found when trying to get lock'),
    writer: 'ignored',
    reader: 'ignored',
  },
  {
    failure: 'statement_timeout (57014)',
    error: () => pgError('ERROR', '57014', 'canceling statement due to statement timeout'),
    writer: 'ignored',
    reader: 'ignored',
  },
  {
    failure: 'caller aborted (AbortError)',
    error: () => new DOMException('This operation was aborted', 'AbortError'),
    writer: 'ignored',
    reader: 'ignored',
  },
]

/**
 * Two writer candidates (writer-a the writer at startup) and a reader, each with one idle
 * connection. Then writer-a is demoted and writer-b promoted behind the library's back: only a
 * discovery sees it.
 */
async function setup() {
  const fake = new FakePg()
  const a = fake.server('writer-a')
  const b = fake.server('writer-b', 'standby')
  const reader = fake.server('reader-0', 'standby')
  const { db, cluster } = fakeDb<Database>(fake, {
    writer: [endpoint('writer-a'), endpoint('writer-b')],
    readers: [endpoint('reader-0')],
    pool: { connectTimeoutMs: 50 },
    routing: { readerCooldownMs: 60_000 },
  })
  opened.push(db)
  const events = collectEvents(db)
  await db.insertInto('person').values({ id: 1, server: 'x' }).execute()
  await db.selectFrom('person').selectAll().execute()
  expect(db.stats().writers.map((stats) => stats.idle)).toEqual([1, 0])
  expect(db.stats().readers[0]?.idle).toBe(1)
  a.role = 'standby'
  b.role = 'primary'
  const probesBefore = a.roleProbes
  return { db, cluster, events, a, reader, probesBefore }
}

describe('reportFailure', () => {
  test.each(TABLE.map((row) => [`${row.failure}: writer ${row.writer}`, row] as const))(
    'on the writer, %s',
    async (_name, row) => {
      const { db, cluster, events, a, probesBefore } = await setup()
      const writer = cluster.writer()
      expect(writer.name).toBe('writer-a')
      const classification = classifyError(row.error(), row.phase === undefined ? {} : { phase: row.phase })
      cluster.reportFailure(writer, classification)
      // Synchronously: a suspected writer's idle connections are closed at once.
      expect(db.stats().writers[0]?.idle).toBe(row.writer === 'suspected' ? 0 : 1)
      await cluster.writerSettled(1_000)

      const event = { endpoint: 'writer-a', category: classification.category, code: classification.code }
      if (row.writer === 'ignored') expect(events.error).toEqual([])
      else expect(events.error).toEqual([{ ...event, reason: row.reason }])
      if (row.writer === 'suspected') {
        expect(events.failover).toEqual([
          expect.objectContaining({ from: 'writer-a', to: 'writer-b', reason: row.suspicion }),
        ])
        expect(cluster.writer().name).toBe('writer-b')
      } else {
        expect(events.failover).toEqual([])
        expect(a.roleProbes).toBe(probesBefore)
        expect(cluster.writer().name).toBe('writer-a')
      }
      expect(events['reader-ejected']).toEqual([])
    },
  )

  test.each(TABLE.map((row) => [`${row.failure}: reader ${row.reader}`, row] as const))(
    'on a reader, %s',
    async (_name, row) => {
      const { db, cluster, events } = await setup()
      const reader = cluster.reader()
      expect(reader.name).toBe('reader-0')
      const classification = classifyError(row.error(), row.phase === undefined ? {} : { phase: row.phase })
      cluster.reportFailure(reader, classification)

      const event = { endpoint: 'reader-0', category: classification.category, code: classification.code }
      if (row.reader === 'ignored') expect(events.error).toEqual([])
      else expect(events.error).toEqual([{ ...event, reason: row.reason }])
      const ejected = row.reader === 'ejected'
      expect(events['reader-ejected']).toEqual(
        ejected
          ? [{ endpoint: 'reader-0', reason: 'unreachable', lagMs: undefined, cooldownMs: 60_000 }]
          : [],
      )
      expect(db.stats().readers[0]).toMatchObject({ healthy: !ejected, idle: ejected ? 0 : 1 })
      // Reads follow: to the writer while the only reader is out.
      expect(cluster.reader().name).toBe(ejected ? 'writer-a' : 'reader-0')
      await cluster.writerSettled(1_000)
      expect(events.failover).toEqual([])
    },
  )
})

describe('the cluster', () => {
  test('a failure reported before open() or after destroy() changes nothing and throws nothing', async () => {
    const fake = new FakePg()
    fake.server('writer')
    const cluster = new Cluster(
      resolveConfig({ dialect: 'postgres', writer: endpoint('writer') }),
      fake.drivers(),
    )
    const errors: unknown[] = []
    cluster.events.on('error', (event) => errors.push(event))
    expect(() => cluster.writer()).toThrow('cluster used before open()')
    await cluster.open()
    const writer = cluster.writer()
    await cluster.destroy()
    cluster.reportFailure(writer, classifyError(systemError('ECONNREFUSED', 'connect', -111)))
    await cluster.writerSettled(100)
    expect(fake.servers.get('writer')?.roleProbes).toBe(0)
    await expect(cluster.open()).rejects.toMatchObject({ code: 'DB_DESTROYED' })
  })

  test('open() connects nowhere with a single writer; with several candidates it asks each for its role', async () => {
    const fake = new FakePg()
    const solo = fake.server('solo')
    const { db: single } = fakeDb<Database>(fake, { writer: endpoint('solo') })
    opened.push(single)
    await single.selectFrom('person').selectAll().execute()
    expect(solo.roleProbes).toBe(0)

    const a = fake.server('writer-a', 'standby')
    const b = fake.server('writer-b')
    const { db, cluster } = fakeDb<Database>(fake, { writer: [endpoint('writer-a'), endpoint('writer-b')] })
    opened.push(db)
    const events = collectEvents(db)
    await cluster.open()
    expect([a.roleProbes, b.roleProbes]).toEqual([1, 1])
    expect(cluster.writer().name).toBe('writer-b')
    // Finding the writer at startup is not a failover.
    expect(events.failover).toEqual([])
  })

  test('destroy() closes every session on every endpoint', async () => {
    const fake = new FakePg()
    fake.server('writer')
    fake.server('reader-0', 'standby')
    fake.server('reader-1', 'standby')
    const { db } = fakeDb<Database>(fake, {
      writer: endpoint('writer'),
      readers: [endpoint('reader-0'), endpoint('reader-1')],
    })
    await Promise.all([
      db.insertInto('person').values({ id: 1, server: 'x' }).execute(),
      db.selectFrom('person').selectAll().execute(),
      db.selectFrom('person').selectAll().execute(),
    ])
    expect(fake.openSessions()).toBe(3)
    await db.destroy()
    expect(fake.openSessions()).toBe(0)
  })
})
