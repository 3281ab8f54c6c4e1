import type { ColumnType, Generated, Selectable } from 'kysely'
import { createDb, type ResilientDb, type SqlDialect } from 'kysely-resilient'

export type { ResilientDb, SqlDialect } from 'kysely-resilient'

export interface UsersTable {
  id: Generated<number>
  name: string
  email: string
  /** Every user starts with 100; only a transfer (POST /users/:id/credits) changes it. */
  credits: ColumnType<number, never, number>
  /** Set by the database; never written by the application. */
  created_at: ColumnType<Date, never, never>
}

/** One row per transfer, keyed by the client's `Idempotency-Key`: a transfer applies at most once. */
export interface CreditTransfersTable {
  request_id: string
  from_user_id: number
  to_user_id: number
  amount: number
  created_at: ColumnType<Date, never, never>
}

export interface Database {
  users: UsersTable
  credit_transfers: CreditTransfersTable
}

export type User = Selectable<UsersTable>
export type CreditTransfer = Selectable<CreditTransfersTable>

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

/** One structured log entry; `log` writes it as one JSON line. */
export type LogEntry = Readonly<Record<string, unknown>> & { readonly msg: string }
export type Logger = (level: 'info' | 'warn' | 'error', entry: LogEntry) => void

/** One JSON line per entry on stdout (info) or stderr (warn, error): what a log pipeline ingests. */
export const jsonLogger: Logger = (level, entry) => {
  const line = JSON.stringify({ time: new Date().toISOString(), level, ...entry })
  if (level === 'info') console.log(line)
  else console.error(line)
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

/**
 * Logs what an operator wants to know about the database, one JSON line each: the writer moved
 * (`failover`), a reader left or rejoined the rotation, a statement is being retried, an endpoint
 * stopped or resumed answering, a background check failed. The payloads carry endpoint names
 * (`writer`, `reader-0`), categories, codes and timings; never an address or a credential.
 */
export function logDatabaseEvents(db: ResilientDb<Database>, log: Logger): void {
  db.on('failover', (e) => log('warn', { msg: 'db failover', event: 'failover', ...e }))
  db.on('reader-ejected', (e) => log('warn', { msg: 'db reader ejected', event: 'reader-ejected', ...e }))
  db.on('reader-restored', (e) => log('info', { msg: 'db reader restored', event: 'reader-restored', ...e }))
  db.on('retry', (e) => log('warn', { msg: 'db statement retry', event: 'retry', ...e }))
  db.on('endpoint-unresponsive', (e) =>
    log('error', { msg: 'db endpoint unresponsive', event: 'endpoint-unresponsive', ...e }),
  )
  db.on('endpoint-responsive', (e) =>
    log('info', { msg: 'db endpoint responsive', event: 'endpoint-responsive', ...e }),
  )
  db.on('error', (e) => log('warn', { msg: 'db background error', event: 'error', ...e }))
}

function parseDialect(value: string | undefined): SqlDialect {
  const dialect = value?.trim() || 'postgres'
  if (dialect === 'postgres' || dialect === 'mysql') return dialect
  throw new Error(`DB_DIALECT must be 'postgres' or 'mysql', not '${dialect}'`)
}

/**
 * One line for the server log: error class, code and message, with any credentials in a URL or a
 * `password=` pair masked. (This library and the drivers keep passwords out of their messages; this is
 * a second line of defence for everything else.)
 */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return 'non-Error value thrown'
  const code = 'code' in error && typeof error.code === 'string' ? ` [${error.code}]` : ''
  const message = error.message
    .replace(/\/\/([^:/@\s]*):[^@/\s]*@/g, '//$1:***@')
    .replace(/(password\s*[=:]\s*)\S+/gi, '$1***')
  return `${error.name}${code}: ${message}`
}
