import {
  type Compilable,
  CompiledQuery,
  type Dialect,
  DummyDriver,
  type Generated,
  Kysely,
  MysqlAdapter,
  MysqlIntrospector,
  MysqlQueryCompiler,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  sql,
} from 'kysely'
import {
  DEFAULT_MIGRATION_LOCK_TABLE,
  DEFAULT_MIGRATION_TABLE,
  type Migration,
  Migrator,
} from 'kysely/migration'
import { describe, expect, test } from 'vitest'
import {
  DEFAULT_WRITER_TABLES,
  isReadOnlyStatement,
  KYSELY_MIGRATION_TABLES,
  writerTables,
} from '../../src/routing/classify-statement.js'

interface Database {
  person: { id: Generated<number>; name: string; data: unknown }
  pet: { id: Generated<number>; owner_id: number; name: string }
  archive: { id: number; name: string }
}

const postgresDialect: Dialect = {
  createAdapter: () => new PostgresAdapter(),
  createDriver: () => new DummyDriver(),
  createIntrospector: (db) => new PostgresIntrospector(db),
  createQueryCompiler: () => new PostgresQueryCompiler(),
}

const mysqlDialect: Dialect = {
  createAdapter: () => new MysqlAdapter(),
  createDriver: () => new DummyDriver(),
  createIntrospector: (db) => new MysqlIntrospector(db),
  createQueryCompiler: () => new MysqlQueryCompiler(),
}

const pg = new Kysely<Database>({ dialect: postgresDialect })
const mysql = new Kysely<Database>({ dialect: mysqlDialect })

function readOnly(query: Compilable): boolean {
  const compiled = query.compile()
  const fromTree = isReadOnlyStatement(compiled.query)
  // The router also passes the SQL text as a shortcut; both paths must always agree.
  expect(isReadOnlyStatement(compiled.query, compiled.sql)).toBe(fromTree)
  return fromTree
}

describe('statements a reader can serve', () => {
  const reads: Array<[string, () => Compilable]> = [
    ['a plain select', () => pg.selectFrom('person').selectAll()],
    ['a select with a where clause', () => pg.selectFrom('person').select('name').where('id', '=', 1)],
    [
      'a select with joins',
      () =>
        pg
          .selectFrom('person')
          .innerJoin('pet', 'pet.owner_id', 'person.id')
          .leftJoin('archive', 'archive.id', 'person.id')
          .select(['person.name', 'pet.name as pet_name']),
    ],
    [
      'a subquery in where',
      () =>
        pg
          .selectFrom('person')
          .selectAll()
          .where('id', 'in', (eb) => eb.selectFrom('pet').select('owner_id')),
    ],
    [
      'a subquery in from',
      () => pg.selectFrom((eb) => eb.selectFrom('pet').select(['owner_id', 'name']).as('p')).select('p.name'),
    ],
    [
      'a subquery in the selection',
      () =>
        pg
          .selectFrom('person')
          .select((eb) => [
            'person.id',
            eb
              .selectFrom('pet')
              .whereRef('pet.owner_id', '=', 'person.id')
              .select('pet.name')
              .limit(1)
              .as('pet'),
          ]),
    ],
    [
      'a select with a CTE',
      () =>
        pg
          .with('owners', (qb) => qb.selectFrom('pet').select('owner_id'))
          .selectFrom('owners')
          .selectAll(),
    ],
    [
      'a recursive CTE',
      () =>
        pg
          .withRecursive('counter(n)', (qb) =>
            qb
              .selectNoFrom(sql<number>`1`.as('n'))
              .unionAll((qb) =>
                qb.selectFrom('counter').select(sql<number>`n + 1`.as('n')).where('n', '<', 10),
              ),
          )
          .selectFrom('counter')
          .selectAll(),
    ],
    ['union', () => pg.selectFrom('person').select('name').union(pg.selectFrom('pet').select('name'))],
    ['union all', () => pg.selectFrom('person').select('name').unionAll(pg.selectFrom('pet').select('name'))],
    [
      'intersect',
      () => pg.selectFrom('person').select('name').intersect(pg.selectFrom('pet').select('name')),
    ],
    ['except', () => pg.selectFrom('person').select('name').except(pg.selectFrom('pet').select('name'))],
    ['a select with no FROM', () => pg.selectNoFrom(sql<number>`1`.as('one'))],
    ['select now()', () => pg.selectNoFrom((eb) => eb.fn<Date>('now').as('now'))],
    [
      'raw sql fragments in the selection and where',
      () =>
        pg
          .selectFrom('person')
          .select([sql<string>`upper(name)`.as('upper'), sql<string>`'for update'`.as('literal')])
          .where(sql<boolean>`name ilike ${'%for update%'}`),
    ],
    [
      'distinct, order by, limit, offset',
      () => pg.selectFrom('person').select('name').distinct().orderBy('name').limit(10).offset(5),
    ],
    [
      'group by and having',
      () =>
        pg
          .selectFrom('pet')
          .select((eb) => ['owner_id', eb.fn.countAll<number>().as('pets')])
          .groupBy('owner_id')
          .having((eb) => eb.fn.countAll(), '>', 1),
    ],
    ['a mysql select', () => mysql.selectFrom('person').selectAll().where('id', '=', 1)],
    [
      'a mysql select with a front modifier',
      () => mysql.selectFrom('person').selectAll().modifyFront(sql`sql_no_cache`),
    ],
  ]

  test.each(reads)('%s', (_name, build) => {
    expect(readOnly(build())).toBe(true)
  })
})

describe('statements that need the writer', () => {
  const writes: Array<[string, () => Compilable]> = [
    ['select ... for update', () => pg.selectFrom('person').selectAll().forUpdate()],
    ['select ... for update of a table', () => pg.selectFrom('person').selectAll().forUpdate('person')],
    ['select ... for share', () => pg.selectFrom('person').selectAll().forShare()],
    ['select ... for no key update', () => pg.selectFrom('person').selectAll().forNoKeyUpdate()],
    ['select ... for key share', () => pg.selectFrom('person').selectAll().forKeyShare()],
    ['select ... for update skip locked', () => pg.selectFrom('person').selectAll().forUpdate().skipLocked()],
    ['select ... for update nowait', () => pg.selectFrom('person').selectAll().forUpdate().noWait()],
    ['mysql select ... for update', () => mysql.selectFrom('person').selectAll().forUpdate()],
    ['mysql select ... for share', () => mysql.selectFrom('person').selectAll().forShare()],
    ['modifyEnd(sql`for update`)', () => pg.selectFrom('person').selectAll().modifyEnd(sql`for update`)],
    [
      'modifyEnd(sql`FOR UPDATE`) in upper case',
      () => pg.selectFrom('person').selectAll().modifyEnd(sql`FOR UPDATE`),
    ],
    [
      'modifyEnd with a lock spread over lines',
      () => pg.selectFrom('person').selectAll().modifyEnd(sql`for\n  no key   update`),
    ],
    [
      'modifyEnd(sql.raw(...)) lock',
      () => pg.selectFrom('person').selectAll().modifyEnd(sql.raw('for share')),
    ],
    [
      'modifyEnd lock naming a table',
      () =>
        pg
          .selectFrom('person')
          .selectAll()
          .modifyEnd(sql`for update of ${sql.table('person')} skip locked`),
    ],
    [
      'mysql modifyEnd(sql`lock in share mode`)',
      () => mysql.selectFrom('person').selectAll().modifyEnd(sql`lock in share mode`),
    ],
    [
      'a lock inside a where subquery',
      () =>
        pg
          .selectFrom('person')
          .selectAll()
          .where('id', 'in', (eb) => eb.selectFrom('pet').select('owner_id').forUpdate()),
    ],
    [
      'a lock inside a from subquery',
      () =>
        pg
          .selectFrom((eb) => eb.selectFrom('pet').select(['owner_id', 'name']).forShare().as('p'))
          .select('p.name'),
    ],
    [
      'a lock inside a CTE',
      () =>
        pg
          .with('locked', (qb) => qb.selectFrom('person').selectAll().forUpdate().skipLocked().limit(1))
          .selectFrom('locked')
          .selectAll(),
    ],
    [
      'a raw lock inside a union member',
      () =>
        pg
          .selectFrom('person')
          .select('name')
          .union((eb) => eb.selectFrom('pet').select('name').modifyEnd(sql`for update`)),
    ],
    ['insert', () => pg.insertInto('person').values({ name: 'Ada', data: null })],
    [
      'insert ... returning',
      () => pg.insertInto('person').values({ name: 'Ada', data: null }).returning('id'),
    ],
    [
      'insert ... on conflict',
      () =>
        pg
          .insertInto('person')
          .values({ name: 'Ada', data: null })
          .onConflict((oc) => oc.column('id').doUpdateSet({ name: 'Ada' })),
    ],
    [
      'insert ... select',
      () =>
        pg
          .insertInto('archive')
          .columns(['id', 'name'])
          .expression((eb) => eb.selectFrom('person').select(['id', 'name'])),
    ],
    ['mysql insert', () => mysql.insertInto('person').values({ name: 'Ada', data: null })],
    ['update', () => pg.updateTable('person').set({ name: 'Bea' }).where('id', '=', 1)],
    ['update ... returning', () => pg.updateTable('person').set({ name: 'Bea' }).returningAll()],
    ['delete', () => pg.deleteFrom('person').where('id', '=', 1)],
    ['delete ... returning', () => pg.deleteFrom('person').where('id', '=', 1).returning(['id', 'name'])],
    [
      'merge',
      () =>
        pg
          .mergeInto('archive')
          .using('person', 'person.id', 'archive.id')
          .whenMatched()
          .thenUpdateSet((eb) => ({ name: eb.ref('person.name') }))
          .whenNotMatched()
          .thenInsertValues((eb) => ({ id: eb.ref('person.id'), name: eb.ref('person.name') })),
    ],
    [
      'merge ... returning',
      () =>
        pg
          .mergeInto('archive')
          .using('person', 'person.id', 'archive.id')
          .whenMatched()
          .thenDelete()
          .returningAll('archive'),
    ],
    [
      'a select fed by a CTE that deletes',
      () =>
        pg
          .with('removed', (qb) => qb.deleteFrom('person').where('id', '=', 1).returning(['id', 'name']))
          .selectFrom('removed')
          .selectAll(),
    ],
    [
      'a select fed by a CTE that inserts',
      () =>
        pg
          .with('added', (qb) => qb.insertInto('person').values({ name: 'Ada', data: null }).returning('id'))
          .selectFrom('added')
          .selectAll(),
    ],
    [
      'a select fed by a CTE that updates',
      () =>
        pg
          .with('renamed', (qb) => qb.updateTable('person').set({ name: 'Bea' }).returning('id'))
          .selectFrom('renamed')
          .selectAll(),
    ],
    [
      'a data-modifying CTE next to a read-only one',
      () =>
        pg
          .with('owners', (qb) => qb.selectFrom('pet').select('owner_id'))
          .with('removed', (qb) => qb.deleteFrom('pet').where('owner_id', '=', 1).returning('id'))
          .selectFrom('owners')
          .selectAll(),
    ],
    [
      'a data-modifying CTE read from a where subquery',
      () =>
        pg
          .with('gone', (qb) => qb.deleteFrom('pet').returning('owner_id'))
          .selectFrom('person')
          .selectAll()
          .where('id', 'in', (eb) => eb.selectFrom('gone').select('owner_id')),
    ],
    [
      'create table',
      () => pg.schema.createTable('audit').addColumn('id', 'serial', (col) => col.primaryKey()),
    ],
    ['create table as select', () => pg.schema.createTable('copy').as(pg.selectFrom('person').selectAll())],
    ['alter table', () => pg.schema.alterTable('person').addColumn('age', 'integer')],
    ['drop table', () => pg.schema.dropTable('person').ifExists()],
    ['create index', () => pg.schema.createIndex('person_name').on('person').column('name')],
    ['create view', () => pg.schema.createView('names').as(pg.selectFrom('person').select('name'))],
    ['raw sql select', () => ({ compile: () => sql`select * from person`.compile(pg) })],
    ['raw sql write', () => ({ compile: () => sql`delete from person`.compile(pg) })],
    ['CompiledQuery.raw', () => ({ compile: () => CompiledQuery.raw('select 1') })],
  ]

  test.each(writes)('%s', (_name, build) => {
    expect(readOnly(build())).toBe(false)
  })

  test('a lock clause composed from nested sql fragments in modifyEnd', () => {
    // A lock clause kept in a constant and reused: the lock words sit in a nested fragment.
    const lock = sql`for update`
    expect(readOnly(pg.selectFrom('person').selectAll().modifyEnd(sql`${lock} skip locked`))).toBe(false)
  })
})

describe('parameter values never change the verdict', () => {
  // Values that look like operation nodes or lock clauses: only the query's structure may count.
  const bigJson = {
    kind: 'InsertQueryNode',
    modifier: 'ForUpdate',
    rawModifier: { kind: 'RawNode', sqlFragments: ['for update'], parameters: [] },
    items: Array.from({ length: 5_000 }, (_, index) => ({
      index,
      kind: index % 2 === 0 ? 'DeleteQueryNode' : 'SelectModifierNode',
      modifier: 'ForUpdate',
      text: 'select * from person for update',
      nested: { kind: 'UpdateQueryNode', deeper: { sqlFragments: ['lock in share mode'] } },
    })),
  }

  test('a select comparing against a large JSON value is still a read', () => {
    const small = pg.selectFrom('person').selectAll().where('data', '=', {})
    const large = pg.selectFrom('person').selectAll().where('data', '=', bigJson)
    expect(readOnly(small)).toBe(true)
    expect(readOnly(large)).toBe(true)
  })

  test('a large JSON value inside a raw fragment and eb.val is still a read', () => {
    const query = pg
      .selectFrom('person')
      .select((eb) => ['id', eb.val(bigJson).as('payload')])
      .where(sql<boolean>`data @> ${JSON.stringify(bigJson)}::jsonb`)
    expect(readOnly(query)).toBe(true)
  })

  test('a list of values in an in() clause is still a read', () => {
    const names = Array.from({ length: 1_000 }, (_, index) => `for update ${index}`)
    expect(readOnly(pg.selectFrom('person').selectAll().where('name', 'in', names))).toBe(true)
  })

  test('an insert of a large JSON value is still a write', () => {
    expect(readOnly(pg.insertInto('person').values({ name: 'Ada', data: bigJson }))).toBe(false)
  })
})

describe('selects of state a lagging replica would answer wrongly', () => {
  // Kysely's Migrator and db.introspection read migration and schema state, which must be the
  // writer's: a replica that has not replayed the latest migration reports it as not yet run.
  const writerReads: Array<[string, () => Compilable]> = [
    [
      "the Migrator's executed-migrations query",
      () => untyped(pg).selectFrom('kysely_migration').select(['name', 'timestamp']),
    ],
    [
      "the Migrator's lock-row query",
      () => untyped(pg).selectFrom('kysely_migration_lock').where('id', '=', 'migration_lock').select('id'),
    ],
    [
      'a migration table in its own schema',
      () => untyped(pg).withSchema('migrations').selectFrom('kysely_migration').selectAll(),
    ],
    [
      'a migration table under an alias',
      () => untyped(mysql).selectFrom('kysely_migration as m').select('m.name'),
    ],
    [
      'a migration table joined',
      () =>
        untyped(pg)
          .selectFrom('person')
          .innerJoin('kysely_migration as m', 'm.name', 'person.name')
          .selectAll(),
    ],
    ['a pg_catalog table', () => untyped(pg).selectFrom('pg_catalog.pg_class').select('relname')],
    ['an information_schema table', () => untyped(mysql).selectFrom('information_schema.tables').selectAll()],
    [
      'INFORMATION_SCHEMA in upper case',
      () => untyped(mysql).selectFrom('INFORMATION_SCHEMA.TABLES').selectAll(),
    ],
  ]

  test.each(writerReads)('%s', (_name, build) => {
    expect(readOnly(build())).toBe(false)
  })

  test("the default tables are Kysely's", () => {
    expect([...KYSELY_MIGRATION_TABLES]).toEqual([DEFAULT_MIGRATION_TABLE, DEFAULT_MIGRATION_LOCK_TABLE])
  })

  test('tables with similar names are still read from a replica', () => {
    expect(readOnly(untyped(pg).selectFrom('migration').selectAll())).toBe(true)
    expect(readOnly(untyped(pg).selectFrom('kysely_migrations').selectAll())).toBe(true)
    expect(readOnly(untyped(pg).withSchema('kysely_migration').selectFrom('person').selectAll())).toBe(true)
    expect(readOnly(untyped(pg).selectFrom('app.pg_class').selectAll())).toBe(true)
  })

  test('custom writer tables are added to Kysely tables: both read from the writer', () => {
    const tables = writerTables(['app_migration'])
    const custom = untyped(pg).selectFrom('app_migration').select(['name', 'timestamp']).compile()
    const kysely = untyped(pg).selectFrom('kysely_migration').selectAll().compile()
    const person = pg.selectFrom('person').selectAll().compile()
    expect(isReadOnlyStatement(custom.query, custom.sql, tables)).toBe(false)
    expect(isReadOnlyStatement(custom.query, custom.sql)).toBe(true)
    expect(isReadOnlyStatement(kysely.query, kysely.sql, tables)).toBe(false)
    expect(isReadOnlyStatement(person.query, person.sql, tables)).toBe(true)
  })

  describe.each([
    ['postgres', postgresDialect],
    ['mysql', mysqlDialect],
  ] as const)('every statement of Kysely on %s', (_engine, dialect) => {
    /** A Kysely that records every statement it compiles (the driver answers with no rows). */
    function recording(): { db: Kysely<unknown>; statements: CompiledQuery[] } {
      const statements: CompiledQuery[] = []
      const db = new Kysely<unknown>({
        dialect,
        log: (event) => {
          statements.push(event.query)
        },
      })
      return { db, statements }
    }

    test('db.introspection reads the writer', async () => {
      const { db, statements } = recording()
      await db.introspection.getSchemas()
      await db.introspection.getTables()
      await db.introspection.getTables({ withInternalKyselyTables: true })
      expect(statements).toHaveLength(3)
      for (const statement of statements) {
        expect(isReadOnlyStatement(statement.query, statement.sql), statement.sql).toBe(false)
      }
    })

    test.each([
      ['default tables', {}, DEFAULT_WRITER_TABLES],
      [
        'custom tables in their own schema',
        {
          migrationTableName: 'app_migration',
          migrationLockTableName: 'app_lock',
          migrationTableSchema: 'ops',
        },
        writerTables(['app_migration', 'app_lock']),
      ],
    ])('the Migrator (%s) reads nothing from a replica', async (_name, names, tables) => {
      const { db, statements } = recording()
      const migration: Migration = { up: async () => {}, down: async () => {} }
      const migrator = new Migrator({
        db,
        provider: { getMigrations: async () => ({ '001': migration, '002': migration }) },
        ...names,
      })
      expect((await migrator.migrateToLatest()).error).toBeUndefined()
      await migrator.getMigrations()
      const selects = statements.filter((statement) => statement.query.kind === 'SelectQueryNode')
      // getTables, the lock row, the executed migrations (plus getSchemas with a schema).
      expect(selects.length).toBeGreaterThanOrEqual(3)
      for (const statement of statements) {
        expect(isReadOnlyStatement(statement.query, statement.sql, tables), statement.sql).toBe(false)
      }
    })
  })
})

/** The same Kysely without a table type: these tests select from tables outside `Database`. */
function untyped(db: Kysely<Database>): Kysely<Record<string, Record<string, unknown>>> {
  return db as unknown as Kysely<Record<string, Record<string, unknown>>>
}
