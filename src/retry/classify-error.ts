import { isAbortedTransactionError, NoResultError } from 'kysely'
import { ResilientError } from '../errors.js'
import type {
  ClassifyErrorContext,
  ErrorCategory,
  ErrorClassification,
  ErrorPhase,
} from './error-classification.js'
import { isRetryableCategory } from './retry-policy.js'

/**
 * Classifies an error thrown by `pg`, `mysql2`, Kysely, this library or a Node.js socket into one
 * of five categories, and says whether retrying is safe and whether the connection must be thrown
 * away. It never throws, and its `reason` never contains text from the error's message.
 *
 * Wrapped errors are unwrapped: when the error itself is not recognised, its `cause` chain is
 * followed, and an `AggregateError` (Node's connect to a host with several addresses throws one) is
 * judged by the most cautious verdict among its errors. Anything unrecognised is `'fatal'`.
 *
 * The full table, with the reasoning behind each entry, is in `docs/error-classification.md`.
 *
 * @param err - Whatever was thrown.
 * @param context - What the caller knows that the error may not say, e.g. `{ phase: 'connect' }`.
 * @example
 * ```ts
 * import { classifyError } from 'kysely-resilient'
 *
 * try {
 *   await db.transaction().execute(async (trx) => transfer(trx, from, to, amount))
 * } catch (err) {
 *   const verdict = classifyError(err)
 *   // e.g. { category: 'conflict', code: '40P01', retryable: true, connectionLost: false, reason: '...' }
 *   if (verdict.retryable) return retryLater()
 *   throw err
 * }
 * ```
 */
export function classifyError(err: unknown, context: ClassifyErrorContext = {}): ErrorClassification {
  try {
    const found = explain(err, context.phase ?? markedPhase(err), new Set(), 0)
    if (found !== undefined) return found
    return verdict(UNRECOGNISED, codeOf(err), false)
  } catch {
    // A hostile getter or proxy must not turn error handling into a second failure.
    return verdict(UNRECOGNISED, undefined, false)
  }
}

// Symbol.for, not a private Symbol: a second copy of this package (ESM and CJS side by side) reads it too.
const PHASE_KEY: unique symbol = Symbol.for('kysely-resilient.errorPhase')

/**
 * Notes on an error thrown while a connection was being opened that no statement had been sent, so
 * that `classifyError` (the application's, `withRetry`'s) knows it without being told: a reset during
 * the handshake (a proxy or load balancer whose backend is down) is `'unavailable'`, not `'ambiguous'`.
 */
export function markConnectPhase(err: unknown): void {
  if (typeof err !== 'object' || err === null) return
  try {
    Object.defineProperty(err, PHASE_KEY, { value: 'connect', enumerable: false, configurable: true })
  } catch {
    // A frozen error cannot carry it; it is then classified as before.
  }
}

/**
 * The server refused a new session because it is short of session slots (PostgreSQL 53300, 57P03;
 * MySQL/MariaDB 1040, 1203, 1226 max_user_connections). That is overload, not a lost server: the pool
 * stops growing and serves its callers from the connections it holds, instead of failing them or
 * suspecting the endpoint.
 */
export function isSessionRefusal({ category, code }: ErrorClassification): boolean {
  return category === 'unavailable' && code !== undefined && SESSION_REFUSAL_CODES.has(code)
}

const SESSION_REFUSAL_CODES: ReadonlySet<string> = new Set(['53300', '57P03', '1040', '1203', '1226'])

function markedPhase(err: unknown): ErrorPhase | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  return Object.getOwnPropertyDescriptor(err, PHASE_KEY)?.value === 'connect' ? 'connect' : undefined
}

/** One entry of the tables below. */
interface Rule {
  readonly category: ErrorCategory
  /** A fixed phrase: never built from the error's message, which may contain secrets or data. */
  readonly reason: string
  /** The session this error came from is dead (or pinned to a server that cannot serve it). */
  readonly connectionLost: boolean
  /**
   * The category when the error happened while connecting. Unset: an `'ambiguous'` rule becomes
   * `'unavailable'` (nothing was sent yet), every other rule keeps its category.
   */
  readonly whileConnecting?: ErrorCategory
}

const UNRECOGNISED: Rule = {
  category: 'fatal',
  reason: 'unrecognised error; not retried',
  connectionLost: false,
}

// Guards against cycles (a.cause = b, b.cause = a) and absurdly deep wrapping.
const MAX_DEPTH = 10

// Most cautious first: when an AggregateError holds several verdicts, the earliest one here wins.
const CAUTION: readonly ErrorCategory[] = ['fatal', 'ambiguous', 'read-only', 'conflict', 'unavailable']

function explain(
  err: unknown,
  phase: ErrorPhase | undefined,
  seen: Set<object>,
  depth: number,
): ErrorClassification | undefined {
  if (typeof err !== 'object' || err === null || seen.has(err) || depth > MAX_DEPTH) return undefined
  seen.add(err)

  // Members first: Node's AggregateError copies the first member's code onto itself, which would
  // hide a more cautious verdict among the others.
  const members = field(err, 'errors')
  if (Array.isArray(members)) {
    const verdicts = members.map((member: unknown) => explain(member, phase, seen, depth + 1))
    // Only when some member is recognised; an unrecognised one then counts as fatal, to stay cautious.
    if (verdicts.some((found) => found !== undefined)) {
      return verdicts
        .map((found, index) => found ?? verdict(UNRECOGNISED, codeOf(members[index]), false))
        .reduce((worst, next) =>
          CAUTION.indexOf(next.category) < CAUTION.indexOf(worst.category) ? next : worst,
        )
    }
  }

  const own = classifyOne(err, phase)
  if (own !== undefined) return own
  return explain(field(err, 'cause'), phase, seen, depth + 1)
}

/** The verdict on this error alone, or `undefined` when it is not one we recognise. */
function classifyOne(err: object, phase: ErrorPhase | undefined): ErrorClassification | undefined {
  const library = libraryRule(err)
  // With the phase: a library error raised before anything was sent (ServerUnresponsiveError from
  // acquire) is 'unavailable', the same error for a statement in flight 'ambiguous'.
  if (library !== undefined) return verdict(library, stringField(err, 'code'), false, phase)

  const caller = callerRule(err)
  if (caller !== undefined) return verdict(caller.rule, caller.code, false)

  const kysely = kyselyRule(err)
  if (kysely !== undefined) return verdict(kysely, undefined, false)

  const sqlState = stringField(err, 'code')
  const severity = stringField(err, 'severity')
  // pg's DatabaseError: the server's SQLSTATE plus a severity. Node's socket errors have no severity,
  // which matters because 'EPIPE' also looks like a five-character SQLSTATE.
  if (severity !== undefined && sqlState !== undefined && /^[0-9A-Z]{5}$/.test(sqlState)) {
    // FATAL and PANIC mean the server process serving this session is exiting.
    const sessionEnded = severity === 'FATAL' || severity === 'PANIC'
    const message = stringField(err, 'message') ?? ''
    const proxyRule = sqlState === '08P01' ? pgbouncerRule(message) : rdsProxyRule(message)
    return verdict(proxyRule ?? postgresRule(sqlState), sqlState, sessionEnded, phase)
  }

  const errno = field(err, 'errno')
  // mysql2's server errors: a positive error number and the SQLSTATE (possibly empty). Node's system
  // errors also have `errno`, but negative and without `sqlState`.
  if (typeof errno === 'number' && errno > 0 && typeof field(err, 'sqlState') === 'string') {
    const message = stringField(err, 'sqlMessage') ?? stringField(err, 'message') ?? ''
    return verdict(mysqlRule(errno, message), String(errno), field(err, 'fatal') === true, phase)
  }

  const code = stringField(err, 'code')
  if (code !== undefined) {
    const matched = codeRule(err, code)
    if (matched !== undefined) return verdict(matched, code, false, phaseOf(err, phase))
  }

  const message = stringField(err, 'message')
  const messageRule = message === undefined ? undefined : DRIVER_MESSAGES.get(message)
  if (messageRule !== undefined) return verdict(messageRule, undefined, false, phase)
  return undefined
}

function rule(
  category: ErrorCategory,
  reason: string,
  connectionLost = false,
  whileConnecting?: ErrorCategory,
): Rule {
  return whileConnecting === undefined
    ? { category, reason, connectionLost }
    : { category, reason, connectionLost, whileConnecting }
}

function verdict(
  matched: Rule,
  code: string | undefined,
  connectionLost: boolean,
  phase?: ErrorPhase,
): ErrorClassification {
  let { category, reason } = matched
  if (phase === 'connect') {
    const connecting = matched.whileConnecting ?? (category === 'ambiguous' ? 'unavailable' : category)
    if (connecting !== category) {
      category = connecting
      reason = `${reason}; it happened while connecting, before any statement was sent`
    }
  }
  return {
    category,
    code,
    reason,
    retryable: isRetryableCategory(category),
    connectionLost: connectionLost || matched.connectionLost,
  }
}

/**
 * A socket error raised by the `connect()` or `getaddrinfo()` system call proves the error came
 * before any statement was sent, whatever the caller said.
 */
function phaseOf(err: object, given: ErrorPhase | undefined): ErrorPhase | undefined {
  const syscall = stringField(err, 'syscall')
  return syscall === 'connect' || syscall === 'getaddrinfo' ? 'connect' : given
}

// ---------------------------------------------------------------------------------------------
// This library's own errors (src/errors.ts).

const LIBRARY_RULES: ReadonlyMap<string, { readonly name: string; readonly rule: Rule }> = new Map([
  [
    'POOL_ACQUIRE_TIMEOUT',
    {
      name: 'PoolTimeoutError',
      rule: rule('unavailable', 'no free connection in the pool within acquireTimeoutMs; nothing was sent'),
    },
  ],
  [
    'CONNECT_TIMEOUT',
    {
      name: 'ConnectTimeoutError',
      // The attempt is abandoned (the pool closes the connection if it ever completes).
      rule: rule(
        'unavailable',
        'a new connection could not be opened within connectTimeoutMs; nothing was sent',
        true,
      ),
    },
  ],
  [
    'CONNECTION_HOOK_TIMEOUT',
    {
      name: 'ConnectionHookTimeoutError',
      // The connection is closed before the statement is sent, like a connect that timed out.
      rule: rule(
        'unavailable',
        'a connection hook did not finish within acquireTimeoutMs; the connection was closed and nothing was sent',
        true,
      ),
    },
  ],
  [
    'NO_READER_AVAILABLE',
    {
      name: 'NoReaderAvailableError',
      rule: rule('unavailable', 'no reader is in rotation; nothing was sent'),
    },
  ],
  [
    'QUERY_TIMEOUT',
    {
      name: 'QueryTimeoutError',
      // Our client-side deadline, like pg's query_timeout: the server may still run and commit it.
      rule: rule('ambiguous', 'no answer within queryTimeoutMs; the statement may have run', true),
    },
  ],
  [
    'SERVER_UNRESPONSIVE',
    {
      name: 'ServerUnresponsiveError',
      // In flight: the statement reached a server that then stopped answering; it may have run.
      rule: rule(
        'ambiguous',
        'the server stopped answering a liveness probe; the statement may have run',
        true,
      ),
    },
  ],
  [
    'DB_DESTROYED',
    { name: 'DatabaseDestroyedError', rule: rule('fatal', 'the database was destroyed with db.destroy()') },
  ],
  ['CONFIG_INVALID', { name: 'ConfigError', rule: rule('fatal', 'invalid kysely-resilient configuration') }],
  [
    'CREDENTIALS_UNAVAILABLE',
    {
      name: 'CredentialSourceError',
      rule: rule('unavailable', 'the credential source failed transiently; nothing was sent to the database'),
    },
  ],
  [
    'CREDENTIALS_FAILED',
    { name: 'CredentialSourceError', rule: rule('fatal', 'the credential source cannot supply credentials') },
  ],
  [
    'AUTH_REJECTED',
    {
      name: 'AuthenticationFailedError',
      rule: rule('fatal', 'the database rejected freshly fetched credentials'),
    },
  ],
  [
    'INVALID_CONSISTENCY_TOKEN',
    {
      name: 'InvalidConsistencyTokenError',
      rule: rule('fatal', 'the consistency token is malformed or from another kind of database'),
    },
  ],
  [
    'REPLICATION_POSITION_UNAVAILABLE',
    {
      name: 'ReplicationPositionUnavailableError',
      rule: rule('fatal', "the writer's replication position cannot be read"),
    },
  ],
  [
    'DRIVER_MISSING',
    { name: 'MissingDriverError', rule: rule('fatal', 'the database driver package is not installed') },
  ],
])

function libraryRule(err: object): Rule | undefined {
  const code = stringField(err, 'code')
  const entry = code === undefined ? undefined : LIBRARY_RULES.get(code)
  if (entry === undefined) return undefined
  // The name check catches a second copy of this package (ESM and CJS loaded side by side), where
  // `instanceof` fails.
  return err instanceof ResilientError || field(err, 'name') === entry.name ? entry.rule : undefined
}

// ---------------------------------------------------------------------------------------------
// The caller gave up: an AbortSignal fired. Kysely rethrows `signal.reason` as is.

function callerRule(err: object): { readonly rule: Rule; readonly code: string } | undefined {
  const name = field(err, 'name')
  if (name === 'AbortError') {
    return {
      code: 'ABORT_ERR',
      rule: rule('fatal', 'the caller aborted (the statement may or may not have run)'),
    }
  }
  // Only the DOMException from AbortSignal.timeout(): other libraries' TimeoutErrors mean other things.
  if (name === 'TimeoutError' && err instanceof DOMException) {
    return {
      code: 'TIMEOUT_ERR',
      rule: rule('fatal', "the caller's deadline expired (the statement may have run)"),
    }
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------
// Kysely's own errors.

function kyselyRule(err: object): Rule | undefined {
  if (err instanceof NoResultError || err.constructor?.name === 'NoResultError') {
    return rule('fatal', 'the query returned no row where one was required')
  }
  // COMMIT answered ROLLBACK: an earlier statement failed and the caller swallowed its error. That
  // earlier error is the one to classify; this one only says nothing was committed.
  if (isAbortedTransactionError(err)) {
    return rule('fatal', 'COMMIT rolled back because an earlier statement of the transaction failed')
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: SQLSTATE codes, PostgreSQL documentation Appendix A.

const POSTGRES_RULES: ReadonlyMap<string, Rule> = new Map([
  ['40001', rule('conflict', 'serialization failure: the server rolled the transaction back')],
  ['40P01', rule('conflict', 'deadlock detected: the server rolled the transaction back')],
  ['55P03', rule('conflict', 'lock not available (lock_timeout or NOWAIT): the transaction was aborted')],
  [
    '25P03',
    rule(
      'conflict',
      'idle-in-transaction timeout: the server ended the session and rolled the transaction back',
      true,
    ),
  ],
  [
    '25006',
    rule(
      'read-only',
      'read-only transaction: this server (a replica or a demoted writer) takes no writes',
      true,
    ),
  ],
  ['53300', rule('unavailable', 'too many connections: the server refused a new session', true)],
  [
    '57P03',
    rule(
      'unavailable',
      'the server is starting up, shutting down or recovering and accepts no sessions',
      true,
    ),
  ],
  [
    '57P05',
    rule(
      'unavailable',
      'idle-session timeout: the server ended the idle session before the statement ran',
      true,
    ),
  ],
  ['08001', rule('unavailable', 'the client could not establish a connection', true)],
  ['08004', rule('unavailable', 'the server rejected the connection', true)],
  ['57P01', rule('ambiguous', 'the session was terminated by an administrator command or a shutdown', true)],
  ['57P02', rule('ambiguous', 'the session was terminated because another server process crashed', true)],
  ['08000', rule('ambiguous', 'connection exception', true)],
  ['08003', rule('ambiguous', 'the connection does not exist', true)],
  ['08006', rule('ambiguous', 'connection failure', true)],
  ['08007', rule('ambiguous', 'transaction resolution unknown', true)],
  ['40003', rule('ambiguous', 'statement completion unknown')],
  // Decision: a statement timeout or cancel is deliberate and the statement did not commit, but
  // retrying a statement that exceeded its time budget doubles the load on a slow server.
  ['57014', rule('fatal', 'statement cancelled (statement_timeout or a cancel request); not retried')],
  ['57P04', rule('fatal', 'the database was dropped', true)],
  ['08P01', rule('fatal', 'protocol violation', true)],
  ['42601', rule('fatal', 'syntax error')],
  ['42501', rule('fatal', 'insufficient privilege')],
  ['42P01', rule('fatal', 'undefined table')],
  ['23505', rule('fatal', 'unique violation')],
  ['28P01', rule('fatal', 'authentication failed (invalid password)', true)],
  ['28000', rule('fatal', 'invalid authorization specification', true)],
  ['3D000', rule('fatal', 'the database does not exist', true)],
])

// Class fallbacks (first two characters), for codes without an entry above.
const POSTGRES_CLASSES: ReadonlyMap<string, Rule> = new Map([
  ['08', rule('ambiguous', 'connection exception', true)],
  ['0A', rule('fatal', 'feature not supported')],
  ['22', rule('fatal', 'data exception: invalid input for the statement')],
  ['23', rule('fatal', 'integrity constraint violation')],
  ['25', rule('fatal', 'invalid transaction state')],
  ['28', rule('fatal', 'invalid authorization specification', true)],
  ['40', rule('fatal', 'transaction rollback that a retry will not fix')],
  ['42', rule('fatal', 'syntax error or access rule violation')],
  // Disk full, out of memory, temp_file_limit: the statement ran and failed, and may fail again the
  // same way. While connecting no statement ran, so the server is merely unavailable.
  ['53', rule('fatal', 'insufficient resources on the server', false, 'unavailable')],
  ['54', rule('fatal', 'program limit exceeded')],
  ['57', rule('fatal', 'operator intervention')],
  ['58', rule('fatal', 'system error on the server')],
  ['XX', rule('fatal', 'internal error on the server')],
])

const POSTGRES_OTHER = rule('fatal', 'the server rejected the statement')

/**
 * PgBouncer reports its own failures as SQLSTATE 08P01 ("protocol violation") with a fixed message,
 * so the message, matched against the texts PgBouncer (1.18 and later) sends, is what tells them
 * apart. Each was observed from a real PgBouncer in test/retry/pgbouncer-errors.test.ts. A message
 * that matches none keeps 08P01's own verdict.
 */
function pgbouncerRule(message: string): Rule | undefined {
  for (const [pattern, matched] of PGBOUNCER_RULES) if (pattern.test(message)) return matched
  return undefined
}

const PGBOUNCER_RULES: ReadonlyArray<readonly [RegExp, Rule]> = [
  // Refused before any statement: PgBouncer holds no server session for this client yet.
  [
    /^no more connections allowed \(max_client_conn\)/,
    rule('unavailable', 'PgBouncer refused the connection: max_client_conn reached', true),
  ],
  // The statement waited in PgBouncer's queue for a server session and was never sent (also what a
  // PAUSE longer than query_wait_timeout, or a server that is down, ends in).
  [
    /^query_wait_timeout$/,
    rule(
      'unavailable',
      'PgBouncer found no server session within query_wait_timeout; nothing was sent',
      true,
    ),
  ],
  [
    /^server login has been failing, try again later/,
    rule('unavailable', 'PgBouncer cannot log in to the server (server_login_retry); nothing was sent', true),
  ],
  [
    /^pgbouncer cannot connect to server/,
    rule('unavailable', 'PgBouncer cannot connect to the server; nothing was sent', true),
  ],
  [
    /^client_login_timeout/,
    rule('unavailable', 'PgBouncer timed out the login (client_login_timeout)', true),
  ],
  [
    /^database ".*" is disabled$/,
    rule('unavailable', 'PgBouncer refuses connections to this database (DISABLE)', true),
  ],
  [
    /^client_idle_timeout$/,
    rule('unavailable', 'PgBouncer closed the idle client connection (client_idle_timeout)', true),
  ],
  // The server session died under a statement or transaction: it may have committed.
  [
    /^server conn crashed\?$/,
    rule('ambiguous', 'the server session behind PgBouncer was lost mid-statement', true),
  ],
  [/^database removed$/, rule('ambiguous', 'PgBouncer dropped the database (KILL or a config reload)', true)],
  [
    /^query[ _]timeout$/,
    rule('ambiguous', "PgBouncer's query_timeout closed the server session mid-statement", true),
  ],
  [
    /^idle transaction timeout$/,
    rule(
      'conflict',
      "PgBouncer's idle_transaction_timeout closed the session; the transaction was rolled back",
      true,
    ),
  ],
  [
    /^unsupported startup parameter/,
    rule(
      'fatal',
      'the connection proxy refused a startup parameter: set the proxy setting so the library sends none',
      true,
    ),
  ],
  [/^no such (database|user)/, rule('fatal', 'PgBouncer does not know this database or user', true)],
  [
    /^(SASL|password) authentication failed/,
    rule('fatal', 'authentication failed at PgBouncer (wrong or rotated password)', true),
  ],
]

/**
 * RDS Proxy's own refusals reach PostgreSQL clients with AWS's documented texts and no documented
 * SQLSTATE: its borrow timeout and its client-connection and rate limits. None sent a statement.
 */
function rdsProxyRule(message: string): Rule | undefined {
  if (/^Timed-out waiting to acquire database connection/.test(message)) return RDS_PROXY_BORROW_TIMEOUT
  return RDS_PROXY_LIMITS.test(message) ? RDS_PROXY_LIMIT : undefined
}

const RDS_PROXY_LIMITS =
  /^(The maximum number of client connections to the proxy exceeded|Rate of connection to proxy exceeded|The IAM authentication failed because of too many competing requests)/

const RDS_PROXY_LIMIT = rule(
  'unavailable',
  'RDS Proxy refused the connection: a connection or rate limit',
  true,
)

const RDS_PROXY_BORROW_TIMEOUT = rule(
  'unavailable',
  'RDS Proxy found no database connection within its borrow timeout; nothing was sent',
)

function postgresRule(sqlState: string): Rule {
  return POSTGRES_RULES.get(sqlState) ?? POSTGRES_CLASSES.get(sqlState.slice(0, 2)) ?? POSTGRES_OTHER
}

// ---------------------------------------------------------------------------------------------
// MySQL and MariaDB: server error numbers (MySQL "Server Error Message Reference", MariaDB "Error
// Codes"). Where the two disagree on a number the rule says so.

const MYSQL_RULES: ReadonlyMap<number, Rule> = new Map([
  [1213, rule('conflict', 'deadlock: InnoDB rolled the whole transaction back')],
  // Only the statement is rolled back (unless innodb_rollback_on_timeout): the transaction stays
  // open with its locks. Retrying means rolling back and running the whole transaction again.
  [
    1205,
    rule('conflict', 'lock wait timeout: the statement was rolled back; roll back and retry the transaction'),
  ],
  // MariaDB with innodb_snapshot_isolation=ON (REPEATABLE READ and above): the whole transaction is
  // rolled back, like a PostgreSQL serialization failure.
  [
    1020,
    rule(
      'conflict',
      'record changed since it was read (snapshot isolation): the transaction was rolled back',
    ),
  ],
  [3572, rule('conflict', 'lock not available with NOWAIT: the statement was rolled back')],
  [3101, rule('conflict', 'the transaction was rolled back during commit (group replication conflict)')],
  [1836, rule('read-only', 'the server runs in read-only mode (innodb_read_only); it takes no writes', true)],
  [1874, rule('read-only', 'InnoDB is in read-only mode; the server takes no writes', true)],
  // Decision: also raised by a write inside START TRANSACTION READ ONLY (a bug in the caller), but
  // Aurora MySQL returns it from a writer demoted by a failover, where a retry is exactly right.
  [
    1792,
    rule('read-only', 'write in a read-only transaction (also what a demoted Aurora writer returns)', true),
  ],
  [1040, rule('unavailable', 'too many connections: the server refused a new session', true)],
  // RDS Proxy's "Timed-out waiting to acquire database connection": no database connection was free
  // within its ConnectionBorrowTimeout, so the statement was never sent.
  [
    9501,
    rule('unavailable', 'RDS Proxy found no database connection within its borrow timeout; nothing was sent'),
  ],
  [1203, rule('unavailable', 'max_user_connections reached: the server refused a new session', true)],
  [1053, rule('ambiguous', 'server shutdown in progress', true)],
  [1927, rule('ambiguous', 'the connection was killed', true)],
  // Client-library codes (libmysqlclient, Connector/J); mysql2 reports these as PROTOCOL_CONNECTION_LOST.
  [2006, rule('ambiguous', 'the server has gone away', true)],
  [2013, rule('ambiguous', 'the connection was lost during the query', true)],
  // Decision (as for PostgreSQL's 57014): a statement timeout or KILL QUERY is deliberate.
  [1317, rule('fatal', 'query interrupted (KILL QUERY); not retried')],
  [1969, rule('fatal', 'statement cancelled: max_statement_time exceeded; not retried')],
  [3024, rule('fatal', 'statement cancelled: max_execution_time exceeded; not retried')],
  [1045, rule('fatal', 'access denied: wrong user name or password', true)],
  [1044, rule('fatal', 'access denied to the database')],
  [1049, rule('fatal', 'unknown database')],
  [1129, rule('fatal', 'this host is blocked after too many connection errors', true)],
  [1130, rule('fatal', 'this host is not allowed to connect', true)],
  [1062, rule('fatal', 'duplicate entry (unique constraint)')],
  [1064, rule('fatal', 'syntax error')],
  [1142, rule('fatal', 'permission denied on the table')],
  [1146, rule('fatal', 'unknown table')],
])

const MYSQL_OTHER = rule('fatal', 'the server rejected the statement')

function mysqlRule(errno: number, message: string): Rule {
  switch (errno) {
    case 1290:
      // ER_OPTION_PREVENTS_STATEMENT names the option: only --read-only, --super-read-only and
      // --innodb-read-only mean "not the writer"; --secure-file-priv and others are configuration.
      return /--(super-|innodb-)?read-only|read_only/i.test(message)
        ? rule(
            'read-only',
            'the server runs with --read-only (a replica or a demoted writer); it takes no writes',
            true,
          )
        : rule('fatal', "the server's configuration prevents this statement")
    case 1226:
      return /max_user_connections/i.test(message)
        ? rule('unavailable', 'max_user_connections reached: the server refused a new session', true)
        : rule('fatal', 'a per-user resource limit was exceeded')
    case 1047:
      // Galera answers ER_UNKNOWN_COM_ERROR while the node is not part of the primary component.
      return /wsrep/i.test(message)
        ? rule('unavailable', 'the Galera node is not ready for statements yet')
        : rule('fatal', 'unknown command')
    case 4031:
      // MySQL 8.0.24+: ER_CLIENT_INTERACTION_TIMEOUT, sent when wait_timeout closes an idle session.
      // MariaDB uses 4031 for an unrelated trigger error.
      return /inactivity/i.test(message)
        ? rule(
            'unavailable',
            'the server closed the idle session (wait_timeout) before the statement ran',
            true,
          )
        : MYSQL_OTHER
    default:
      return MYSQL_RULES.get(errno) ?? MYSQL_OTHER
  }
}

// ---------------------------------------------------------------------------------------------
// Codes without a server behind them: Node.js socket and DNS errors, mysql2's client-side errors.

const CODE_RULES: ReadonlyMap<string, Rule> = new Map([
  ['ECONNREFUSED', rule('unavailable', 'connection refused: nothing listens on that address', true)],
  ['ENOTFOUND', rule('unavailable', 'DNS lookup failed: the host name did not resolve', true)],
  ['EAI_AGAIN', rule('unavailable', 'DNS lookup failed temporarily', true)],
  ['EAI_FAIL', rule('unavailable', 'DNS lookup failed', true)],
  // On an established connection these mean the path broke mid-statement; connect() is checked by phase.
  ['EHOSTUNREACH', rule('ambiguous', 'host unreachable', true)],
  ['ENETUNREACH', rule('ambiguous', 'network unreachable', true)],
  ['EHOSTDOWN', rule('ambiguous', 'host down', true)],
  ['ENETDOWN', rule('ambiguous', 'network down', true)],
  ['ETIMEDOUT', rule('ambiguous', 'the connection timed out', true)],
  ['ECONNRESET', rule('ambiguous', 'the connection was reset', true)],
  ['ECONNABORTED', rule('ambiguous', 'the connection was aborted', true)],
  ['EPIPE', rule('ambiguous', 'broken pipe: the connection closed while writing', true)],
  ['ERR_SOCKET_CLOSED', rule('ambiguous', 'the socket is closed', true)],
  ['ERR_STREAM_DESTROYED', rule('ambiguous', 'the socket was destroyed', true)],
  ['PROTOCOL_CONNECTION_LOST', rule('ambiguous', 'the server closed the connection', true)],
  [
    'PROTOCOL_SEQUENCE_TIMEOUT',
    rule(
      'ambiguous',
      "the driver's query timeout fired; the statement may still run or have committed",
      true,
    ),
  ],
  [
    'PROTOCOL_ERROR',
    rule('ambiguous', 'protocol error: the connection is out of step with the server', true),
  ],
  ['PROTOCOL_UNEXPECTED_PACKET', rule('ambiguous', 'unexpected packet: the connection is out of step', true)],
  [
    'PROTOCOL_PACKETS_OUT_OF_ORDER',
    rule('ambiguous', 'packets out of order: the connection is out of step', true),
  ],
  ['HANDSHAKE_NO_SSL_SUPPORT', rule('fatal', 'the server does not support TLS', true)],
  // Node's certificate verification (pg passes them through; mysql2 reports HANDSHAKE_SSL_ERROR):
  // a setting or a certificate is wrong, or someone is impersonating the server. Never retried.
  ...[
    'SELF_SIGNED_CERT_IN_CHAIN',
    'DEPTH_ZERO_SELF_SIGNED_CERT',
    'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    'UNABLE_TO_GET_ISSUER_CERT',
    'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
    'CERT_UNTRUSTED',
    'CERT_SIGNATURE_FAILURE',
  ].map(
    (code) => [code, rule('fatal', "the server's certificate does not chain to a trusted CA", true)] as const,
  ),
  ...['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID'].map(
    (code) => [code, rule('fatal', "the server's certificate is outside its validity period", true)] as const,
  ),
  [
    'ERR_TLS_CERT_ALTNAME_INVALID',
    rule('fatal', "the server's certificate does not name the host connected to", true),
  ],
  ['HANDSHAKE_SSL_ERROR', rule('fatal', 'TLS handshake failed', true)],
  ['HANDSHAKE_UNKNOWN_ERROR', rule('fatal', 'unexpected packet during the handshake', true)],
  ['AUTH_SWITCH_PLUGIN_ERROR', rule('fatal', 'authentication plugin error', true)],
])

// Node refuses a write once the peer's FIN has arrived (net.Socket, allowHalfOpen false): the bytes
// never left. pg (outside pipeline mode) and mysql2 write only the statement in progress, so that
// statement was not sent.
const WRITE_AFTER_FIN = 'This socket has been ended by the other party'

function codeRule(err: object, code: string): Rule | undefined {
  const syscall = field(err, 'syscall')
  if (code === 'EPIPE' && syscall === undefined && field(err, 'message') === WRITE_AFTER_FIN) {
    return rule(
      'unavailable',
      'the server had already closed the connection; the statement was not sent',
      true,
    )
  }
  const known = CODE_RULES.get(code)
  if (known !== undefined) return known
  // Any other system error from connect() (EADDRNOTAVAIL for an IPv6 address on a host without
  // IPv6, ENOENT or EACCES for a Unix socket, ...): the connection was never opened.
  if (syscall === 'connect' && /^E[A-Z]+$/.test(code)) {
    return rule('unavailable', 'the connection could not be opened; nothing was sent', true)
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------
// Driver errors that carry nothing but a message: exact matches only, so that no user text can match.

const DRIVER_MESSAGES: ReadonlyMap<string, Rule> = new Map([
  // pg: connectionTimeoutMillis fired during client.connect().
  [
    'timeout expired',
    rule('unavailable', 'connect timeout: the server did not complete the handshake', true),
  ],
  // pg-pool: the same, wrapped; and a pool with no free client.
  [
    'Connection terminated due to connection timeout',
    rule('unavailable', 'connect timeout: the server did not complete the handshake', true),
  ],
  [
    'timeout exceeded when trying to connect',
    rule('unavailable', 'no free client in the pg pool; nothing was sent'),
  ],
  // pg rejects these before writing anything: the client already knew its connection was dead.
  [
    'Client has encountered a connection error and is not queryable',
    rule('unavailable', 'the connection had already failed; the statement was not sent', true),
  ],
  [
    'Client was closed and is not queryable',
    rule('unavailable', 'the client was closed; the statement was not sent', true),
  ],
  // pg, asked for TLS by a server that only speaks plain TCP: never a silent fallback.
  ['The server does not support SSL connections', rule('fatal', 'the server does not support TLS', true)],
  // mysql2's equivalent, raised by addCommand on a connection that already failed.
  [
    "Can't add new command when connection is in closed state",
    rule('unavailable', 'the connection had already failed; the statement was not sent', true),
  ],
  ['Connection terminated unexpectedly', rule('ambiguous', 'the server closed the connection', true)],
  [
    'Connection terminated',
    rule('ambiguous', 'the connection was closed while the statement was pending', true),
  ],
  // pg's query_timeout: the client stopped waiting; the server may still run and commit the statement.
  [
    'Query read timeout',
    rule(
      'ambiguous',
      "the driver's query timeout fired; the statement may still run or have committed",
      true,
    ),
  ],
])

// ---------------------------------------------------------------------------------------------

function field(err: object, key: string): unknown {
  return (err as Record<string, unknown>)[key]
}

function stringField(err: object, key: string): string | undefined {
  const value = field(err, key)
  return typeof value === 'string' ? value : undefined
}

/** The code reported for an unrecognised error: its own string code, if it has one. */
function codeOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? stringField(err, 'code') : undefined
}
