import { CompiledQuery, type DatabaseConnection } from 'kysely'
import type { SqlDialect } from '../config/create-db-config.js'

/**
 * The database platform behind an endpoint, told apart by what exists only there:
 *
 * - `aurora-postgres`: the function `aurora_replica_status()`;
 * - `rds-multi-az-postgres`: `rds_tools.multi_az_db_cluster_source_dbi_resource_id()` (an RDS Multi-AZ
 *   DB cluster; a Multi-AZ *instance* deployment has no readers and looks like plain RDS);
 * - `aurora-mysql`: the global variable `aurora_version`;
 * - `rds-multi-az-mysql`: the table `mysql.rds_topology`;
 * - `mariadb`: a version string naming MariaDB;
 * - otherwise `postgres` or `mysql` (RDS for PostgreSQL / MySQL, or self-managed).
 *
 * @example
 * ```ts
 * const platform: DatabasePlatform | undefined = db.stats().writer.platform
 * if (platform === 'aurora-postgres') console.log('on Aurora')
 * ```
 */
export type DatabasePlatform =
  | 'postgres'
  | 'aurora-postgres'
  | 'rds-multi-az-postgres'
  | 'mysql'
  | 'mariadb'
  | 'aurora-mysql'
  | 'rds-multi-az-mysql'

/** Platforms whose cluster topology (writer and readers) can be read from the server. */
export type TopologyPlatform = Extract<
  DatabasePlatform,
  'aurora-postgres' | 'rds-multi-az-postgres' | 'aurora-mysql' | 'rds-multi-az-mysql'
>

/** One instance of a cluster, as its topology view lists it. */
export interface TopologyInstance {
  /** Aurora: the instance identifier (`server_id`); Multi-AZ: the instance's resource or server id. */
  readonly id: string
  readonly writer: boolean
  /**
   * Multi-AZ clusters list each instance's endpoint and port; Aurora lists identifiers only, and the
   * instance's host comes from the instance host pattern.
   */
  readonly host?: string
  readonly port?: number
}

/** True for the platforms whose servers can list their cluster's instances. */
export function hasTopology(platform: DatabasePlatform | undefined): platform is TopologyPlatform {
  return (
    platform === 'aurora-postgres' ||
    platform === 'rds-multi-az-postgres' ||
    platform === 'aurora-mysql' ||
    platform === 'rds-multi-az-mysql'
  )
}

// to_regproc is NULL for a function (or schema) that does not exist, where calling it would fail.
const DETECT_POSTGRES = CompiledQuery.raw(
  `select to_regproc('aurora_replica_status') is not null as aurora,
          to_regproc('rds_tools.multi_az_db_cluster_source_dbi_resource_id') is not null as multi_az`,
)
// SHOW VARIABLES lists nothing for a variable the server does not have (SELECT @@… would fail).
const DETECT_AURORA_MYSQL = CompiledQuery.raw(`show global variables like 'aurora_version'`)
const DETECT_MYSQL = CompiledQuery.raw(
  `select version() as version,
          (select count(*) from information_schema.tables
            where table_schema = 'mysql' and table_name = 'rds_topology') as multi_az`,
)

/** Finds the platform with at most two statements, over a connection the caller holds. */
export async function detectPlatform(
  connection: DatabaseConnection,
  dialect: SqlDialect,
): Promise<DatabasePlatform> {
  if (dialect === 'postgres') {
    const [row] = (await connection.executeQuery<{ aurora: boolean; multi_az: boolean }>(DETECT_POSTGRES))
      .rows
    if (row?.aurora === true) return 'aurora-postgres'
    return row?.multi_az === true ? 'rds-multi-az-postgres' : 'postgres'
  }
  if ((await connection.executeQuery<unknown>(DETECT_AURORA_MYSQL)).rows.length > 0) return 'aurora-mysql'
  const [row] = (await connection.executeQuery<{ version: string; multi_az: number | string }>(DETECT_MYSQL))
    .rows
  if (Number(row?.multi_az) > 0) return 'rds-multi-az-mysql'
  return /mariadb/i.test(String(row?.version ?? '')) ? 'mariadb' : 'mysql'
}

// Aurora: every instance the cluster volume knows, the writer's session being 'MASTER_SESSION_ID'.
// A reader that has not reported for 5 minutes is gone (deleted or failed); the writer's row is
// always kept. Columns as AWS documents them: aurora_replica_status() (Aurora PostgreSQL functions
// reference) and information_schema.replica_host_status (Aurora MySQL), and as the AWS Advanced
// NodeJS Wrapper reads them.
const AURORA_POSTGRES_TOPOLOGY = CompiledQuery.raw(
  `select server_id, session_id = 'MASTER_SESSION_ID' as writer
     from aurora_replica_status()
    where session_id = 'MASTER_SESSION_ID' or last_update_timestamp is null
       or last_update_timestamp >= now() - interval '5 minutes'`,
)
const AURORA_MYSQL_TOPOLOGY = CompiledQuery.raw(
  `select server_id, session_id = 'MASTER_SESSION_ID' as writer
     from information_schema.replica_host_status
    where session_id = 'MASTER_SESSION_ID'
       or time_to_sec(timediff(now(), last_update_timestamp)) <= 300`,
)
// Multi-AZ DB clusters: rds_tools.show_topology() / mysql.rds_topology list id, endpoint and port;
// the writer is the source a reader replicates from, or the instance asked when it replicates from
// nobody (it is the writer).
const MULTI_AZ_POSTGRES_TOPOLOGY = CompiledQuery.raw(
  `select id, endpoint, port from rds_tools.show_topology('kysely-resilient')`,
)
const MULTI_AZ_POSTGRES_SOURCE = CompiledQuery.raw(
  `select multi_az_db_cluster_source_dbi_resource_id as source
     from rds_tools.multi_az_db_cluster_source_dbi_resource_id()`,
)
const MULTI_AZ_POSTGRES_SELF = CompiledQuery.raw(
  `select dbi_resource_id as self from rds_tools.dbi_resource_id()`,
)
const MULTI_AZ_MYSQL_TOPOLOGY = CompiledQuery.raw(`select id, endpoint, port from mysql.rds_topology`)
const SHOW_REPLICA = CompiledQuery.raw('show replica status')
const MYSQL_SERVER_ID = CompiledQuery.raw('select @@server_id as self')

/**
 * The cluster's instances, as the server's own topology view lists them. Never empty when it
 * resolves: a view without a writer row (an Aurora cluster mid-failover, a Multi-AZ writer id that
 * matches no listed instance) is an error, so the caller keeps its last good topology.
 */
export async function readTopology(
  connection: DatabaseConnection,
  platform: TopologyPlatform,
): Promise<ReadonlyArray<TopologyInstance>> {
  const instances = await readRows(connection, platform)
  if (!instances.some((instance) => instance.writer)) {
    throw new Error(`the ${platform} topology view lists no writer`)
  }
  return instances
}

async function readRows(
  connection: DatabaseConnection,
  platform: TopologyPlatform,
): Promise<ReadonlyArray<TopologyInstance>> {
  switch (platform) {
    case 'aurora-postgres':
    case 'aurora-mysql': {
      const query = platform === 'aurora-postgres' ? AURORA_POSTGRES_TOPOLOGY : AURORA_MYSQL_TOPOLOGY
      const { rows } = await connection.executeQuery<AuroraTopologyRow>(query)
      return parseAuroraTopology(rows)
    }
    case 'rds-multi-az-postgres': {
      const [source] = (await connection.executeQuery<{ source: unknown }>(MULTI_AZ_POSTGRES_SOURCE)).rows
      const writerId = isPresent(source?.source)
        ? String(source?.source)
        : String((await connection.executeQuery<{ self: unknown }>(MULTI_AZ_POSTGRES_SELF)).rows[0]?.self)
      const { rows } = await connection.executeQuery<MultiAzTopologyRow>(MULTI_AZ_POSTGRES_TOPOLOGY)
      return parseMultiAzTopology(rows, writerId)
    }
    case 'rds-multi-az-mysql': {
      const [status] = (await connection.executeQuery<Record<string, unknown>>(SHOW_REPLICA)).rows
      const writerId = isPresent(status?.Source_Server_Id ?? status?.Master_Server_Id)
        ? String(status?.Source_Server_Id ?? status?.Master_Server_Id)
        : String((await connection.executeQuery<{ self: unknown }>(MYSQL_SERVER_ID)).rows[0]?.self)
      const { rows } = await connection.executeQuery<MultiAzTopologyRow>(MULTI_AZ_MYSQL_TOPOLOGY)
      return parseMultiAzTopology(rows, writerId)
    }
  }
}

/** One row of Aurora's topology query (either engine): MySQL returns `writer` as 0/1, names in any case. */
export interface AuroraTopologyRow {
  readonly server_id?: unknown
  readonly SERVER_ID?: unknown
  readonly writer: unknown
}

/** Parses Aurora's rows; a row without an identifier is skipped, duplicates are kept once. */
export function parseAuroraTopology(rows: ReadonlyArray<AuroraTopologyRow>): ReadonlyArray<TopologyInstance> {
  const seen = new Map<string, TopologyInstance>()
  for (const row of rows) {
    const id = row.server_id ?? row.SERVER_ID
    if (!isPresent(id) || String(id) === '') continue
    const writer = row.writer === true || Number(row.writer) === 1
    const known = seen.get(String(id))
    // An instance listed twice (the old writer's row lingering right after a failover) counts as
    // the writer if any row says so: the role is confirmed by a probe before writes go there.
    if (known === undefined || (!known.writer && writer)) seen.set(String(id), { id: String(id), writer })
  }
  return [...seen.values()]
}

/** One row of a Multi-AZ DB cluster's topology table. */
export interface MultiAzTopologyRow {
  readonly id: unknown
  readonly endpoint: unknown
  readonly port: unknown
}

/** Parses a Multi-AZ cluster's rows: the writer is the row whose id is `writerId`. */
export function parseMultiAzTopology(
  rows: ReadonlyArray<MultiAzTopologyRow>,
  writerId: string,
): ReadonlyArray<TopologyInstance> {
  const instances: TopologyInstance[] = []
  for (const row of rows) {
    if (!isPresent(row.id) || typeof row.endpoint !== 'string' || row.endpoint === '') continue
    const port = Number(row.port)
    instances.push({
      id: String(row.id),
      writer: String(row.id) === writerId,
      host: row.endpoint,
      ...(Number.isInteger(port) && port > 0 && port < 65_536 ? { port } : {}),
    })
  }
  return instances
}

function isPresent(value: unknown): boolean {
  return value !== null && value !== undefined && value !== ''
}
