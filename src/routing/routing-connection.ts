import {
  type AbortableOperationOptions,
  type AccessMode,
  CompiledQuery,
  type ControlConnectionProvider,
  type DatabaseConnection,
  type Log,
  type QueryResult,
} from 'kysely'
import type { ConsistencyScope } from '../consistency/read-your-writes.js'
import { QUERY_CHANNEL, type QueryTraceContext } from '../diagnostics/channels.js'
import { operationOf } from '../diagnostics/operation.js'
import type { Endpoint } from '../endpoint/endpoint.js'
import { fullJitterDelay, sleep } from '../retry/backoff.js'
import { classifyError } from '../retry/classify-error.js'
import { withDeadline } from '../retry/deadline.js'
import type { ErrorClassification, ErrorPhase } from '../retry/error-classification.js'
import { mayRetry } from '../retry/retry-policy.js'
import type { DbTelemetry, StatementTrace } from '../telemetry/db-telemetry.js'
import { unlessAborted } from './abort.js'
import { isReadOnlyStatement, mayChangeData } from './classify-statement.js'
import type { Cluster } from './cluster.js'

/** Which endpoint a Kysely instance sends its work to: `db` decides per statement, `db.writer` and `db.reader` force one. */
export type RoutingTarget = 'auto' | 'writer' | 'reader'

/**
 * What the connection was acquired for. `'statement'`: exactly one statement (Kysely's
 * `executeQuery`/`stream`), routed on its own. `'session'`: `db.connection()`, `db.transaction()`
 * or `db.startTransaction()`: several statements that must share one server session.
 */
export type RoutingScope = 'statement' | 'session'

interface Lease {
  readonly endpoint: Endpoint
  readonly connection: DatabaseConnection
  /** Set when the connection failed at the connection level: destroy it instead of pooling it. */
  discard: boolean
  /**
   * The cancel or kill Kysely started for the statement in flight when its caller aborted; its
   * control connection may still be connecting. Whatever the session does next waits for it: Kysely's
   * drivers only cancel or kill the statement they were asked about, so a ROLLBACK sent first (it
   * queues behind the statement) makes them skip the cancel, and a connection destroyed first ends
   * the statement on this side only, while the server goes on running it and holding its locks.
   */
  aborting?: Promise<void> | undefined
  /** Set while #withDeadline waits for a statement on this lease: stops waiting, rejecting with `error`. */
  abandon?: ((error: unknown) => void) | undefined
  /**
   * Set by killSession: the session ends because the caller aborted with `'kill session'`, not
   * because its server failed, so the errors that follow (57P01, a lost connection) say nothing
   * about the endpoint's health.
   */
  killed?: boolean
}

/** A statement's connection taken ahead (RoutingConnection.prepare), with how it was routed. */
interface Prepared {
  readonly lease: Lease
  readonly read: boolean
  readonly scope: ConsistencyScope | undefined
}

/** Marks an error with the endpoint it came from and the phase it happened in. */
class AttemptError {
  readonly classification: ErrorClassification

  constructor(
    readonly error: unknown,
    readonly endpoint: Endpoint | undefined,
    phase: ErrorPhase,
  ) {
    this.classification = classifyError(error, { phase })
  }
}

/**
 * The connection Kysely sees. It holds no server connection until it knows what it will run: a
 * single statement takes a connection of the endpoint it routes to for just that statement (and is
 * retried there when that is safe); a session binds to one endpoint on its first statement or
 * `begin` and keeps it until Kysely releases the connection.
 *
 * Kysely's own `PostgresDriver`/`MysqlDriver` run `begin`, `commit` and savepoints through this
 * object, so those statements are logged exactly as plain Kysely logs them.
 */
export class RoutingConnection implements DatabaseConnection {
  readonly #cluster: Cluster
  readonly #target: RoutingTarget
  readonly #scope: RoutingScope
  readonly #log: Log
  readonly #logging: boolean
  #bound: Lease | undefined
  #active: Lease | undefined
  #wantsSessionInfo = false
  #readOnlyTransaction = false
  /** The signal of the statement being executed: one with a signal may be cancelled or killed. */
  #signal: AbortSignal | undefined
  /** The read-your-writes scope of a session that wrote on the writer: noted when it ends. */
  #wroteIn: ConsistencyScope | undefined
  /** A statement's first connection, taken by {@link prepare} before Kysely runs it. */
  #prepared: Prepared | undefined
  /** Why the session went where it is bound, for the statement spans' route events. */
  #boundReason = 'session'

  /** `logging`: whether `log` logs queries or errors (the driver asks once, not per statement). */
  constructor(cluster: Cluster, target: RoutingTarget, scope: RoutingScope, log: Log, logging: boolean) {
    this.#cluster = cluster
    this.#target = target
    this.#scope = scope
    this.#log = log
    this.#logging = logging
  }

  /** Whether a connection is held (a session's, or one taken ahead): only then is there anything to release. */
  get holdsConnection(): boolean {
    return this.#bound !== undefined || this.#prepared !== undefined
  }

  /**
   * Takes the connection now, before Kysely runs anything on this one: the session's, or for a single
   * statement (or stream) the one of the endpoint it routes to. Used for calls with an abort signal,
   * where plain Kysely acquires its connection before the statement runs and an abort while waiting
   * for one is an abort during acquisition (see RoutingQueryExecutor); without a signal the connection
   * is taken lazily, on the statement itself, which costs less.
   */
  async prepare(
    compiledQuery: CompiledQuery | undefined,
    options?: AbortableOperationOptions,
  ): Promise<void> {
    if (compiledQuery === undefined || this.#scope === 'session') {
      if (this.#bound === undefined) {
        this.#bound = await this.#leaseWithRetry(() => this.#sessionEndpoint(), options)
        this.#boundReason = this.#sessionReason()
      }
      return
    }
    const read = this.#isRead(compiledQuery)
    const scope = this.#currentScope()
    const lease = await this.#leaseWithRetry(() => this.#endpointFor(read, scope), options, read)
    this.#prepared = { lease, read, scope }
  }

  /** The read-your-writes scope a statement routes by; none through `db.reader`, which stays eventual. */
  #currentScope(): ConsistencyScope | undefined {
    return this.#target === 'reader' ? undefined : this.#cluster.consistency.current()
  }

  /** The endpoint this connection is bound to, if any. */
  get boundEndpoint(): Endpoint | undefined {
    return this.#bound?.endpoint
  }

  /** Binds the session for a transaction: a read-only transaction may run on a reader. */
  async bindForTransaction(
    accessMode: AccessMode | undefined,
    options?: AbortableOperationOptions,
  ): Promise<Endpoint> {
    this.#readOnlyTransaction = accessMode === 'read only'
    if (this.#bound === undefined) {
      const toReader = this.#target === 'reader' || (this.#target === 'auto' && accessMode === 'read only')
      const scope = this.#target === 'auto' ? this.#cluster.consistency.current() : undefined
      this.#bound = await this.#leaseWithRetry(() => this.#endpointFor(toReader, scope), options)
      this.#boundReason =
        this.#target === 'auto'
          ? toReader
            ? 'read-only transaction'
            : 'transaction'
          : `transaction, forced db.${this.#target}`
    }
    return this.#bound.endpoint
  }

  executeQuery<R>(
    compiledQuery: CompiledQuery,
    options?: AbortableOperationOptions,
  ): Promise<QueryResult<R>> {
    // Undefined unless an OpenTelemetry SDK records: one test, no clock read, no allocation.
    const telemetry = this.#cluster.telemetry
    if (telemetry !== undefined) return this.#executeObserved<R>(telemetry, compiledQuery, options)
    if (!this.#logging) return this.#execute<R>(compiledQuery, options)
    return this.#executeLogged<R>(compiledQuery, options)
  }

  async #executeLogged<R>(
    compiledQuery: CompiledQuery,
    options: AbortableOperationOptions | undefined,
    trace?: StatementTrace,
  ): Promise<QueryResult<R>> {
    const startTime = performance.now()
    try {
      const result = await this.#execute<R>(compiledQuery, options, trace)
      await this.#logQuery(compiledQuery, startTime, false)
      return result
    } catch (error) {
      await this.#logError(error, compiledQuery, startTime)
      throw error
    }
  }

  /**
   * One statement under OpenTelemetry: its span covers every attempt, and is the active span while it
   * runs, so connection opens, credential fetches and the driver's own spans nest under it.
   */
  async #executeObserved<R>(
    telemetry: DbTelemetry,
    compiledQuery: CompiledQuery,
    options: AbortableOperationOptions | undefined,
  ): Promise<QueryResult<R>> {
    const trace = telemetry.statement(compiledQuery)
    try {
      const result = await trace.within(() =>
        this.#logging
          ? this.#executeLogged<R>(compiledQuery, options, trace)
          : this.#execute<R>(compiledQuery, options, trace),
      )
      trace.end(false)
      return result
    } catch (error) {
      trace.end(true, error)
      throw error
    }
  }

  async *streamQuery<R>(
    compiledQuery: CompiledQuery,
    chunkSize: number,
    options?: AbortableOperationOptions,
  ): AsyncIterableIterator<QueryResult<R>> {
    const startTime = performance.now()
    // A stream is one statement for OpenTelemetry (its span ends with the last row, or the error) and
    // one attempt for the diagnostics channel (only opening its connection is ever retried). Its span
    // is not made the active one: a generator cannot keep a context across its yields.
    const trace = this.#cluster.telemetry?.statement(compiledQuery)
    const channel = QUERY_CHANNEL.hasSubscribers ? new StreamChannelTrace(compiledQuery) : undefined
    try {
      yield* this.#stream<R>(compiledQuery, chunkSize, options, trace, channel)
    } catch (error) {
      trace?.end(true, error)
      channel?.failed(error)
      if (this.#logging) await this.#logError(error, compiledQuery, startTime)
      throw error
    }
    trace?.end(false)
    channel?.succeeded()
    if (this.#logging) await this.#logQuery(compiledQuery, startTime, true)
  }

  async collectSessionInfo(): Promise<void> {
    const lease = this.#active ?? this.#bound ?? this.#prepared?.lease
    if (lease === undefined) {
      // Not bound yet: collect on the real connection as soon as the statement picks one.
      this.#wantsSessionInfo = true
      return
    }
    await lease.connection.collectSessionInfo?.()
  }

  async cancelQuery(_controlConnectionProvider: ControlConnectionProvider): Promise<void> {
    const lease = this.#active ?? this.#bound
    if (lease === undefined) return
    // Behind a proxy the cancel is a CancelRequest the proxy forwards when it can, and PgBouncer was
    // seen to deliver one late, to whatever this client ran next: never reuse a cancelled connection.
    if (lease.endpoint.settings.proxy !== undefined) lease.discard = true
    // The control statement must reach the same server as the query it cancels.
    await this.#abortInFlight(lease, lease.connection.cancelQuery?.(controlProviderFor(lease.endpoint)))
  }

  async killSession(_controlConnectionProvider: ControlConnectionProvider): Promise<void> {
    const lease = this.#active ?? this.#bound
    if (lease === undefined) return
    lease.discard = true
    lease.killed = true
    const kill = lease.connection.killSession?.(controlProviderFor(lease.endpoint))
    await this.#abortInFlight(lease, kill, () => {
      // Only now, once the server was told (or could not be): the session is gone either way. Kysely's
      // MySQL driver destroyed the mysql2 connection before sending KILL, and mysql2 never answers a
      // statement on a connection it destroyed, so stop waiting for it: the lease goes back now.
      lease.endpoint.discard(lease.connection)
      lease.abandon?.(this.#signal?.reason ?? new Error('kysely-resilient: the session was killed'))
    })
  }

  /** Rolls back through the endpoint's Kysely driver, which discards the connection if that fails. */
  async rollback(): Promise<void> {
    const lease = this.#bound
    if (lease === undefined)
      throw new Error('kysely-resilient: rollback on a connection that is not in a transaction')
    // Kysely rolls back as soon as an aborted statement rejects: let its cancel reach the server first.
    if (lease.aborting !== undefined) await lease.aborting
    // The session already broke (a statement or the COMMIT lost its connection, or it is pinned to a
    // server that takes no writes): the connection is destroyed on release, and the server rolls an
    // open transaction back when its session ends. A ROLLBACK sent now can only fail, and Kysely's
    // transaction() would throw that failure instead of the one that ended the session, turning an
    // ambiguous COMMIT into a retryable 'unavailable'.
    if (lease.discard) return
    const query = CompiledQuery.raw('rollback')
    const startTime = performance.now()
    try {
      lease.endpoint.countQuery()
      await lease.endpoint.driver.rollbackTransaction(lease.connection)
    } catch (error) {
      const classification = classifyError(error)
      this.#noteFailure(lease, classification)
      if (this.#logging) await this.#logError(error, query, startTime)
      // Same reason: a connection that breaks during ROLLBACK rolls the transaction back anyway.
      if (classification.connectionLost) return
      throw error
    }
    if (this.#logging) await this.#logQuery(query, startTime, false)
  }

  /** Returns the server connection, if one is held. Called once, when Kysely releases this connection. */
  async release(): Promise<void> {
    // Prepared and then not run (aborted right after the connection was taken).
    const prepared = this.#prepared
    this.#prepared = undefined
    if (prepared !== undefined) await prepared.lease.endpoint.release(prepared.lease.connection)
    const lease = this.#bound
    this.#bound = undefined
    if (lease === undefined) return
    // A kill still on its way: destroying the connection first would leave the statement running.
    if (lease.aborting !== undefined) await lease.aborting
    await lease.endpoint.release(lease.connection, lease.discard)
    // Only now: a writer position read before the COMMIT would not cover the transaction.
    if (this.#wroteIn !== undefined) {
      this.#cluster.consistency.noteWrite(this.#wroteIn)
      this.#wroteIn = undefined
    }
  }

  /**
   * Where a session binds on its first statement. A session's statements share server state (temp
   * tables, SET, locks), so under `db` it is the writer; single statements route in #isRead instead.
   */
  #sessionEndpoint(): Endpoint {
    return this.#target === 'reader' ? this.#cluster.reader() : this.#cluster.writer()
  }

  /**
   * Where a statement, stream or session runs: the writer, or for a read a reader, one that has
   * replayed what `scope` must see when there is a read-your-writes scope (see ReadYourWrites.readerFor:
   * a promise only while it waits for a replica).
   */
  #endpointFor(read: boolean, scope: ConsistencyScope | undefined): Endpoint | Promise<Endpoint> {
    if (!read) return this.#cluster.writer()
    return scope === undefined ? this.#cluster.reader() : this.#cluster.consistentReader(scope)
  }

  #isRead(compiledQuery: CompiledQuery): boolean {
    return (
      this.#target === 'reader' ||
      (this.#target === 'auto' &&
        isReadOnlyStatement(compiledQuery.query, compiledQuery.sql, this.#cluster.writerTables))
    )
  }

  /**
   * Not async: a single statement goes straight to #executeStatement, since an async function that
   * returns another's promise costs the statement extra ticks.
   */
  #execute<R>(
    compiledQuery: CompiledQuery,
    options?: AbortableOperationOptions,
    trace?: StatementTrace,
  ): Promise<QueryResult<R>> {
    this.#signal = options?.signal
    // A single statement routes on its own (bound only if taken ahead without its statement).
    if (this.#scope === 'statement' && this.#bound === undefined) {
      return this.#executeStatement<R>(compiledQuery, options, trace)
    }
    return this.#executeInSession<R>(compiledQuery, options, trace)
  }

  /** A statement of a session (db.connection(), a transaction): on the session's connection. */
  async #executeInSession<R>(
    compiledQuery: CompiledQuery,
    options: AbortableOperationOptions | undefined,
    trace: StatementTrace | undefined,
  ): Promise<QueryResult<R>> {
    if (this.#bound === undefined) {
      this.#bound = await this.#leaseWithRetry(() => this.#sessionEndpoint(), options, false, trace)
      this.#boundReason = this.#sessionReason()
    }
    const bound = this.#bound
    trace?.route(bound.endpoint.settings, this.#boundReason)

    // A cancel of the session's previous statement still on its way (see Lease.aborting).
    if (bound.aborting !== undefined) await bound.aborting
    // Inside a session nothing is retried: the caller retries the whole unit of work.
    if (bound.endpoint.unresponsive) {
      // Not sent: fail before writing to a server known not to answer.
      bound.discard = true
      throw bound.endpoint.unresponsiveError()
    }
    bound.endpoint.countQuery()
    if (this.#wroteIn === undefined && bound.endpoint.role === 'writer' && this.#target !== 'reader') {
      const scope = this.#cluster.consistency.current()
      if (scope !== undefined && writes(compiledQuery)) this.#wroteIn = scope
    }
    try {
      // Checked inline: without a subscriber the statement costs no closure.
      if (QUERY_CHANNEL.hasSubscribers) {
        return await this.#traced(bound, compiledQuery, () =>
          this.#withDeadline(bound, bound.connection.executeQuery<R>(compiledQuery, options)),
        )
      }
      return await this.#withDeadline(bound, bound.connection.executeQuery<R>(compiledQuery, options))
    } catch (error) {
      this.#noteFailure(bound, classifyError(error))
      throw error
    }
  }

  /**
   * One statement on its own: runs where it routes, and is retried when nothing can be applied twice.
   *
   * The loop is the library's own rather than p-retry's (which `withRetry` uses): it runs for every
   * statement, and the first attempt, almost always the only one, must cost no more than a `for`.
   * p-retry would allocate its operation, options and error wrapping per statement. What may be
   * retried is still decided in one place, `mayRetry`, with the same backoff (`fullJitterDelay`).
   */
  async #executeStatement<R>(
    compiledQuery: CompiledQuery,
    options: AbortableOperationOptions | undefined,
    trace: StatementTrace | undefined,
  ): Promise<QueryResult<R>> {
    let prepared = this.#prepared
    this.#prepared = undefined
    // Read-your-writes: undefined (one flag test) unless a scope is in use.
    const scope = prepared !== undefined ? prepared.scope : this.#currentScope()
    // Classified once, and only when it decides where the statement goes: with no reader and no
    // read-your-writes scope everything runs on the writer, and the verdict is needed only if an
    // attempt fails (see #beforeRetry's caller below).
    const read =
      prepared?.read ??
      (scope !== undefined || this.#target !== 'auto' || this.#cluster.hasReaders
        ? this.#isRead(compiledQuery)
        : undefined)
    const noteWrite = scope !== undefined && read === false && writes(compiledQuery)
    const startedAt = performance.now()
    for (let attempt = 1; ; attempt++) {
      let endpoint: Endpoint | undefined
      let lease: Lease | undefined
      // Set by one of the two catches below: an attempt either got no connection or failed on it.
      let failure: AttemptError | undefined
      try {
        if (prepared !== undefined) {
          lease = prepared.lease
          endpoint = lease.endpoint
          prepared = undefined
          this.#traceRoute(trace, compiledQuery, read, scope, endpoint)
        } else {
          const picked = this.#endpointFor(read === true, scope)
          endpoint = picked instanceof Promise ? await unlessAborted(picked, options?.signal) : picked
          this.#traceRoute(trace, compiledQuery, read, scope, endpoint)
          // Without a signal to honour or session info to collect, an idle connection ready at once
          // is taken without a promise; otherwise (or with none ready) the full acquire.
          const ready =
            options?.signal === undefined && !this.#wantsSessionInfo ? endpoint.acquireNow() : undefined
          lease =
            ready !== undefined
              ? { endpoint, connection: ready, discard: false }
              : await this.#lease(endpoint, options)
        }
      } catch (error) {
        failure = new AttemptError(error, endpoint, 'connect')
      }
      if (lease !== undefined) {
        this.#active = lease
        try {
          lease.endpoint.countQuery()
          if (QUERY_CHANNEL.hasSubscribers) {
            const traced = lease
            return await this.#traced(traced, compiledQuery, () =>
              this.#withDeadline(traced, traced.connection.executeQuery<R>(compiledQuery, options)),
            )
          }
          return await this.#withDeadline(lease, lease.connection.executeQuery<R>(compiledQuery, options))
        } catch (error) {
          // A session we killed for the caller is no sign of trouble on the endpoint: not reported.
          failure = new AttemptError(error, lease.killed === true ? undefined : endpoint, 'query')
          if (failure.classification.connectionLost) lease.discard = true
        } finally {
          // Also after a failure: a write that was sent may have committed.
          if (noteWrite) this.#cluster.consistency.noteWrite(scope)
          this.#active = undefined
          const releasing = lease.endpoint.releaseStatement(lease.connection, lease.discard)
          if (releasing !== undefined) await releasing
        }
      }
      // Not classified on the way in (no reader): the verdict decides the retry now.
      const verdict = read ?? this.#isRead(compiledQuery)
      await this.#beforeRetry(failure as AttemptError, attempt, startedAt, verdict, options, trace)
    }
  }

  /**
   * Tells the statement's trace where an attempt went, and why only when its span records: the
   * reason may need the read/write verdict (classifying the statement), which a metrics-only or
   * sampled-out statement has no use for.
   */
  #traceRoute(
    trace: StatementTrace | undefined,
    compiledQuery: CompiledQuery,
    read: boolean | undefined,
    scope: ConsistencyScope | undefined,
    endpoint: Endpoint,
  ): void {
    if (trace === undefined) return
    trace.route(
      endpoint.settings,
      trace.recording ? this.#routeReason(compiledQuery, read, scope, endpoint) : undefined,
    )
  }

  /**
   * Why a single statement went to `endpoint`, for its span's route event (computed only when traced).
   * A read the router would send to a reader lands on the writer when no reader is configured, none is
   * healthy, or (read-your-writes) none has replayed what the read must see.
   */
  #routeReason(
    compiledQuery: CompiledQuery,
    classified: boolean | undefined,
    scope: ConsistencyScope | undefined,
    endpoint: Endpoint,
  ): string {
    const read = classified ?? this.#isRead(compiledQuery)
    const toReader = endpoint.role === 'reader'
    if (this.#target === 'writer') return 'forced db.writer'
    if (this.#target === 'reader')
      return toReader ? 'forced db.reader' : 'forced db.reader, no healthy reader'
    if (!read) {
      const { kind } = compiledQuery.query
      if (kind === 'SelectQueryNode')
        return 'select that must read the writer (row lock, writer table or catalog)'
      return kind === 'RawNode' ? 'raw statement' : 'write statement'
    }
    if (scope !== undefined)
      return toReader ? 'read-your-writes, reader caught up' : 'read-your-writes, no reader caught up'
    if (toReader) return 'read statement'
    return this.#cluster.config.readers.length === 0
      ? 'read statement, no readers configured'
      : 'no healthy reader'
  }

  /** Why a session (db.connection()) is bound where it is. */
  #sessionReason(): string {
    return this.#target === 'reader' ? 'session, forced db.reader' : 'session'
  }

  /** Runs one attempt traced on `kysely-resilient:query` (callers check it has subscribers). */
  #traced<T>(lease: Lease, compiledQuery: CompiledQuery, run: () => Promise<T>): Promise<T> {
    const { settings } = lease.endpoint
    return QUERY_CHANNEL.tracePromise(run, {
      endpoint: settings.name,
      role: settings.role,
      dialect: settings.dialect,
      address: settings.address,
      operation: operationOf(compiledQuery),
    })
  }

  /**
   * Decides whether a failed attempt of a single statement may run again; rethrows the original
   * error if not. Reports the failure either way, so broken connections are destroyed, a demoted
   * writer is rediscovered and an unreachable reader ejected.
   */
  async #beforeRetry(
    failure: AttemptError,
    attempt: number,
    startedAt: number,
    read: boolean,
    options: AbortableOperationOptions | undefined,
    trace?: StatementTrace,
  ): Promise<void> {
    const { classification } = failure
    if (failure.endpoint !== undefined) this.#cluster.reportFailure(failure.endpoint, classification)
    const { retries, minDelayMs, maxDelayMs, maxElapsedMs } = this.#cluster.config.retry
    const { category } = classification
    const safe = mayRetry(classification, { kind: 'statement', read })
    if (!safe || attempt > retries || options?.signal?.aborted) throw failure.error
    const delayMs = fullJitterDelay(attempt, minDelayMs, maxDelayMs)
    if (performance.now() - startedAt + delayMs > maxElapsedMs) throw failure.error
    this.#cluster.events.emit('retry', {
      endpoint: failure.endpoint?.name ?? 'unknown',
      category,
      code: classification.code,
      attempt,
      delayMs,
      statement: read ? 'read' : 'write',
    })
    trace?.retry({ attempt, endpoint: failure.endpoint?.name ?? 'unknown', classification, delayMs })
    await sleep(delayMs, options?.signal)
    // Waiting for discovery is part of the budget too.
    const remainingMs = maxElapsedMs - (performance.now() - startedAt)
    if (!read) await this.#cluster.writerSettled(Math.max(0, Math.min(maxDelayMs, remainingMs)))
  }

  /**
   * Takes a connection of the endpoint `pick` chooses, for a session or a stream. Opening it is
   * retried like a statement: nothing has been sent yet, so even a transaction can safely try again.
   */
  async #leaseWithRetry(
    pick: () => Endpoint | Promise<Endpoint>,
    options: AbortableOperationOptions | undefined,
    read = false,
    trace?: StatementTrace,
  ): Promise<Lease> {
    const startedAt = performance.now()
    for (let attempt = 1; ; attempt++) {
      let endpoint: Endpoint | undefined
      try {
        const picked = pick()
        endpoint = picked instanceof Promise ? await unlessAborted(picked, options?.signal) : picked
        return await this.#lease(endpoint, options)
      } catch (error) {
        const failure = new AttemptError(error, endpoint, 'connect')
        await this.#beforeRetry(failure, attempt, startedAt, read, options, trace)
      }
    }
  }

  async *#stream<R>(
    compiledQuery: CompiledQuery,
    chunkSize: number,
    options: AbortableOperationOptions | undefined,
    trace: StatementTrace | undefined,
    channel: StreamChannelTrace | undefined,
  ): AsyncIterableIterator<QueryResult<R>> {
    if (this.#bound === undefined && this.#scope === 'session') {
      this.#bound = await this.#leaseWithRetry(() => this.#sessionEndpoint(), options, false, trace)
      this.#boundReason = this.#sessionReason()
    }
    const bound = this.#bound
    if (bound !== undefined) {
      trace?.route(bound.endpoint.settings, this.#boundReason)
      channel?.started(bound.endpoint)
      bound.endpoint.countQuery()
      try {
        yield* bound.connection.streamQuery<R>(compiledQuery, chunkSize, options)
      } catch (error) {
        this.#noteFailure(bound, classifyError(error))
        throw error
      }
      return
    }

    // Only opening the connection is retried: once rows have been yielded, a retry would repeat them.
    const prepared = this.#prepared
    this.#prepared = undefined
    const read = prepared?.read ?? this.#isRead(compiledQuery)
    const scope = prepared !== undefined ? prepared.scope : this.#currentScope()
    const lease =
      prepared?.lease ??
      (await this.#leaseWithRetry(() => this.#endpointFor(read, scope), options, read, trace))
    this.#active = lease
    this.#traceRoute(trace, compiledQuery, read, scope, lease.endpoint)
    channel?.started(lease.endpoint)
    try {
      lease.endpoint.countQuery()
      yield* lease.connection.streamQuery<R>(compiledQuery, chunkSize, options)
    } catch (error) {
      this.#noteFailure(lease, classifyError(error))
      throw error
    } finally {
      this.#active = undefined
      await lease.endpoint.release(lease.connection, lease.discard)
      // A streamed write (`insert ... returning`) is a write like any other.
      if (scope !== undefined && !read && writes(compiledQuery)) this.#cluster.consistency.noteWrite(scope)
    }
  }

  #noteFailure(lease: Lease, classification: ErrorClassification): void {
    // A write inside a read-only transaction fails as 'read-only' on any server: the caller's bug,
    // not a sign that the writer moved.
    if (classification.category === 'read-only' && this.#readOnlyTransaction) return
    if (classification.connectionLost) lease.discard = true
    if (lease.killed === true) return
    this.#cluster.reportFailure(lease.endpoint, classification)
  }

  /**
   * Waits for the driver's answer to a statement on `lease` under its endpoint's watch, but never on
   * a connection that was destroyed under it: past `pool.queryTimeoutMs`, or once the liveness
   * monitor finds the server silent, the connection is destroyed and the caller gets the error; once
   * killSession killed the session, the wait ends with the abort's reason. Some drivers never settle
   * a statement whose connection was destroyed (mysql2 after `destroy()`), and the lease must not
   * wait on it forever.
   */
  #withDeadline<T>(lease: Lease, work: Promise<T>): Promise<T> {
    return lease.endpoint.watch(
      work,
      () => {
        lease.discard = true
        lease.endpoint.discard(lease.connection)
      },
      // Only a statement with a signal can be killed, so only then may the wait end early that way.
      this.#signal === undefined ? undefined : lease,
    )
  }

  /**
   * Waits for Kysely's driver to cancel or kill the statement in flight on `lease` (`abort`), for at
   * most twice `connectTimeoutMs`, like probeRole: it opens a connection and sends one statement, and
   * a server that never answers must not hold the lease. Then runs `after`. Meanwhile the session's
   * next step waits for it (see Lease.aborting).
   */
  async #abortInFlight(lease: Lease, abort: Promise<void> | undefined, after?: () => void): Promise<void> {
    const timeoutMs = lease.endpoint.settings.pool.connectTimeoutMs * 2
    const bounded = withDeadline(Promise.resolve(abort), timeoutMs, () => {
      throw new Error(
        `kysely-resilient: the ${lease.endpoint.name} endpoint did not confirm the cancel or kill ` +
          `within ${timeoutMs} ms`,
      )
    }).finally(() => after?.())
    const settled = bounded.then(
      () => undefined,
      () => undefined,
    )
    lease.aborting = settled
    try {
      await bounded
    } finally {
      if (lease.aborting === settled) lease.aborting = undefined
    }
  }

  async #lease(endpoint: Endpoint, options?: AbortableOperationOptions): Promise<Lease> {
    const connection = await endpoint.acquire(options)
    const lease: Lease = { endpoint, connection, discard: false }
    try {
      // The caller gave up while we waited for a connection: do not run the statement anyway.
      options?.signal?.throwIfAborted()
      if (this.#wantsSessionInfo) {
        this.#wantsSessionInfo = false
        await connection.collectSessionInfo?.()
      }
    } catch (error) {
      await endpoint.release(connection)
      throw error
    }
    return lease
  }

  async #logQuery(query: CompiledQuery, startTime: number, isStream: boolean): Promise<void> {
    await this.#log.query(() => ({
      level: 'query',
      isStream,
      query,
      queryDurationMillis: performance.now() - startTime,
    }))
  }

  async #logError(error: unknown, query: CompiledQuery, startTime: number): Promise<void> {
    await this.#log.error(() => ({
      level: 'error',
      error,
      query,
      queryDurationMillis: performance.now() - startTime,
    }))
  }
}

/** Kysely's own transaction statements (begin, commit, savepoints): they write nothing themselves. */
const TRANSACTION_CONTROL =
  /^\s*(?:begin|start\s+transaction|commit|rollback|savepoint|release\s+savepoint|set\s+transaction)\b/i

/**
 * Whether a statement on the writer may change data, for read-your-writes: anything but a plain
 * SELECT (raw `sql` included: it may write) and Kysely's transaction statements.
 */
function writes(compiledQuery: CompiledQuery): boolean {
  const { query } = compiledQuery
  if (query.kind === 'RawNode') return !TRANSACTION_CONTROL.test(compiledQuery.sql)
  return mayChangeData(query)
}

function controlProviderFor(endpoint: Endpoint): ControlConnectionProvider {
  return async (consumer) => {
    const connection = await endpoint.acquire()
    try {
      await consumer(connection)
    } finally {
      await endpoint.release(connection)
    }
  }
}

/**
 * A stream's `kysely-resilient:query` trace, published by hand in the order `tracePromise` uses
 * (`start`, `end`, then `asyncStart` + `asyncEnd`, or `error` + `asyncStart` + `asyncEnd`) from the
 * moment its connection is taken to its last row or its error.
 */
class StreamChannelTrace {
  readonly #compiledQuery: CompiledQuery
  #context: QueryTraceContext | undefined

  constructor(compiledQuery: CompiledQuery) {
    this.#compiledQuery = compiledQuery
  }

  started(endpoint: Endpoint): void {
    const { settings } = endpoint
    const context: QueryTraceContext = {
      endpoint: settings.name,
      role: settings.role,
      dialect: settings.dialect,
      address: settings.address,
      operation: operationOf(this.#compiledQuery),
    }
    this.#context = context
    QUERY_CHANNEL.start.publish(context)
    QUERY_CHANNEL.end.publish(context)
  }

  succeeded(): void {
    const context = this.#context
    if (context === undefined) return
    QUERY_CHANNEL.asyncStart.publish(context)
    QUERY_CHANNEL.asyncEnd.publish(context)
  }

  failed(error: unknown): void {
    const context = this.#context
    // Failed before a connection was taken: no attempt was made on any endpoint.
    if (context === undefined) return
    context.error = error
    QUERY_CHANNEL.error.publish(context)
    QUERY_CHANNEL.asyncStart.publish(context)
    QUERY_CHANNEL.asyncEnd.publish(context)
  }
}
