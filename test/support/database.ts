import { describe, inject, it } from 'vitest'
import { type ClusterInfo, ENGINES, type Engine, type ProvidedClusters } from './clusters.js'
import { waitForReplica as waitForReplicaAt } from './replication.js'

export type { ClusterInfo, Engine }

/** All clusters the global setup provided; an engine is absent when no server was available. */
export function clusters(): ProvidedClusters {
  // Undefined when Vitest runs with a config that has no global setup (e.g. unit tests only).
  return (inject('clusters') as ProvidedClusters | undefined) ?? {}
}

/** The cluster for `engine`; throws if that engine is unavailable (use describeEngines to skip instead). */
export function clusterFor(engine: Engine): ClusterInfo {
  const info = clusters()[engine]
  if (info === undefined) {
    throw new Error(`No ${engine} cluster is available in this test run (see global setup)`)
  }
  return info
}

/** False when the reader is the writer (external single server, Docker fallback). */
export function hasReplica(info: ClusterInfo): boolean {
  return info.readerUrl !== info.writerUrl
}

/**
 * `describe(name [engine])` once per engine with a server. An unavailable engine gets a skipped test
 * whose name says so loudly, so a green run cannot silently cover only one engine. (In CI the global
 * setup already failed in that case.)
 */
export function describeEngines(name: string, fn: (engine: Engine, info: ClusterInfo) => void): void {
  const provided = clusters()
  for (const engine of ENGINES) {
    const info = provided[engine]
    if (info !== undefined) {
      describe(`${name} [${engine}]`, () => fn(engine, info))
    } else {
      describe(`${name} [${engine}]`, () => {
        const variable = engine === 'postgres' ? 'PG_WRITER_URL' : 'MYSQL_WRITER_URL'
        it.skip(`!!! SKIPPED: no ${engine} server available (set ${variable}) !!!`, () => {})
      })
    }
  }
}

/** Waits until the reader of `engine`'s shared cluster has everything the writer committed so far. */
export function waitForReplica(engine: Engine, timeoutMs?: number): Promise<void> {
  const info = clusterFor(engine)
  return waitForReplicaAt(engine, info.adminWriterUrl, info.adminReaderUrl, timeoutMs)
}
