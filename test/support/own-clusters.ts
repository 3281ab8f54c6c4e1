import { afterAll, beforeAll } from 'vitest'
import { findMariaDbBinaries, findPostgresBinDir } from './binaries.js'
import type { DatabaseServer } from './local-server.js'
import { type MariaDbCluster, type MariaDbClusterOptions, startMariaDbCluster } from './mariadb-cluster.js'
import {
  type PostgresCluster,
  type PostgresClusterOptions,
  startPostgresCluster,
} from './postgres-cluster.js'
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

/** The options both cluster helpers take (each engine reads what applies to it). */
export type OwnClusterOptions = PostgresClusterOptions & MariaDbClusterOptions

/** What {@link ownClustersForThisFile} returns: the file's clusters, looked up by engine and variant. */
export interface OwnClusters<V extends string> {
  /** The cluster of `engine` (and `variant`); throws when it did not start (see the file's beforeAll). */
  of(engine: Engine, variant?: V): OwnCluster
  /** Every cluster that started. */
  all(): OwnCluster[]
}

/**
 * For a test file that stops, promotes or pauses servers, or needs servers set up its own way: one
 * cluster per engine with local binaries and per variant (`variants`, e.g. the file's scenarios; one
 * each without), all started at once in `beforeAll` with `options` and readied by `prepare`, and all
 * stopped in `afterAll`, including those that started while another failed.
 */
export function ownClustersForThisFile<V extends string = never>(spec: {
  readonly variants?: readonly V[]
  readonly options?: (engine: Engine, variant: V | undefined) => OwnClusterOptions
  readonly prepare?: (engine: Engine, cluster: OwnCluster, variant: V | undefined) => Promise<void>
}): OwnClusters<V> {
  const started = new Map<string, OwnCluster>()
  const keyOf = (engine: Engine, variant: V | undefined) =>
    variant === undefined ? engine : `${engine}:${variant}`
  beforeAll(async () => {
    const variants: ReadonlyArray<V | undefined> = spec.variants ?? [undefined]
    const results = await Promise.allSettled(
      ENGINES.filter((engine) => AVAILABLE[engine]).flatMap((engine) =>
        variants.map(async (variant) => {
          const options = spec.options?.(engine, variant) ?? {}
          const cluster =
            engine === 'postgres' ? await startPostgresCluster(options) : await startMariaDbCluster(options)
          started.set(keyOf(engine, variant), cluster)
          await spec.prepare?.(engine, cluster, variant)
        }),
      ),
    )
    const failure = results.find((result) => result.status === 'rejected')
    if (failure !== undefined) throw failure.reason
  })
  afterAll(async () => {
    await Promise.allSettled([...started.values()].map((cluster) => cluster.stop()))
  })
  return {
    of(engine, variant) {
      const cluster = started.get(keyOf(engine, variant))
      if (cluster === undefined) {
        throw new Error(
          `no ${engine} cluster${variant === undefined ? '' : ` for ${variant}`} (see beforeAll)`,
        )
      }
      return cluster
    },
    all: () => [...started.values()],
  }
}
