/**
 * What a failed statement means for the caller, in five verdicts. Each one answers two questions:
 * did the statement (or transaction) take effect, and will trying again help?
 *
 * - `'unavailable'`: the statement never reached a server (connection refused, DNS failure, connect
 *   timeout, too many connections, pool exhausted, server starting up). Nothing ran: always safe to retry.
 * - `'conflict'`: the server rolled the work back because of a concurrent transaction (deadlock,
 *   serialization failure, lock wait timeout). Safe to retry the whole transaction from its start.
 * - `'read-only'`: a write reached a server that cannot take writes, typically a writer demoted by a
 *   failover. The statement did not run: safe to retry once the writer has been found again.
 * - `'ambiguous'`: the connection broke after the statement was sent. It may or may not have
 *   committed; retry only when the work is idempotent.
 * - `'fatal'`: anything a retry will not fix (syntax, constraint violation, permissions, bad
 *   configuration, a statement timeout, a caller's abort).
 *
 * @example
 * ```ts
 * import { classifyError, type ErrorCategory } from 'kysely-resilient'
 *
 * const category: ErrorCategory = classifyError(err).category
 * if (category === 'conflict') console.warn('transaction lost a race; retrying')
 * ```
 */
export type ErrorCategory = 'unavailable' | 'conflict' | 'read-only' | 'ambiguous' | 'fatal'

/**
 * Where an error happened, when the caller knows it. `'connect'`: while opening the connection
 * (TCP, TLS, authentication, session setup), so no statement of the caller was sent. `'query'`: on an
 * open connection.
 *
 * @example
 * ```ts
 * const phase: ErrorPhase = 'connect'
 * ```
 */
export type ErrorPhase = 'connect' | 'query'

/**
 * What the caller knows about the error that the error itself may not say.
 *
 * @example
 * ```ts
 * import { classifyError, type ClassifyErrorContext } from 'kysely-resilient'
 *
 * const context: ClassifyErrorContext = { phase: 'connect' }
 * try {
 *   await client.connect()
 * } catch (err) {
 *   console.log(classifyError(err, context).category) // a reset while connecting is 'unavailable'
 * }
 * ```
 */
export interface ClassifyErrorContext {
  /**
   * Set to `'connect'` when the error came from opening a connection. A connection that breaks
   * before any statement was sent is `'unavailable'`, not `'ambiguous'`; the drivers do not always
   * say which phase they were in (`pg`'s "Connection terminated unexpectedly" and `mysql2`'s
   * `PROTOCOL_CONNECTION_LOST` look the same in both).
   *
   * Default: unset (decided from the error's shape; when it says nothing, the query phase is assumed,
   * which is the cautious choice). Example: `'connect'`.
   */
  readonly phase?: ErrorPhase
}

/**
 * The verdict of {@link classifyError} on one error.
 *
 * @example
 * ```ts
 * import { classifyError, type ErrorClassification } from 'kysely-resilient'
 *
 * const verdict: ErrorClassification = classifyError(err)
 * // { category: 'conflict', code: '40P01', reason: 'deadlock detected: ...', retryable: true, connectionLost: false }
 * if (verdict.connectionLost) connection.destroy()
 * ```
 */
export interface ErrorClassification {
  /** The verdict; see {@link ErrorCategory}. */
  readonly category: ErrorCategory
  /**
   * The most specific identifier of the error: the SQLSTATE for PostgreSQL (`'40P01'`), the
   * server's error number as a string for MySQL/MariaDB (`'1213'`), the driver's code for driver
   * errors (`'PROTOCOL_CONNECTION_LOST'`), the Node.js code for socket and DNS errors
   * (`'ECONNREFUSED'`), or this library's code (`'POOL_ACQUIRE_TIMEOUT'`). `undefined` when the
   * error carries none.
   */
  readonly code: string | undefined
  /**
   * A short, fixed explanation of the verdict. Safe to log: it is never built from the error's
   * message, which can contain user names, table contents or SQL.
   */
  readonly reason: string
  /**
   * True for `'unavailable'`, `'conflict'` and `'read-only'`: retrying cannot apply the work twice.
   * `'ambiguous'` is false: only the caller knows whether the work is idempotent.
   */
  readonly retryable: boolean
  /**
   * True when the connection (or connection attempt) the error came from is dead or pinned to the
   * wrong server and must be destroyed, never reused: the socket broke, the server ended the
   * session, or it is connected to a server that no longer takes writes. False when the session is
   * still healthy (a deadlock or a syntax error leaves it usable) or when no connection was involved
   * (pool timeouts, configuration errors, a caller's abort).
   */
  readonly connectionLost: boolean
}
