/** Servers, schema, clients and operations shared by the overhead benchmark and its profiler. */
import { type Dialect, Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely'
import { KyselyReplicationDialect } from 'kysely-replication'
import { RoundRobinReplicaStrategy } from 'kysely-replication/strategy/round-robin'
import mysql from 'mysql2'
import pg from 'pg'
import type { CreateDbConfig, ResilientDb } from '../../src/index.js'
import { findMariaDbBinaries, findPostgresBinDir } from '../../test/support/binaries.js'
import { startMariaDbCluster } from '../../test/support/mariadb-cluster.js'
import { startPostgresCluster } from '../../test/support/postgres-cluster.js'
import { waitForReplica } from '../../test/support/replication.js'
import type { Engine } from '../../test/support/sql.js'
import { shipped } from '../shipped.js'
import type { BenchDatabase } from './schema.js'

const { createDb } = shipped

export const ROWS = 1000
export const POOL_MAX = intFromEnv('BENCH_POOL_MAX', 10)
// Same idle timeout for both pools (pg.Pool's default is 10 s, ours 30 s), long enough that no pool
// reaps (and later re-opens, with a SCRAM handshake) a connection in the middle of the run.
const IDLE_TIMEOUT_MS = 120_000

/**
 * select: a point SELECT by primary key; insert: a one-row INSERT; update: a point UPDATE by primary
 * key; pair: a point UPDATE, then a point SELECT of the row it changed, which must see the change.
 */
export type Workload = 'select' | 'insert' | 'update' | 'pair'

export const ENGINE_NAME: Record<Engine, string> = { postgres: 'PostgreSQL', mysql: 'MariaDB' }

/** Servers given by URL, per engine: the same variables the tests read. */
const URL_VARIABLES: Record<Engine, { readonly writer: string; readonly reader: string }> = {
  postgres: { writer: 'PG_WRITER_URL', reader: 'PG_READER_URL' },
  mysql: { writer: 'MYSQL_WRITER_URL', reader: 'MYSQL_READER_URL' },
}

export interface Servers {
  readonly engine: Engine
  readonly writerUrl: string
  readonly readerUrl: string
  readonly adminWriterUrl: string
  readonly adminReaderUrl: string
  readonly description: string
  /** Servers given by URL: drop the benchmark table at the end. */
  readonly external: boolean
  stop(): Promise<void>
}

/** Whether `servers(engine)` has anything to run on: URLs given, or local server binaries. */
export function serversAvailable(engine: Engine): boolean {
  if (process.env[URL_VARIABLES[engine].writer]) return true
  return engine === 'postgres' ? findPostgresBinDir() !== undefined : findMariaDbBinaries() !== undefined
}

export async function servers(engine: Engine): Promise<Servers> {
  const variables = URL_VARIABLES[engine]
  const writerUrl = process.env[variables.writer]
  if (writerUrl !== undefined && writerUrl !== '') {
    const readerUrl = process.env[variables.reader] || writerUrl
    return {
      engine,
      writerUrl,
      readerUrl,
      // The replay positions waitForReplica compares (pg_current_wal_insert_lsn() and
      // pg_last_wal_replay_lsn(); @@gtid_binlog_pos and MASTER_GTID_WAIT) need no special role.
      adminWriterUrl: writerUrl,
      adminReaderUrl: readerUrl,
      description:
        readerUrl === writerUrl
          ? `${variables.writer} (no reader given)`
          : `${variables.writer} + ${variables.reader}`,
      external: true,
      stop: async () => {},
    }
  }
  const cluster = engine === 'postgres' ? await startPostgresCluster() : await startMariaDbCluster()
  return {
    ...cluster,
    engine,
    description:
      engine === 'postgres'
        ? 'throwaway local primary + streaming replica'
        : 'throwaway local primary + GTID replica',
    external: false,
    stop: () => cluster.stop(),
  }
}

/**
 * Kysely's own dialect over one server, through the driver's pool, with the settings every plain
 * variant shares; `acquired` counts the connections Kysely took from it (one per statement outside a
 * transaction), so a check can tell which server a statement ran on. Every plain pool counts, the
 * baselines too, so that increment (a few ns) is on both sides of every comparison.
 */
export function plainDialect(
  engine: Engine,
  connectionString: string,
): { dialect: Dialect; acquired: () => number } {
  let acquired = 0
  const dialect = engine === 'mysql' ? mysqlDialect(connectionString) : postgresDialect(connectionString)
  const createDriver = dialect.createDriver.bind(dialect)
  dialect.createDriver = () => {
    const driver = createDriver()
    const acquire = driver.acquireConnection.bind(driver)
    driver.acquireConnection = (options) => {
      acquired++
      return acquire(options)
    }
    return driver
  }
  return { dialect, acquired: () => acquired }
}

function mysqlDialect(uri: string): Dialect {
  const pool = mysql.createPool({
    uri,
    connectionLimit: POOL_MAX,
    maxIdle: POOL_MAX,
    idleTimeout: IDLE_TIMEOUT_MS,
    // createDb turns TCP keepalive on by default; match it.
    enableKeepAlive: true,
  })
  return new MysqlDialect({ pool })
}

function postgresDialect(connectionString: string): Dialect {
  const pool = new pg.Pool({
    connectionString,
    max: POOL_MAX,
    idleTimeoutMillis: IDLE_TIMEOUT_MS,
    // createDb turns TCP keepalive on by default; match it.
    keepAlive: true,
  })
  return new PostgresDialect({ pool })
}

export function plainKysely(engine: Engine, connectionString: string): Kysely<BenchDatabase> {
  return new Kysely<BenchDatabase>({ dialect: plainDialect(engine, connectionString).dialect })
}

/**
 * The nearest peer, kysely-replication: Kysely over its dialect, which sends SELECTs to a replica
 * dialect (round robin, of one here) and everything else to the primary dialect; both are the plain
 * variants' dialects, same pools and settings. `statements` says where its statements ran.
 */
export function replicationKysely(
  engine: Engine,
  writerUrl: string,
  readerUrl: string,
): { db: Kysely<BenchDatabase>; statements: () => { reader: number; writer: number } } {
  const writer = plainDialect(engine, writerUrl)
  const reader = plainDialect(engine, readerUrl)
  const db = new Kysely<BenchDatabase>({
    dialect: new KyselyReplicationDialect({
      primaryDialect: writer.dialect,
      replicaDialects: [reader.dialect],
      // As its README shows; the benchmark starts no transaction.
      replicaStrategy: new RoundRobinReplicaStrategy({ onTransaction: 'error' }),
    }),
  })
  return { db, statements: () => ({ reader: reader.acquired(), writer: writer.acquired() }) }
}

export function routedKysely(
  engine: Engine,
  writerUrl: string,
  readerUrl: string | undefined,
  consistency?: CreateDbConfig['consistency'],
): ResilientDb<BenchDatabase> {
  return createDb<BenchDatabase>({
    dialect: engine,
    writer: writerUrl,
    ...(readerUrl !== undefined ? { readers: [readerUrl] } : {}),
    pool: { max: POOL_MAX, idleTimeoutMs: IDLE_TIMEOUT_MS },
    ...(consistency !== undefined ? { consistency } : {}),
  })
}

/**
 * Point SELECTs that found no row (the replica lagging behind), and pair reads that did not see the
 * UPDATE just before them: both should stay 0.
 */
export const counters = { missingRows: 0, staleReads: 0 }

/** Runs a function in a read-your-writes scope (`db.withReadYourWrites`), for the pair workload. */
export type Scope = (fn: () => Promise<void>) => Promise<void>

// Every UPDATE writes a value no earlier one wrote, so the pair's read can tell its own write.
let nextPayload = ROWS + 1

export function operation(
  db: Kysely<BenchDatabase>,
  workload: Workload,
  ids: ReadonlyArray<number>,
  scope?: Scope,
) {
  if (workload === 'select') {
    return async (i: number) => {
      const row = await db
        .selectFrom('bench_item')
        .select(['id', 'name', 'payload'])
        .where('id', '=', ids[i] as number)
        .executeTakeFirst()
      if (row === undefined) counters.missingRows++
    }
  }
  if (workload === 'update') {
    return async (i: number) => {
      await db
        .updateTable('bench_item')
        .set({ payload: nextPayload++ })
        .where('id', '=', ids[i] as number)
        .execute()
    }
  }
  if (workload === 'pair') {
    return async (i: number) => {
      // Not ids[i]: consecutive operations, the ones in flight together, must not share a row, or one
      // operation's read could see the other's write.
      const id = 1 + (i % ROWS)
      const payload = nextPayload++
      const pair = async () => {
        await db.updateTable('bench_item').set({ payload }).where('id', '=', id).execute()
        const row = await db
          .selectFrom('bench_item')
          .select(['payload'])
          .where('id', '=', id)
          .executeTakeFirst()
        if (row?.payload !== payload) counters.staleReads++
      }
      await (scope === undefined ? pair() : scope(pair))
    }
  }
  return async (i: number) => {
    await db
      .insertInto('bench_item')
      .values({ name: `bench-${i}`, payload: ids[i] as number })
      .execute()
  }
}

/** Runs operations `from` .. `from + count - 1` with `concurrency` workers. */
export async function runOps(
  op: (i: number) => Promise<void>,
  from: number,
  count: number,
  concurrency: number,
): Promise<void> {
  const end = from + count
  if (concurrency === 1) {
    for (let i = from; i < end; i++) await op(i)
    return
  }
  let next = from
  const worker = async () => {
    for (let i = next++; i < end; i = next++) await op(i)
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
}

export function randomIds(count: number): number[] {
  return Array.from({ length: count }, () => 1 + Math.floor(Math.random() * ROWS))
}

/** Creates `bench_item` with ROWS rows and waits until the replica has them. */
export async function setUp(server: Servers): Promise<void> {
  // As the application user, so the table is its own.
  const admin = plainKysely(server.engine, server.writerUrl)
  try {
    await sql`DROP TABLE IF EXISTS bench_item`.execute(admin)
    await (server.engine === 'postgres'
      ? sql`CREATE TABLE bench_item (id serial PRIMARY KEY, name text NOT NULL, payload int NOT NULL)`
      : sql`CREATE TABLE bench_item (id int AUTO_INCREMENT PRIMARY KEY, name varchar(64) NOT NULL, payload int NOT NULL)`
    ).execute(admin)
    await admin
      .insertInto('bench_item')
      .values(Array.from({ length: ROWS }, (_, i) => ({ name: `item-${i + 1}`, payload: i + 1 })))
      .execute()
    await (server.engine === 'postgres'
      ? sql`VACUUM ANALYZE bench_item`
      : sql`ANALYZE TABLE bench_item`
    ).execute(admin)
  } finally {
    await admin.destroy()
  }
  await waitForReplica(server.engine, server.adminWriterUrl, server.adminReaderUrl, 30_000)
}

export function intFromEnv(name: string, fallback: number): number {
  const value = Number(process.env[name])
  return Number.isInteger(value) && value > 0 ? value : fallback
}
