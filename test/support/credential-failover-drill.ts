import { sql } from 'kysely'
import { afterAll, beforeAll } from 'vitest'
import { createDb, type ResilientDb, withRetry } from '../../src/index.js'
import { newAppPassword, setAppPassword } from './app-password.js'
import { pollUntil } from './poll.js'
import { type PostgresCluster, startPostgresCluster } from './postgres-cluster.js'
import { registerSecret } from './secrets.js'
import { pgQuery } from './sql.js'

export interface DrillTables {
  drill: { id: number }
}

/** What the drill did, for the test's assertions after each step. */
export interface Drill {
  readonly db: ResilientDb<DrillTables>
  /** The app user's password before the rotation (never to be seen in telemetry). */
  readonly original: string
  /** ... and after it. */
  readonly rotated: string
  readonly primaryPort: number
  readonly replicaPort: number
}

/**
 * For a `describe`: its own PostgreSQL primary + replica (with a `drill` table the app user may
 * write), started in `beforeAll` and stopped in `afterAll`. Returns the drill to run in a test: the
 * OpenTelemetry suites watch the library through it, each on its own signal.
 */
export function credentialFailoverDrill(): (steps: {
  /** Called with each db the drill opens, for the file's cleanup. */
  readonly opened: (db: ResilientDb<DrillTables>) => void
  readonly afterRotation: (drill: Drill) => Promise<void> | void
  readonly afterFailover: (drill: Drill) => Promise<void> | void
}) => Promise<void> {
  let cluster: PostgresCluster
  beforeAll(async () => {
    cluster = await startPostgresCluster()
    registerSecret(cluster.password)
    await pgQuery(
      cluster.adminWriterUrl,
      'create table drill (id int primary key); grant all on drill to app',
    )
  }, 120_000)
  afterAll(async () => {
    await cluster?.stop()
  })

  return async (steps) => {
    const original = newAppPassword()
    await setAppPassword('postgres', cluster, original)
    let current = original
    const withoutPassword = (raw: string) => {
      const url = new URL(raw)
      url.password = ''
      return url.toString()
    }
    // Two writer candidates, the replica second; passwords from a token function, cached an hour.
    const db = createDb<DrillTables>({
      dialect: 'postgres',
      writer: [withoutPassword(cluster.writerUrl), withoutPassword(cluster.readerUrl)],
      auth: { type: 'token', getToken: async () => current, ttlMs: 3_600_000 },
    })
    steps.opened(db)
    await db.insertInto('drill').values({ id: 1 }).execute()
    const rotated = newAppPassword()
    const drill: Drill = {
      db,
      original,
      rotated,
      primaryPort: cluster.primary.port,
      replicaPort: (cluster.replica as { port: number }).port,
    }

    // Rotation: the next new connection presents the cached password, is refused, and fetches once
    // more. Three sessions held at once: at least two are new connections.
    await setAppPassword('postgres', cluster, rotated)
    current = rotated
    let arrived = 0
    let release: () => void = () => {}
    const allHere = new Promise<void>((resolve) => {
      release = resolve
    })
    await Promise.all(
      Array.from({ length: 3 }, () =>
        db.connection().execute(async (c) => {
          await sql`select 1`.execute(c)
          if (++arrived === 3) release()
          await allHere
        }),
      ),
    )
    await steps.afterRotation(drill)

    // Failover: the primary dies, the replica is promoted, an idempotent write finds it.
    await pollUntil(
      async () =>
        (await pgQuery(cluster.adminReaderUrl, 'select count(*)::int as n from drill'))[0]?.n === 1 ||
        undefined,
      { timeoutMs: 10_000, what: 'the replica to replay the first write' },
    )
    await cluster.primary.kill('SIGKILL')
    await (cluster.replica as { promote(): Promise<void> }).promote()
    await withRetry(
      () =>
        db
          .insertInto('drill')
          .values({ id: 2 })
          .onConflict((c) => c.column('id').doNothing())
          .execute(),
      { idempotent: true, maxElapsedMs: 30_000 },
    )
    await steps.afterFailover(drill)
  }
}
