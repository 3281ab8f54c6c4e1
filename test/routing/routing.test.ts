import { CamelCasePlugin, type Generated, Kysely, type RawBuilder, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDb, DatabaseDestroyedError, type ResilientDb } from '../../src/index.js'
import { describeEngines, type Engine, waitForReplica } from '../support/database.js'

interface Database {
  routing_probe: { id: Generated<number>; label: string }
}

/** Which server ran the statement: the replica reports recovery / read_only. */
function served(engine: Engine): RawBuilder<string> {
  return engine === 'postgres'
    ? sql<string>`case when pg_is_in_recovery() then 'reader' else 'writer' end`
    : sql<string>`case when @@global.read_only = 1 then 'reader' else 'writer' end`
}

describeEngines('routing', (engine, cluster) => {
  let db: ResilientDb<Database>
  const role = served(engine)

  const queriesOf = () => {
    const stats = db.stats()
    return { writer: stats.writer.queries, readers: stats.readers.reduce((sum, r) => sum + r.queries, 0) }
  }
  /** Runs `work` and returns how many statements the writer and the readers served meanwhile. */
  const servedBy = async (work: () => Promise<unknown>) => {
    const before = queriesOf()
    await work()
    const after = queriesOf()
    return { writer: after.writer - before.writer, readers: after.readers - before.readers }
  }

  beforeAll(async () => {
    db = createDb<Database>({ dialect: engine, writer: cluster.writerUrl, readers: [cluster.readerUrl] })
    await db.schema.dropTable('routing_probe').ifExists().execute()
    await db.schema
      .createTable('routing_probe')
      .addColumn('id', engine === 'postgres' ? 'serial' : 'integer', (c) =>
        engine === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement(),
      )
      .addColumn('label', 'varchar(100)', (c) => c.notNull())
      .execute()
    await db.insertInto('routing_probe').values({ label: 'seed' }).execute()
    await waitForReplica(engine)
  })

  afterAll(async () => {
    await db?.destroy()
  })

  it('sends a plain SELECT to the reader', async () => {
    const row = await db.selectFrom('routing_probe').select(role.as('role')).executeTakeFirstOrThrow()
    expect(row.role).toBe('reader')
  })

  it('sends SELECTs with CTEs, unions, subqueries and no FROM to the reader', async () => {
    const cte = await db
      .with('p', (qb) => qb.selectFrom('routing_probe').select('id'))
      .selectFrom('p')
      .select(role.as('role'))
      .executeTakeFirstOrThrow()
    const union = await db
      .selectFrom('routing_probe')
      .select(role.as('role'))
      .union(db.selectFrom('routing_probe').select(role.as('role')))
      .execute()
    const subquery = await db
      .selectFrom('routing_probe')
      .select(role.as('role'))
      .where('id', 'in', db.selectFrom('routing_probe').select('id'))
      .executeTakeFirstOrThrow()
    const noFrom = await db.selectNoFrom(role.as('role')).executeTakeFirstOrThrow()
    expect([cte.role, ...union.map((r) => r.role), subquery.role, noFrom.role]).toEqual(
      Array(4 + union.length - 1).fill('reader'),
    )
  })

  it('sends SELECT ... FOR UPDATE / FOR SHARE to the writer', async () => {
    const forUpdate = await db
      .selectFrom('routing_probe')
      .select(role.as('role'))
      .forUpdate()
      .executeTakeFirstOrThrow()
    // MariaDB spells FOR SHARE as LOCK IN SHARE MODE (below); MySQL 8 and PostgreSQL take FOR SHARE.
    const forShare =
      engine === 'postgres'
        ? await db.selectFrom('routing_probe').select(role.as('role')).forShare().executeTakeFirstOrThrow()
        : await db
            .selectFrom('routing_probe')
            .select(role.as('role'))
            .forUpdate()
            .skipLocked()
            .executeTakeFirstOrThrow()
    const raw = await db
      .selectFrom('routing_probe')
      .select(role.as('role'))
      .modifyEnd(engine === 'postgres' ? sql`for update` : sql`lock in share mode`)
      .executeTakeFirstOrThrow()
    expect([forUpdate.role, forShare.role, raw.role]).toEqual(['writer', 'writer', 'writer'])
  })

  it('sends INSERT, UPDATE and DELETE to the writer', async () => {
    const counts = await servedBy(async () => {
      const result = await db.insertInto('routing_probe').values({ label: 'w1' }).executeTakeFirstOrThrow()
      expect(result.numInsertedOrUpdatedRows).toBe(1n)
      const updated = await db
        .updateTable('routing_probe')
        .set({ label: 'w2' })
        .where('label', '=', 'w1')
        .executeTakeFirstOrThrow()
      expect(updated.numUpdatedRows).toBe(1n)
      const deleted = await db.deleteFrom('routing_probe').where('label', '=', 'w2').executeTakeFirstOrThrow()
      expect(deleted.numDeletedRows).toBe(1n)
    })
    expect(counts).toEqual({ writer: 3, readers: 0 })
  })

  it('sends raw sql and schema statements to the writer', async () => {
    const { rows } = await sql<{ role: string }>`select ${role} as role`.execute(db)
    expect(rows[0]?.role).toBe('writer')
    const counts = await servedBy(async () => {
      await db.schema.createTable('routing_ddl').ifNotExists().addColumn('x', 'integer').execute()
      await db.schema.dropTable('routing_ddl').execute()
    })
    expect(counts).toEqual({ writer: 2, readers: 0 })
  })

  if (engine === 'postgres') {
    it('sends a data-modifying CTE to the writer', async () => {
      const row = await db
        .with('ins', (qb) => qb.insertInto('routing_probe').values({ label: 'cte' }).returning('id'))
        .selectFrom('ins')
        .select(['id', role.as('role')])
        .executeTakeFirstOrThrow()
      expect(row.role).toBe('writer')
      expect(row.id).toBeGreaterThan(0)
    })
  }

  it('runs transactions on the writer, reads inside included', async () => {
    const roles = await db.transaction().execute(async (trx) => {
      const first = await trx.selectNoFrom(role.as('role')).executeTakeFirstOrThrow()
      await trx.insertInto('routing_probe').values({ label: 'trx' }).execute()
      const second = await trx.selectFrom('routing_probe').select(role.as('role')).executeTakeFirstOrThrow()
      return [first.role, second.role]
    })
    expect(roles).toEqual(['writer', 'writer'])
  })

  it('runs a read-only transaction on a reader', async () => {
    const value = await db
      .transaction()
      .setAccessMode('read only')
      .execute((trx) => trx.selectNoFrom(role.as('role')).executeTakeFirstOrThrow())
    expect(value.role).toBe('reader')
  })

  it('runs controlled transactions with savepoints on the writer', async () => {
    const trx = await db.startTransaction().execute()
    const first = await trx.selectNoFrom(role.as('role')).executeTakeFirstOrThrow()
    await trx.insertInto('routing_probe').values({ label: 'kept' }).execute()
    const afterSavepoint = await trx.savepoint('sp1').execute()
    await afterSavepoint.insertInto('routing_probe').values({ label: 'undone' }).execute()
    await afterSavepoint.rollbackToSavepoint('sp1').execute()
    await trx.commit().execute()
    expect(first.role).toBe('writer')
    const labels = await db.writer
      .selectFrom('routing_probe')
      .select('label')
      .where('label', 'in', ['kept', 'undone'])
      .execute()
    expect(labels.map((r) => r.label)).toEqual(['kept'])
  })

  it('runs db.connection() on the writer, reads included', async () => {
    const roles = await db.connection().execute(async (conn) => {
      const a = await conn.selectNoFrom(role.as('role')).executeTakeFirstOrThrow()
      const b = await conn.selectFrom('routing_probe').select(role.as('role')).executeTakeFirstOrThrow()
      return [a.role, b.role]
    })
    expect(roles).toEqual(['writer', 'writer'])
  })

  it('streams a SELECT from the reader and a locking SELECT from the writer', async () => {
    const streamed: string[] = []
    for await (const row of db.selectFrom('routing_probe').select(role.as('role')).stream())
      streamed.push(row.role)
    expect(new Set(streamed)).toEqual(new Set(['reader']))
    if (engine === 'postgres') {
      // Kysely streams through a cursor; PostgreSQL allows FOR UPDATE cursors only inside a transaction.
      const locked = await db.transaction().execute(async (trx) => {
        const roles: string[] = []
        for await (const row of trx
          .selectFrom('routing_probe')
          .select(role.as('role'))
          .forUpdate()
          .stream()) {
          roles.push(row.role)
        }
        return roles
      })
      expect(new Set(locked)).toEqual(new Set(['writer']))
    } else {
      const locked: string[] = []
      for await (const row of db.selectFrom('routing_probe').select(role.as('role')).forUpdate().stream()) {
        locked.push(row.role)
      }
      expect(new Set(locked)).toEqual(new Set(['writer']))
    }
  })

  it('reads its own write through the replica once it has replayed', async () => {
    const label = `ryw-${Date.now()}`
    await db.insertInto('routing_probe').values({ label }).execute()
    await waitForReplica(engine)
    const row = await db
      .selectFrom('routing_probe')
      .select(['label', role.as('role')])
      .where('label', '=', label)
      .executeTakeFirst()
    expect(row).toEqual({ label, role: 'reader' })
  })

  it('db.writer forces the writer and db.reader forces a reader', async () => {
    const w = await db.writer.selectFrom('routing_probe').select(role.as('role')).executeTakeFirstOrThrow()
    const r = await db.reader.selectFrom('routing_probe').select(role.as('role')).executeTakeFirstOrThrow()
    expect([w.role, r.role]).toEqual(['writer', 'reader'])
  })

  it('keeps routing through plugins, withPlugin, withSchema and withTables', async () => {
    const camel = createDb<{ routing_probe: { id: Generated<number>; label: string } }>({
      dialect: engine,
      writer: cluster.writerUrl,
      readers: cluster.readerUrl,
      plugins: [new CamelCasePlugin()],
    })
    try {
      const viaConfig = await camel.selectNoFrom(role.as('served_by')).executeTakeFirstOrThrow()
      expect(viaConfig).toEqual({ servedBy: 'reader' })
      const withPlugin = await db
        .withPlugin(new CamelCasePlugin())
        .selectNoFrom(role.as('served_by'))
        .executeTakeFirstOrThrow()
      expect(withPlugin).toEqual({ servedBy: 'reader' })
      const schema = engine === 'postgres' ? 'public' : 'app'
      const withSchema = await db
        .withSchema(schema)
        .selectFrom('routing_probe')
        .select(role.as('role'))
        .executeTakeFirstOrThrow()
      expect(withSchema.role).toBe('reader')
      const withTables = await db
        .withTables<{ extra: { id: number } }>()
        .selectFrom('routing_probe')
        .select(role.as('role'))
        .executeTakeFirstOrThrow()
      expect(withTables.role).toBe('reader')
      const write = await servedBy(() =>
        db.withSchema(schema).insertInto('routing_probe').values({ label: 'schema' }).execute(),
      )
      expect(write).toEqual({ writer: 1, readers: 0 })
    } finally {
      await camel.destroy()
    }
  })

  it('sends everything to the writer when there are no readers', async () => {
    const single = createDb<Database>({ dialect: engine, writer: cluster.writerUrl })
    try {
      const read = await single.selectFrom('routing_probe').select(role.as('role')).executeTakeFirstOrThrow()
      const viaReader = await single.reader.selectNoFrom(role.as('role')).executeTakeFirstOrThrow()
      expect([read.role, viaReader.role]).toEqual(['writer', 'writer'])
      expect(single.stats().readers).toEqual([])
    } finally {
      await single.destroy()
    }
  })

  it('spreads reads round-robin over several readers', async () => {
    const multi = createDb<Database>({
      dialect: engine,
      writer: cluster.writerUrl,
      readers: [cluster.readerUrl, { url: cluster.readerUrl, name: 'second' }, cluster.readerUrl],
    })
    try {
      for (let i = 0; i < 9; i++) await multi.selectFrom('routing_probe').select('id').execute()
      expect(multi.stats().readers.map((r) => [r.name, r.queries])).toEqual([
        ['reader-0', 3],
        ['second', 3],
        ['reader-2', 3],
      ])
    } finally {
      await multi.destroy()
    }
  })

  it("sends reads to the reader with the fewest connections in use with 'least-busy'", async () => {
    const multi = createDb<Database>({
      dialect: engine,
      writer: cluster.writerUrl,
      readers: [cluster.readerUrl, cluster.readerUrl],
      routing: { readerStrategy: 'least-busy' },
    })
    try {
      // A read-only transaction holds one connection of one reader for as long as it is open.
      const held = await multi.startTransaction().setAccessMode('read only').execute()
      await held.selectNoFrom(role.as('role')).execute()
      const busy = multi.stats().readers.findIndex((r) => r.inUse === 1)
      expect(busy).toBeGreaterThanOrEqual(0)
      const before = multi.stats().readers.map((r) => r.queries)
      for (let i = 0; i < 6; i++) await multi.selectFrom('routing_probe').select('id').execute()
      const after = multi.stats().readers.map((r) => r.queries)
      await held.commit().execute()
      expect(after[busy]! - before[busy]!).toBe(0)
      expect(after[1 - busy]! - before[1 - busy]!).toBe(6)
    } finally {
      await multi.destroy()
    }
  })

  it('reports pool counts per endpoint', async () => {
    const trx = await db.startTransaction().execute()
    await trx.selectNoFrom(role.as('role')).execute()
    const during = db.stats()
    await trx.commit().execute()
    const after = db.stats()
    expect(during.writer.inUse).toBe(1)
    expect(after.writer.inUse).toBe(0)
    expect(after.writer.idle).toBeGreaterThanOrEqual(1)
    expect(after.writer.total).toBe(after.writer.idle + after.writer.inUse + after.writer.connecting)
    expect(after.readers[0]?.queries).toBeGreaterThan(0)
  })

  it('logs exactly the statements plain Kysely logs', async () => {
    const run = async (kysely: Kysely<Database>) => {
      await kysely.transaction().execute(async (trx) => {
        await trx.insertInto('routing_probe').values({ label: 'logged' }).execute()
        await trx.selectFrom('routing_probe').select('id').where('label', '=', 'logged').execute()
      })
      await kysely.selectFrom('routing_probe').select('id').limit(1).execute()
    }
    const resilientLog: string[] = []
    const resilient = createDb<Database>({
      dialect: engine,
      writer: cluster.writerUrl,
      readers: cluster.readerUrl,
      log: (event) => {
        resilientLog.push(`${event.level}:${event.query.sql}`)
      },
    })
    const plainLog: string[] = []
    const plain = await plainKysely(engine, cluster.writerUrl, (event) => {
      plainLog.push(`${event.level}:${event.query.sql}`)
    })
    try {
      await run(resilient)
      await run(plain)
      expect(resilientLog).toEqual(plainLog)
      expect(resilientLog.length).toBe(5)
    } finally {
      await resilient.destroy()
      await plain.destroy()
    }
  })

  it('cancels a running query on the server that runs it when the signal aborts', async () => {
    const sleep = engine === 'postgres' ? sql<number>`pg_sleep(20)` : sql<number>`sleep(20)`
    const controller = new AbortController()
    const started = Date.now()
    const pending = db
      .selectNoFrom(sleep.as('slept'))
      .execute({ signal: controller.signal, inflightQueryAbortStrategy: 'cancel query' })
    setTimeout(() => controller.abort(new Error('caller gave up')), 300)
    await expect(pending).rejects.toThrow('caller gave up')
    expect(Date.now() - started).toBeLessThan(5_000)
    // The replica really stopped working on it: a query on the same pool finishes promptly.
    const after = await db.selectNoFrom(role.as('role')).executeTakeFirstOrThrow()
    expect(after.role).toBe('reader')
    // Kysely sends the cancel in the background; poll the replica until the statement is gone.
    const admin = await plainKysely(engine, cluster.adminReaderUrl)
    try {
      const stillRunning = async () => {
        const { rows } =
          engine === 'postgres'
            ? await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
                where state = 'active' and query like '%pg_sleep(20)%' and pid <> pg_backend_pid()`.execute(
                admin,
              )
            : await sql<{ n: number }>`select count(*) as n from information_schema.processlist
                where info like '%sleep(20)%' and id <> connection_id()`.execute(admin)
        return Number(rows[0]?.n)
      }
      const deadline = Date.now() + 5_000
      let running = await stillRunning()
      while (running > 0 && Date.now() < deadline) running = await stillRunning()
      expect(running).toBe(0)
    } finally {
      await admin.destroy()
    }
  })

  it('fails every query with DatabaseDestroyedError after destroy()', async () => {
    const doomed = createDb<Database>({
      dialect: engine,
      writer: cluster.writerUrl,
      readers: cluster.readerUrl,
    })
    await doomed.selectFrom('routing_probe').select('id').execute()
    await doomed.destroy()
    await expect(doomed.selectFrom('routing_probe').select('id').execute()).rejects.toThrow()
    await expect(doomed.writer.selectFrom('routing_probe').select('id').execute()).rejects.toBeInstanceOf(
      DatabaseDestroyedError,
    )
    await expect(doomed.reader.selectFrom('routing_probe').select('id').execute()).rejects.toBeInstanceOf(
      DatabaseDestroyedError,
    )
    expect(doomed.stats().writer.total).toBe(0)
  })
})

type LogFn = (event: { level: string; query: { sql: string } }) => void

/** Plain Kysely over the driver's own pool, as a user would set it up without this library. */
async function plainKysely(engine: Engine, url: string, log?: LogFn): Promise<Kysely<Database>> {
  if (engine === 'postgres') {
    const { PostgresDialect } = await import('kysely')
    const pg = await import('pg')
    const Pool = pg.default.Pool
    return new Kysely<Database>({
      dialect: new PostgresDialect({ pool: new Pool({ connectionString: url, max: 2 }) }),
      ...(log ? { log } : {}),
    })
  }
  const { MysqlDialect } = await import('kysely')
  const mysql = await import('mysql2')
  return new Kysely<Database>({
    dialect: new MysqlDialect({ pool: mysql.createPool({ uri: url, connectionLimit: 2 }) }),
    ...(log ? { log } : {}),
  })
}

describe('createDb without servers', () => {
  it('opens no connection until the first query', () => {
    const db = createDb({ dialect: 'postgres', writer: 'postgres://u:p@127.0.0.1:1/db' })
    expect(db.stats().writer.total).toBe(0)
  })
})
