import {
  type Dialect,
  Kysely,
  type KyselyConfig,
  type KyselyProps,
  Log,
  MysqlDialect,
  PostgresDialect,
} from 'kysely'
import type { ReadonlyKysely } from 'kysely/readonly'
import type { CreateDbConfig, SqlDialect } from './config/create-db-config.js'
import { type DbSettings, describeSettings } from './config/db-settings.js'
import { resolveConfig } from './config/resolve-config.js'
import type { ResilientEventListener, ResilientEventMap } from './events/resilient-events.js'
import { Cluster, type DbStats } from './routing/cluster.js'
import type { RoutingTarget } from './routing/routing-connection.js'
import { RoutingDriver } from './routing/routing-driver.js'
import { RoutingQueryExecutor } from './routing/routing-query-executor.js'

/**
 * What `createDb` returns: a normal `Kysely<DB>` (every Kysely feature works unchanged) that sends
 * reads to the readers and writes, transactions and sessions to the writer, plus a few members.
 *
 * @example
 * ```ts
 * const db: ResilientDb<Database> = createDb<Database>({ dialect: 'postgres', writer, readers })
 * const people = await db.selectFrom('person').selectAll().execute() // a reader
 * const fresh = await db.writer.selectFrom('person').selectAll().execute() // the writer
 * console.log(db.stats().writer.inUse)
 * ```
 */
export interface ResilientDb<DB> extends Kysely<DB> {
  /** The same database, with every statement sent to the writer (read-your-writes). */
  readonly writer: Kysely<DB>
  /**
   * The same database, with every statement sent to a reader (the writer when there are none).
   * Typed as Kysely's `ReadonlyKysely`, so a write through it does not compile.
   */
  readonly reader: ReadonlyKysely<DB>
  /** `'postgres'` or `'mysql'`: the config's `dialect` (MySQL and MariaDB are both `'mysql'`). */
  readonly dialect: SqlDialect
  /**
   * The configuration after validation and defaults, without secrets (see {@link DbSettings}):
   * for a health check or a startup log line, without reading the environment again.
   */
  readonly settings: DbSettings
  /** Connection counts and statements served, per endpoint. */
  stats(): DbStats
  /**
   * Runs `fn` so that its reads see its own writes. Inside `fn` (and everything it awaits), a read
   * that follows a write of the scope runs on a reader that has replayed that write, or on the
   * writer (see `consistency.whenBehind`); reads of scopes that did not write stay on the readers.
   * Tokens from {@link consistencyToken} given as `after` make the reads see those writes too, from
   * another process or instance. Scopes nest. Resolves with what `fn` returns.
   *
   * Rejects with `InvalidConsistencyTokenError` when a token is not one `consistencyToken()` made.
   *
   * @example
   * ```ts
   * app.use((req, res, next) => {
   *   db.withReadYourWrites(next, { after: req.get('x-consistency-token') ?? [] }).catch(next)
   * })
   *
   * await db.withReadYourWrites(async () => {
   *   await db.updateTable('cart').set({ total }).where('id', '=', id).execute()
   *   return db.selectFrom('cart').selectAll().where('id', '=', id).executeTakeFirst() // sees the update
   * })
   * ```
   */
  withReadYourWrites<T>(fn: () => T | Promise<T>, options?: ReadYourWritesOptions): Promise<T>
  /**
   * A token for every write committed on the writer before the call, to hand to another process
   * (a cookie, a header, a queue message): `withReadYourWrites(fn, { after: token })` there sees
   * those writes. ASCII letters, digits, `.`, `-` and `_` only; not secret (it holds a WAL location
   * or a GTID position). Costs one small statement on the writer.
   *
   * Rejects with `ReplicationPositionUnavailableError` when the engine keeps no position this
   * library compares (MySQL with `gtid_mode` other than `ON`; MariaDB without a binary log).
   *
   * @example
   * ```ts
   * await db.insertInto('order').values(order).execute()
   * res.cookie('rw', await db.consistencyToken())
   * // the next request, maybe on another instance:
   * await db.withReadYourWrites(() => listOrders(user), { after: req.cookies.rw })
   * ```
   */
  consistencyToken(): Promise<string>
  /**
   * Listens to `'retry'`, `'failover'`, `'reader-ejected'`, `'reader-restored'` or `'error'`.
   * Payloads carry endpoint names, categories, codes and timings, never secrets.
   */
  on<K extends keyof ResilientEventMap>(event: K, listener: ResilientEventListener<K>): this
  /** Removes a listener added with `on`. */
  off<K extends keyof ResilientEventMap>(event: K, listener: ResilientEventListener<K>): this
}

/**
 * Options of `db.withReadYourWrites`.
 *
 * @example
 * ```ts
 * await db.withReadYourWrites(() => loadOrders(userId), { after: message.consistencyToken })
 * ```
 */
export interface ReadYourWritesOptions {
  /**
   * Tokens from `db.consistencyToken()` (of this db or another instance of the same database) whose
   * writes the scope's reads must see. An empty array or list adds nothing.
   *
   * Default: none. Example: `req.get('x-consistency-token')`.
   */
  readonly after?: string | ReadonlyArray<string>
}

class ResilientKysely<DB> extends Kysely<DB> implements ResilientDb<DB> {
  readonly #cluster: Cluster
  readonly writer: Kysely<DB>
  readonly reader: ReadonlyKysely<DB>
  readonly dialect: SqlDialect
  readonly settings: DbSettings

  constructor(props: KyselyProps, cluster: Cluster, writer: Kysely<DB>, reader: Kysely<DB>) {
    super(props)
    this.#cluster = cluster
    this.writer = writer
    this.reader = reader as unknown as ReadonlyKysely<DB>
    this.dialect = cluster.config.dialect
    this.settings = describeSettings(cluster.config)
  }

  stats(): DbStats {
    return this.#cluster.stats()
  }

  async withReadYourWrites<T>(fn: () => T | Promise<T>, options?: ReadYourWritesOptions): Promise<T> {
    if (typeof fn !== 'function') {
      throw new TypeError(`kysely-resilient: withReadYourWrites expects a function, got ${typeof fn}`)
    }
    const after = options?.after
    const tokens = after === undefined ? [] : typeof after === 'string' ? [after] : [...after]
    return this.#cluster.consistency.run(fn, tokens)
  }

  async consistencyToken(): Promise<string> {
    await this.#cluster.open()
    return this.#cluster.consistency.token()
  }

  on<K extends keyof ResilientEventMap>(event: K, listener: ResilientEventListener<K>): this {
    this.#cluster.events.on(event, listener)
    return this
  }

  off<K extends keyof ResilientEventMap>(event: K, listener: ResilientEventListener<K>): this {
    this.#cluster.events.off(event, listener)
    return this
  }
}

/**
 * Creates a Kysely instance over a writer and optional readers. Validates the config at once
 * (throwing a `ConfigError` that names the setting) but opens no connection until the first query.
 *
 * Routing: a SELECT outside a transaction goes to a reader (round-robin by default); a SELECT with
 * a row lock, INSERT/UPDATE/DELETE/MERGE, a data-modifying CTE, schema statements and raw `sql` go
 * to the writer; `transaction()`, `startTransaction()` and `connection()` run on the writer, except
 * a transaction started read-only, which runs on a reader.
 *
 * @example
 * ```ts
 * import { createDb } from 'kysely-resilient'
 *
 * interface Database {
 *   person: { id: Generated<number>; name: string }
 * }
 *
 * const db = createDb<Database>({
 *   dialect: 'postgres',
 *   writer: process.env.DATABASE_URL!,
 *   readers: [process.env.REPLICA_URL!],
 *   pool: { max: 10 },
 * })
 *
 * await db.insertInto('person').values({ name: 'Ada' }).execute() // writer
 * const people = await db.selectFrom('person').selectAll().execute() // reader
 * await db.destroy()
 * ```
 */
export function createDb<DB>(config: CreateDbConfig): ResilientDb<DB> {
  return createDbOver<DB>(new Cluster(resolveConfig(config)))
}

/**
 * `createDb` over a cluster built by the caller. Internal: src/index.ts does not export it. It is a
 * seam for the server-free unit tests, which build the cluster over fake driver modules
 * (test/support/fake-pg.ts) and then get exactly the db `createDb` returns.
 */
export function createDbOver<DB>(cluster: Cluster): ResilientDb<DB> {
  const resolved = cluster.config
  const dialect = kyselyDialect(resolved.dialect)
  const kyselyConfig: KyselyConfig = {
    dialect,
    ...(resolved.log !== undefined ? { log: resolved.log } : {}),
    plugins: [...resolved.plugins],
  }
  const log = new Log(resolved.log ?? [])
  const compiler = dialect.createQueryCompiler()
  const adapter = dialect.createAdapter()

  const props = (target: RoutingTarget): KyselyProps => {
    const driver = new RoutingDriver(cluster, target, log)
    return {
      config: kyselyConfig,
      dialect,
      driver,
      executor: new RoutingQueryExecutor(compiler, adapter, driver, resolved.plugins),
    }
  }

  return new ResilientKysely<DB>(
    props('auto'),
    cluster,
    new Kysely<DB>(props('writer')),
    new Kysely<DB>(props('reader')),
  )
}

/**
 * Kysely's own dialect supplies the query compiler, adapter and introspector, so SQL is generated
 * exactly as plain Kysely generates it. Its driver is never created: ours replaces it.
 */
function kyselyDialect(dialect: SqlDialect): Dialect {
  const unused = () => Promise.reject(new Error('kysely-resilient: the dialect pool is never used'))
  return dialect === 'postgres' ? new PostgresDialect({ pool: unused }) : new MysqlDialect({ pool: unused })
}
