/** Servers, schema, clients and operations shared by the overhead benchmark and its profiler. */
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { createDb, type ResilientDb } from '../../src/index.js'
import { startPostgresCluster } from '../../test/support/postgres-cluster.js'
import { waitForReplica } from '../../test/support/replication.js'
import type { BenchDatabase } from './schema.js'

export const ROWS = 1000
export const POOL_MAX = intFromEnv('BENCH_POOL_MAX', 10)
// Same idle timeout for both pools (pg.Pool's default is 10 s, ours 30 s), long enough that no pool
// reaps (and later re-opens, with a SCRAM handshake) a connection in the middle of the run.
const IDLE_TIMEOUT_MS = 120_000

export type Workload = 'select' | 'insert'

export interface Servers {
  readonly writerUrl: string
  readonly readerUrl: string
  readonly adminWriterUrl: string
  readonly adminReaderUrl: string
  readonly description: string
  /** Servers given by URL: drop the benchmark table at the end. */
  readonly external: boolean
  stop(): Promise<void>
}

export async function servers(): Promise<Servers> {
  const writerUrl = process.env.PG_WRITER_URL
  if (writerUrl !== undefined && writerUrl !== '') {
    const readerUrl = process.env.PG_READER_URL || writerUrl
    return {
      writerUrl,
      readerUrl,
      // pg_current_wal_insert_lsn() and pg_last_wal_replay_lsn() need no special role.
      adminWriterUrl: writerUrl,
      adminReaderUrl: readerUrl,
      description:
        readerUrl === writerUrl ? 'PG_WRITER_URL (no reader given)' : 'PG_WRITER_URL + PG_READER_URL',
      external: true,
      stop: async () => {},
    }
  }
  const cluster = await startPostgresCluster()
  return {
    ...cluster,
    description: 'throwaway local primary + streaming replica',
    external: false,
    stop: () => cluster.stop(),
  }
}

export function plainKysely(connectionString: string): Kysely<BenchDatabase> {
  const pool = new pg.Pool({
    connectionString,
    max: POOL_MAX,
    idleTimeoutMillis: IDLE_TIMEOUT_MS,
    // createDb turns TCP keepalive on by default; match it.
    keepAlive: true,
  })
  return new Kysely<BenchDatabase>({ dialect: new PostgresDialect({ pool }) })
}

export function routedKysely(writerUrl: string, readerUrl: string | undefined): ResilientDb<BenchDatabase> {
  return createDb<BenchDatabase>({
    dialect: 'postgres',
    writer: writerUrl,
    ...(readerUrl !== undefined ? { readers: [readerUrl] } : {}),
    pool: { max: POOL_MAX, idleTimeoutMs: IDLE_TIMEOUT_MS },
  })
}

/** Point SELECTs that found no row (the replica lagging behind): should stay 0. */
export const counters = { missingRows: 0 }

export function operation(db: Kysely<BenchDatabase>, workload: Workload, ids: ReadonlyArray<number>) {
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
  const admin = plainKysely(server.writerUrl)
  try {
    await sql`DROP TABLE IF EXISTS bench_item`.execute(admin)
    await sql`CREATE TABLE bench_item (id serial PRIMARY KEY, name text NOT NULL, payload int NOT NULL)`.execute(
      admin,
    )
    await sql`INSERT INTO bench_item (name, payload)
              SELECT 'item-' || i, i FROM generate_series(1, ${ROWS}) AS i`.execute(admin)
    await sql`VACUUM ANALYZE bench_item`.execute(admin)
  } finally {
    await admin.destroy()
  }
  await waitForReplica('postgres', server.adminWriterUrl, server.adminReaderUrl, 30_000)
}

export function intFromEnv(name: string, fallback: number): number {
  const value = Number(process.env[name])
  return Number.isInteger(value) && value > 0 ? value : fallback
}
