import { type Kysely, sql } from 'kysely'
import type { Migration, MigrationProvider } from 'kysely/migration'
import type { SqlDialect } from './db.js'

/**
 * The schema, as Kysely migrations, in the order they run (by name). Inline rather than one file each
 * (`FileMigrationProvider`): nothing to find on disk at run time, so this bundles too. Never edit a
 * migration that has run somewhere; add the next one.
 *
 * Migrations take `Kysely<any>`: they must keep working when the `Database` type has moved on.
 */
export function migrations(dialect: SqlDialect): Record<string, Migration> {
  const autoId = dialect === 'postgres' ? 'serial' : 'integer'
  const timestamp = dialect === 'postgres' ? 'timestamptz' : 'timestamp'
  return {
    '2026_12_01_001_users': {
      // biome-ignore lint/suspicious/noExplicitAny: a migration must not depend on today's schema type
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('users')
          .addColumn('id', autoId, (column) =>
            dialect === 'postgres' ? column.primaryKey() : column.primaryKey().autoIncrement(),
          )
          .addColumn('name', 'varchar(100)', (column) => column.notNull())
          .addColumn('email', 'varchar(200)', (column) => column.notNull().unique())
          .addColumn('created_at', timestamp, (column) => column.notNull().defaultTo(sql`CURRENT_TIMESTAMP`))
          .execute()
      },
      // biome-ignore lint/suspicious/noExplicitAny: see up
      async down(db: Kysely<any>) {
        await db.schema.dropTable('users').execute()
      },
    },
    '2026_12_01_002_credits': {
      // biome-ignore lint/suspicious/noExplicitAny: see above
      async up(db: Kysely<any>) {
        await db.schema
          .alterTable('users')
          .addColumn('credits', 'integer', (column) => column.notNull().defaultTo(100))
          .execute()
        await db.schema
          .createTable('credit_transfers')
          .addColumn('request_id', 'varchar(64)', (column) => column.primaryKey())
          .addColumn('from_user_id', 'integer', (column) => column.notNull())
          .addColumn('to_user_id', 'integer', (column) => column.notNull())
          .addColumn('amount', 'integer', (column) => column.notNull())
          .addColumn('created_at', timestamp, (column) => column.notNull().defaultTo(sql`CURRENT_TIMESTAMP`))
          .execute()
      },
      // biome-ignore lint/suspicious/noExplicitAny: see above
      async down(db: Kysely<any>) {
        await db.schema.dropTable('credit_transfers').execute()
        await db.schema.alterTable('users').dropColumn('credits').execute()
      },
    },
  }
}

export function migrationProvider(dialect: SqlDialect): MigrationProvider {
  return { getMigrations: async () => migrations(dialect) }
}
