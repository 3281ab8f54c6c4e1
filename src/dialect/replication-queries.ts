import { CompiledQuery, type DatabaseConnection } from 'kysely'
import type { SqlDialect } from '../config/create-db-config.js'
import {
  NoPositionError,
  parseGtidPosition,
  parseGtidSet,
  parseLsn,
  type ReadPosition,
  reachableInsertLsn,
  timelineOfWalFile,
} from '../consistency/replication-position.js'

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

// SHOW VARIABLES rather than SELECT @@...: one statement that works on MariaDB and on MySQL, which
// have different variables (a missing one is simply not listed instead of failing the statement).
const MYSQL_WRITER_POSITION = CompiledQuery.raw(
  `show global variables where Variable_name in
     ('gtid_binlog_pos', 'log_bin', 'server_id', 'gtid_executed', 'gtid_mode', 'server_uuid')`,
)

const MYSQL_REPLAY_POSITION = CompiledQuery.raw(
  `show global variables where Variable_name in
     ('gtid_slave_pos', 'gtid_binlog_pos', 'server_id', 'gtid_executed')`,
)

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
  const variables = await readVariables(connection, MYSQL_WRITER_POSITION)
  const binlogPos = variables.get('gtid_binlog_pos')
  if (binlogPos !== undefined) {
    // MariaDB.
    if (variables.get('log_bin') !== 'ON') {
      throw new NoPositionError('the binary log is off (log_bin), so the writer keeps no GTID position')
    }
    const domains = parseGtidPosition(binlogPos)
    if (domains === undefined) throw new NoPositionError(`unexpected @@gtid_binlog_pos '${binlogPos}'`)
    const serverId = Number(variables.get('server_id'))
    return { position: { engine: 'mariadb', domains, serverId }, text: binlogPos }
  }
  const executed = variables.get('gtid_executed')
  const serverUuid = variables.get('server_uuid')
  if (executed === undefined || serverUuid === undefined) {
    throw new NoPositionError('the server reports neither a MariaDB GTID position nor a MySQL GTID set')
  }
  // Only with gtid_mode ON does every transaction get a GTID that replicas report.
  if (variables.get('gtid_mode') !== 'ON') {
    throw new NoPositionError(`gtid_mode is ${variables.get('gtid_mode') ?? 'unknown'}, not ON`)
  }
  const sets = parseGtidSet(executed)
  if (sets === undefined) throw new NoPositionError('unexpected @@gtid_executed')
  return { position: { engine: 'mysql', sets, serverUuid }, text: executed.replace(/\s+/g, '') }
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
  const variables = await readVariables(connection, MYSQL_REPLAY_POSITION)
  const slavePos = variables.get('gtid_slave_pos')
  if (slavePos !== undefined) {
    // MariaDB. Not @@gtid_current_pos: on a replica someone wrote to directly, it would count local
    // writes in the replicated domain and make the replica look further along than it is.
    const isWriter = Number(variables.get('server_id')) === writerServerId
    const text = (isWriter ? variables.get('gtid_binlog_pos') : slavePos) ?? ''
    const domains = parseGtidPosition(text)
    return domains === undefined ? undefined : { position: { engine: 'mariadb', domains }, text }
  }
  const executed = variables.get('gtid_executed')
  const sets = executed === undefined ? undefined : parseGtidSet(executed)
  return sets === undefined
    ? undefined
    : { position: { engine: 'mysql', sets }, text: (executed as string).replace(/\s+/g, '') }
}

/** The rows of a SHOW VARIABLES statement, by name. */
async function readVariables(
  connection: DatabaseConnection,
  query: CompiledQuery,
): Promise<Map<string, string>> {
  const { rows } = await connection.executeQuery<{ Variable_name: string; Value: string | null }>(query)
  return new Map(rows.map((row) => [row.Variable_name, row.Value ?? '']))
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
