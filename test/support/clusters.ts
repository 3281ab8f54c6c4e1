import { findMariaDbBinaries, findPostgresBinDir } from './binaries.js'
import { startMariaDbCluster } from './mariadb-cluster.js'
import { startPostgresCluster } from './postgres-cluster.js'
import { run } from './processes.js'
import type { Engine } from './sql.js'

export type { Engine }

/** What test files learn about a cluster (serialisable: it crosses from global setup to the workers). */
export interface ClusterInfo {
  readonly engine: Engine
  readonly writerUrl: string
  /** Equals writerUrl when there is no replica; replica-specific tests skip themselves then. */
  readonly readerUrl: string
  readonly adminWriterUrl: string
  readonly adminReaderUrl: string
  /** The app user's password, when known, so tests can check it never leaks. */
  readonly password?: string
  /**
   * Where the writer also listens on a Unix socket, for servers started here: PostgreSQL's socket
   * directory (the port in writerUrl picks the socket file), MariaDB's socket file. There, `app`
   * logs in as on TCP (MariaDB: as 'app'@'localhost', same password; PostgreSQL: trust).
   */
  readonly writerSocket?: string
  /** true when the servers came from *_WRITER_URL environment variables. */
  readonly external: boolean
}

export interface ProvidedClusters {
  readonly postgres?: ClusterInfo
  readonly mysql?: ClusterInfo
}

declare module 'vitest' {
  export interface ProvidedContext {
    clusters: ProvidedClusters
  }
}

export interface RunningCluster {
  readonly info: ClusterInfo
  stop(): Promise<void>
}

export const ENGINES: readonly Engine[] = ['postgres', 'mysql']

const ENV_PREFIX: Record<Engine, string> = { postgres: 'PG', mysql: 'MYSQL' }
const ENGINE_NAME: Record<Engine, string> = { postgres: 'PostgreSQL', mysql: 'MySQL/MariaDB' }

/**
 * Finds or starts servers for each engine, independently and concurrently: external servers from the
 * environment, else local binaries, else Docker via testcontainers, else the engine is unavailable (a
 * loud warning locally, an error when CI is set).
 */
export async function provisionClusters(): Promise<RunningCluster[]> {
  const results = await Promise.allSettled(ENGINES.map(timed))
  const running = results.flatMap((result) =>
    result.status === 'fulfilled' && result.value ? [result.value] : [],
  )
  const failures = results.flatMap((result) => (result.status === 'rejected' ? [result.reason] : []))
  if (failures.length > 0) {
    await Promise.allSettled(running.map((cluster) => cluster.stop()))
    throw failures.length === 1
      ? failures[0]
      : new AggregateError(failures, 'Could not provision test clusters')
  }
  return running
}

async function timed(engine: Engine): Promise<RunningCluster | undefined> {
  const startedAt = performance.now()
  const cluster = await provision(engine)
  const source = cluster === undefined ? 'unavailable' : cluster.info.external ? 'external' : 'started'
  console.log(`[global-setup] ${engine}: ${source} in ${Math.round(performance.now() - startedAt)} ms`)
  return cluster
}

async function provision(engine: Engine): Promise<RunningCluster | undefined> {
  const external = externalCluster(engine)
  if (external !== undefined) return { info: external, stop: async () => {} }
  if (engine === 'postgres' && findPostgresBinDir() !== undefined) return local(await startPostgresCluster())
  if (engine === 'mysql' && findMariaDbBinaries() !== undefined) return local(await startMariaDbCluster())
  if (await dockerAvailable()) {
    const { startWithTestcontainers } = await import('./testcontainers.js')
    return startWithTestcontainers(engine)
  }
  reportUnavailable(engine)
  return undefined
}

function local(cluster: Omit<ClusterInfo, 'external'> & { stop(): Promise<void> }): RunningCluster {
  const { engine, writerUrl, readerUrl, adminWriterUrl, adminReaderUrl, password, writerSocket } = cluster
  return {
    info: {
      engine,
      writerUrl,
      readerUrl,
      adminWriterUrl,
      adminReaderUrl,
      password,
      writerSocket,
      external: false,
    },
    stop: () => cluster.stop(),
  }
}

/**
 * `PG_WRITER_URL` (or `MYSQL_WRITER_URL`) selects external servers. The reader defaults to the writer;
 * admin URLs default to the corresponding app URLs.
 */
function externalCluster(engine: Engine): ClusterInfo | undefined {
  const env = (name: string) => process.env[`${ENV_PREFIX[engine]}_${name}`] || undefined
  const writerUrl = env('WRITER_URL')
  if (writerUrl === undefined) return undefined
  const readerUrl = env('READER_URL') ?? writerUrl
  const adminWriterUrl = env('ADMIN_WRITER_URL') ?? writerUrl
  const adminReaderUrl =
    env('ADMIN_READER_URL') ?? (env('READER_URL') === undefined ? adminWriterUrl : readerUrl)
  const password = decodeURIComponent(new URL(writerUrl).password) || undefined
  return { engine, writerUrl, readerUrl, adminWriterUrl, adminReaderUrl, password, external: true }
}

async function dockerAvailable(): Promise<boolean> {
  try {
    await run('docker', ['info'], { timeoutMs: 10_000 })
    return true
  } catch {
    return false
  }
}

function reportUnavailable(engine: Engine): void {
  const prefix = ENV_PREFIX[engine]
  const name = ENGINE_NAME[engine]
  const lines = [
    `${name} integration tests will NOT run: no ${name} server is available.`,
    'Provide one of:',
    `  - ${prefix}_WRITER_URL (optionally ${prefix}_READER_URL, ${prefix}_ADMIN_WRITER_URL, ${prefix}_ADMIN_READER_URL)`,
    engine === 'postgres'
      ? '  - PostgreSQL server binaries (initdb, postgres, pg_ctl, pg_basebackup; set PG_BIN_DIR if not found)'
      : '  - MariaDB server binaries (mariadbd, mariadb-install-db; set MARIADB_BIN_DIR if not found)',
    '  - a running Docker engine plus `npm i -D testcontainers`',
  ]
  if (process.env.CI) throw new Error(`${lines.join('\n')}\n(CI is set, so this is an error.)`)
  const bar = '!'.repeat(100)
  console.warn(['', bar, ...lines.map((line) => `!!  ${line}`), bar, ''].join('\n'))
}
