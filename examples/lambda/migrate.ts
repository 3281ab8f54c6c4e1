/**
 * The migration step, apart from the request handler: deploy it as its own function (same bundle,
 * handler `migrate.handler`, a role and DB user allowed to change the schema) and invoke it once per
 * deployment, before traffic reaches the new API version, e.g. from the pipeline:
 *
 *   aws lambda invoke --function-name users-migrate out.json && cat out.json
 *
 * or run it from a machine that reaches the database:
 *
 *   DB_DIALECT=postgres DB_WRITER_URL=postgres://migrator:secret@localhost:5432/app npx tsx examples/lambda/migrate.ts
 *
 * The API function then needs no DDL rights and never checks the schema on a request. Safe to run
 * twice or concurrently: the Migrator takes a lock and skips what ran.
 */
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { closeConnection, connection, log } from './db.js'
import { migrateToLatest } from './migrations.js'

export interface MigrateResult {
  /** Names of the migrations this run applied (empty: the schema was up to date). */
  readonly applied: readonly string[]
}

export async function handler(): Promise<MigrateResult> {
  const { db, dialect } = await connection()
  try {
    const results = await migrateToLatest(db, dialect)
    for (const { migrationName, status } of results) {
      log(status === 'Success' ? 'info' : 'error', {
        msg: `migration ${migrationName}: ${status}`,
        migration: migrationName,
        status,
      })
    }
    return { applied: results.filter((r) => r.status === 'Success').map((r) => r.migrationName) }
  } catch (error) {
    log('error', {
      msg: 'migration failed',
      error: error instanceof Error ? `${error.name}: ${error.message}` : 'unknown',
    })
    throw error
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  process.env.DB_DIALECT ??= 'postgres'
  try {
    console.log(JSON.stringify(await handler()))
  } catch {
    process.exitCode = 1
  } finally {
    // A Lambda container keeps its connections; a script must close them to exit.
    await closeConnection()
  }
}
