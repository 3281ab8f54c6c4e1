import {
  type AbortableOperationOptions,
  type AccessMode,
  CompiledQuery,
  type ControlConnectionProvider,
  type DatabaseConnection,
  type Log,
  type QueryResult,
} from 'kysely'
import { isReadOnlyStatement } from './classify-statement.js'
import type { Cluster } from './cluster.js'
import type { Endpoint } from './endpoint.js'

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
}

/**
 * The connection Kysely sees. It holds no server connection until it knows what it will run: a
 * single read takes a replica connection for just that statement; a session binds to one endpoint
 * on its first statement or `begin` and keeps it until Kysely releases the connection.
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

  constructor(cluster: Cluster, target: RoutingTarget, scope: RoutingScope, log: Log) {
    this.#cluster = cluster
    this.#target = target
    this.#scope = scope
    this.#log = log
    this.#logging = log.isLevelEnabled('query') || log.isLevelEnabled('error')
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
    if (this.#bound === undefined) {
      const endpoint =
        this.#target === 'reader' || (this.#target === 'auto' && accessMode === 'read only')
          ? this.#cluster.reader()
          : this.#cluster.writer()
      this.#bound = await this.#lease(endpoint, options)
    }
    return this.#bound.endpoint
  }

  async executeQuery<R>(
    compiledQuery: CompiledQuery,
    options?: AbortableOperationOptions,
  ): Promise<QueryResult<R>> {
    if (!this.#logging) return this.#execute<R>(compiledQuery, options)
    const startTime = performance.now()
    try {
      const result = await this.#execute<R>(compiledQuery, options)
      await this.#logQuery(compiledQuery, startTime, false)
      return result
    } catch (error) {
      await this.#logError(error, compiledQuery, startTime)
      throw error
    }
  }

  async *streamQuery<R>(
    compiledQuery: CompiledQuery,
    chunkSize: number,
    options?: AbortableOperationOptions,
  ): AsyncIterableIterator<QueryResult<R>> {
    const startTime = performance.now()
    try {
      yield* this.#stream<R>(compiledQuery, chunkSize, options)
    } catch (error) {
      if (this.#logging) await this.#logError(error, compiledQuery, startTime)
      throw error
    }
    if (this.#logging) await this.#logQuery(compiledQuery, startTime, true)
  }

  async collectSessionInfo(): Promise<void> {
    const lease = this.#active ?? this.#bound
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
    // The control statement must reach the same server as the query it cancels.
    await lease.connection.cancelQuery?.(controlProviderFor(lease.endpoint))
  }

  async killSession(_controlConnectionProvider: ControlConnectionProvider): Promise<void> {
    const lease = this.#active ?? this.#bound
    if (lease === undefined) return
    await lease.connection.killSession?.(controlProviderFor(lease.endpoint))
  }

  /** Rolls back through the endpoint's Kysely driver, which discards the connection if that fails. */
  async rollback(): Promise<void> {
    const lease = this.#requireBound('rollback')
    const query = CompiledQuery.raw('rollback')
    const startTime = performance.now()
    try {
      lease.endpoint.countQuery()
      await lease.endpoint.driver.rollbackTransaction(lease.connection)
    } catch (error) {
      if (this.#logging) await this.#logError(error, query, startTime)
      throw error
    }
    if (this.#logging) await this.#logQuery(query, startTime, false)
  }

  /** Returns the server connection, if one is held. Called once, when Kysely releases this connection. */
  async release(): Promise<void> {
    const lease = this.#bound
    this.#bound = undefined
    if (lease !== undefined) await lease.endpoint.driver.releaseConnection(lease.connection)
  }

  #requireBound(operation: string): Lease {
    if (this.#bound === undefined) {
      throw new Error(`kysely-resilient: ${operation} on a connection that is not in a transaction`)
    }
    return this.#bound
  }

  /** Where a statement goes when this connection is not bound yet. */
  #endpointFor(compiledQuery: CompiledQuery): Endpoint {
    if (this.#target === 'writer') return this.#cluster.writer()
    if (this.#target === 'reader') return this.#cluster.reader()
    // A session's statements share server state (temp tables, SET, locks): keep them on the writer.
    if (this.#scope === 'session') return this.#cluster.writer()
    return isReadOnlyStatement(compiledQuery.query) ? this.#cluster.reader() : this.#cluster.writer()
  }

  async #execute<R>(
    compiledQuery: CompiledQuery,
    options?: AbortableOperationOptions,
  ): Promise<QueryResult<R>> {
    if (this.#bound === undefined && this.#scope === 'session') {
      this.#bound = await this.#lease(this.#endpointFor(compiledQuery), options)
    }
    const bound = this.#bound
    if (bound !== undefined) {
      bound.endpoint.countQuery()
      return bound.connection.executeQuery<R>(compiledQuery, options)
    }

    const lease = await this.#lease(this.#endpointFor(compiledQuery), options)
    this.#active = lease
    try {
      lease.endpoint.countQuery()
      return await lease.connection.executeQuery<R>(compiledQuery, options)
    } finally {
      this.#active = undefined
      await lease.endpoint.driver.releaseConnection(lease.connection)
    }
  }

  async *#stream<R>(
    compiledQuery: CompiledQuery,
    chunkSize: number,
    options?: AbortableOperationOptions,
  ): AsyncIterableIterator<QueryResult<R>> {
    if (this.#bound === undefined && this.#scope === 'session') {
      this.#bound = await this.#lease(this.#endpointFor(compiledQuery), options)
    }
    const bound = this.#bound
    if (bound !== undefined) {
      bound.endpoint.countQuery()
      yield* bound.connection.streamQuery<R>(compiledQuery, chunkSize, options)
      return
    }

    const lease = await this.#lease(this.#endpointFor(compiledQuery), options)
    this.#active = lease
    try {
      lease.endpoint.countQuery()
      yield* lease.connection.streamQuery<R>(compiledQuery, chunkSize, options)
    } finally {
      this.#active = undefined
      await lease.endpoint.driver.releaseConnection(lease.connection)
    }
  }

  async #lease(endpoint: Endpoint, options?: AbortableOperationOptions): Promise<Lease> {
    const connection = await endpoint.driver.acquireConnection(options)
    const lease = { endpoint, connection }
    try {
      // The caller gave up while we waited for a connection: do not run the statement anyway.
      options?.signal?.throwIfAborted()
      if (this.#wantsSessionInfo) {
        this.#wantsSessionInfo = false
        await connection.collectSessionInfo?.()
      }
    } catch (error) {
      await endpoint.driver.releaseConnection(connection)
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

function controlProviderFor(endpoint: Endpoint): ControlConnectionProvider {
  return async (consumer) => {
    const connection = await endpoint.driver.acquireConnection()
    try {
      await consumer(connection)
    } finally {
      await endpoint.driver.releaseConnection(connection)
    }
  }
}
