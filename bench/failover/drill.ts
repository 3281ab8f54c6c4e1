/** One failover drill: one engine, one topology, its own throwaway primary + replica. See bench/README.md. */
import { classifyError, createDb, type ResilientDb } from '../../src/index.js'
import { withRetry } from '../../src/retry/with-retry.js'
import { findMariaDbBinaries, findPostgresBinDir } from '../../test/support/binaries.js'
import { FaultProxy, portOf } from '../../test/support/fault-proxy.js'
import type { DatabaseServer } from '../../test/support/local-server.js'
import { startMariaDbCluster } from '../../test/support/mariadb-cluster.js'
import { pollUntil } from '../../test/support/poll.js'
import { startPostgresCluster } from '../../test/support/postgres-cluster.js'
import { waitForReplica } from '../../test/support/replication.js'
import { type Engine, queryOnce } from '../../test/support/sql.js'

export type Topology = 'A' | 'B'

export const TOPOLOGY_LABEL: Record<Topology, string> = {
  A: 'A: writer list',
  B: 'B: endpoint + DNS flip',
}

export interface DrillOptions {
  /** Steady stream before the crash. */
  readonly steadyMs: number
  /** Stream kept running after promote() resolved (longer while no write has succeeded yet). */
  readonly afterMs: number
  /** Pause between the old primary's death and promote(): how long failure detection takes. */
  readonly promoteDelayMs: number
  /** Synchronous (PostgreSQL) / semi-synchronous (MariaDB) replication, so no acknowledged commit is lost. */
  readonly syncReplication: boolean
  /**
   * withRetry's `idempotent` for the writes (reads always pass true). The INSERTs are idempotent either
   * way; false shows what an application that cannot say so gets to see.
   */
  readonly idempotentWrites: boolean
}

/** What the application passes to withRetry for every write and read of the stream. */
export const RETRY_OPTIONS = {
  idempotent: true,
  retries: 50,
  minDelayMs: 50,
  maxDelayMs: 500,
  maxElapsedMs: 15_000,
} as const

/** The longest the stream keeps going after promotion while no write has succeeded. */
const MAX_WAIT_FOR_FIRST_WRITE_MS = 15_000
/** A loop still busy this long after it was told to stop is abandoned (its op is bounded by withRetry). */
const LOOP_STOP_TIMEOUT_MS = 25_000

interface DrillDatabase {
  failover_item: { k: string; n: number }
}

interface DrillCluster {
  readonly engine: Engine
  readonly writerUrl: string
  readonly readerUrl: string
  readonly adminWriterUrl: string
  readonly adminReaderUrl: string
  readonly primary: DatabaseServer
  readonly replica: DatabaseServer | undefined
  stop(): Promise<void>
}

/** Everything the drill started and has not released yet: what Ctrl-C must tear down. */
export interface Resources {
  cluster: DrillCluster | undefined
  proxy: FaultProxy | undefined
  db: ResilientDb<DrillDatabase> | undefined
  /** Tells the stream to stop after its current operations. */
  stopStream: (() => void) | undefined
}

export interface TimelineEntry {
  /** ms since the crash (negative: before it). */
  readonly t: number
  readonly what: string
}

export interface Integrity {
  /** Acknowledged writes. */
  readonly acked: number
  /** Rows on the new primary. */
  readonly rows: number
  /** Acknowledged writes with no row on the new primary. */
  readonly missing: number
  /** Keys with more than one row (impossible with the primary key; checked anyway). */
  readonly duplicateKeys: number
  /** Acknowledged keys whose row holds another write's sequence number. */
  readonly wrongValue: number
  /** Rows whose write was never acknowledged (it failed, or was in flight when the drill stopped). */
  readonly unackedPresent: number
}

export interface DrillResult {
  readonly engine: Engine
  readonly topology: Topology
  /** crash: stop signal sent; stopped: the old primary exited; promoted: promote() resolved. ms since crash. */
  readonly stoppedAt: number
  readonly promoteStartedAt: number
  readonly promotedAt: number
  /** First write / read acknowledged after the crash, ms since promote() resolved (negative: before). */
  readonly firstWriteAfterPromotion: number | undefined
  readonly firstReadAfterPromotion: number | undefined
  /** Last write acknowledged before the crash to the first one after it. */
  readonly writeOutage: number | undefined
  readonly writesAcked: number
  readonly readsOk: number
  /** withRetry rejections seen by the application. */
  readonly writeErrors: number
  readonly readErrors: number
  /** withRetry's retries (the application's), and the library's own statement retries ('retry' events). */
  readonly appRetries: { readonly write: number; readonly read: number }
  readonly libraryRetries: { readonly write: number; readonly read: number }
  /** Acknowledged writes that a withRetry retry found already committed (0 rows inserted). */
  readonly retriedAlreadyCommitted: number
  /** Point reads of an acknowledged key that found no row. */
  readonly readMisses: number
  readonly failoverEvents: ReadonlyArray<string>
  readonly integrity: Integrity
  readonly errorSamples: ReadonlyArray<string>
  readonly timeline: ReadonlyArray<TimelineEntry>
  /** The stream did not stop within LOOP_STOP_TIMEOUT_MS. */
  readonly hung: boolean
}

/** The drill starts, kills and promotes local servers, so it needs the server binaries. */
export function engineAvailable(engine: Engine): boolean {
  return engine === 'postgres' ? findPostgresBinDir() !== undefined : findMariaDbBinaries() !== undefined
}

export async function runDrill(
  engine: Engine,
  topology: Topology,
  options: DrillOptions,
  resources: Resources,
): Promise<DrillResult> {
  const cluster: DrillCluster =
    engine === 'postgres' ? await startPostgresCluster() : await startMariaDbCluster()
  resources.cluster = cluster
  const replica = cluster.replica
  if (replica === undefined) throw new Error('the cluster has no replica')

  if (options.syncReplication) await enableSyncReplication(cluster)
  await createTable(cluster)

  let writer: string | string[]
  if (topology === 'A') {
    writer = [cluster.writerUrl, cluster.readerUrl]
  } else {
    const proxy = await FaultProxy.start({ targetPort: portOf(cluster.writerUrl) })
    resources.proxy = proxy
    writer = proxy.url(cluster.writerUrl)
  }
  // No readers: SELECTs go to the writer too, so reads cross the failover as well.
  const db = createDb<DrillDatabase>({ dialect: engine, writer })
  resources.db = db

  // Absolute times (performance.now()) while running; reported as ms since the crash.
  const now = () => performance.now()
  const timeline: TimelineEntry[] = []
  const note = (what: string) => timeline.push({ t: now(), what })
  const libraryRetries = { write: 0, read: 0 }
  const failoverEvents: string[] = []
  db.on('retry', (event) => {
    libraryRetries[event.statement]++
    note(
      `library retry (${event.statement}) after ${event.category} ${event.code ?? ''} on ${event.endpoint}`,
    )
  })
  db.on('failover', (event) => {
    failoverEvents.push(`${event.from} -> ${event.to} in ${event.durationMs} ms (${event.reason})`)
    note(`failover event ${event.from} -> ${event.to} (discovery took ${event.durationMs} ms)`)
  })
  db.on('error', (event) =>
    note(`'error' event: ${event.reason} on ${event.endpoint} (${event.code ?? event.category})`),
  )

  const insert = async (k: string, n: number): Promise<bigint> => {
    const query = db.insertInto('failover_item').values({ k, n })
    const idempotent =
      engine === 'postgres'
        ? query.onConflict((conflict) => conflict.column('k').doNothing())
        : query.ignore()
    const result = await idempotent.executeTakeFirstOrThrow()
    return result.numInsertedOrUpdatedRows ?? 0n
  }

  // Warm up: open the pools (and, for the writer list, run the startup discovery).
  await insert('warm-up', 0)
  await db.selectFrom('failover_item').select('n').where('k', '=', 'warm-up').executeTakeFirst()

  const acked = new Map<string, number>()
  const appRetries = { write: 0, read: 0 }
  const errorSamples: string[] = []
  let writeErrors = 0
  let readErrors = 0
  let readsOk = 0
  let readMisses = 0
  let retriedAlreadyCommitted = 0
  // Set once the old primary has exited: anything acknowledged later came from the new primary.
  let primaryGone = false
  let lastAckOnOldPrimary: number | undefined
  let firstWriteOnNewPrimary: number | undefined
  let firstReadOnNewPrimary: number | undefined
  let lastAckedKey = 'warm-up'
  let stopping = false
  // Ctrl-C or the deadline: once the pools are destroyed every operation fails at once, and a loop of
  // them would never yield to the event loop again.
  resources.stopStream = () => {
    stopping = true
  }

  const failure = (loop: 'write' | 'read', error: unknown, attempt: number): void => {
    const { category, code } = classifyError(error)
    note(`${loop} attempt ${attempt} failed: ${category} ${code ?? ''}`)
  }
  const surfaced = (loop: 'write' | 'read', error: unknown): void => {
    const { category, code } = classifyError(error)
    const message = error instanceof Error ? error.message : String(error)
    note(`${loop} SURFACED to the app: ${category} ${code ?? ''}`)
    if (errorSamples.length < 5) errorSamples.push(`${loop}: ${category} ${code ?? ''} ${message}`)
  }

  const writeLoop = async () => {
    for (let seq = 1; !stopping; seq++) {
      const k = `k${String(seq).padStart(7, '0')}`
      let lastAttempt = 1
      try {
        const inserted = await withRetry(
          async (attempt) => {
            lastAttempt = attempt
            try {
              return await insert(k, seq)
            } catch (error) {
              failure('write', error, attempt)
              throw error
            }
          },
          { ...RETRY_OPTIONS, idempotent: options.idempotentWrites, onRetry: () => appRetries.write++ },
        )
        const t = now()
        acked.set(k, seq)
        lastAckedKey = k
        if (inserted === 0n) {
          if (lastAttempt > 1) retriedAlreadyCommitted++
          else note(`write ${k} inserted no row on its first attempt (unexpected)`)
        }
        if (!primaryGone) lastAckOnOldPrimary = t
        else if (firstWriteOnNewPrimary === undefined) {
          firstWriteOnNewPrimary = t
          note(`first write acknowledged by the new primary (${k}, withRetry attempt ${lastAttempt})`)
        }
      } catch (error) {
        writeErrors++
        surfaced('write', error)
        // A failure that comes back at once must not turn the loop into one that never yields.
        await yieldToEventLoop()
      }
    }
  }

  const readLoop = async () => {
    while (!stopping) {
      const k = lastAckedKey
      let lastAttempt = 1
      try {
        const row = await withRetry(
          async (attempt) => {
            lastAttempt = attempt
            try {
              return await db.selectFrom('failover_item').select('n').where('k', '=', k).executeTakeFirst()
            } catch (error) {
              failure('read', error, attempt)
              throw error
            }
          },
          { ...RETRY_OPTIONS, onRetry: () => appRetries.read++ },
        )
        readsOk++
        if (row === undefined) {
          readMisses++
          note(`read of acknowledged ${k} found no row`)
        }
        if (primaryGone && firstReadOnNewPrimary === undefined) {
          firstReadOnNewPrimary = now()
          note(`first read answered by the new primary (withRetry attempt ${lastAttempt})`)
        }
      } catch (error) {
        readErrors++
        surfaced('read', error)
        await yieldToEventLoop()
      }
    }
  }

  const loops = Promise.all([writeLoop(), readLoop()])
  await sleep(options.steadyMs)

  // The crash: PostgreSQL immediate shutdown (SIGQUIT), MariaDB SIGKILL (the harness's 'immediate').
  const crashAt = now()
  note(
    `crash: ${engine === 'postgres' ? 'pg_ctl stop -m immediate (SIGQUIT)' : 'SIGKILL'} sent to the primary`,
  )
  await cluster.primary.stop('immediate')
  primaryGone = true
  const stoppedAt = now()
  note('old primary has exited')
  if (engine === 'mysql') {
    // What a failover tool does first: let the replica apply every event it received.
    await applyRelayLog(cluster.adminReaderUrl)
    note('replica applied its relay log')
  }
  if (options.promoteDelayMs > 0) await sleep(options.promoteDelayMs)
  const promoteStartedAt = now()
  note('promote() called')
  await replica.promote()
  const promotedAt = now()
  note('promote() resolved')
  if (resources.proxy !== undefined) {
    resources.proxy.retarget(replica.port)
    note('proxy retargeted at the new primary (DNS flip)')
  }

  await sleep(options.afterMs)
  const waitUntil = performance.now() + MAX_WAIT_FOR_FIRST_WRITE_MS
  while (firstWriteOnNewPrimary === undefined && performance.now() < waitUntil) await sleep(50)
  stopping = true
  const stopped = await settlesWithin(loops, LOOP_STOP_TIMEOUT_MS)
  if (!stopped) note(`the stream did not stop within ${LOOP_STOP_TIMEOUT_MS} ms`)

  resources.db = undefined
  await db.destroy()
  const integrity = await checkIntegrity(cluster, acked)

  const since = (from: number) => (t: number | undefined) => (t === undefined ? undefined : t - from)
  return {
    engine,
    topology,
    stoppedAt: stoppedAt - crashAt,
    promoteStartedAt: promoteStartedAt - crashAt,
    promotedAt: promotedAt - crashAt,
    firstWriteAfterPromotion: since(promotedAt)(firstWriteOnNewPrimary),
    firstReadAfterPromotion: since(promotedAt)(firstReadOnNewPrimary),
    writeOutage:
      lastAckOnOldPrimary === undefined ? undefined : since(lastAckOnOldPrimary)(firstWriteOnNewPrimary),
    writesAcked: acked.size,
    readsOk,
    writeErrors,
    readErrors,
    appRetries,
    libraryRetries,
    retriedAlreadyCommitted,
    readMisses,
    failoverEvents,
    integrity,
    errorSamples,
    timeline: timeline.map((entry) => ({ t: entry.t - crashAt, what: entry.what })),
    hung: !stopped,
  }
}

/** Stops and removes whatever `resources` still holds; never throws. */
export async function release(resources: Resources): Promise<void> {
  const { db, proxy, cluster } = resources
  resources.stopStream?.()
  resources.stopStream = undefined
  resources.db = undefined
  resources.proxy = undefined
  resources.cluster = undefined
  await db?.destroy().catch(() => undefined)
  await proxy?.close().catch(() => undefined)
  await cluster?.stop().catch(() => undefined)
}

/**
 * PostgreSQL: synchronous_standby_names = '*' (commit waits for the standby's flush, like RDS
 * Multi-AZ). MariaDB: semi-synchronous replication (commit waits for the replica's relay log). Set
 * on the primary only, so the promoted replica does not wait for a standby it no longer has.
 */
async function enableSyncReplication(cluster: DrillCluster): Promise<void> {
  if (cluster.engine === 'postgres') {
    await queryOnce('postgres', cluster.adminWriterUrl, "ALTER SYSTEM SET synchronous_standby_names = '*'")
    await queryOnce('postgres', cluster.adminWriterUrl, 'SELECT pg_reload_conf()')
    await pollUntil(
      async () => {
        const rows = await queryOnce(
          'postgres',
          cluster.adminWriterUrl,
          'SELECT sync_state FROM pg_stat_replication',
        )
        return rows.some((row) => row.sync_state === 'sync') ? true : undefined
      },
      { timeoutMs: 10_000, what: 'the standby to become synchronous' },
    )
    return
  }
  for (const sql of [
    'SET GLOBAL rpl_semi_sync_master_enabled = ON',
    "SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC'",
  ]) {
    await queryOnce('mysql', cluster.adminWriterUrl, sql)
  }
  for (const sql of [
    'SET GLOBAL rpl_semi_sync_slave_enabled = ON',
    'STOP SLAVE IO_THREAD',
    'START SLAVE IO_THREAD',
  ]) {
    await queryOnce('mysql', cluster.adminReaderUrl, sql)
  }
  await pollUntil(
    async () => {
      const rows = await queryOnce(
        'mysql',
        cluster.adminWriterUrl,
        "SHOW STATUS LIKE 'Rpl_semi_sync_master_status'",
      )
      return rows[0]?.Value === 'ON' ? true : undefined
    },
    { timeoutMs: 10_000, what: 'semi-synchronous replication to switch on' },
  )
}

async function createTable(cluster: DrillCluster): Promise<void> {
  const ddl =
    cluster.engine === 'postgres'
      ? 'CREATE TABLE failover_item (k text PRIMARY KEY, n int NOT NULL)'
      : 'CREATE TABLE failover_item (k varchar(64) PRIMARY KEY, n int NOT NULL) ENGINE=InnoDB'
  await queryOnce(cluster.engine, cluster.writerUrl, ddl)
  await waitForReplica(cluster.engine, cluster.adminWriterUrl, cluster.adminReaderUrl, 30_000)
}

/** MariaDB: waits until the replica's SQL thread has applied everything its IO thread received. */
async function applyRelayLog(adminReplicaUrl: string): Promise<void> {
  const [status] = await queryOnce('mysql', adminReplicaUrl, 'SHOW SLAVE STATUS')
  const received = String(status?.Gtid_IO_Pos ?? '')
  if (received === '') return
  const [waited] = await queryOnce('mysql', adminReplicaUrl, 'SELECT MASTER_GTID_WAIT(?, 10) AS result', [
    received,
  ])
  if (Number(waited?.result) !== 0)
    throw new Error(`the replica did not apply its relay log up to ${received}`)
}

/** Every acknowledged write on the new primary exactly once, with its own value. */
async function checkIntegrity(cluster: DrillCluster, acked: ReadonlyMap<string, number>): Promise<Integrity> {
  const rows = await queryOnce(
    cluster.engine,
    cluster.adminReaderUrl,
    "SELECT k, count(*) AS c, min(n) AS n FROM failover_item WHERE k <> 'warm-up' GROUP BY k",
  )
  const found = new Map(rows.map((row) => [String(row.k), { count: Number(row.c), n: Number(row.n) }]))
  let missing = 0
  let wrongValue = 0
  for (const [k, n] of acked) {
    const row = found.get(k)
    if (row === undefined) missing++
    else if (row.n !== n) wrongValue++
  }
  return {
    acked: acked.size,
    rows: rows.length,
    missing,
    duplicateKeys: [...found.values()].filter((row) => row.count > 1).length,
    wrongValue,
    unackedPresent: [...found.keys()].filter((k) => !acked.has(k)).length,
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Whether `promise` settles within `ms`; the timer does not keep the process alive afterwards. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms)
  })
  try {
    return await Promise.race([promise.then(() => true), timeout])
  } finally {
    clearTimeout(timer)
  }
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}
