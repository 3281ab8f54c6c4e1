import { type ColumnType, type Generated, type Selectable, sql } from 'kysely'
// The only import of the library in this example. In your own project: from 'kysely-resilient/lambda'.
import { getConnection, type ResilientDb, resetConnection } from '../../src/lambda/index.js'

export interface LambdaUsersTable {
  id: Generated<number>
  name: string
  email: string
  /** Set by the database; never written by the application. */
  created_at: ColumnType<Date, never, never>
}

export interface Database {
  lambda_users: LambdaUsersTable
}

export type LambdaUser = Selectable<LambdaUsersTable>
export type Dialect = 'postgres' | 'mysql'

export interface Connection {
  readonly db: ResilientDb<Database>
  readonly dialect: Dialect
}

/**
 * The container's database, configured from the environment by `getConnection()`: `DB_DIALECT`
 * (`postgres` or `mysql`), `DB_WRITER_URL`, optionally `DB_READER_URLS` (comma-separated), and how
 * to authenticate. Deployed: `DB_AUTH=iam` with the IAM user in the URLs and no password (tokens are
 * signed with the execution role for `AWS_REGION`, which Lambda sets). Locally: no `DB_AUTH`, and the
 * password in the URLs. A missing or wrong variable is a `ConfigError` naming it.
 */
export async function connection(): Promise<Connection> {
  const db = await getConnection<Database>()
  // getConnection() validated DB_DIALECT already, so this is one of the two.
  const dialect: Dialect = process.env.DB_DIALECT?.trim() === 'mysql' ? 'mysql' : 'postgres'
  return { db, dialect }
}

// One migration per container (module-global), shared by concurrent first invocations. A failed
// attempt is forgotten so the next invocation tries again.
let migrated: Promise<void> | undefined

/** Creates `lambda_users` on the writer if it does not exist yet; runs once per container. */
export function ensureSchema({ db, dialect }: Connection): Promise<void> {
  if (migrated === undefined) {
    const attempt = migrate(db, dialect)
    migrated = attempt
    attempt.catch(() => {
      if (migrated === attempt) migrated = undefined
    })
  }
  return migrated
}

/**
 * Closes the container's connections and forgets the cached migration, so the next invocation
 * starts afresh. For the local invoke script (which must close its sockets to exit) and for tests.
 */
export async function closeConnection(): Promise<void> {
  migrated = undefined
  await resetConnection()
}

async function migrate(db: ResilientDb<Database>, dialect: Dialect): Promise<void> {
  await db.schema
    .createTable('lambda_users')
    .ifNotExists()
    .addColumn('id', dialect === 'postgres' ? 'serial' : 'integer', (column) =>
      dialect === 'postgres' ? column.primaryKey() : column.primaryKey().autoIncrement(),
    )
    .addColumn('name', 'varchar(100)', (column) => column.notNull())
    .addColumn('email', 'varchar(200)', (column) => column.notNull())
    .addColumn('created_at', dialect === 'postgres' ? 'timestamptz' : 'timestamp', (column) =>
      column.notNull().defaultTo(sql`CURRENT_TIMESTAMP`),
    )
    .execute()
}
