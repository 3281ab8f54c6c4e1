import { randomBytes } from 'node:crypto'
import type { ClusterInfo, RunningCluster } from './clusters.js'
import { createAppUser } from './mariadb-cluster.js'
import { createAppRole } from './postgres-cluster.js'
import { type Engine, queryOnce } from './sql.js'

/**
 * Fallback when neither external servers nor local binaries exist but Docker does: one plain server per
 * engine via testcontainers (not a dependency; install it to use this path). There is no replica here, so
 * readerUrl equals writerUrl and replica-specific tests skip themselves. This path cannot be exercised on
 * machines with local binaries, so it is kept deliberately small.
 */

// The slice of the testcontainers API used below, declared here because the package is optional.
interface StartedContainer {
  getHost(): string
  getMappedPort(port: number): number
  stop(): Promise<unknown>
}
interface ContainerBuilder {
  withEnvironment(environment: Record<string, string>): ContainerBuilder
  withExposedPorts(...ports: number[]): ContainerBuilder
  withWaitStrategy(strategy: unknown): ContainerBuilder
  start(): Promise<StartedContainer>
}
interface TestcontainersModule {
  GenericContainer: new (image: string) => ContainerBuilder
  Wait: { forLogMessage(message: RegExp, times?: number): unknown }
}

export async function startWithTestcontainers(engine: Engine): Promise<RunningCluster> {
  const { GenericContainer, Wait } = await loadTestcontainers()
  const adminPassword = `admin${randomBytes(16).toString('hex')}`
  const password = `pw${randomBytes(16).toString('hex')}`
  const container =
    engine === 'postgres'
      ? await new GenericContainer('postgres:15')
          .withEnvironment({ POSTGRES_PASSWORD: adminPassword, POSTGRES_DB: 'app' })
          .withExposedPorts(5432)
          // The entrypoint runs a temporary server first; the second "ready" line is the real one.
          .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
          .start()
      : await new GenericContainer('mariadb:10.11')
          .withEnvironment({ MARIADB_ROOT_PASSWORD: adminPassword, MARIADB_DATABASE: 'app' })
          .withExposedPorts(3306)
          .withWaitStrategy(Wait.forLogMessage(/ready for connections/, 2))
          .start()
  try {
    const host = container.getHost()
    const port = container.getMappedPort(engine === 'postgres' ? 5432 : 3306)
    const admin = engine === 'postgres' ? `postgres:${adminPassword}` : `root:${adminPassword}`
    const adminUrl = `${engine}://${admin}@${host}:${port}/app`
    // Through Docker's port mapping clients arrive from the bridge address, hence '%' rather than 127.0.0.1.
    const statements =
      engine === 'postgres'
        ? [...createAppRole(password), 'ALTER DATABASE app OWNER TO app']
        : createAppUser(password, ['%'])
    for (const sql of statements) await queryOnce(engine, adminUrl, sql)
    const url = `${engine}://app:${password}@${host}:${port}/app`
    const info: ClusterInfo = {
      engine,
      writerUrl: url,
      readerUrl: url,
      adminWriterUrl: adminUrl,
      adminReaderUrl: adminUrl,
      password,
      external: false,
    }
    return { info, stop: async () => void (await container.stop()) }
  } catch (error) {
    await container.stop()
    throw error
  }
}

async function loadTestcontainers(): Promise<TestcontainersModule> {
  // A variable specifier keeps TypeScript and Vite from resolving a package that is usually not installed.
  const specifier = 'testcontainers'
  try {
    return (await import(specifier)) as TestcontainersModule
  } catch (error) {
    throw new Error(
      'Docker is available but the optional package "testcontainers" is not installed. ' +
        'Run `npm i -D testcontainers`, or provide servers via PG_WRITER_URL / MYSQL_WRITER_URL.',
      { cause: error },
    )
  }
}
