import mysql from 'mysql2/promise'
import pg from 'pg'

export type Engine = 'postgres' | 'mysql'

export type Row = Record<string, unknown>

/**
 * Runs one statement on a fresh connection and closes it. Test-support plumbing only: short-lived
 * connections cannot leak into the code under test and need no teardown. Placeholders are the driver's
 * own (`$1` for PostgreSQL, `?` for MySQL/MariaDB).
 */
export async function queryOnce(
  engine: Engine,
  url: string,
  sql: string,
  params: readonly unknown[] = [],
): Promise<Row[]> {
  return engine === 'postgres' ? pgQuery(url, sql, params) : mysqlQuery(url, sql, params)
}

export async function pgQuery(url: string, sql: string, params: readonly unknown[] = []): Promise<Row[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
  // A server killed mid-query makes the client emit 'error'; without a listener that crashes the worker.
  client.on('error', () => {})
  try {
    await client.connect()
    const result = await client.query<Row>(sql, [...params])
    return result.rows
  } finally {
    await client.end().catch(() => {})
  }
}

export async function mysqlQuery(url: string, sql: string, params: readonly unknown[] = []): Promise<Row[]> {
  const connection = await mysql.createConnection({ uri: url, connectTimeout: 5_000 })
  connection.on('error', () => {})
  try {
    const [rows] = await connection.query(sql, [...params])
    return Array.isArray(rows) ? (rows as Row[]) : []
  } finally {
    await connection.end().catch(() => connection.destroy())
  }
}

/**
 * The engine's own error identifier as a string: SQLSTATE for PostgreSQL (`'25006'`), the numeric errno
 * for MySQL/MariaDB (`'1290'`). `undefined` when the error did not come from the server.
 */
export function serverErrorCode(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined
  if ('errno' in error && typeof error.errno === 'number' && 'sqlState' in error) return String(error.errno)
  // pg's DatabaseError carries the server's `severity`; socket errors (ECONNREFUSED, EPIPE) do not.
  if ('severity' in error && 'code' in error && typeof error.code === 'string') return error.code
  return undefined
}
