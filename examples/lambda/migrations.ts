import { type Kysely, sql } from 'kysely'
import { type MigrationProvider, type MigrationResult, Migrator } from 'kysely/migration'
import type { ResilientDb } from 'kysely-resilient/lambda'
import type { Database, Dialect } from './db.js'

/**
 * The schema as Kysely migrations, inline (nothing to read from disk, so it bundles). Its own
 * migration tables: this example may share a database with others (the Express example's
 * `kysely_migration` would otherwise see these as unknown migrations and refuse to run).
 */
const MIGRATION_TABLES = {
  migrationTableName: 'lambda_migration',
  migrationLockTableName: 'lambda_migration_lock',
}

function provider(dialect: Dialect): MigrationProvider {
  return {
    getMigrations: async () => ({
      '2026_12_01_001_lambda_users': {
        // biome-ignore lint/suspicious/noExplicitAny: a migration must not depend on today's schema type
        async up(db: Kysely<any>) {
          await db.schema
            .createTable('lambda_users')
            .addColumn('id', dialect === 'postgres' ? 'serial' : 'integer', (column) =>
              dialect === 'postgres' ? column.primaryKey() : column.primaryKey().autoIncrement(),
            )
            .addColumn('name', 'varchar(100)', (column) => column.notNull())
            .addColumn('email', 'varchar(200)', (column) => column.notNull())
            .addColumn('created_at', dialect === 'postgres' ? 'timestamptz' : 'timestamp', (column) =>
              column.notNull().defaultTo(sql`CURRENT_TIMESTAMP`),
            )
            .execute()
        },
      },
    }),
  }
}

/**
 * Runs the pending migrations and resolves with what ran; rejects with the Migrator's error. Through
 * `db.writer`: every statement on the writer, including the reads of the migration tables (their
 * names are not Kysely's defaults, which createDb would send to the writer by itself).
 */
export async function migrateToLatest(
  db: ResilientDb<Database>,
  dialect: Dialect,
): Promise<readonly MigrationResult[]> {
  const migrator = new Migrator({ db: db.writer, provider: provider(dialect), ...MIGRATION_TABLES })
  const { error, results = [] } = await migrator.migrateToLatest()
  if (error !== undefined) throw error
  return results
}
