/**
 * The proxy scenario's PgBouncer: one fresh PgBouncer per measurement (test/support/pgbouncer.ts, the
 * issue's settings from settings.ts) in front of the storm's PostgreSQL server, and what it says about
 * the measurement: its pool's peaks, sampled from `SHOW POOLS` while the workers run, and its totals
 * from `SHOW STATS` afterwards.
 */
import { type PgBouncer, startPgBouncer } from '../../test/support/pgbouncer.js'
import type { Row } from '../../test/support/sql.js'
import type { StormServer } from './servers.js'
import { PGBOUNCER } from './settings.js'

/** How often the pool is sampled during a measurement (one admin-console query each time). */
const SAMPLE_INTERVAL_MS = 250

/** What one measurement's PgBouncer saw, for the notes under the table. */
export interface ProxyObservation {
  /** Client connections to PgBouncer at once (cl_active + cl_waiting), most seen. */
  readonly peakClients: number
  /** Clients waiting for a server connection at once (cl_waiting), most seen. */
  readonly peakWaiting: number
  /** Server connections of the app's pool at once (sv_active + sv_idle + sv_used + sv_tested + sv_login), most seen. */
  readonly peakServer: number
  /** The same for PgBouncer's other pools (the auth_query user's, which checks client passwords), most seen. */
  readonly peakOtherServer: number
  /** Longest wait of a queued client for a server connection, ms, most seen (maxwait). */
  readonly peakMaxWaitMs: number
  /** Transactions / queries PgBouncer passed to the server (SHOW STATS). */
  readonly transactions: number
  readonly queries: number
  /** Mean time a transaction waited in PgBouncer's queue for a server connection, ms (total_wait_time / xacts). */
  readonly meanWaitMs: number
  /** Sampling errors, e.g. the admin console refusing a connection. */
  readonly sampleErrors: number
}

export interface ProxyRun {
  readonly pgbouncer: PgBouncer
  /** Starts sampling SHOW POOLS; call when the workers are let go. */
  startSampling(): void
  /** Stops sampling, reads SHOW STATS and returns what PgBouncer saw. */
  finish(): Promise<ProxyObservation>
}

export async function startProxy(server: StormServer): Promise<ProxyRun> {
  const pgbouncer = await startPgBouncer(
    { port: server.port, appUrl: server.appUrl },
    {
      poolMode: PGBOUNCER.poolMode,
      maxClientConn: PGBOUNCER.maxClientConn,
      defaultPoolSize: PGBOUNCER.defaultPoolSize,
      queryWaitTimeoutS: PGBOUNCER.queryWaitTimeoutS,
    },
  )
  let peakClients = 0
  let peakWaiting = 0
  let peakServer = 0
  let peakOtherServer = 0
  let peakMaxWaitMs = 0
  let sampleErrors = 0
  let timer: NodeJS.Timeout | undefined
  let inFlight: Promise<void> = Promise.resolve()
  const sample = async () => {
    try {
      const pools = await pgbouncer.admin('SHOW POOLS')
      const serverConnections = (row: Row) =>
        ['sv_active', 'sv_idle', 'sv_used', 'sv_tested', 'sv_login'].reduce(
          (sum, key) => sum + Number(row[key] ?? 0),
          0,
        )
      const pool = appPool(pools)
      peakOtherServer = Math.max(
        peakOtherServer,
        pools.filter((row) => row !== pool).reduce((sum, row) => sum + serverConnections(row), 0),
      )
      if (pool === undefined) return
      const n = (key: string) => Number(pool[key] ?? 0)
      peakClients = Math.max(peakClients, n('cl_active') + n('cl_waiting'))
      peakWaiting = Math.max(peakWaiting, n('cl_waiting'))
      peakServer = Math.max(peakServer, serverConnections(pool))
      peakMaxWaitMs = Math.max(peakMaxWaitMs, n('maxwait') * 1000 + n('maxwait_us') / 1000)
    } catch {
      sampleErrors++
    }
  }
  return {
    pgbouncer,
    startSampling: () => {
      timer = setInterval(() => {
        inFlight = inFlight.then(sample)
      }, SAMPLE_INTERVAL_MS)
    },
    finish: async () => {
      clearInterval(timer)
      await inFlight
      const stats = appPool(await pgbouncer.admin('SHOW STATS'))
      const n = (key: string) => Number(stats?.[key] ?? 0)
      const transactions = n('total_xact_count')
      return {
        peakClients,
        peakWaiting,
        peakServer,
        peakOtherServer,
        peakMaxWaitMs,
        transactions,
        queries: n('total_query_count'),
        meanWaitMs: transactions > 0 ? n('total_wait_time') / transactions / 1000 : 0,
        sampleErrors,
      }
    },
  }
}

/** The row of the app's database (SHOW POOLS has one per database/user pair, SHOW STATS one per database). */
function appPool(rows: Row[]): Row | undefined {
  return rows.find((row) => row.database === 'app' && (row.user === undefined || row.user === 'app'))
}

export function describeObservation(observation: ProxyObservation): string {
  const { peakClients, peakWaiting, peakServer, peakOtherServer, peakMaxWaitMs } = observation
  const { transactions, queries, meanWaitMs } = observation
  return (
    `PgBouncer: peak ${peakClients} client connections (${peakWaiting} waiting for a server connection), ` +
    `peak ${peakServer} server connections (+${peakOtherServer} of the auth_query user), longest queue wait ${peakMaxWaitMs.toFixed(0)} ms; ` +
    `${transactions} transactions / ${queries} queries passed on, mean queue wait ${meanWaitMs.toFixed(1)} ms per transaction` +
    (observation.sampleErrors > 0 ? `; ${observation.sampleErrors} SHOW POOLS samples failed` : '')
  )
}
