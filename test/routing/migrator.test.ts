import { type Kysely, sql } from 'kysely'
import { type Migration, type MigrationProvider, Migrator } from 'kysely/migration'
import { afterEach, describe, expect, it } from 'vitest'
import { createDb, type ResilientDb } from '../../src/index.js'
import { AVAILABLE, ENGINES, type OwnCluster, ownClustersForThisFile } from '../support/own-clusters.js'
import { pollUntil } from '../support/poll.js'
import { waitForReplica } from '../support/replication.js'
import { type Engine, queryOnce } from '../support/sql.js'

// Kysely's Migrator given a createDb db, against a replica that applies every write 2 s late: the
// Migrator must never take migration state (or schema state) from the replica, or it sees migrations
// as not yet run and runs them again. These clusters are slow on purpose, so the file starts its own.

/** How late the replicas apply writes. MariaDB counts whole seconds: a write shows up after 1-2 s. */
const APPLY_DELAY_MS = 2_000
/** The least a write stays invisible on the replica: MariaDB's one-second timestamps cost up to 1 s. */
const MIN_VISIBLE_DELAY_MS: Record<Engine, number> = {
  postgres: APPLY_DELAY_MS,
  mysql: APPLY_DELAY_MS - 1_000,
}

type Tables = Record<string, Record<string, unknown>>
type AnyDb = Kysely<Tables>

const clusters = ownClustersForThisFile({
  options: () => ({ replicaApplyDelayMs: APPLY_DELAY_MS }),
  prepare: async (engine, cluster) => {
    await queryOnce(engine, cluster.writerUrl, 'CREATE TABLE plain_item (id integer PRIMARY KEY)')
    await queryOnce(engine, cluster.writerUrl, 'INSERT INTO plain_item (id) VALUES (1)')
    await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
  },
})
const opened: Array<ResilientDb<Tables>> = []

const clusterOf = (engine: Engine): OwnCluster => clusters.of(engine)

function open(
  engine: Engine,
  writerTables?: string[],
  readYourWrites?: 'scoped' | 'process',
): ResilientDb<Tables> {
  const cluster = clusterOf(engine)
  const db = createDb<Tables>({
    dialect: engine,
    writer: cluster.writerUrl,
    readers: [cluster.readerUrl],
    ...(writerTables === undefined ? {} : { routing: { writerTables } }),
    ...(readYourWrites === undefined ? {} : { consistency: { readYourWrites } }),
  })
  opened.push(db)
  return db
}

function readerQueries(db: ResilientDb<Tables>): number {
  return db.stats().readers[0]?.queries ?? 0
}

/** Three migrations; each `up` logs itself in `log`, so a migration run twice shows as a second row. */
function provider(log: string): MigrationProvider {
  const logRun = (db: AnyDb, name: string) => db.insertInto(log).values({ name }).execute()
  const migrations: Record<string, Migration> = {
    '001_log': {
      up: async (db: AnyDb) => {
        await db.schema
          .createTable(log)
          .addColumn('name', 'varchar(64)', (col) => col.notNull())
          .execute()
        await logRun(db, '001_log')
      },
    },
    '002_item': {
      up: async (db: AnyDb) => {
        await db.schema
          .createTable(`${log}_item`)
          .addColumn('id', 'integer', (col) => col.primaryKey())
          .execute()
        await logRun(db, '002_item')
      },
    },
    '003_seed': {
      up: async (db: AnyDb) => {
        await db.insertInto(`${log}_item`).values({ id: 1 }).execute()
        await logRun(db, '003_seed')
      },
    },
  }
  return { getMigrations: async () => migrations }
}

/** Rows of `table` on the server at `url`, or undefined when the table does not exist there (yet). */
async function rowsOf(engine: Engine, url: string, table: string): Promise<string[] | undefined> {
  const exists = await queryOnce(
    engine,
    url,
    engine === 'postgres'
      ? 'SELECT 1 FROM information_schema.tables WHERE table_name = $1'
      : 'SELECT 1 FROM information_schema.tables WHERE table_schema = database() AND table_name = ?',
    [table],
  )
  if (exists.length === 0) return undefined
  const rows = await queryOnce(engine, url, `SELECT name FROM ${table} ORDER BY name`)
  return rows.map((row) => String(row.name))
}

afterEach(async () => {
  await Promise.all(opened.splice(0).map((db) => db.destroy()))
})

for (const engine of ENGINES) {
  describe(`Kysely's Migrator over a delayed replica [${engine}]`, () => {
    if (!AVAILABLE[engine]) {
      it.skip(`!!! SKIPPED: no local ${engine} server binaries to start clusters with !!!`, () => {})
      return
    }

    it('the replica really is behind: a write shows up there only after the apply delay', async () => {
      const cluster = clusterOf(engine)
      await queryOnce(engine, cluster.adminWriterUrl, 'CREATE TABLE delay_probe (name varchar(64))')
      await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
      const committedAt = performance.now()
      await queryOnce(engine, cluster.adminWriterUrl, "INSERT INTO delay_probe (name) VALUES ('x')")
      expect(await rowsOf(engine, cluster.adminWriterUrl, 'delay_probe')).toEqual(['x'])
      expect(await rowsOf(engine, cluster.adminReaderUrl, 'delay_probe')).toEqual([])
      await pollUntil(
        async () =>
          (await rowsOf(engine, cluster.adminReaderUrl, 'delay_probe'))?.length === 1 ? true : undefined,
        { timeoutMs: APPLY_DELAY_MS + 5_000, intervalMs: 20, what: 'the write to reach the delayed replica' },
      )
      const visibleAfterMs = performance.now() - committedAt
      console.log(
        `[${engine}] a write became visible on the delayed replica after ${Math.round(visibleAfterMs)} ms`,
      )
      expect(visibleAfterMs).toBeGreaterThanOrEqual(MIN_VISIBLE_DELAY_MS[engine] - 50)
      expect(visibleAfterMs).toBeLessThan(APPLY_DELAY_MS + 1_500)
    })

    it('migrateToLatest runs each migration once; the state it reports is the writer’s, not the replica’s', async () => {
      const cluster = clusterOf(engine)
      const db = open(engine)
      const migrator = new Migrator({ db, provider: provider('mig_log') })

      const first = await migrator.migrateToLatest()
      expect(first.error).toBeUndefined()
      expect(first.results?.map((r) => [r.migrationName, r.status])).toEqual([
        ['001_log', 'Success'],
        ['002_item', 'Success'],
        ['003_seed', 'Success'],
      ])

      const migrations = await migrator.getMigrations()
      expect(migrations.map((m) => [m.name, m.executedAt instanceof Date])).toEqual([
        ['001_log', true],
        ['002_item', true],
        ['003_seed', true],
      ])
      // Right now the replica has not applied the migrations: reading state there would be wrong.
      expect(await rowsOf(engine, cluster.adminReaderUrl, 'kysely_migration')).not.toEqual([
        '001_log',
        '002_item',
        '003_seed',
      ])
      // Nothing so far went to the replica.
      expect(readerQueries(db)).toBe(0)
      // What the Migrator would believe if it read the replica: nothing executed yet.
      const fromReplica = await new Migrator({
        db: db.reader as unknown as AnyDb,
        provider: provider('mig_log'),
      }).getMigrations()
      expect(fromReplica.map((m) => m.executedAt)).toEqual([undefined, undefined, undefined])
      const readsBefore = readerQueries(db)

      const second = await migrator.migrateToLatest()
      expect(second.error).toBeUndefined()
      expect(second.results).toEqual([])
      expect(await rowsOf(engine, cluster.adminWriterUrl, 'mig_log')).toEqual([
        '001_log',
        '002_item',
        '003_seed',
      ])
      // The replica is still behind, and the Migrator asked it nothing.
      expect(await rowsOf(engine, cluster.adminReaderUrl, 'mig_log')).toBeUndefined()
      expect(readerQueries(db)).toBe(readsBefore)

      // Once the replica catches up it holds the same, single-run history.
      await waitForReplica(engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
      expect(await rowsOf(engine, cluster.adminReaderUrl, 'mig_log')).toEqual([
        '001_log',
        '002_item',
        '003_seed',
      ])
    })

    it('the same with read-your-writes on (process mode): state still comes from the writer', async () => {
      const cluster = clusterOf(engine)
      // Tables of its own: the migrations of the tests above are already recorded in kysely_migration.
      const db = open(engine, ['ryw_migration', 'ryw_migration_lock'], 'process')
      const migrator = new Migrator({
        db,
        provider: provider('ryw_log'),
        migrationTableName: 'ryw_migration',
        migrationLockTableName: 'ryw_migration_lock',
      })
      expect((await migrator.migrateToLatest()).results?.map((r) => r.status)).toEqual([
        'Success',
        'Success',
        'Success',
      ])
      expect((await migrator.getMigrations()).every((m) => m.executedAt instanceof Date)).toBe(true)
      expect((await migrator.migrateToLatest()).results).toEqual([])
      expect(await rowsOf(engine, cluster.adminWriterUrl, 'ryw_log')).toEqual([
        '001_log',
        '002_item',
        '003_seed',
      ])
      // The mode never sends the Migrator's reads to the replica, whose state is still behind.
      expect(await rowsOf(engine, cluster.adminReaderUrl, 'ryw_log')).toBeUndefined()
      expect(readerQueries(db)).toBe(0)
    })

    it('custom migration tables listed in routing.writerTables are read from the writer', async () => {
      const cluster = clusterOf(engine)
      const db = open(engine, ['app_migration', 'app_migration_lock'])
      const migrator = new Migrator({
        db,
        provider: provider('app_log'),
        migrationTableName: 'app_migration',
        migrationLockTableName: 'app_migration_lock',
      })
      expect((await migrator.migrateToLatest()).results).toHaveLength(3)
      expect((await migrator.getMigrations()).every((m) => m.executedAt instanceof Date)).toBe(true)
      expect((await migrator.migrateToLatest()).results).toEqual([])
      expect(await rowsOf(engine, cluster.adminWriterUrl, 'app_log')).toEqual([
        '001_log',
        '002_item',
        '003_seed',
      ])
      expect(await rowsOf(engine, cluster.adminReaderUrl, 'app_log')).toBeUndefined()
      expect(readerQueries(db)).toBe(0)
    })

    it('db.introspection sees a table right after createTable, before the replica has it', async () => {
      const cluster = clusterOf(engine)
      const db = open(engine)
      await db.schema.createTable('fresh_table').addColumn('id', 'integer').execute()
      const tables = await db.introspection.getTables()
      expect(tables.map((t) => t.name)).toContain('fresh_table')
      expect(await db.introspection.getSchemas()).not.toEqual([])
      expect(await rowsOf(engine, cluster.adminReaderUrl, 'fresh_table')).toBeUndefined()
      expect(readerQueries(db)).toBe(0)
    })

    it('ordinary reads still go to the replica', async () => {
      const db = open(engine)
      const rows = await db.selectFrom('plain_item').select('id').where('id', '=', 1).execute()
      expect(rows).toHaveLength(1)
      await db.selectNoFrom(sql<number>`1`.as('one')).execute()
      expect(readerQueries(db)).toBe(2)
      expect(db.stats().writer.queries).toBe(0)
    })
  })
}
