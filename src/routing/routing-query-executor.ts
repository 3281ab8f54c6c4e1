import {
  type AbortableOperationOptions,
  type AbortableQueryOptions,
  type CompiledQuery,
  type ConnectionProvider,
  type DatabaseConnection,
  DefaultQueryExecutor,
  type DialectAdapter,
  type KyselyPlugin,
  type QueryCompiler,
  type QueryResult,
} from 'kysely'
import { waitOrAbort } from './abort.js'
import type { RoutingScope } from './routing-connection.js'
import type { RoutingDriver } from './routing-driver.js'

/**
 * Hands out routing connections of one scope. With an abort signal, the server connection is taken
 * before the consumer runs (for a statement, `compiledQuery` says where it routes), as plain Kysely
 * acquires it, so an abort while waiting for it rejects the way plain Kysely's does: tagged
 * `acquireConnection:acquire` (see abort.ts). Without one it stays lazy: the statement takes it.
 */
class ScopedConnectionProvider implements ConnectionProvider {
  readonly #driver: RoutingDriver
  readonly #scope: RoutingScope
  readonly #compiledQuery: CompiledQuery | undefined

  constructor(driver: RoutingDriver, scope: RoutingScope, compiledQuery?: CompiledQuery) {
    this.#driver = driver
    this.#scope = scope
    this.#compiledQuery = compiledQuery
  }

  provideConnection<T>(
    consumer: (connection: DatabaseConnection) => Promise<T>,
    options?: AbortableOperationOptions,
  ): Promise<T> {
    // A single statement without a signal takes its server connection itself and gives it back
    // itself (RoutingConnection.executeQuery): nothing to take ahead and nothing left to release, so
    // the consumer runs at once, without an async frame of this provider around it.
    if (this.#scope === 'statement' && options?.signal === undefined) {
      const connection = this.#driver.statementConnection()
      if (connection !== undefined) return consumer(connection)
    }
    return this.#provide(consumer, options)
  }

  async #provide<T>(
    consumer: (connection: DatabaseConnection) => Promise<T>,
    options: AbortableOperationOptions | undefined,
  ): Promise<T> {
    const connection = await this.#driver.acquire(this.#scope, options)
    const signal = options?.signal
    if (signal !== undefined) {
      await waitOrAbort(
        connection.prepare(this.#compiledQuery, options),
        signal,
        'acquireConnection:acquire',
        (work) => {
          // Like Kysely's RuntimeDriver: whatever the acquisition still gets is given back.
          void work.then(
            () => connection.release(),
            () => connection.release(),
          )
        },
      )
    }
    try {
      return await consumer(connection)
    } finally {
      // A single statement gives its connection back itself: usually nothing is left to release.
      if (connection.holdsConnection) await this.#driver.releaseConnection(connection)
    }
  }
}

/**
 * Kysely's executor, told apart by how it is used. Kysely runs a single statement through
 * `executeQuery`/`stream`, and everything that needs one session for several statements
 * (`connection()`, `transaction()`, `startTransaction()`, migrations) through `provideConnection`.
 * The first kind is routed statement by statement; the second is a session. Plugins, `withSchema`
 * and friends go through the `with*` methods below and keep the routing.
 */
export class RoutingQueryExecutor extends DefaultQueryExecutor {
  readonly #compiler: QueryCompiler
  readonly #adapter: DialectAdapter
  readonly #driver: RoutingDriver
  readonly #statements: DefaultQueryExecutor

  constructor(
    compiler: QueryCompiler,
    adapter: DialectAdapter,
    driver: RoutingDriver,
    plugins: ReadonlyArray<KyselyPlugin> = [],
  ) {
    super(compiler, adapter, new ScopedConnectionProvider(driver, 'session'), [...plugins])
    this.#compiler = compiler
    this.#adapter = adapter
    this.#driver = driver
    this.#statements = new DefaultQueryExecutor(
      compiler,
      adapter,
      new ScopedConnectionProvider(driver, 'statement'),
      [...plugins],
    )
  }

  override executeQuery<R>(
    compiledQuery: CompiledQuery,
    options?: AbortableQueryOptions,
  ): Promise<QueryResult<R>> {
    if (options?.signal !== undefined)
      return this.#prepared(compiledQuery).executeQuery<R>(compiledQuery, options)
    return this.#statements.executeQuery<R>(compiledQuery, options)
  }

  override stream<R>(
    compiledQuery: CompiledQuery,
    chunkSize: number,
    options?: AbortableOperationOptions,
  ): AsyncIterableIterator<QueryResult<R>> {
    if (options?.signal !== undefined)
      return this.#prepared(compiledQuery).stream<R>(compiledQuery, chunkSize, options)
    return this.#statements.stream<R>(compiledQuery, chunkSize, options)
  }

  /** For a statement with a signal: an executor whose provider takes its connection ahead. */
  #prepared(compiledQuery: CompiledQuery): DefaultQueryExecutor {
    return this.#statements.withConnectionProvider(
      new ScopedConnectionProvider(this.#driver, 'statement', compiledQuery),
    )
  }

  override withPlugins(plugins: ReadonlyArray<KyselyPlugin>): RoutingQueryExecutor {
    return this.#with([...this.plugins, ...plugins])
  }

  override withPlugin(plugin: KyselyPlugin): RoutingQueryExecutor {
    return this.#with([...this.plugins, plugin])
  }

  override withPluginAtFront(plugin: KyselyPlugin): RoutingQueryExecutor {
    return this.#with([plugin, ...this.plugins])
  }

  override withoutPlugins(): RoutingQueryExecutor {
    return this.#with([])
  }

  /** Inside a session every statement runs on the session's connection: no routing left to do. */
  override withConnectionProvider(connectionProvider: ConnectionProvider): DefaultQueryExecutor {
    return new DefaultQueryExecutor(this.#compiler, this.#adapter, connectionProvider, [...this.plugins])
  }

  #with(plugins: ReadonlyArray<KyselyPlugin>): RoutingQueryExecutor {
    return new RoutingQueryExecutor(this.#compiler, this.#adapter, this.#driver, plugins)
  }
}
