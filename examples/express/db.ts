import { type ColumnType, type Generated, type Selectable, sql } from 'kysely'
// The only import of the library in this example. In your own project: from 'kysely-resilient'.
import { createDb, type ResilientDb, type SqlDialect } from '../../src/index.js'

export type { DbStats, ResilientDb, SqlDialect } from '../../src/index.js'

export interface UsersTable {
  id: Generated<number>
  name: string
  email: string
  /** Set by the database; never written by the application. */
  created_at: ColumnType<Date, never, never>
}

export interface Database {
  users: UsersTable
}

export type User = Selectable<UsersTable>

/** The environment variables this example reads (a subset of `process.env`). */
export interface DatabaseEnv {
  /** `postgres` (default) or `mysql` (MySQL and MariaDB). */
  readonly DB_DIALECT?: string | undefined
  /** Connection URL of the writer (primary), e.g. `postgres://app:secret@primary.internal:5432/app`. */
  readonly DB_WRITER_URL?: string | undefined
  /** Comma-separated connection URLs of the readers (replicas). Optional. */
  readonly DB_READER_URLS?: string | undefined
}

export interface AppDatabase {
  readonly db: ResilientDb<Database>
  readonly dialect: SqlDialect
}

/**
 * Builds the database from `DB_DIALECT`, `DB_WRITER_URL` and `DB_READER_URLS`. Opens no connection yet;
 * throws an `Error` naming the variable when one is missing or invalid.
 */
export function createDatabase(env: DatabaseEnv): AppDatabase {
  const dialect = parseDialect(env.DB_DIALECT)
  const writer = env.DB_WRITER_URL?.trim()
  if (!writer) throw new Error('DB_WRITER_URL is not set (the connection URL of the writer)')
  const readers = (env.DB_READER_URLS ?? '')
    .split(',')
    .map((url) => url.trim())
    .filter((url) => url !== '')
  const db = createDb<Database>({
    dialect,
    writer,
    readers,
    // Fail a request quickly rather than let it hang when the pool is exhausted or a statement runs away.
    pool: { max: 10, acquireTimeoutMs: 5_000, connectTimeoutMs: 5_000, statementTimeoutMs: 10_000 },
  })
  return { db, dialect }
}

function parseDialect(value: string | undefined): SqlDialect {
  const dialect = value?.trim() || 'postgres'
  if (dialect === 'postgres' || dialect === 'mysql') return dialect
  throw new Error(`DB_DIALECT must be 'postgres' or 'mysql', not '${dialect}'`)
}

/** Creates the `users` table if it does not exist yet (on the writer: schema statements always go there). */
export async function migrate(db: ResilientDb<Database>, dialect: SqlDialect): Promise<void> {
  await db.schema
    .createTable('users')
    .ifNotExists()
    .addColumn('id', dialect === 'postgres' ? 'serial' : 'integer', (column) =>
      dialect === 'postgres' ? column.primaryKey() : column.primaryKey().autoIncrement(),
    )
    .addColumn('name', 'varchar(100)', (column) => column.notNull())
    .addColumn('email', 'varchar(200)', (column) => column.notNull().unique())
    .addColumn('created_at', dialect === 'postgres' ? 'timestamptz' : 'timestamp', (column) =>
      column.notNull().defaultTo(sql`CURRENT_TIMESTAMP`),
    )
    .execute()
}
