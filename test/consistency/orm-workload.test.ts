import { setTimeout as delay } from 'node:timers/promises'
import type { Kysely } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { createDb, type ResilientDb } from '../../src/index.js'
import { AVAILABLE, ENGINES, type OwnCluster, ownClustersForThisFile } from '../support/own-clusters.js'
import { waitForReplica } from '../support/replication.js'
import { type Engine, serverErrorCode } from '../support/sql.js'

// What an ORM's own test suite does to a database, many times over (create a table, insert, read back
// at once, update, delete, count, introspect, a transaction), run through createDb with
// `consistency: { readYourWrites: 'process' }` against replicas that apply every write late. A suite
// like that assumes it talks to one server: any read that misses what the suite just wrote fails it.
// The same workload without the mode shows that it does notice stale reads. These clusters are slow
// on purpose, so the file starts its own.

/** How late each replica applies writes: long enough that a read right after a write is stale there. */
const APPLY_DELAY_MS: Record<Engine, number> = { postgres: 500, mysql: 1_000 }
/** Tables each run creates, one per iteration, as a suite's tests each create their own. */
const ITERATIONS = 40
/** After this many iterations the workload lets the replica catch up (see `catchUpWindow`). */
const WINDOW_EVERY = 20
/** How many iterations back the "old table" read of each iteration reaches. */
const OLD_TABLE_AGE = 10
/** How many of the most recent tables a catch-up window reads. */
const WINDOW_TABLES = 10
/**
 * How long a catch-up window keeps reading until the replica serves one: the library only learns that
 * the replica has caught up from its next poll of the replay position (every 50 ms by default).
 */
const WINDOW_DEADLINE_MS = 2_000
/** Missing table: what a replica that has not yet applied the CREATE TABLE answers. */
const NO_SUCH_TABLE: Record<Engine, string> = { postgres: '42P01', mysql: '1146' }

type Tables = Record<string, Record<string, unknown>>

interface Row {
  readonly id: number
  readonly label: string
  readonly n: number
}

/** One workload run's outcome. */
interface RunResult {
  readonly statements: number
  readonly byReplica: number
  readonly byWriter: number
  readonly reads: number
  readonly stale: number
  /** Stale reads by kind of read, e.g. `{ 'read back after insert': 40 }`. */
  readonly staleByKind: Readonly<Record<string, number>>
  /** The first few stale reads, what was expected and what came back, for the failure message. */
  readonly examples: ReadonlyArray<string>
  /** Per catch-up window: how many reads it took until the replica served one ('never': not in time). */
  readonly windows: ReadonlyArray<number | 'never'>
}

const clusters = ownClustersForThisFile({
  options: (engine) => ({ replicaApplyDelayMs: APPLY_DELAY_MS[engine] }),
})
const opened: Array<ResilientDb<Tables>> = []

const clusterOf = (engine: Engine): OwnCluster => clusters.of(engine)

function open(engine: Engine, processMode: boolean): ResilientDb<Tables> {
  const cluster = clusterOf(engine)
  const db = createDb<Tables>({
    dialect: engine,
    writer: cluster.writerUrl,
    readers: [cluster.readerUrl],
    ...(processMode ? { consistency: { readYourWrites: 'process' } } : {}),
  })
  opened.push(db)
  return db
}

function readerQueries(db: ResilientDb<Tables>): number {
  return db.stats().readers[0]?.queries ?? 0
}

function normalize(row: Record<string, unknown>): Row {
  // MariaDB and PostgreSQL agree on these types, but drivers may hand integers back as strings.
  return { id: Number(row.id), label: String(row.label), n: Number(row.n) }
}

/**
 * Runs the workload on `db` in tables named `<prefix>_<i>` and counts the reads whose result differs
 * from what the workload itself wrote before the read.
 */
async function runWorkload(engine: Engine, db: ResilientDb<Tables>, prefix: string): Promise<RunResult> {
  const cluster = clusterOf(engine)
  // What each table holds, as far as this workload knows: it is the only writer.
  const written = new Map<string, Map<number, Row>>()
  let reads = 0
  let stale = 0
  const staleByKind: Record<string, number> = {}
  const examples: string[] = []
  const windows: Array<number | 'never'> = []

  const noteStale = (kind: string, expected: unknown, actual: unknown) => {
    stale++
    staleByKind[kind] = (staleByKind[kind] ?? 0) + 1
    if (examples.length < 5) {
      examples.push(`${kind}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`)
    }
  }

  /**
   * One read checked against what was written. A table the server does not have yet is a stale read
   * too (a replica that has not applied the CREATE TABLE); any other error fails the test.
   */
  const check = async <T>(kind: string, expected: T, read: () => Promise<T>): Promise<void> => {
    reads++
    let actual: T | string
    try {
      actual = await read()
    } catch (error) {
      if (serverErrorCode(error) !== NO_SUCH_TABLE[engine]) throw error
      actual = 'no such table'
    }
    if (JSON.stringify(actual) !== JSON.stringify(expected)) noteStale(kind, expected, actual)
  }

  const readRow = (table: string, id: number) => async () => {
    const row = await db
      .selectFrom(table)
      .select(['id', 'label', 'n'])
      .where('id', '=', id)
      .executeTakeFirst()
    return row === undefined ? null : normalize(row)
  }
  const readAll = (table: string) => async () => {
    const rows = await db.selectFrom(table).select(['id', 'label', 'n']).orderBy('id').execute()
    return rows.map(normalize)
  }
  const expectedRows = (table: string) =>
    [...(written.get(table)?.values() ?? [])].sort((a, b) => a.id - b.id)

  /**
   * The replica catches up (nothing is written meanwhile), then the workload reads tables it wrote
   * earlier, as a suite's next test reads fixtures. Under the process mode such reads may go to the
   * replica once the library has seen it replay this db's last write; until its next poll of the
   * replay position they go to the writer, so the window reads at a gentle pace until the replica
   * serves one (or the deadline passes: then the final assertion on replica-served reads says so).
   */
  const catchUpWindow = async (tables: ReadonlyArray<string>) => {
    await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
    const recent = tables.slice(-WINDOW_TABLES)
    const before = readerQueries(db)
    const deadline = performance.now() + WINDOW_DEADLINE_MS
    let k = 0
    for (; readerQueries(db) === before && performance.now() < deadline; k++) {
      const table = recent[k % recent.length] as string
      await check('old table, after catching up', expectedRows(table), readAll(table))
      await delay(10)
    }
    windows.push(readerQueries(db) === before ? 'never' : k)
    for (const table of recent) {
      await check('old table, after catching up', expectedRows(table), readAll(table))
    }
  }

  const tables: string[] = []
  for (let i = 0; i < ITERATIONS; i++) {
    const table = `${prefix}_${i}`
    const rows = new Map<number, Row>()
    written.set(table, rows)
    tables.push(table)

    await db.schema
      .createTable(table)
      .addColumn('id', 'integer', (col) => col.primaryKey())
      .addColumn('label', 'varchar(64)', (col) => col.notNull())
      .addColumn('n', 'integer', (col) => col.notNull())
      .execute()

    // Save, then find by primary key at once: what an ORM's create/find tests do.
    for (const id of [1, 2, 3]) {
      const row = { id, label: `row ${id}`, n: i * 10 + id }
      await db.insertInto(table).values(row).execute()
      rows.set(id, row)
      await check('read back after insert', row, readRow(table, id))
    }

    const updated = { id: 2, label: 'updated', n: -i }
    await db.updateTable(table).set({ label: updated.label, n: updated.n }).where('id', '=', 2).execute()
    rows.set(2, updated)
    await check('read back after update', updated, readRow(table, 2))

    await db.deleteFrom(table).where('id', '=', 3).execute()
    rows.delete(3)
    await check('read back after delete', null, readRow(table, 3))

    await check('count', rows.size, async () => {
      const result = await db
        .selectFrom(table)
        .select((eb) => eb.fn.countAll().as('count'))
        .executeTakeFirstOrThrow()
      return Number(result.count)
    })

    // Schema introspection after DDL: what a migration tool or an ORM's schema tests look at.
    await check('introspection', true, async () =>
      (await db.introspection.getTables()).some((t) => t.name === table),
    )

    const inTransaction = { id: 4, label: 'in transaction', n: i }
    await db.transaction().execute(async (trx: Kysely<Tables>) => {
      await trx.insertInto(table).values(inTransaction).execute()
    })
    rows.set(4, inTransaction)
    await check('read after transaction', inTransaction, readRow(table, 4))
    await check('list after transaction', expectedRows(table), readAll(table))

    // A table written long ago (by this workload's clock): the replica may or may not have it yet.
    const old = tables[i - OLD_TABLE_AGE]
    if (old !== undefined) await check('old table', expectedRows(old), readAll(old))

    if ((i + 1) % WINDOW_EVERY === 0) await catchUpWindow(tables)
  }

  const stats = db.stats()
  const byReplica = stats.readers[0]?.queries ?? 0
  return {
    statements: stats.writer.queries + byReplica,
    byReplica,
    byWriter: stats.writer.queries,
    reads,
    stale,
    staleByKind,
    examples,
    windows,
  }
}

function describeRun(engine: Engine, mode: string, result: RunResult): string {
  const kinds = Object.entries(result.staleByKind)
    .map(([kind, count]) => `${kind} ${count}`)
    .join(', ')
  return (
    `[${engine}] ${mode}: ${result.statements} statements, ${result.byReplica} served by the replica, ` +
    `${result.byWriter} by the writer; ${result.stale} stale of ${result.reads} checked reads` +
    (kinds === '' ? '' : ` (${kinds})`) +
    `; reads until the replica served one, per catch-up window: ${result.windows.join(', ')}`
  )
}

afterEach(async () => {
  await Promise.all(opened.splice(0).map((db) => db.destroy()))
})

for (const engine of ENGINES) {
  describe(`an ORM-style test workload over a delayed replica [${engine}]`, () => {
    if (!AVAILABLE[engine]) {
      it.skip(`!!! SKIPPED: no local ${engine} server binaries to start clusters with !!!`, () => {})
      return
    }

    it('without the mode (scoped, no scope) the workload sees stale reads: it can tell', async () => {
      const result = await runWorkload(engine, open(engine, false), 'orm_off')
      console.log(describeRun(engine, 'default mode, no scope', result))
      expect(result.byReplica).toBeGreaterThan(0)
      expect(result.stale).toBeGreaterThan(0)
    }, 60_000)

    it("with readYourWrites: 'process' no read is stale, and the replica still serves some", async () => {
      const db = open(engine, true)
      const result = await runWorkload(engine, db, 'orm_on')
      console.log(
        `${describeRun(engine, "readYourWrites: 'process'", result)}; ` +
          `replica replay position ${String(db.stats().readers[0]?.replayPosition)}`,
      )
      expect(result.examples).toEqual([])
      expect(result.stale).toBe(0)
      expect(result.byReplica).toBeGreaterThan(0)
    }, 60_000)
  })
}
