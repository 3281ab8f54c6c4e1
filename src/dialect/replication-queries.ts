import { CompiledQuery, type DatabaseConnection } from 'kysely'
import type { SqlDialect } from '../config/create-db-config.js'
import {
  parseGtidPosition,
  parseLsn,
  type ReplicationPosition,
  reachableInsertLsn,
  timelineOfWalFile,
} from '../consistency/replication-position.js'

/** A position read from a server, with the server's own text for `db.stats()`. */
export interface ReadPosition {
  readonly position: ReplicationPosition
  readonly text: string
}

/** The engine keeps no position this library can compare (MySQL's GTID sets, MariaDB without a binlog). */
export class NoPositionError extends Error {
  override name = 'NoPositionError'
}

// pg_walfile_name() names the file in the timeline that inserts now; it fails on a standby, so a
// writer that was demoted answers with an error instead of a position of the wrong history.
const PG_WRITER_POSITION = CompiledQuery.raw(
  `select pg_current_wal_insert_lsn()::text as lsn,
          pg_walfile_name(pg_current_wal_insert_lsn()) as wal_file,
          current_setting('wal_block_size') as block_size,
          pg_size_bytes(current_setting('wal_segment_size')) as segment_size`,
)

const PG_REPLAY_POSITION = CompiledQuery.raw(
  `select case when pg_is_in_recovery() then pg_last_wal_replay_lsn()
               else pg_current_wal_insert_lsn() end::text as lsn,
          pg_is_in_recovery() as replica,
          current_setting('wal_block_size') as block_size,
          pg_size_bytes(current_setting('wal_segment_size')) as segment_size`,
)

const MARIADB_WRITER_POSITION = CompiledQuery.raw(
  'select @@gtid_binlog_pos as pos, @@server_id as server_id, @@log_bin as log_bin',
)

const MARIADB_REPLAY_POSITION = CompiledQuery.raw(
  'select @@gtid_slave_pos as slave_pos, @@gtid_binlog_pos as binlog_pos, @@server_id as server_id',
)

/** MySQL's ER_UNKNOWN_SYSTEM_VARIABLE: `@@gtid_binlog_pos` exists only on MariaDB. */
const UNKNOWN_SYSTEM_VARIABLE = 1193

/**
 * The writer's current position, read after the writes it must cover completed. Throws
 * `NoPositionError` when the engine keeps none this library compares.
 */
export async function readWriterPosition(
  connection: DatabaseConnection,
  dialect: SqlDialect,
): Promise<ReadPosition> {
  if (dialect === 'postgres') {
    const { rows } = await connection.executeQuery<PgPositionRow & { wal_file: string }>(PG_WRITER_POSITION)
    const row = rows[0]
    const lsn = row === undefined ? undefined : pgLsnOf(row)
    const timeline = row === undefined ? undefined : timelineOfWalFile(String(row.wal_file))
    if (lsn === undefined || timeline === undefined) {
      throw new NoPositionError('PostgreSQL returned no WAL location')
    }
    return { position: { engine: 'postgres', lsn, timeline }, text: String(row?.lsn) }
  }
  let rows: ReadonlyArray<{ pos: string | null; server_id: number | string; log_bin: number | string }>
  try {
    ;({ rows } = await connection.executeQuery<{
      pos: string | null
      server_id: number | string
      log_bin: number | string
    }>(MARIADB_WRITER_POSITION))
  } catch (error) {
    if ((error as { errno?: unknown }).errno === UNKNOWN_SYSTEM_VARIABLE) {
      throw new NoPositionError('the server is not MariaDB (MySQL GTID sets are not supported yet)')
    }
    throw error
  }
  const row = rows[0]
  if (row === undefined || Number(row.log_bin) !== 1) {
    throw new NoPositionError('the binary log is off (log_bin), so the writer keeps no GTID position')
  }
  const text = row.pos ?? ''
  const domains = parseGtidPosition(text)
  if (domains === undefined) throw new NoPositionError(`unexpected @@gtid_binlog_pos '${text}'`)
  return { position: { engine: 'mariadb', domains, serverId: Number(row.server_id) }, text }
}

/**
 * How far a reader has replayed. A reader that is not a replica (a primary listed as a reader, or
 * the writer itself) reports its own write position. `writerServerId` (MariaDB) tells the writer
 * itself apart: its replica position is empty, its binlog position is what it has.
 */
export async function readReplayPosition(
  connection: DatabaseConnection,
  dialect: SqlDialect,
  writerServerId: number | undefined,
): Promise<ReadPosition | undefined> {
  if (dialect === 'postgres') {
    const { rows } = await connection.executeQuery<PgPositionRow>(PG_REPLAY_POSITION)
    const row = rows[0]
    // NULL: a standby that has replayed nothing yet (still restoring from the archive).
    if (row === undefined || row.lsn === null) return undefined
    const lsn = pgLsnOf(row)
    return lsn === undefined ? undefined : { position: { engine: 'postgres', lsn }, text: String(row.lsn) }
  }
  const { rows } = await connection.executeQuery<{
    slave_pos: string | null
    binlog_pos: string | null
    server_id: number | string
  }>(MARIADB_REPLAY_POSITION)
  const row = rows[0]
  if (row === undefined) return undefined
  // Not @@gtid_current_pos: on a replica someone wrote to directly, it would count local writes in
  // the replicated domain and make the replica look further along than it is.
  const text = (Number(row.server_id) === writerServerId ? row.binlog_pos : row.slave_pos) ?? ''
  const domains = parseGtidPosition(text)
  return domains === undefined ? undefined : { position: { engine: 'mariadb', domains }, text }
}

interface PgPositionRow {
  readonly lsn: string | null
  readonly block_size: string | number
  readonly segment_size: string | number
}

function pgLsnOf(row: PgPositionRow): bigint | undefined {
  const lsn = row.lsn === null ? undefined : parseLsn(String(row.lsn))
  if (lsn === undefined) return undefined
  return reachableInsertLsn(lsn, Number(row.block_size), Number(row.segment_size))
}
