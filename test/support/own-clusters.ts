import { findMariaDbBinaries, findPostgresBinDir } from './binaries.js'
import type { DatabaseServer } from './local-server.js'
import type { MariaDbCluster } from './mariadb-cluster.js'
import type { PostgresCluster } from './postgres-cluster.js'
import type { Engine } from './sql.js'

/** A cluster a test file starts for itself because it stops, promotes or pauses its servers. */
export type OwnCluster = PostgresCluster | MariaDbCluster

/** Both engines, in the order the suites run them. */
export const ENGINES: readonly Engine[] = ['postgres', 'mysql']

/** Which engines have local server binaries to start own clusters from. */
export const AVAILABLE: Record<Engine, boolean> = {
  postgres: findPostgresBinDir() !== undefined,
  mysql: findMariaDbBinaries() !== undefined,
}

/** The cluster's replica; throws when it was started without one. */
export function replicaOf(cluster: OwnCluster): DatabaseServer {
  if (cluster.replica === undefined) throw new Error('the cluster has no replica')
  return cluster.replica
}
