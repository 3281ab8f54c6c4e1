import { setTimeout as pause } from 'node:timers/promises'
import { type Kysely, type RawBuilder, sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import {
  type CreateDbConfig,
  classifyError,
  createDb,
  InvalidConsistencyTokenError,
  type ResilientDb,
} from '../../src/index.js'
import { freezeServer } from '../support/freeze-server.js'
import {
  AVAILABLE,
  ENGINES,
  type OwnCluster,
  ownClustersForThisFile,
  replicaOf,
} from '../support/own-clusters.js'
import { PollAbort, pollUntil, withTimeout } from '../support/poll.js'
import { waitForReplica } from '../support/replication.js'
import { type Engine, queryOnce } from '../support/sql.js'

// Read-your-writes on replicas (issue #11), through createDb against replicas that apply every write
// late on purpose: without the feature a read right after a write, routed to the replica, misses the
// write. The tests count which server served each read by asking it for its own port, so the numbers
// do not depend on how the library counts its own statements. Every cluster here is slow or gets broken
// on purpose, so the file starts its own.

interface Database {
  ryw_item: { id: number; note: string }
}

type Consistency = CreateDbConfig['consistency']

/**
 * One cluster per role: `shared` is only ever written to; `kill` has its replica frozen and then killed;
 * `failover` loses its primary and has its replica promoted. Breaking servers needs clusters of its own,
 * so the other tests keep theirs.
 */
const ROLES = ['shared', 'kill', 'failover'] as const
type Role = (typeof ROLES)[number]

/**
 * How late each cluster's replica applies writes. `shared`: 500 ms on PostgreSQL. MariaDB's MASTER_DELAY
 * counts whole seconds, and the replica adds its clock offset to the master's, measured once when it
 * connects as `time(0) - UNIX_TIMESTAMP()` on the master: that can come out as -1 s (time(0) reads a
 * clock that lags by up to a tick), and then MASTER_DELAY = 1 applies nothing late at all. One run here
 * had exactly that replica, so 2 s there: always at least 1 s. `kill` and `failover`: longer than any
 * maxWaitMs below, so reads that wait for the replica are certainly still waiting when servers break.
 */
const APPLY_DELAY_MS: Record<Role, Record<Engine, number>> = {
  shared: { postgres: 500, mysql: 2_000 },
  kill: { postgres: 5_000, mysql: 5_000 },
  failover: { postgres: 3_000, mysql: 3_000 },
}

/**
 * The least time a write stays invisible on the `shared` replica. MariaDB applies an event once a
 * whole number of seconds has passed since the second it was written in (give or take the clock offset
 * above), counted from when the replica saw it: at least 1 s of the 2 s for writes made early in a
 * second (see startEarlyInSecond).
 */
const MIN_VISIBLE_MS: Record<Engine, number> = { postgres: 500 - 50, mysql: 1_000 - 100 }

const CREATE_TABLE = 'CREATE TABLE ryw_item (id integer PRIMARY KEY, note varchar(64) NOT NULL)'

const clusters = ownClustersForThisFile({
  variants: ROLES,
  options: (engine, role) => ({ replicaApplyDelayMs: APPLY_DELAY_MS[role as Role][engine] }),
  prepare: async (engine, cluster) => {
    // As the app user, which owns it then and may write to it.
    await queryOnce(engine, cluster.writerUrl, CREATE_TABLE)
    await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
  },
})
const opened: Array<ResilientDb<Database>> = []

const clusterFor = (engine: Engine, role: Role): OwnCluster => clusters.of(engine, role)

interface OpenOptions {
  readonly consistency?: Consistency
  /** Writer candidates instead of the primary alone (the failover test). */
  readonly writer?: string | string[]
  readonly connectTimeoutMs?: number
}

/** A db on the cluster's primary and replica; destroyed after the test. */
function open(engine: Engine, cluster: OwnCluster, options: OpenOptions = {}): ResilientDb<Database> {
  const db = createDb<Database>({
    dialect: engine,
    writer: options.writer ?? cluster.writerUrl,
    readers: [cluster.readerUrl],
    ...(options.consistency === undefined ? {} : { consistency: options.consistency }),
    ...(options.connectTimeoutMs === undefined
      ? {}
      : { pool: { connectTimeoutMs: options.connectTimeoutMs } }),
  })
  opened.push(db)
  return db
}

let lastId = 0
/** Ids are unique across the file, so no test can see another test's rows. */
function newId(): number {
  lastId += 1
  return lastId
}

/** The port of the server that ran the statement: tells the primary from the replica. */
function serverPort(engine: Engine): RawBuilder<number> {
  return engine === 'postgres' ? sql<number>`inet_server_port()` : sql<number>`@@port`
}

interface Probe {
  /** Whether the row with the id was there. */
  readonly found: boolean
  /** Which server answered. */
  readonly port: number
}

/**
 * Reads whether row `id` exists, and which server answered, in one plain SELECT (a read the router may
 * send to a replica). A scalar subquery, so the port comes back even when the row is missing.
 */
async function probe(db: Kysely<Database>, port: RawBuilder<number>, id: number): Promise<Probe> {
  const row = await db
    .selectNoFrom((eb) => [
      eb
        .selectFrom('ryw_item')
        .select((inner) => inner.fn.countAll().as('n'))
        .where('id', '=', id)
        .as('n'),
      port.as('port'),
    ])
    .executeTakeFirstOrThrow()
  return { found: Number(row.n) > 0, port: Number(row.port) }
}

function insertSql(engine: Engine): string {
  return engine === 'postgres'
    ? 'INSERT INTO ryw_item (id, note) VALUES ($1, $2)'
    : 'INSERT INTO ryw_item (id, note) VALUES (?, ?)'
}

/** Whether the server at `url` has row `id` (a direct connection, bypassing the library). */
async function hasRow(engine: Engine, url: string, id: number): Promise<boolean> {
  const where = engine === 'postgres' ? 'id = $1' : 'id = ?'
  return (await queryOnce(engine, url, `SELECT 1 FROM ryw_item WHERE ${where}`, [id])).length > 0
}

/**
 * MariaDB's MASTER_DELAY counts from the event's timestamp in whole seconds: a write made in the last
 * milliseconds of a wall-clock second, seen by the replica in the next one, is applied at once. Writes
 * whose invisibility on the replica a test relies on therefore start early in a second. (Servers and
 * tests share the machine's clock.) This waits for the clock, never for replication.
 */
async function startEarlyInSecond(engine: Engine): Promise<void> {
  if (engine !== 'mysql') return
  const into = Date.now() % 1_000
  if (into > 700) await pause(1_000 - into + 5)
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = () => {}
  const promise = new Promise<void>((done) => {
    resolve = done
  })
  return { promise, resolve }
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error))
}

function share(part: number, whole: number): string {
  return `${((100 * part) / whole).toFixed(1)}%`
}

afterEach(async () => {
  await Promise.all(opened.splice(0).map((db) => db.destroy()))
})

for (const engine of ENGINES) {
  describe(`read-your-writes over a delayed replica [${engine}]`, () => {
    if (!AVAILABLE[engine]) {
      it.skip(`!!! SKIPPED: no local ${engine} server binaries to start clusters with !!!`, () => {})
      return
    }
    const port = serverPort(engine)
    const tag = `[read-your-writes ${engine}]`

    it('the replica really is behind: a write is not there right after commit', async () => {
      const cluster = clusterFor(engine, 'shared')
      const id = newId()
      await startEarlyInSecond(engine)
      const committedAt = performance.now()
      await queryOnce(engine, cluster.adminWriterUrl, insertSql(engine), [id, 'sanity'])
      expect(await hasRow(engine, cluster.adminWriterUrl, id)).toBe(true)
      expect(await hasRow(engine, cluster.adminReaderUrl, id)).toBe(false)
      await pollUntil(async () => ((await hasRow(engine, cluster.adminReaderUrl, id)) ? true : undefined), {
        timeoutMs: APPLY_DELAY_MS.shared[engine] + 5_000,
        intervalMs: 10,
        what: 'the write to reach the delayed replica',
      })
      const visibleAfterMs = Math.round(performance.now() - committedAt)
      console.log(`${tag} a write became visible on the replica ${visibleAfterMs} ms after commit`)
      expect(visibleAfterMs).toBeGreaterThanOrEqual(MIN_VISIBLE_MS[engine])
    })

    it('in one withReadYourWrites scope, a read right after a write returns it 1,000 of 1,000 times', async () => {
      const cluster = clusterFor(engine, 'shared')
      const db = open(engine, cluster)
      const replicaPort = replicaOf(cluster).port
      const ids: number[] = []
      let misses = 0
      let servedByReader = 0
      const startedAt = performance.now()
      // One long scope: it lasts several apply delays, so a scope that kept only its first write's
      // position would send later reads to a replica that has the first write but not the latest.
      await db.withReadYourWrites(async () => {
        for (let i = 0; i < 1_000; i++) {
          const id = newId()
          ids.push(id)
          await db.insertInto('ryw_item').values({ id, note: 'loop' }).execute()
          const seen = await probe(db, port, id)
          if (!seen.found) misses += 1
          if (seen.port === replicaPort) servedByReader += 1
        }
      })
      const ms = Math.round(performance.now() - startedAt)
      // The replica was behind throughout: right after the loop it lacks at least the last writes.
      const where = engine === 'postgres' ? 'id >= $1' : 'id >= ?'
      const [onReplica] = await queryOnce(
        engine,
        cluster.adminReaderUrl,
        `SELECT count(*) AS n FROM ryw_item WHERE ${where}`,
        [ids[0]],
      )
      console.log(
        `${tag} 1,000 insert+read pairs in one scope: ${misses} misses, ${servedByReader} reads served by ` +
          `the replica, ${ms} ms; the replica had ${Number(onReplica?.n)} of the rows right after`,
      )
      expect(misses).toBe(0)
      expect(Number(onReplica?.n)).toBeLessThan(1_000)
    }, 60_000)

    it('one scope per request: a write then a read, 200 times, never misses', async () => {
      const cluster = clusterFor(engine, 'shared')
      const db = open(engine, cluster)
      let misses = 0
      for (let i = 0; i < 200; i++) {
        const id = newId()
        const seen = await db.withReadYourWrites(async () => {
          await db.insertInto('ryw_item').values({ id, note: 'request' }).execute()
          return probe(db, port, id)
        })
        if (!seen.found) misses += 1
      }
      console.log(`${tag} 200 scopes of one insert + one read: ${misses} misses`)
      expect(misses).toBe(0)
    }, 60_000)

    it('counts every kind of write: transaction, connection session, raw sql, update, delete', async () => {
      const cluster = clusterFor(engine, 'shared')
      const db = open(engine, cluster)
      // Rows the replica already has, so a read served by the (behind) replica sees the old state.
      const [toUpdate, toDelete] = [newId(), newId()]
      await queryOnce(engine, cluster.adminWriterUrl, insertSql(engine), [toUpdate, 'old'])
      await queryOnce(engine, cluster.adminWriterUrl, insertSql(engine), [toDelete, 'old'])
      await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
      const noteOf = async (id: number) =>
        (await db.selectFrom('ryw_item').select('note').where('id', '=', id).executeTakeFirst())?.note

      // The replica check at the end needs the delete still unapplied there.
      await startEarlyInSecond(engine)
      await db.withReadYourWrites(async () => {
        const inTransaction = newId()
        await db
          .transaction()
          .execute((trx) => trx.insertInto('ryw_item').values({ id: inTransaction, note: 'trx' }).execute())
        expect(await noteOf(inTransaction)).toBe('trx')

        const inSession = newId()
        await db
          .connection()
          .execute((conn) => conn.insertInto('ryw_item').values({ id: inSession, note: 'session' }).execute())
        expect(await noteOf(inSession)).toBe('session')

        const raw = newId()
        await sql`INSERT INTO ryw_item (id, note) VALUES (${raw}, ${'raw'})`.execute(db)
        expect(await noteOf(raw)).toBe('raw')

        await db.updateTable('ryw_item').set({ note: 'new' }).where('id', '=', toUpdate).execute()
        expect(await noteOf(toUpdate)).toBe('new')

        await db.deleteFrom('ryw_item').where('id', '=', toDelete).execute()
        expect(await noteOf(toDelete)).toBeUndefined()
      })
      // Had those reads gone to the replica, they would have seen the old rows: it still has them.
      expect(await hasRow(engine, cluster.adminReaderUrl, toDelete)).toBe(true)
    })

    it('scoped: scopes that did not write keep reading the replica while other scopes write', async () => {
      const cluster = clusterFor(engine, 'shared')
      const db = open(engine, cluster)
      const replicaPort = replicaOf(cluster).port
      const seeded = newId()
      await queryOnce(engine, cluster.adminWriterUrl, insertSql(engine), [seeded, 'seed'])
      await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)

      // A few "requests" that write and read back, over and over, until the read-only ones are done.
      let stop = false
      const writes = [0, 0, 0]
      const writing = writes.map((_, w) =>
        db.withReadYourWrites(async () => {
          let misses = 0
          while (!stop) {
            const id = newId()
            await db
              .insertInto('ryw_item')
              .values({ id, note: `writer-${w}` })
              .execute()
            if (!(await probe(db, port, id)).found) misses += 1
            writes[w] = (writes[w] ?? 0) + 1
          }
          return misses
        }),
      )
      // A writing scope that fails must fail the test here, not as an unhandled rejection meanwhile.
      let writerFailure: unknown
      for (const scope of writing) {
        scope.catch((error: unknown) => {
          writerFailure ??= error
        })
      }
      try {
        await pollUntil(
          async () => {
            if (writerFailure !== undefined) throw new PollAbort(asError(writerFailure))
            return writes.every((n) => n >= 2) ? true : undefined
          },
          {
            timeoutMs: 10_000,
            intervalMs: 5,
            what: 'every writing scope to have written',
          },
        )
        const readerBefore = db.stats().readers[0]?.queries ?? 0
        // 20 concurrent read-only "requests", 10 reads each, each its own scope. Every read reports the
        // server that answered it, so the writing scopes' reads cannot blur the count.
        const servedBy = await Promise.all(
          Array.from({ length: 20 }, () =>
            db.withReadYourWrites(async () => {
              const ports: number[] = []
              for (let i = 0; i < 10; i++) {
                const seen = await probe(db, port, seeded)
                expect(seen.found).toBe(true)
                ports.push(seen.port)
              }
              return ports
            }),
          ),
        )
        const readerDelta = (db.stats().readers[0]?.queries ?? 0) - readerBefore
        const writesDuring = writes.reduce((a, b) => a + b, 0)
        stop = true
        const writerMisses = await Promise.all(writing)

        const reads = servedBy.flat()
        const byReader = reads.filter((p) => p === replicaPort).length
        console.log(
          `${tag} scoped mode, 20 read-only scopes next to 3 writing scopes (${writesDuring} writes): ` +
            `${byReader}/${reads.length} read-only reads served by the replica (${share(byReader, reads.length)}); ` +
            `reader queries delta ${readerDelta}; misses in writing scopes ${writerMisses.join('+')}`,
        )
        expect(byReader / reads.length).toBeGreaterThanOrEqual(0.9)
        // The library's own counter agrees at least with the reads the replica answered.
        expect(readerDelta).toBeGreaterThanOrEqual(byReader)
        expect(writerMisses).toEqual([0, 0, 0])
      } finally {
        stop = true
        await Promise.allSettled(writing)
      }
    }, 60_000)

    it('scoped: reads outside any scope, and db.reader inside one, stay eventual (the replica)', async () => {
      const cluster = clusterFor(engine, 'shared')
      const db = open(engine, cluster)
      const replicaPort = replicaOf(cluster).port

      const outside = newId()
      await db.withReadYourWrites(() =>
        db.insertInto('ryw_item').values({ id: outside, note: 'x' }).execute(),
      )
      const afterScope = await probe(db, port, outside)
      expect(afterScope.port).toBe(replicaPort)

      const unscoped = newId()
      await db.insertInto('ryw_item').values({ id: unscoped, note: 'x' }).execute()
      expect((await probe(db, port, unscoped)).port).toBe(replicaPort)

      const viaReader = await db.withReadYourWrites(async () => {
        const id = newId()
        await db.insertInto('ryw_item').values({ id, note: 'x' }).execute()
        // db.reader is the explicit opt-out: always a replica, whatever the scope wrote.
        return probe(db.reader as unknown as Kysely<Database>, port, id)
      })
      expect(viaReader.port).toBe(replicaPort)
    })

    it('a consistency token carries a write to another db instance (another process)', async () => {
      const cluster = clusterFor(engine, 'shared')
      const replicaPort = replicaOf(cluster).port
      const dbA = open(engine, cluster)
      const dbB = open(engine, cluster)

      await startEarlyInSecond(engine)
      const id = newId()
      await dbA.insertInto('ryw_item').values({ id, note: 'from A' }).execute()
      const token = await dbA.consistencyToken()
      // Safe to put in a cookie or a header as is.
      expect(token).toMatch(/^[A-Za-z0-9_.-]+$/)
      expect(token.length).toBeLessThan(4_096)

      const withToken = await dbB.withReadYourWrites(() => probe(dbB, port, id), { after: token })
      const withoutToken = await dbB.withReadYourWrites(() => probe(dbB, port, id))
      const asList = await dbB.withReadYourWrites(() => probe(dbB, port, id), { after: [token] })
      // Still not on the replica, so the token's read cannot have been served by a lucky replica.
      const replicaHasIt = await hasRow(engine, cluster.adminReaderUrl, id)
      console.log(
        `${tag} token '${token}' (${token.length} chars); with it found=${withToken.found}, ` +
          `without it found=${withoutToken.found} (served by ${withoutToken.port === replicaPort ? 'replica' : 'writer'})`,
      )
      expect(replicaHasIt).toBe(false)
      expect(withToken.found).toBe(true)
      expect(asList.found).toBe(true)
      // Without the token dbB knows nothing of A's write: an eventual read on the replica.
      expect(withoutToken).toEqual({ found: false, port: replicaPort })
    })

    it('a token covers writes other clients committed before it was taken', async () => {
      const cluster = clusterFor(engine, 'shared')
      const dbA = open(engine, cluster)
      const dbB = open(engine, cluster)
      await startEarlyInSecond(engine)
      const id = newId()
      // Written by a client that is not a createDb at all; dbA never wrote anything.
      await queryOnce(engine, cluster.adminWriterUrl, insertSql(engine), [id, 'elsewhere'])
      const token = await dbA.consistencyToken()
      const seen = await dbB.withReadYourWrites(() => probe(dbB, port, id), { after: token })
      expect(await hasRow(engine, cluster.adminReaderUrl, id)).toBe(false)
      expect(seen.found).toBe(true)
    })

    it('a malformed token rejects with InvalidConsistencyTokenError, and the scope does not run', async () => {
      const cluster = clusterFor(engine, 'shared')
      const db = open(engine, cluster)
      const good = await db.consistencyToken()
      const malformed = [
        '',
        'not a token',
        'garbage',
        '%%%',
        Buffer.from('{"hello":"world"}').toString('base64url'),
        `${good}!`,
      ]
      // One bad token among good ones spoils the lot.
      const cases: Array<string | string[]> = [...malformed, [good, 'garbage']]
      for (const after of cases) {
        let ran = false
        const error = await db
          .withReadYourWrites(
            () => {
              ran = true
            },
            { after },
          )
          .then(
            () => undefined,
            (caught: unknown) => caught,
          )
        expect(error, `after: ${JSON.stringify(after)}`).toBeInstanceOf(InvalidConsistencyTokenError)
        expect(error).toMatchObject({ code: 'INVALID_CONSISTENCY_TOKEN' })
        // Its reads could not be promised anything, so none may run.
        expect(ran, `after: ${JSON.stringify(after)}`).toBe(false)
      }
    })

    it("process mode: every read sees this db's earlier writes; once the replica catches up, reads go back to it", async () => {
      const cluster = clusterFor(engine, 'shared')
      const replicaPort = replicaOf(cluster).port
      const db = open(engine, cluster, { consistency: { readYourWrites: 'process' } })
      let misses = 0
      let lastWritten = 0
      let lastRead: Probe | undefined
      for (let i = 0; i < 200; i++) {
        const id = newId()
        lastWritten = id
        // The read runs in an async context made before the write, unrelated to it: no scope ties them.
        const written = deferred()
        const read = (async () => {
          await written.promise
          return probe(db, port, id)
        })()
        await db.insertInto('ryw_item').values({ id, note: 'process' }).execute()
        written.resolve()
        lastRead = await read
        if (!lastRead.found) misses += 1
      }
      expect(misses).toBe(0)
      // The replica is behind, so the reads were the writer's.
      expect(lastRead?.port).toBe(cluster.primary.port)

      await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
      const caughtUpAt = performance.now()
      let attempts = 0
      await pollUntil(
        async () => {
          attempts += 1
          const seen = await probe(db, port, lastWritten)
          if (!seen.found) throw new PollAbort(new Error(`a read missed row ${lastWritten} after catch-up`))
          return seen.port === replicaPort ? true : undefined
        },
        { timeoutMs: 5_000, intervalMs: 10, what: 'a read served by the caught-up replica' },
      )
      const backMs = Math.round(performance.now() - caughtUpAt)
      // Nothing new was written: every further read is the replica's.
      const more = await Promise.all(Array.from({ length: 20 }, () => probe(db, port, lastWritten)))
      const replayPosition = db.stats().readers[0]?.replayPosition
      console.log(
        `${tag} process mode: 200 write+read pairs, ${misses} misses; after catch-up reads returned to the ` +
          `replica after ${backMs} ms (${attempts} reads); replayPosition ${replayPosition}`,
      )
      expect(more.every((seen) => seen.found && seen.port === replicaPort)).toBe(true)
      expect(replayPosition).toMatch(
        engine === 'postgres' ? /^[0-9A-F]+\/[0-9A-F]+$/i : /^\d+-\d+-\d+(,\d+-\d+-\d+)*$/,
      )
    }, 60_000)

    it("whenBehind 'wait': a read waits for the replica to replay the write, and the replica serves it", async () => {
      const cluster = clusterFor(engine, 'shared')
      const replicaPort = replicaOf(cluster).port
      // Well over the apply delay (MariaDB's 2 s take 1-2 s), so the wait ends on the replica.
      const maxWaitMs = engine === 'postgres' ? 3_000 : 4_500
      const db = open(engine, cluster, { consistency: { whenBehind: 'wait', maxWaitMs } })
      const waits: number[] = []
      for (let i = 0; i < 3; i++) {
        const id = newId()
        const { seen, waitedMs } = await db.withReadYourWrites(async () => {
          await db.insertInto('ryw_item').values({ id, note: 'wait' }).execute()
          const readAt = performance.now()
          const seen = await probe(db, port, id)
          return { seen, waitedMs: Math.round(performance.now() - readAt) }
        })
        waits.push(waitedMs)
        expect(seen).toEqual({ found: true, port: replicaPort })
        expect(waitedMs).toBeLessThan(maxWaitMs)
      }
      console.log(
        `${tag} whenBehind 'wait' (maxWaitMs ${maxWaitMs}, apply delay ${APPLY_DELAY_MS.shared[engine]} ms): ` +
          `reads served by the replica after ${waits.join(', ')} ms`,
      )
    }, 60_000)

    it("whenBehind 'wait': a caller's abort ends a read waiting for the replica at once, with the signal's reason", async () => {
      const cluster = clusterFor(engine, 'shared')
      const maxWaitMs = 5_000
      const db = open(engine, cluster, { consistency: { whenBehind: 'wait', maxWaitMs } })
      const reason = new Error('the client went away')
      const { outcome, endedAfterMs } = await db.withReadYourWrites(async () => {
        await db.insertInto('ryw_item').values({ id: newId(), note: 'abort' }).execute()
        const controller = new AbortController()
        const startedAt = performance.now()
        setTimeout(() => controller.abort(reason), 100)
        const outcome = await db
          .selectFrom('ryw_item')
          .select('id')
          .execute({ signal: controller.signal })
          .then(
            () => 'answered' as const,
            (error: unknown) => error,
          )
        return { outcome, endedAfterMs: performance.now() - startedAt }
      })
      // Without the abort the read would wait for the replica (at least its 500 ms / 1-2 s delay), and
      // only then reject when it finds its signal aborted.
      expect(outcome).toBe(reason)
      expect(endedAfterMs).toBeLessThan(450)
    }, 30_000)

    it("whenBehind 'wait' with maxWaitMs shorter than the delay: the writer serves the read after about maxWaitMs", async () => {
      const cluster = clusterFor(engine, 'shared')
      const maxWaitMs = 200
      const db = open(engine, cluster, { consistency: { whenBehind: 'wait', maxWaitMs } })
      const waits: number[] = []
      for (let i = 0; i < 3; i++) {
        await startEarlyInSecond(engine)
        const id = newId()
        const { seen, waitedMs } = await db.withReadYourWrites(async () => {
          await db.insertInto('ryw_item').values({ id, note: 'short wait' }).execute()
          const readAt = performance.now()
          const seen = await probe(db, port, id)
          return { seen, waitedMs: Math.round(performance.now() - readAt) }
        })
        waits.push(waitedMs)
        expect(seen).toEqual({ found: true, port: cluster.primary.port })
        expect(waitedMs).toBeLessThan(maxWaitMs + 800)
        // It did wait: the replica could not have the write yet, and timers never fire early. (Loose,
        // so the bound holds on a loaded machine.)
        expect(waitedMs).toBeGreaterThanOrEqual(maxWaitMs * 0.75)
      }
      console.log(
        `${tag} whenBehind 'wait' (maxWaitMs ${maxWaitMs}): reads served by the writer after ${waits.join(', ')} ms`,
      )
    }, 60_000)

    /** Reads that wait for the replica, then `breakReplica` while they wait: they must end on the writer. */
    async function readsOutliveTheReplica(
      breakReplica: () => Promise<void>,
      what: string,
    ): Promise<{
      readonly slowestMs: number
      readonly afterMs: number
      readonly healthy: boolean | undefined
    }> {
      const cluster = clusterFor(engine, 'kill')
      const maxWaitMs = 1_500
      const db = open(engine, cluster, {
        consistency: { whenBehind: 'wait', maxWaitMs },
        connectTimeoutMs: 1_000,
      })
      // Open reader connections before breaking the replica, so the library has some to lose. (Whether
      // the row exists does not matter, only who answers.)
      expect((await probe(db, port, newId())).port).toBe(replicaOf(cluster).port)

      return db.withReadYourWrites(async () => {
        const id = newId()
        await db.insertInto('ryw_item').values({ id, note: what }).execute()
        const startedAt = performance.now()
        const settledAt: number[] = []
        const reads = Array.from({ length: 5 }, () =>
          probe(db, port, id).finally(() => settledAt.push(performance.now())),
        )
        // Long enough for the reads to start waiting (the replica is 5 s behind, so they cannot be
        // served meanwhile); a pause for the library, not for replication.
        await pause(200)
        expect(settledAt).toEqual([])
        await breakReplica()
        const results = await withTimeout(
          Promise.all(reads),
          maxWaitMs + 10_000,
          `the reads waiting (${what})`,
        )
        const slowestMs = Math.round(Math.max(...settledAt) - startedAt)
        expect(results.every((seen) => seen.found && seen.port === cluster.primary.port)).toBe(true)
        expect(slowestMs).toBeLessThan(maxWaitMs + 1_500)

        // Later reads of the scope do not hang on the broken replica either.
        const next = newId()
        await db.insertInto('ryw_item').values({ id: next, note: what }).execute()
        const nextAt = performance.now()
        const seen = await withTimeout(probe(db, port, next), maxWaitMs + 10_000, `a read after ${what}`)
        const afterMs = Math.round(performance.now() - nextAt)
        expect(seen).toEqual({ found: true, port: cluster.primary.port })
        expect(afterMs).toBeLessThan(maxWaitMs + 1_500)
        return { slowestMs, afterMs, healthy: db.stats().readers[0]?.healthy }
      })
    }

    it("whenBehind 'wait': reads waiting on a replica that freezes end on the writer within maxWaitMs", async () => {
      const replica = replicaOf(clusterFor(engine, 'kill'))
      try {
        const { slowestMs, afterMs, healthy } = await readsOutliveTheReplica(async () => {
          freezeServer(replica, 'SIGSTOP')
        }, 'a frozen replica')
        console.log(
          `${tag} replica frozen (SIGSTOP) under 5 waiting reads (maxWaitMs 1500): they ended after ` +
            `${slowestMs} ms at most; the next read took ${afterMs} ms (reader healthy: ${healthy})`,
        )
      } finally {
        freezeServer(replica, 'SIGCONT')
      }
    }, 60_000)

    it("whenBehind 'wait': reads waiting on a replica that is killed end on the writer within maxWaitMs", async () => {
      const replica = replicaOf(clusterFor(engine, 'kill'))
      const { slowestMs, afterMs, healthy } = await readsOutliveTheReplica(
        () => replica.kill('SIGKILL'),
        'a killed replica',
      )
      console.log(
        `${tag} replica killed (SIGKILL) under 5 waiting reads (maxWaitMs 1500): they ended after ` +
          `${slowestMs} ms at most; the next read took ${afterMs} ms (reader healthy: ${healthy})`,
      )
      // A refused connection while polling its position takes the reader out of rotation, and reads
      // with no reader left to wait for go to the writer at once instead of waiting out maxWaitMs.
      expect(healthy).toBe(false)
      expect(slowestMs).toBeLessThan(1_500)
      expect(afterMs).toBeLessThan(750)
    }, 60_000)

    it('writer failover while a scope’s reads wait: no read hangs, and reads succeed again soon after', async () => {
      const cluster = clusterFor(engine, 'failover')
      const replica = replicaOf(cluster)
      const maxWaitMs = 1_500
      const connectTimeoutMs = 2_000
      const db = open(engine, cluster, {
        writer: [cluster.writerUrl, cluster.readerUrl],
        consistency: { whenBehind: 'wait', maxWaitMs },
        connectTimeoutMs,
      })
      // The longest a read may take: its wait, then the default retry budget (10 s) spent on a writer
      // that is gone, plus one connect attempt, plus slack. Past it, a read counts as hung.
      const readBoundMs = maxWaitMs + 10_000 + connectTimeoutMs + 2_000

      interface Outcome {
        readonly startedAt: number
        readonly ms: number
        readonly found?: boolean
        readonly error?: unknown
      }
      const outcomes: Outcome[] = []
      const timedRead = async (id: number): Promise<Outcome> => {
        const startedAt = performance.now()
        const outcome = await withTimeout(
          probe(db, port, id),
          readBoundMs,
          'a read during the failover',
        ).then(
          (seen): Outcome => ({ startedAt, ms: performance.now() - startedAt, found: seen.found }),
          (error: unknown): Outcome => ({ startedAt, ms: performance.now() - startedAt, error }),
        )
        outcomes.push(outcome)
        return outcome
      }

      await db.insertInto('ryw_item').values({ id: newId(), note: 'warm' }).execute()
      await db.withReadYourWrites(async () => {
        const id = newId()
        await db.insertInto('ryw_item').values({ id, note: 'before failover' }).execute()
        // Reads that wait for the (3 s behind) replica while the primary goes away...
        const pending = Array.from({ length: 3 }, () => timedRead(id))
        // ...and a scope that keeps reading through the failover.
        let reading = true
        const loop = (async () => {
          while (reading) {
            await timedRead(id)
            // A steady stream rather than a busy loop: reads that fail fast would otherwise spin.
            await pause(5)
          }
        })()
        try {
          // The write must survive the failover, or "reads return the write" tests the servers, not the
          // library: make sure the replica has received it before the primary dies.
          const writerPosition = await receivedByReplica()
          // whenBehind 'wait' holds them: none can be served yet by a replica 3 s behind.
          expect(outcomes).toEqual([])
          const stopAt = performance.now()
          await cluster.primary.stop('immediate')
          if (engine === 'mysql') await drainRelayLog(writerPosition)
          await replica.promote()
          const promotedAt = performance.now()
          const firstSuccess = await pollUntil(
            async () => outcomes.find((o) => o.startedAt > promotedAt && o.error === undefined),
            { timeoutMs: readBoundMs, intervalMs: 10, what: 'a successful read after the promotion' },
          )
          reading = false
          await loop
          await Promise.all(pending)
          const recoveredMs = Math.round(firstSuccess.startedAt + firstSuccess.ms - promotedAt)

          // The scope writes again, to the new writer, and reads it back.
          const again = newId()
          await db.insertInto('ryw_item').values({ id: again, note: 'after failover' }).execute()
          const last = await timedRead(again)

          const errors = outcomes.flatMap((o) => (o.error === undefined ? [] : [o.error]))
          const slowestMs = Math.round(Math.max(...outcomes.map((o) => o.ms)))
          console.log(
            `${tag} writer failover under waiting reads: ${outcomes.length} reads, ${errors.length} failed ` +
              `(${[...new Set(errors.map((e) => classifyError(e).category))].join(', ') || 'none'}); ` +
              `slowest ${slowestMs} ms; promote -> first successful read ${recoveredMs} ms; ` +
              `stop -> promote ${Math.round(promotedAt - stopAt)} ms`,
          )
          // Nothing hung: withTimeout would have turned a hang into an error naming it.
          for (const error of errors) {
            expect(String(error)).not.toMatch(/Timed out after .* waiting for a read/)
            // Only outage errors may surface, as in the writer-discovery tests.
            expect(['unavailable', 'ambiguous', 'read-only']).toContain(classifyError(error).category)
          }
          // Every read that succeeded returned the write.
          expect(outcomes.filter((o) => o.error === undefined).every((o) => o.found === true)).toBe(true)
          expect(recoveredMs).toBeLessThan(5_000)
          expect(last).toMatchObject({ found: true })
          expect(last.error).toBeUndefined()
        } finally {
          reading = false
          await loop.catch(() => {})
          await Promise.allSettled(pending)
        }
      })

      /** Waits until the replica has received (not applied) everything the primary wrote; returns its position. */
      async function receivedByReplica(): Promise<string> {
        if (engine === 'postgres') {
          const [writer] = await queryOnce(
            engine,
            cluster.adminWriterUrl,
            'SELECT pg_current_wal_flush_lsn()::text AS lsn',
          )
          const lsn = String(writer?.lsn)
          await pollUntil(
            async () => {
              const [row] = await queryOnce(
                engine,
                cluster.adminReaderUrl,
                'SELECT pg_last_wal_receive_lsn() >= $1::pg_lsn AS received',
                [lsn],
              )
              return row?.received === true ? true : undefined
            },
            { timeoutMs: 10_000, intervalMs: 10, what: 'the replica to receive the write' },
          )
          return lsn
        }
        const [writer] = await queryOnce(engine, cluster.adminWriterUrl, 'SELECT @@gtid_binlog_pos AS pos')
        const position = String(writer?.pos)
        // One replication domain here: the IO thread has the write once its GTID position is the writer's.
        await pollUntil(
          async () => {
            const [status] = await queryOnce(engine, cluster.adminReaderUrl, 'SHOW SLAVE STATUS')
            return status?.Gtid_IO_Pos === position ? true : undefined
          },
          { timeoutMs: 10_000, intervalMs: 10, what: `the replica to receive '${position}'` },
        )
        return position
      }

      /**
       * MariaDB: promote() resets replication, which throws away relay log events MASTER_DELAY still holds
       * back (and so does changing MASTER_DELAY). Let the SQL thread apply them first, as a careful
       * failover does, so the write survives; PostgreSQL replays all received WAL on promotion by itself.
       */
      async function drainRelayLog(position: string): Promise<void> {
        const [row] = await queryOnce(
          engine,
          cluster.adminReaderUrl,
          'SELECT MASTER_GTID_WAIT(?, 15) AS result',
          [position],
        )
        if (Number(row?.result) !== 0)
          throw new Error(`the MariaDB replica did not apply up to '${position}'`)
      }
    }, 90_000)
  })
}
