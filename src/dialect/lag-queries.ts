import { CompiledQuery, type DatabaseConnection } from 'kysely'
import type { SqlDialect } from '../config/create-db-config.js'

/** The columns of MySQL/MariaDB `SHOW SLAVE STATUS` that the lag check reads. */
interface MysqlReplicaStatus {
  readonly Seconds_Behind_Master?: number | null
  readonly Slave_SQL_Running?: string
  readonly Master_Log_File?: string
  readonly Read_Master_Log_Pos?: number | string
  readonly Relay_Master_Log_File?: string
  readonly Exec_Master_Log_Pos?: number | string
}

/**
 * The replica's replay lag in milliseconds (0 for a server that is not a replica; Infinity for a
 * replica whose replication is stopped).
 */
export async function readReplayLagMs(connection: DatabaseConnection, dialect: SqlDialect): Promise<number> {
  if (dialect === 'postgres') {
    const { rows } = await connection.executeQuery<{ lag_ms: number | string | null }>(
      CompiledQuery.raw(
        `select case when not pg_is_in_recovery() then 0
                     when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then 0
                     else coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()) * 1000, 0)
                end as lag_ms`,
      ),
    )
    return Number(rows[0]?.lag_ms ?? 0)
  }
  const { rows } = await connection.executeQuery<MysqlReplicaStatus>(CompiledQuery.raw('show slave status'))
  return mysqlLagMs(rows[0])
}

/** Replay lag from one row of `SHOW SLAVE STATUS` (no row: not a replica). */
function mysqlLagMs(status: MysqlReplicaStatus | undefined): number {
  if (status === undefined) return 0
  const seconds = status.Seconds_Behind_Master
  if (seconds !== null && seconds !== undefined) return seconds * 1000
  // NULL: the SQL thread is stopped, or the IO thread is not connected (the primary is down or
  // restarting). An SQL thread that has applied everything received has nothing pending, like
  // PostgreSQL's receive = replay: not lagging, only cut off.
  const caughtUp =
    status.Slave_SQL_Running === 'Yes' &&
    status.Relay_Master_Log_File === status.Master_Log_File &&
    String(status.Exec_Master_Log_Pos) === String(status.Read_Master_Log_Pos)
  return caughtUp ? 0 : Number.POSITIVE_INFINITY
}
