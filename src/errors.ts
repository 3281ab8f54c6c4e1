/**
 * The `code` of every error this library throws itself, one per situation, stable across releases.
 * A union rather than `string` so that a `switch` over it is checked: a misspelt code is a compile
 * error, and a `never` default finds the codes a new release adds.
 *
 * @example
 * ```ts
 * import { ResilientError, type ResilientErrorCode } from 'kysely-resilient'
 *
 * function advice(code: ResilientErrorCode): string {
 *   switch (code) {
 *     case 'POOL_ACQUIRE_TIMEOUT':
 *     case 'CONNECT_TIMEOUT':
 *     case 'NO_READER_AVAILABLE':
 *     case 'SERVER_UNRESPONSIVE':
 *     case 'CREDENTIALS_UNAVAILABLE':
 *       return 'try again later'
 *     case 'QUERY_TIMEOUT':
 *       return 'may or may not have run'
 *     case 'CONFIG_INVALID':
 *     case 'DRIVER_MISSING':
 *     case 'DB_DESTROYED':
 *     case 'CREDENTIALS_FAILED':
 *     case 'AUTH_REJECTED':
 *     case 'INVALID_CONSISTENCY_TOKEN':
 *       return 'fix the setup'
 *     case 'REPLICATION_POSITION_UNAVAILABLE':
 *       return 'read from db.writer instead'
 *     default: {
 *       const unknown: never = code
 *       return unknown
 *     }
 *   }
 * }
 *
 * try {
 *   await db.selectFrom('person').selectAll().execute()
 * } catch (err) {
 *   if (err instanceof ResilientError) console.error(advice(err.code))
 * }
 * ```
 */
export type ResilientErrorCode =
  | 'CONFIG_INVALID'
  | 'DRIVER_MISSING'
  | 'DB_DESTROYED'
  | 'POOL_ACQUIRE_TIMEOUT'
  | 'CONNECT_TIMEOUT'
  | 'CONNECTION_HOOK_TIMEOUT'
  | 'NO_READER_AVAILABLE'
  | 'QUERY_TIMEOUT'
  | 'SERVER_UNRESPONSIVE'
  | 'CREDENTIALS_UNAVAILABLE'
  | 'CREDENTIALS_FAILED'
  | 'AUTH_REJECTED'
  | 'INVALID_CONSISTENCY_TOKEN'
  | 'REPLICATION_POSITION_UNAVAILABLE'

/**
 * Base class of every error this library throws itself. Driver errors (from `pg`, `mysql2` or Node
 * sockets) are passed through untouched so callers keep their codes and stack traces.
 *
 * @example
 * ```ts
 * import { ResilientError } from 'kysely-resilient'
 *
 * try {
 *   await db.selectFrom('person').selectAll().execute()
 * } catch (err) {
 *   if (err instanceof ResilientError) console.error(err.code, err.message)
 * }
 * ```
 */
export class ResilientError extends Error {
  // A literal, not the class's own name: minifiers (a Lambda bundle) rename classes.
  override name = 'ResilientError'

  /** A stable, machine-readable code such as `'CONFIG_INVALID'`. */
  readonly code: ResilientErrorCode

  constructor(code: ResilientErrorCode, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}

/**
 * Thrown by `createDb` when the configuration is invalid. `setting` names the offending option with
 * its path, for example `'pool.max'` or `'readers[1]'`, and the message says what was expected.
 * Secrets are never part of the message.
 *
 * @example
 * ```ts
 * import { ConfigError, createDb } from 'kysely-resilient'
 *
 * try {
 *   createDb({ dialect: 'postgres', writer: 'not a url' })
 * } catch (err) {
 *   if (err instanceof ConfigError) console.error(err.setting) // 'writer'
 * }
 * ```
 */
export class ConfigError extends ResilientError {
  override name = 'ConfigError'

  /** Path of the setting that is wrong, e.g. `'pool.max'`. */
  readonly setting: string
  /**
   * What is wrong with it, without the prefix and the setting: the message is
   * `Invalid kysely-resilient config: <setting>: <detail>`. Never holds a secret either.
   */
  readonly detail: string

  constructor(setting: string, detail: string) {
    super('CONFIG_INVALID', `Invalid kysely-resilient config: ${setting}: ${detail}`)
    this.setting = setting
    this.detail = detail
  }
}

/**
 * Thrown when a package needed by the configuration is not installed: a dialect's driver, or the AWS
 * SDK package behind `auth: { type: 'iam' }` or `{ type: 'secret' }`. The message names the package to
 * install, for example `npm install pg`.
 *
 * @example
 * ```ts
 * import { MissingDriverError } from 'kysely-resilient'
 *
 * try {
 *   await db.selectFrom('person').selectAll().execute()
 * } catch (err) {
 *   if (err instanceof MissingDriverError) console.error(`install ${err.packageName}`)
 * }
 * ```
 */
export class MissingDriverError extends ResilientError {
  override name = 'MissingDriverError'

  /** The npm package that must be installed. */
  readonly packageName: string

  /**
   * @param neededFor - What needs it, e.g. `"the 'postgres' dialect"` or `"auth type 'iam'"`.
   */
  constructor(packageName: string, neededFor: string, cause: unknown) {
    super(
      'DRIVER_MISSING',
      `kysely-resilient needs the '${packageName}' package for ${neededFor}, and it could not be loaded. ` +
        `Install it with: npm install ${packageName}`,
      { cause },
    )
    this.packageName = packageName
  }
}

/**
 * Thrown by every query after `db.destroy()` has been called.
 *
 * @example
 * ```ts
 * import { DatabaseDestroyedError } from 'kysely-resilient'
 *
 * await db.destroy()
 * await db.selectFrom('person').selectAll().execute() // rejects with DatabaseDestroyedError
 * ```
 */
export class DatabaseDestroyedError extends ResilientError {
  override name = 'DatabaseDestroyedError'

  constructor() {
    super(
      'DB_DESTROYED',
      'This database was destroyed with db.destroy(); its pools are closed. Create a new one with createDb().',
    )
  }
}

/**
 * Thrown when a caller waited `pool.acquireTimeoutMs` for a free connection and none became
 * available. Nothing was sent to the server, so the statement is always safe to retry.
 *
 * @example
 * ```ts
 * import { PoolTimeoutError } from 'kysely-resilient'
 *
 * try {
 *   await db.selectFrom('person').selectAll().execute()
 * } catch (err) {
 *   if (err instanceof PoolTimeoutError) console.warn(`pool ${err.endpoint} is exhausted`)
 * }
 * ```
 */
export class PoolTimeoutError extends ResilientError {
  override name = 'PoolTimeoutError'

  /** Name of the endpoint whose pool was exhausted, e.g. `'writer'`. */
  readonly endpoint: string

  /**
   * @param refusal - The server's last refusal of a new session (too many connections), when the pool
   * could not grow because of it; it becomes the error's `cause`.
   */
  constructor(endpoint: string, timeoutMs: number, max: number, refusal?: { open: number; error: unknown }) {
    super(
      'POOL_ACQUIRE_TIMEOUT',
      refusal === undefined
        ? `Timed out after ${timeoutMs} ms waiting for a free connection to the ${endpoint} endpoint ` +
            `(all ${max} connections in use; raise pool.max or pool.acquireTimeoutMs, or find the leak).`
        : `Timed out after ${timeoutMs} ms waiting for a free connection to the ${endpoint} endpoint: ` +
            `the server refuses new sessions (too many connections), and ${
              refusal.open === 0
                ? 'this pool holds none'
                : `the ${refusal.open} this pool holds were all in use`
            }. Lower pool.max across your processes, raise the server's connection limit, or put a ` +
            'connection proxy in front of it.',
      refusal === undefined ? undefined : { cause: refusal.error },
    )
    this.endpoint = endpoint
  }
}

/**
 * Thrown when a new connection could not be opened within `pool.connectTimeoutMs`.
 *
 * @example
 * ```ts
 * import { ConnectTimeoutError } from 'kysely-resilient'
 *
 * try {
 *   await db.selectFrom('person').selectAll().execute()
 * } catch (err) {
 *   if (err instanceof ConnectTimeoutError) console.warn(`cannot reach ${err.endpoint}`)
 * }
 * ```
 */
export class ConnectTimeoutError extends ResilientError {
  override name = 'ConnectTimeoutError'

  /** Name of the endpoint that could not be reached, e.g. `'reader-0'`. */
  readonly endpoint: string

  constructor(endpoint: string, timeoutMs: number, options?: ErrorOptions) {
    super('CONNECT_TIMEOUT', `Could not connect to the ${endpoint} endpoint within ${timeoutMs} ms.`, options)
    this.endpoint = endpoint
  }
}

/**
 * Thrown when `onCreateConnection` or `onReserveConnection` did not finish within
 * `pool.acquireTimeoutMs`. The connection is closed and the statement that asked for it was not sent,
 * so it is retried like a connection that could not be opened.
 *
 * @example
 * ```ts
 * import { ConnectionHookTimeoutError } from 'kysely-resilient'
 *
 * try {
 *   await db.selectFrom('person').selectAll().execute()
 * } catch (err) {
 *   if (err instanceof ConnectionHookTimeoutError) console.warn(`${err.hook} is slow on ${err.endpoint}`)
 * }
 * ```
 */
export class ConnectionHookTimeoutError extends ResilientError {
  override name = 'ConnectionHookTimeoutError'

  /** Name of the endpoint whose connection the hook ran on, e.g. `'writer'`. */
  readonly endpoint: string
  /** `'onCreateConnection'` or `'onReserveConnection'`. */
  readonly hook: 'onCreateConnection' | 'onReserveConnection'

  constructor(endpoint: string, hook: 'onCreateConnection' | 'onReserveConnection', timeoutMs: number) {
    super(
      'CONNECTION_HOOK_TIMEOUT',
      `${hook} did not finish within ${timeoutMs} ms on a connection of the ${endpoint} endpoint; the connection was closed and the statement not sent.`,
    )
    this.endpoint = endpoint
    this.hook = hook
  }
}

/**
 * Thrown for a read when every reader is out of rotation and `routing.fallback` is `'error'`.
 * Nothing was sent to any server.
 *
 * @example
 * ```ts
 * import { NoReaderAvailableError } from 'kysely-resilient'
 *
 * try {
 *   await db.selectFrom('person').selectAll().execute()
 * } catch (err) {
 *   if (err instanceof NoReaderAvailableError) return serveFromCache()
 * }
 * ```
 */
export class NoReaderAvailableError extends ResilientError {
  override name = 'NoReaderAvailableError'

  constructor() {
    super(
      'NO_READER_AVAILABLE',
      "No reader is in rotation (all failed or lag too far behind) and routing.fallback is 'error'.",
    )
  }
}

/**
 * Thrown when a statement passed `pool.queryTimeoutMs` without an answer. The connection was
 * destroyed. The statement may or may not have run on the server.
 *
 * @example
 * ```ts
 * import { QueryTimeoutError } from 'kysely-resilient'
 *
 * try {
 *   await db.selectFrom('report').selectAll().execute()
 * } catch (err) {
 *   if (err instanceof QueryTimeoutError) console.warn(`no answer from ${err.endpoint}`)
 * }
 * ```
 */
export class QueryTimeoutError extends ResilientError {
  override name = 'QueryTimeoutError'

  /** Name of the endpoint that did not answer. */
  readonly endpoint: string

  constructor(endpoint: string, timeoutMs: number) {
    super(
      'QUERY_TIMEOUT',
      `No answer from the ${endpoint} endpoint within ${timeoutMs} ms (pool.queryTimeoutMs); the connection was destroyed.`,
    )
    this.endpoint = endpoint
  }
}

/**
 * Thrown when the endpoint's server stopped answering: a statement ran longer than
 * `pool.probeAfterMs`, and a ping over a separate connection got no reply within
 * `pool.probeTimeoutMs` while nothing else completed on the endpoint (a frozen VM, stuck storage, a
 * network partition). Statements in flight fail with it (their connections are destroyed; a write
 * may have run, so it is `'ambiguous'`), and new ones fail with it at once (nothing sent:
 * `'unavailable'`) until the server answers again. Reads are retried on another endpoint.
 *
 * @example
 * ```ts
 * import { ServerUnresponsiveError } from 'kysely-resilient'
 *
 * try {
 *   await db.insertInto('order').values(order).execute()
 * } catch (err) {
 *   if (err instanceof ServerUnresponsiveError) console.warn(`${err.endpoint} stopped answering`)
 * }
 * ```
 */
export class ServerUnresponsiveError extends ResilientError {
  override name = 'ServerUnresponsiveError'

  /** Name of the endpoint whose server stopped answering. */
  readonly endpoint: string

  constructor(endpoint: string, probeTimeoutMs: number) {
    super(
      'SERVER_UNRESPONSIVE',
      `The ${endpoint} endpoint's server stopped answering: a liveness ping got no reply within ` +
        `${probeTimeoutMs} ms (pool.probeTimeoutMs) while statements were running; its connections were destroyed.`,
    )
    this.endpoint = endpoint
  }
}

/**
 * Thrown when a new connection needs credentials and the configured source (`auth`) could not
 * supply them: the signer or Secrets Manager failed, or `getToken` threw or returned no string.
 * Nothing was sent to the database. `code` is `'CREDENTIALS_UNAVAILABLE'` when the failure looks
 * transient (throttling, a network error, a 5xx; `classifyError` says `'unavailable'`) and
 * `'CREDENTIALS_FAILED'` otherwise (a missing secret, access denied; `'fatal'`). The source's own
 * error is the `cause`; no secret value is ever part of the message.
 *
 * @example
 * ```ts
 * import { CredentialSourceError } from 'kysely-resilient'
 *
 * try {
 *   await db.selectFrom('person').selectAll().execute()
 * } catch (err) {
 *   if (err instanceof CredentialSourceError) console.error(`${err.authType} failed for ${err.endpoint}`)
 * }
 * ```
 */
export class CredentialSourceError extends ResilientError {
  override name = 'CredentialSourceError'

  /** Name of the endpoint that needed credentials. */
  readonly endpoint: string
  /** `'iam'`, `'secret'` or `'token'`. */
  readonly authType: string

  constructor(
    endpoint: string,
    authType: string,
    problem: string,
    transient: boolean,
    options?: ErrorOptions,
  ) {
    super(
      transient ? 'CREDENTIALS_UNAVAILABLE' : 'CREDENTIALS_FAILED',
      `Could not get credentials for the ${endpoint} endpoint from auth type '${authType}': ${problem}`,
      options,
    )
    this.endpoint = endpoint
    this.authType = authType
  }
}

/**
 * Thrown when the database rejected the credentials from `auth` (`'iam'`, `'secret'` or
 * `'token'`) twice: once with the cached ones and once with freshly fetched ones. `classifyError`
 * says `'fatal'`: the source hands out credentials the database does not accept (wrong user, a
 * missing `GRANT rds_iam`, a secret for another database). The database's error is the `cause`.
 *
 * @example
 * ```ts
 * import { AuthenticationFailedError } from 'kysely-resilient'
 *
 * try {
 *   await db.selectFrom('person').selectAll().execute()
 * } catch (err) {
 *   if (err instanceof AuthenticationFailedError) alert(`database refuses ${err.authType} credentials`)
 * }
 * ```
 */
export class AuthenticationFailedError extends ResilientError {
  override name = 'AuthenticationFailedError'

  /** Name of the endpoint that refused the credentials. */
  readonly endpoint: string
  /** `'iam'`, `'secret'` or `'token'`. */
  readonly authType: string

  constructor(endpoint: string, authType: string, user: string | undefined, options?: ErrorOptions) {
    super(
      'AUTH_REJECTED',
      `The ${endpoint} endpoint rejected the credentials from auth type '${authType}'` +
        `${user === undefined ? '' : ` for user '${user}'`}, also after fetching them again. ` +
        'Check that the source hands out credentials for this database and user' +
        `${authType === 'iam' ? " (PostgreSQL: GRANT rds_iam TO the user; MySQL: the user IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS')" : ''}.`,
      options,
    )
    this.endpoint = endpoint
    this.authType = authType
  }
}

/**
 * Thrown by `db.withReadYourWrites(fn, { after })` when a token is not one `db.consistencyToken()`
 * made for a database of the same dialect: a truncated cookie, a header from another service. The
 * message says what is wrong with it; tokens are not secret. `classifyError` says `'fatal'`.
 *
 * @example
 * ```ts
 * import { InvalidConsistencyTokenError } from 'kysely-resilient'
 *
 * try {
 *   await db.withReadYourWrites(() => loadCart(id), { after: req.get('x-consistency') })
 * } catch (err) {
 *   if (err instanceof InvalidConsistencyTokenError) res.status(400).send(err.message)
 * }
 * ```
 */
export class InvalidConsistencyTokenError extends ResilientError {
  override name = 'InvalidConsistencyTokenError'

  constructor(problem: string) {
    super('INVALID_CONSISTENCY_TOKEN', `Not a consistency token made by db.consistencyToken(): ${problem}.`)
  }
}

/**
 * Thrown by `db.consistencyToken()` when the writer's replication position cannot be read: the
 * engine keeps none this library can compare: MySQL with `gtid_mode` other than `ON`, MariaDB with
 * the binary log off. Reads that must see earlier writes are not affected: without positions they
 * run on the writer. A query that fails for another reason (a lost connection) rejects with the
 * driver's own error instead. `classifyError` says `'fatal'`.
 *
 * @example
 * ```ts
 * import { ReplicationPositionUnavailableError } from 'kysely-resilient'
 *
 * const token = await db.consistencyToken().catch((err) => {
 *   if (err instanceof ReplicationPositionUnavailableError) return undefined // readers use the writer
 *   throw err
 * })
 * ```
 */
export class ReplicationPositionUnavailableError extends ResilientError {
  override name = 'ReplicationPositionUnavailableError'

  /** Name of the endpoint whose position was asked for. */
  readonly endpoint: string

  constructor(endpoint: string, problem: string, options?: ErrorOptions) {
    super(
      'REPLICATION_POSITION_UNAVAILABLE',
      `Could not read the replication position of the ${endpoint} endpoint: ${problem}`,
      options,
    )
    this.endpoint = endpoint
  }
}
