// Aborts through createDb reject exactly as through plain Kysely: the same reason object, and the
// same note of where the abort happened (Kysely's `__kysely_timing__`: 'before init',
// 'during acquireConnection:acquire', 'during query execution', ...). Each case runs side by side on
// plain Kysely over the driver's own pool and on createDb, both with one connection, on the same server.

import { type Kysely, Kysely as KyselyClass, MysqlDialect, PostgresDialect, sql } from 'kysely'
import mysql from 'mysql2'
import pg from 'pg'
import Cursor from 'pg-cursor'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDb, type ResilientDb } from '../../src/index.js'
import { type ClusterInfo, describeEngines, type Engine } from '../support/database.js'
import { pollUntil } from '../support/poll.js'

interface Side {
  readonly name: 'plain' | 'createDb'
  readonly db: Kysely<Record<string, never>>
  /** Callers waiting for the side's only connection. */
  waiting(): number
}

interface Outcome {
  /** The rejection is the signal's reason itself. */
  readonly isReason: boolean
  readonly timing: unknown
}

const TIMING = '__kysely_timing__'

function plainSide(engine: Engine, cluster: ClusterInfo): Side {
  if (engine === 'postgres') {
    const pool = new pg.Pool({ connectionString: cluster.writerUrl, max: 1 })
    // Idle clients' errors reach the pool; a handed-out client's need a listener of its own (see
    // abort-strategies.test.ts), or a session ended under it crashes the worker.
    pool.on('error', () => {})
    pool.on('connect', (client) => client.on('error', () => {}))
    const db = new KyselyClass<Record<string, never>>({
      dialect: new PostgresDialect({ pool, cursor: Cursor }),
    })
    return { name: 'plain', db, waiting: () => pool.waitingCount }
  }
  const pool = mysql.createPool({ uri: cluster.writerUrl, connectionLimit: 1 })
  const db = new KyselyClass<Record<string, never>>({ dialect: new MysqlDialect({ pool }) })
  // mysql2 keeps its waiting callers in a queue it does not expose otherwise.
  const queue = (pool as unknown as { _connectionQueue: { length: number } })._connectionQueue
  return { name: 'plain', db, waiting: () => queue.length }
}

function resilientSide(
  engine: Engine,
  cluster: ClusterInfo,
): Side & { db: ResilientDb<Record<string, never>> } {
  const db = createDb<Record<string, never>>({
    dialect: engine,
    writer: cluster.writerUrl,
    pool: { max: 1, acquireTimeoutMs: 20_000 },
  })
  return { name: 'createDb', db, waiting: () => db.stats().writer.waiting }
}

/** What `run` rejected with, seen the way Kysely's own tests look at it. */
async function outcome(run: () => Promise<unknown>, reason: Error): Promise<Outcome> {
  const error = await run().then(
    () => {
      throw new Error('expected the aborted call to reject, but it completed')
    },
    (caught: unknown) => caught,
  )
  return { isReason: error === reason, timing: (error as Record<string, unknown>)[TIMING] }
}

/**
 * Holds the side's only connection in a session until the returned release is called, so the next
 * caller has to wait for one.
 */
async function holdTheConnection(side: Side): Promise<() => Promise<void>> {
  let release!: () => void
  const released = new Promise<void>((resolve) => {
    release = resolve
  })
  let holding!: () => void
  const held = new Promise<void>((resolve) => {
    holding = resolve
  })
  const session = side.db.connection().execute(async (connection) => {
    await sql`select 1`.execute(connection)
    holding()
    await released
  })
  await held
  return async () => {
    release()
    await session
  }
}

/** Aborts `start`'s call once it waits for the side's connection; returns what it rejected with. */
async function abortWhileWaiting(
  side: Side,
  start: (signal: AbortSignal) => Promise<unknown>,
): Promise<Outcome> {
  const release = await holdTheConnection(side)
  try {
    const controller = new AbortController()
    const reason = new Error(`stop (${side.name})`)
    const call = outcome(() => start(controller.signal), reason)
    await pollUntil(async () => (side.waiting() === 1 ? true : undefined), {
      timeoutMs: 5_000,
      intervalMs: 2,
      what: `a caller waiting for the ${side.name} connection`,
    })
    controller.abort(reason)
    return await call
  } finally {
    await release()
  }
}

const selectOne = (db: Kysely<Record<string, never>>, signal: AbortSignal) =>
  db.selectNoFrom(sql<number>`1`.as('one')).execute({ signal })

const streamOne = async (db: Kysely<Record<string, never>>, signal: AbortSignal) => {
  for await (const row of db.selectNoFrom(sql<number>`1`.as('one')).stream({ signal }))
    expect(row).toBeDefined()
}

describeEngines('aborts as plain Kysely rejects them', (engine, cluster) => {
  let plain: Side
  let ours: Side & { db: ResilientDb<Record<string, never>> }

  beforeAll(async () => {
    plain = plainSide(engine, cluster)
    ours = resilientSide(engine, cluster)
    // Both initialised (Kysely's driver init; the cluster's open), so what follows is acquisition.
    await selectOne(plain.db, new AbortController().signal)
    await selectOne(ours.db, new AbortController().signal)
  })

  afterAll(async () => {
    await plain?.db.destroy()
    await ours?.db.destroy()
  })

  /** Runs `scenario` on both sides; both must reject with their reason and the same timing. */
  const bothSides = async (scenario: (side: Side) => Promise<Outcome>, expected: string) => {
    const seen = { plain: await scenario(plain), createDb: await scenario(ours) }
    expect(seen.plain).toEqual({ isReason: true, timing: expected })
    expect(seen.createDb).toEqual(seen.plain)
    // Nothing leaked: each side's one connection serves the next statement.
    for (const side of [plain, ours]) await selectOne(side.db, new AbortController().signal)
  }

  const aborted = (label: string) => {
    const reason = new Error(label)
    const controller = new AbortController()
    controller.abort(reason)
    return { reason, signal: controller.signal }
  }

  it('a statement aborted before it starts', async () => {
    await bothSides(async (side) => {
      const { reason, signal } = aborted(side.name)
      return outcome(() => selectOne(side.db, signal), reason)
    }, 'before query execution')
  })

  it('a statement aborted while it waits for a connection', async () => {
    await bothSides(
      (side) => abortWhileWaiting(side, (signal) => selectOne(side.db, signal)),
      'during acquireConnection:acquire',
    )
  })

  it('a statement aborted while the server runs it', async () => {
    await bothSides(async (side) => {
      const controller = new AbortController()
      const reason = new Error(side.name)
      const sleep = engine === 'postgres' ? sql`select pg_sleep(0.3)` : sql`select sleep(0.3)`
      const call = outcome(
        () => sleep.execute(side.db.withoutPlugins(), { signal: controller.signal }),
        reason,
      )
      // Kysely races the statement against the signal; the statement is sent at once, the server
      // sleeps for 300 ms, and the abort lands inside that sleep.
      setTimeout(() => controller.abort(reason), 100)
      return call
    }, 'during query execution')
  })

  it('db.connection() aborted before it starts', async () => {
    await bothSides(async (side) => {
      const { reason, signal } = aborted(side.name)
      return outcome(() => side.db.connection().execute(async () => undefined, { signal }), reason)
    }, 'before acquireConnection:acquire')
  })

  it('db.connection() aborted while it waits for a connection', async () => {
    await bothSides(
      (side) =>
        abortWhileWaiting(side, (signal) =>
          side.db.connection().execute((connection) => sql`select 1`.execute(connection), { signal }),
        ),
      'during acquireConnection:acquire',
    )
  })

  it('a stream aborted before it starts, and while it waits for a connection', async () => {
    await bothSides(async (side) => {
      const { reason, signal } = aborted(side.name)
      return outcome(() => streamOne(side.db, signal), reason)
    }, 'before connection acquisition')
    await bothSides(
      (side) => abortWhileWaiting(side, (signal) => streamOne(side.db, signal)),
      'during acquireConnection:acquire',
    )
  })

  describe('on a db that has not connected yet', () => {
    it('db.connection() aborted before it starts is aborted before init', async () => {
      const fresh = [plainSide(engine, cluster), resilientSide(engine, cluster)]
      try {
        const seen = []
        for (const side of fresh) {
          const { reason, signal } = aborted(side.name)
          seen.push(
            await outcome(() => side.db.connection().execute(async () => undefined, { signal }), reason),
          )
        }
        expect(seen[0]).toEqual({ isReason: true, timing: 'before init' })
        expect(seen[1]).toEqual(seen[0])
      } finally {
        for (const side of fresh) await side.db.destroy()
      }
    })
  })
})
