/** How a failed request is counted: a short, stable label per kind of error. */
import { ResilientError } from '../../src/index.js'
import { serverErrorCode } from '../../test/support/sql.js'

/**
 * The library's own errors by class name (`PoolTimeoutError`), server errors by their SQLSTATE
 * (PostgreSQL, `53300`) or errno (MariaDB, `1040`), socket and driver errors by their `code`
 * (`ECONNRESET`, `PROTOCOL_CONNECTION_LOST`), and anything else by its class name and the start of its
 * message (pg throws plain Errors such as "Connection terminated unexpectedly").
 */
export function errorLabel(error: unknown): string {
  if (error instanceof ResilientError) return error.name
  const server = serverErrorCode(error)
  // PgBouncer sends every failure of its own as 08P01 with a fixed message: the message tells them apart.
  if (server === '08P01' && error instanceof Error) return `08P01 ${error.message.slice(0, 44)}`
  if (server !== undefined) return server
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string') {
    return error.code
  }
  if (error instanceof Error) return `${error.name}: ${error.message.slice(0, 48)}`
  return String(error).slice(0, 60)
}

/** One line of the error's message (and its cause's label), for the samples printed under the table. */
export function errorSample(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error)
  const line = message.split('\n')[0]?.slice(0, 140) ?? ''
  const cause = error instanceof Error && error.cause !== undefined ? errorLabel(error.cause) : undefined
  return cause === undefined ? line : `${line} (cause: ${cause})`
}
