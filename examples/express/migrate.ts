/**
 * Brings the schema up to date with Kysely's `Migrator`, then exits. Run it at deploy time, before the
 * new version of the service starts, as a user allowed to change the schema; the service itself then
 * needs only SELECT/INSERT/UPDATE/DELETE on its tables.
 *
 *   DB_WRITER_URL=postgres://migrator:secret@primary.internal:5432/app npx tsx examples/express/migrate.ts
 *
 * Safe to run twice, and from several instances at once: the Migrator takes a lock and skips what ran.
 */
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { type MigrationResult, Migrator } from 'kysely/migration'
import {
  createDatabase,
  type Database,
  describeError,
  jsonLogger,
  type Logger,
  type ResilientDb,
  type SqlDialect,
} from './db.js'
import { migrationProvider } from './migrations.js'

/**
 * Runs every pending migration on the writer. `db` can be the createDb instance as it is: the Migrator's
 * tables (`kysely_migration`, `kysely_migration_lock`) are always read from the writer and its DDL and
 * writes go there too, so it never takes its state from a replica that is behind.
 * Resolves with the migrations that ran; rejects (having logged each result) when one failed.
 */
export async function migrateToLatest(
  db: ResilientDb<Database>,
  dialect: SqlDialect,
  log: Logger = jsonLogger,
): Promise<readonly MigrationResult[]> {
  const migrator = new Migrator({ db, provider: migrationProvider(dialect) })
  const { error, results = [] } = await migrator.migrateToLatest()
  for (const result of results) {
    log(result.status === 'Success' ? 'info' : 'error', {
      msg: `migration ${result.migrationName}: ${result.status}`,
      migration: result.migrationName,
      status: result.status,
    })
  }
  if (error !== undefined) throw error
  if (results.length === 0) log('info', { msg: 'schema up to date: no pending migration' })
  return results
}

async function main(): Promise<void> {
  const { db, dialect } = createDatabase(process.env)
  try {
    await migrateToLatest(db, dialect)
  } finally {
    await db.destroy()
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((error: unknown) => {
    jsonLogger('error', { msg: 'migration failed', error: describeError(error) })
    process.exit(1)
  })
}
