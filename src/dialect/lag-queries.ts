import { CompiledQuery, type DatabaseConnection } from 'kysely'
import type { DatabasePlatform } from './topology-queries.js'

/**
 * How a server reports its replay lag, found on the first lag check of an endpoint and kept: the
 * platform does not change under an endpoint (a failover changes roles, not engines).
 *
 * - `postgres`: a streaming replica's WAL receive/replay locations and last replayed commit time.
 * - `aurora-postgres`: `aurora_replica_status()`, Aurora's own view of its instances (an Aurora
 *   reader replays no WAL stream of its own, so the WAL functions say nothing there).
 * - `mysql-replica` / `mysql-slave`: `SHOW REPLICA STATUS` (MySQL 8.0.22+, MariaDB 10.5.1+; the only
 *   form on MySQL 8.4) or, on older servers, `SHOW SLAVE STATUS`. MySQL names the columns
 *   `Replica_*`/`Source_*` under the new statement; MariaDB keeps `Slave_*`/`Master_*`.
 * - `aurora-mysql`: `information_schema.replica_host_status` (an Aurora MySQL reader has no
 *   replication channel: `SHOW REPLICA STATUS` returns no row there).
 *
 * @example
 * ```ts
 * for (const reader of db.stats().readers) console.log(reader.name, reader.lagSource, reader.lagMs)
 * ```
 */
export type LagSource = 'postgres' | 'aurora-postgres' | 'mysql-replica' | 'mysql-slave' | 'aurora-mysql'

/**
 * One endpoint's lag reader: picks the {@link LagSource} from the endpoint's platform (found on its
 * first connection) on the first check, then reads the lag with it.
 */
export class ReplayLagReader {
  #source: LagSource | undefined

  /** The source found so far (for `db.stats()`), `undefined` before the first check. */
  get source(): LagSource | undefined {
    return this.#source
  }

  /**
   * The replay lag in milliseconds: 0 for a server that is not a replica (or has replayed all it
   * received), `Infinity` for a replica whose replication stopped with work pending, and
   * `undefined` when the server is a replica that reports no lag: unknown, never taken for 0.
   */
  async read(connection: DatabaseConnection, platform: DatabasePlatform): Promise<number | undefined> {
    this.#source ??= lagSourceOf(platform)
    switch (this.#source) {
      case 'postgres':
        return postgresLagMs(connection)
      case 'aurora-postgres':
        return auroraLagMs(connection, AURORA_POSTGRES_LAG)
      case 'aurora-mysql':
        return auroraLagMs(connection, AURORA_MYSQL_LAG)
      case 'mysql-replica':
      case 'mysql-slave':
        return this.#mysqlLagMs(connection, this.#source)
    }
  }

  async #mysqlLagMs(
    connection: DatabaseConnection,
    source: 'mysql-replica' | 'mysql-slave',
  ): Promise<number | undefined> {
    let rows: ReadonlyArray<MysqlReplicaStatus>
    try {
      rows = (
        await connection.executeQuery<MysqlReplicaStatus>(
          source === 'mysql-replica' ? SHOW_REPLICA : SHOW_SLAVE,
        )
      ).rows
    } catch (error) {
      // A server before MySQL 8.0.22 / MariaDB 10.5.1 does not parse SHOW REPLICA STATUS: use the
      // old form from now on.
      if (source === 'mysql-replica' && (error as { errno?: unknown } | null)?.errno === ER_PARSE_ERROR) {
        this.#source = 'mysql-slave'
        return this.#mysqlLagMs(connection, 'mysql-slave')
      }
      throw error
    }
    const status = rows[0]
    if (status !== undefined) return mysqlStatusLagMs(status)
    // No replication channel: a writable server is no replica (lag 0); a read-only one is a replica
    // this statement cannot see (or one whose replication was reset): its lag is unknown.
    const [flags] = (await connection.executeQuery<ReadOnlyFlags>(READ_ONLY_FLAGS)).rows
    return Number(flags?.ro) === 0 && Number(flags?.iro ?? 0) === 0 ? 0 : undefined
  }
}

const ER_PARSE_ERROR = 1064

const SHOW_REPLICA = CompiledQuery.raw('show replica status')
const SHOW_SLAVE = CompiledQuery.raw('show slave status')
const READ_ONLY_FLAGS = CompiledQuery.raw('select @@global.read_only as ro, @@global.innodb_read_only as iro')

const POSTGRES_LAG = CompiledQuery.raw(
  `select pg_is_in_recovery() as replica,
          pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() as caught_up,
          extract(epoch from now() - pg_last_xact_replay_timestamp()) * 1000 as lag_ms`,
)

// Aurora's views list every instance of the cluster; this instance's row says whether it is the
// writer ('MASTER_SESSION_ID') and, for a reader, its lag behind the writer in milliseconds.
const AURORA_POSTGRES_LAG = CompiledQuery.raw(
  `select session_id = 'MASTER_SESSION_ID' as writer, replica_lag_in_msec as lag_ms
     from aurora_replica_status() where server_id = aurora_db_instance_identifier()`,
)
const AURORA_MYSQL_LAG = CompiledQuery.raw(
  `select session_id = 'MASTER_SESSION_ID' as writer, replica_lag_in_milliseconds as lag_ms
     from information_schema.replica_host_status where server_id = @@aurora_server_id`,
)

/** Where a platform reports replay lag: Aurora in its own views, the others as their engine does. */
function lagSourceOf(platform: DatabasePlatform): LagSource {
  switch (platform) {
    case 'aurora-postgres':
    case 'aurora-mysql':
      return platform
    case 'postgres':
    case 'rds-multi-az-postgres':
      return 'postgres'
    default:
      return 'mysql-replica'
  }
}

async function postgresLagMs(connection: DatabaseConnection): Promise<number | undefined> {
  const [row] = (
    await connection.executeQuery<{
      replica: boolean
      caught_up: boolean | null
      lag_ms: number | string | null
    }>(POSTGRES_LAG)
  ).rows
  if (row === undefined || row.replica !== true) return 0
  // Replayed everything it received: not behind, however long ago the last commit was.
  if (row.caught_up === true) return 0
  // A replica with nothing replayed yet, or fed from an archive without a timestamp: unknown.
  return row.lag_ms === null || row.lag_ms === undefined ? undefined : Math.max(0, Number(row.lag_ms))
}

async function auroraLagMs(
  connection: DatabaseConnection,
  query: CompiledQuery,
): Promise<number | undefined> {
  const [row] = (
    await connection.executeQuery<{ writer: boolean | number | null; lag_ms: number | string | null }>(query)
  ).rows
  // Not in the view (a fresh instance not yet listed): unknown.
  if (row === undefined) return undefined
  if (row.writer === true || Number(row.writer) === 1) return 0
  return row.lag_ms === null || row.lag_ms === undefined ? undefined : Math.max(0, Number(row.lag_ms))
}

/** The columns of one `SHOW REPLICA STATUS` / `SHOW SLAVE STATUS` row the lag check reads, in both namings. */
interface MysqlReplicaStatus {
  readonly Seconds_Behind_Source?: number | string | null
  readonly Seconds_Behind_Master?: number | string | null
  readonly Replica_SQL_Running?: string
  readonly Slave_SQL_Running?: string
  readonly Source_Log_File?: string
  readonly Master_Log_File?: string
  readonly Read_Source_Log_Pos?: number | string
  readonly Read_Master_Log_Pos?: number | string
  readonly Relay_Source_Log_File?: string
  readonly Relay_Master_Log_File?: string
  readonly Exec_Source_Log_Pos?: number | string
  readonly Exec_Master_Log_Pos?: number | string
}

interface ReadOnlyFlags {
  readonly ro: number | string | null
  readonly iro: number | string | null
}

/** Replay lag from one row of the replica status, named either way. */
export function mysqlStatusLagMs(status: MysqlReplicaStatus): number {
  const seconds = status.Seconds_Behind_Source ?? status.Seconds_Behind_Master
  if (seconds !== null && seconds !== undefined) return Number(seconds) * 1000
  // NULL: the SQL thread is stopped, or the IO thread is not connected (the source is down or
  // restarting). An SQL thread that has applied everything received has nothing pending, like
  // PostgreSQL's receive = replay: not lagging, only cut off.
  const caughtUp =
    (status.Replica_SQL_Running ?? status.Slave_SQL_Running) === 'Yes' &&
    (status.Relay_Source_Log_File ?? status.Relay_Master_Log_File) ===
      (status.Source_Log_File ?? status.Master_Log_File) &&
    String(status.Exec_Source_Log_Pos ?? status.Exec_Master_Log_Pos) ===
      String(status.Read_Source_Log_Pos ?? status.Read_Master_Log_Pos)
  return caughtUp ? 0 : Number.POSITIVE_INFINITY
}
