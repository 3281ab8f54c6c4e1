import { appendFile, chmod, mkdtemp, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type PostgresCluster, startPostgresCluster } from './postgres-cluster.js'
import { waitForReplica } from './replication.js'
import { registerSecret } from './secrets.js'
import { pgQuery } from './sql.js'

// A PostgreSQL cluster of a test's own (a real primary and streaming replica) that answers the
// topology views of Amazon's cluster platforms, for topology discovery tests. Neither Aurora nor an
// RDS Multi-AZ DB cluster can run here.
//
// Their instances share the cluster's state (Aurora: one cluster volume; Multi-AZ: RDS's own
// metadata), so every instance reports the same topology. Here that shared state is a file both
// servers read (pg_read_file, in SECURITY DEFINER functions owned by the superuser): a test writes it
// as the platform would change it (a promotion, a reader added or removed). Instance identifiers are
// port numbers: with the host pattern '127.0.0.1:?' they map to the local servers, as
// '?.<cluster-id>.<region>.rds.amazonaws.com' maps Aurora's to theirs.
//
// - Aurora PostgreSQL: aurora_replica_status() with server_id, session_id ('MASTER_SESSION_ID' for
//   the writer), replica_lag_in_msec and last_update_timestamp, as documented in
//   "aurora_replica_status" (Aurora PostgreSQL functions reference,
//   https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/aurora_replica_status.html), and
//   aurora_db_instance_identifier(); as the AWS Advanced NodeJS Wrapper reads them.
// - RDS Multi-AZ DB cluster (PostgreSQL): rds_tools.show_topology(text) listing id, endpoint and
//   port; rds_tools.multi_az_db_cluster_source_dbi_resource_id() naming the writer on a reader (NULL
//   on the writer); rds_tools.dbi_resource_id() naming the instance asked. AWS documents the cluster
//   in "Multi-AZ DB cluster deployments" (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/multi-az-db-clusters-concepts.html);
//   the functions' names and columns are those the AWS Advanced NodeJS Wrapper's
//   RdsMultiAZClusterPgDatabaseDialect queries. Resource ids here are 'db-<port>'.

export interface SimulatedInstance {
  /** The instance identifier: the server's port, as a string. */
  readonly id: string
  readonly writer: boolean
}

export type SimulatedPlatform = 'aurora-postgres' | 'rds-multi-az-postgres'

export class SimulatedPostgresCluster {
  readonly #file: string

  private constructor(
    readonly cluster: PostgresCluster,
    readonly dir: string,
  ) {
    this.#file = join(dir, 'topology.json')
  }

  static async start(platform: SimulatedPlatform): Promise<SimulatedPostgresCluster> {
    const cluster = await startPostgresCluster()
    registerSecret(cluster.password)
    const dir = await mkdtemp(join(tmpdir(), 'kr-topology-'))
    await chmod(dir, 0o755)
    const simulated = new SimulatedPostgresCluster(cluster, dir)
    await simulated.setInstances([
      { id: String(cluster.primary.port), writer: true },
      { id: String(cluster.replica?.port), writer: false },
    ])
    const statements = [
      'create table beat (id int primary key, note text not null)',
      'grant all on beat to app',
      ...(platform === 'aurora-postgres'
        ? auroraFunctions(simulated.#file)
        : multiAzFunctions(simulated.#file)),
    ]
    for (const statement of statements) await pgQuery(cluster.adminWriterUrl, statement)
    await waitForReplica('postgres', cluster.adminWriterUrl, cluster.adminReaderUrl)
    return simulated
  }

  /** What every instance's view lists from now on (written atomically). */
  async setInstances(instances: ReadonlyArray<SimulatedInstance>): Promise<void> {
    const next = `${this.#file}.next`
    await writeFile(next, JSON.stringify(instances))
    await chmod(next, 0o644)
    await rename(next, this.#file)
  }

  async stop(): Promise<void> {
    await this.cluster.stop()
    await rm(this.dir, { recursive: true, force: true })
  }
}

function quoted(path: string): string {
  return `'${path.replaceAll("'", "''")}'`
}

function auroraFunctions(file: string): string[] {
  return [
    `create function aurora_replica_status()
       returns table (server_id text, session_id text, replica_lag_in_msec double precision,
                      last_update_timestamp timestamptz)
       language sql stable security definer set search_path = pg_catalog as $$
       select i->>'id',
              case when (i->>'writer')::boolean then 'MASTER_SESSION_ID' else 'session-' || (i->>'id') end,
              case when (i->>'writer')::boolean then null else 0 end,
              now()
         from json_array_elements(pg_read_file(${quoted(file)})::json) as i $$`,
    `create function aurora_db_instance_identifier() returns text language sql stable as $$
       select current_setting('port') $$`,
  ]
}

function multiAzFunctions(file: string): string[] {
  return [
    'create schema rds_tools',
    'grant usage on schema rds_tools to app',
    `create function rds_tools.show_topology(client text)
       returns table (id text, endpoint text, port int)
       language sql stable security definer set search_path = pg_catalog as $$
       select 'db-' || (i->>'id'), '127.0.0.1', (i->>'id')::int
         from json_array_elements(pg_read_file(${quoted(file)})::json) as i $$`,
    `create function rds_tools.multi_az_db_cluster_source_dbi_resource_id()
       returns table (multi_az_db_cluster_source_dbi_resource_id text)
       language sql stable security definer set search_path = pg_catalog as $$
       select case when pg_is_in_recovery() then
                (select 'db-' || (i->>'id') from json_array_elements(pg_read_file(${quoted(file)})::json) as i
                  where (i->>'writer')::boolean limit 1)
              end $$`,
    `create function rds_tools.dbi_resource_id() returns table (dbi_resource_id text)
       language sql stable as $$ select 'db-' || current_setting('port') $$`,
  ]
}

/**
 * Turns a stopped former primary into a standby of `primaryPort` (after a clean shutdown its WAL
 * ends where the promoted replica's timeline forks, so it can follow it, as an Aurora writer comes
 * back as a reader after a failover). It serves reads as soon as it is consistent.
 */
export async function rejoinAsStandby(dataDir: string, primaryPort: number): Promise<void> {
  await writeFile(join(dataDir, 'standby.signal'), '')
  await appendFile(
    join(dataDir, 'postgresql.auto.conf'),
    `primary_conninfo = 'host=127.0.0.1 port=${primaryPort} user=postgres'\nrecovery_target_timeline = 'latest'\n`,
  )
}
