import type { ColumnType, Generated, Selectable } from 'kysely'
// In your own project these are the same imports: the package name, not a path.
import { getConnection, type ResilientDb, resetConnection } from 'kysely-resilient/lambda'

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
 * One JSON line on stdout, which Lambda sends to CloudWatch Logs: `{"level":"warn","msg":"db reader
 * ejected","event":"reader-ejected","endpoint":"reader-0",...}`. Filter with
 * `{ $.event = "failover" }`, or `{ $.level = "error" }`, in CloudWatch Logs Insights or a metric filter.
 */
export function log(
  level: 'info' | 'warn' | 'error',
  entry: Readonly<Record<string, unknown>> & { msg: string },
): void {
  console.log(JSON.stringify({ level, ...entry }))
}

// The container's db is created once by getConnection() and reused by warm invocations; its events
// are subscribed once per db (a new one after resetConnection()).
const watched = new WeakSet<ResilientDb<Database>>()

/**
 * The container's database, configured from the environment by `getConnection()`: `DB_DIALECT`
 * (`postgres` or `mysql`), `DB_WRITER_URL`, optionally `DB_READER_URLS` (comma-separated), and how
 * to authenticate. Deployed: `DB_AUTH=iam` with the IAM user in the URLs and no password (tokens are
 * signed with the execution role for `AWS_REGION`, which Lambda sets). Locally: no `DB_AUTH`, and the
 * password in the URLs. A missing or wrong variable is a `ConfigError` naming it.
 */
export async function connection(): Promise<Connection> {
  const db = await getConnection<Database>()
  if (!watched.has(db)) {
    watched.add(db)
    // What an operator greps for. Payloads hold endpoint names (writer, reader-0), categories, codes
    // and timings; never a host or a credential.
    db.on('failover', (e) => log('warn', { msg: 'db failover', event: 'failover', ...e }))
    db.on('reader-ejected', (e) => log('warn', { msg: 'db reader ejected', event: 'reader-ejected', ...e }))
    db.on('reader-restored', (e) =>
      log('info', { msg: 'db reader restored', event: 'reader-restored', ...e }),
    )
    db.on('retry', (e) => log('warn', { msg: 'db statement retry', event: 'retry', ...e }))
    db.on('endpoint-unresponsive', (e) =>
      log('error', { msg: 'db endpoint unresponsive', event: 'endpoint-unresponsive', ...e }),
    )
    db.on('credentials-refreshed', (e) =>
      log('info', { msg: 'db credentials refreshed', event: 'credentials-refreshed', ...e }),
    )
    db.on('error', (e) => log('warn', { msg: 'db background error', event: 'error', ...e }))
  }
  // getConnection() validated DB_DIALECT already, so this is one of the two.
  const dialect: Dialect = process.env.DB_DIALECT?.trim() === 'mysql' ? 'mysql' : 'postgres'
  return { db, dialect }
}

/**
 * Closes the container's connections, so the next invocation starts afresh. For the local scripts
 * (which must close their sockets to exit) and for tests.
 */
export async function closeConnection(): Promise<void> {
  await resetConnection()
}
