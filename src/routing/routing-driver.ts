import type {
  AbortableOperationOptions,
  DatabaseConnection,
  Driver,
  Log,
  QueryCompiler,
  TransactionSettings,
} from 'kysely'
import type { Endpoint } from '../endpoint/endpoint.js'
import { DatabaseDestroyedError } from '../errors.js'
import { waitOrAbort } from './abort.js'
import type { Cluster } from './cluster.js'
import { RoutingConnection, type RoutingScope, type RoutingTarget } from './routing-connection.js'

/**
 * The Kysely `Driver` behind `createDb`. It hands Kysely lazy {@link RoutingConnection}s and lets
 * the chosen endpoint's own Kysely driver do the SQL of transactions and savepoints.
 */
export class RoutingDriver implements Driver {
  readonly #cluster: Cluster
  readonly #target: RoutingTarget
  readonly #log: Log
  /** Kysely's Log keeps its levels for life: asked once here rather than by every connection. */
  readonly #logging: boolean

  constructor(cluster: Cluster, target: RoutingTarget, log: Log) {
    this.#cluster = cluster
    this.#target = target
    this.#log = log
    this.#logging = log.isLevelEnabled('query') || log.isLevelEnabled('error')
  }

  async init(): Promise<void> {
    await this.#cluster.open()
  }

  /** Kysely's entry point; everything that reaches it directly is a session (see RoutingQueryExecutor). */
  acquireConnection(options?: AbortableOperationOptions): Promise<DatabaseConnection> {
    return this.acquire('session', options)
  }

  /**
   * A single statement's routing connection, synchronously, once the cluster is open (`undefined`
   * before, or after destroy: then {@link acquire} opens it or refuses).
   */
  statementConnection(): RoutingConnection | undefined {
    if (!this.#cluster.isOpen || this.#cluster.destroyed) return undefined
    return this.#connection('statement')
  }

  acquire(scope: RoutingScope, options?: AbortableOperationOptions): Promise<RoutingConnection> {
    // Not async: once the cluster is open this is on every statement's path, and an async function
    // costs a promise and a tick more than handing back a resolved one.
    if (this.#cluster.isOpen && !this.#cluster.destroyed && !options?.signal?.aborted) {
      return Promise.resolve(this.#connection(scope))
    }
    return this.#acquireSlow(scope, options)
  }

  async #acquireSlow(scope: RoutingScope, options?: AbortableOperationOptions): Promise<RoutingConnection> {
    if (this.#cluster.destroyed) throw new DatabaseDestroyedError()
    // Opening the cluster is Kysely's driver `init`: an abort before or during it is tagged so.
    if (!this.#cluster.isOpen) await waitOrAbort(this.#cluster.open(), options?.signal, 'init')
    // Already open: an aborted call is refused where the connection is taken (ScopedConnectionProvider).
    return this.#connection(scope)
  }

  #connection(scope: RoutingScope): RoutingConnection {
    return new RoutingConnection(this.#cluster, this.#target, scope, this.#log, this.#logging)
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    const routing = asRouting(connection)
    const endpoint = await routing.bindForTransaction(settings.accessMode)
    await endpoint.driver.beginTransaction(routing, settings)
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await boundDriver(connection, 'commit').commitTransaction(connection)
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await asRouting(connection).rollback()
  }

  async savepoint(
    connection: DatabaseConnection,
    savepointName: string,
    compileQuery: QueryCompiler['compileQuery'],
  ): Promise<void> {
    const driver = boundDriver(connection, 'savepoint')
    if (driver.savepoint === undefined) throw unsupported('savepoint')
    await driver.savepoint(connection, savepointName, compileQuery)
  }

  async rollbackToSavepoint(
    connection: DatabaseConnection,
    savepointName: string,
    compileQuery: QueryCompiler['compileQuery'],
  ): Promise<void> {
    const driver = boundDriver(connection, 'rollbackToSavepoint')
    if (driver.rollbackToSavepoint === undefined) throw unsupported('rollbackToSavepoint')
    await driver.rollbackToSavepoint(connection, savepointName, compileQuery)
  }

  async releaseSavepoint(
    connection: DatabaseConnection,
    savepointName: string,
    compileQuery: QueryCompiler['compileQuery'],
  ): Promise<void> {
    const driver = boundDriver(connection, 'releaseSavepoint')
    if (driver.releaseSavepoint === undefined) throw unsupported('releaseSavepoint')
    await driver.releaseSavepoint(connection, savepointName, compileQuery)
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    await asRouting(connection).release()
  }

  async destroy(): Promise<void> {
    await this.#cluster.destroy()
  }
}

function asRouting(connection: DatabaseConnection): RoutingConnection {
  if (!(connection instanceof RoutingConnection)) {
    throw new TypeError('kysely-resilient: expected a connection created by this driver')
  }
  return connection
}

/** The Kysely driver of the endpoint a transaction is bound to. */
function boundDriver(connection: DatabaseConnection, operation: string): Driver {
  const endpoint: Endpoint | undefined = asRouting(connection).boundEndpoint
  if (endpoint === undefined) {
    throw new Error(`kysely-resilient: ${operation} on a connection that is not in a transaction`)
  }
  return endpoint.driver
}

function unsupported(operation: string): Error {
  return new Error(`kysely-resilient: the endpoint's driver does not support ${operation}`)
}
