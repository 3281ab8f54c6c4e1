import { randomBytes } from 'node:crypto'
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { mockClient } from 'aws-sdk-client-mock'
import { CompiledQuery, type Kysely, sql } from 'kysely'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  type AuthConfig,
  AuthenticationFailedError,
  classifyError,
  createDb,
  type ResilientDb,
} from '../../src/index.js'
import { newAppPassword, setAppPassword } from '../support/app-password.js'
import { collectEvents } from '../support/fault-helpers.js'
import { startMariaDbCluster } from '../support/mariadb-cluster.js'
import { AVAILABLE, ENGINES, type OwnCluster } from '../support/own-clusters.js'
import { startPostgresCluster } from '../support/postgres-cluster.js'
import { registerSecret } from '../support/secrets.js'
import { type Engine, queryOnce } from '../support/sql.js'

// Real password rotation: the app user's password is changed on the server while a db is running,
// the credential source starts returning the new one, and the library must (1) keep the connections
// that are already open, (2) open new ones with the new password after one rejected attempt, and
// (3) fetch from the source once for a burst of 500 new connections, not once per connection.
// Each engine gets its own server (max_connections 600): changing the shared app user's password
// would break every other test file running at the same time.

const BURST = 500

type Source = 'token' | 'secret'

const clusters = new Map<Engine, OwnCluster>()
const dbs: Array<ResilientDb<Record<string, never>>> = []
const secretsManager = mockClient(SecretsManagerClient)

afterEach(async () => {
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
  secretsManager.reset()
})

afterAll(() => {
  secretsManager.restore()
})

/** The writer URL without its password: the auth source supplies it. */
function urlWithoutPassword(cluster: OwnCluster): string {
  const url = new URL(cluster.writerUrl)
  url.password = ''
  return url.toString()
}

/**
 * A credential source whose answer the test controls, counting its calls: a `token` function, or a
 * Secrets Manager secret in RDS's JSON shape (the SDK client is mocked; nothing else is).
 */
function sourceFor(
  kind: Source,
  initial: string,
): { auth: AuthConfig; calls: () => number; set(p: string): void } {
  let current = initial
  let calls = 0
  if (kind === 'token') {
    return {
      auth: {
        type: 'token',
        getToken: async () => {
          calls++
          return current
        },
        ttlMs: 3_600_000,
      },
      calls: () => calls,
      set: (password) => {
        current = password
      },
    }
  }
  secretsManager.on(GetSecretValueCommand, { SecretId: 'prod/app' }).callsFake(async () => {
    calls++
    return { SecretString: JSON.stringify({ username: 'app', password: current }) }
  })
  return {
    auth: { type: 'secret', secretId: 'prod/app', region: 'eu-west-1' },
    calls: () => calls,
    set: (password) => {
      current = password
    },
  }
}

/** Holds `count` connections open at once (each waits for all), so each one is a new connection. */
async function burst(db: Kysely<Record<string, never>>, count: number, engine: Engine): Promise<Set<number>> {
  let arrived = 0
  let release: () => void = () => {}
  const allArrived = new Promise<void>((resolve) => {
    release = resolve
  })
  const sessionIds = new Set<number>()
  const idQuery =
    engine === 'postgres'
      ? sql<{ id: number }>`select pg_backend_pid() as id`
      : sql<{ id: number }>`select connection_id() as id`
  await Promise.all(
    Array.from({ length: count }, () =>
      db.connection().execute(async (connection) => {
        const { rows } = await idQuery.execute(connection)
        sessionIds.add(Number(rows[0]?.id))
        if (++arrived === count) release()
        await allArrived
      }),
    ),
  )
  return sessionIds
}

for (const engine of ENGINES) {
  describe(`credential rotation on a real server [${engine}]`, () => {
    if (!AVAILABLE[engine]) {
      it.skip(`!!! SKIPPED: no local ${engine} server binaries to start clusters with !!!`, () => {})
      return
    }
    beforeAll(async () => {
      const start = engine === 'postgres' ? startPostgresCluster : startMariaDbCluster
      const cluster = await start({ replica: false, maxConnections: BURST + 100 })
      clusters.set(engine, cluster)
      registerSecret(cluster.password)
    }, 120_000)

    afterAll(async () => {
      await clusters.get(engine)?.stop()
    })

    for (const kind of ['token', 'secret'] as const) {
      it(`${kind}: after a rotation, open connections keep working and a ${BURST}-connection burst costs one fetch`, async () => {
        const cluster = clusters.get(engine) as OwnCluster
        const original = newAppPassword()
        await setAppPassword(engine, cluster, original)
        const source = sourceFor(kind, original)
        // Every session the hook saw, by its server-side id.
        const hooked = new Set<number>()
        const db = createDb<Record<string, never>>({
          dialect: engine,
          writer: urlWithoutPassword(cluster),
          auth: source.auth,
          pool: { max: BURST + 1, acquireTimeoutMs: 60_000, connectTimeoutMs: 30_000 },
          onCreateConnection: async (connection) => {
            const { rows } = await connection.executeQuery<{ id: number }>(
              CompiledQuery.raw(
                engine === 'postgres' ? 'select pg_backend_pid() as id' : 'select connection_id() as id',
              ),
            )
            hooked.add(Number(rows[0]?.id))
          },
        })
        dbs.push(db)
        const events = collectEvents(db)

        await db.connection().execute(async (held) => {
          await sql`select 1`.execute(held)
          expect(source.calls()).toBe(1)

          const rotated = newAppPassword()
          await setAppPassword(engine, cluster, rotated)
          source.set(rotated)

          // Every new connection first presents the cached (old) password, is rejected, and waits for
          // the one refetch that the first rejection started.
          const sessions = await burst(db, BURST, engine)
          expect(sessions.size).toBe(BURST)
          // onCreateConnection ran on each connection opened with the rotated credentials.
          expect([...sessions].filter((id) => !hooked.has(id))).toEqual([])
          expect(source.calls()).toBe(2)
          expect(events['credentials-refreshed'].map((event) => event.reason)).toEqual([
            'initial',
            'rejected',
          ])

          // The connection opened before the rotation is untouched: servers check passwords at login only.
          const { rows } = await sql<{ one: number }>`select 1 as one`.execute(held)
          expect(Number(rows[0]?.one)).toBe(1)
        })

        // And the pool keeps serving with the new password, without further fetches.
        await Promise.all(Array.from({ length: 50 }, () => sql`select 1`.execute(db)))
        expect(source.calls()).toBe(2)
        expect(events.error).toEqual([])
      }, 120_000)
    }

    it("cancelling a query after a rotation authenticates Kysely's control connection with the new password", async () => {
      const cluster = clusters.get(engine) as OwnCluster
      const original = newAppPassword()
      await setAppPassword(engine, cluster, original)
      const source = sourceFor('token', original)
      const db = createDb<Record<string, never>>({
        dialect: engine,
        writer: urlWithoutPassword(cluster),
        auth: source.auth,
      })
      dbs.push(db)
      const marker = `cancel_${randomBytes(6).toString('hex')}`
      const sleep = engine === 'postgres' ? sql<number>`pg_sleep(30)` : sql<number>`sleep(30)`
      const controller = new AbortController()
      const pending = db
        .selectNoFrom([sleep.as('slept'), sql.lit(marker).as('marker')])
        .execute({ signal: controller.signal, inflightQueryAbortStrategy: 'cancel query' })
      const running = async () => {
        const rows =
          engine === 'postgres'
            ? await queryOnce(
                engine,
                cluster.adminWriterUrl,
                `select count(*)::int as n from pg_stat_activity where state = 'active' and query like '%${marker}%' and pid <> pg_backend_pid()`,
              )
            : await queryOnce(
                engine,
                cluster.adminWriterUrl,
                `select count(*) as n from information_schema.processlist where info like '%${marker}%' and id <> connection_id()`,
              )
        return Number(rows[0]?.n)
      }
      await vi.waitFor(async () => expect(await running()).toBe(1), { timeout: 10_000 })
      // The connection running the query was opened with `original`, which the server no longer takes.
      const rotated = newAppPassword()
      await setAppPassword(engine, cluster, rotated)
      source.set(rotated)
      controller.abort(new Error('caller gave up'))
      await expect(pending).rejects.toThrow('caller gave up')
      await vi.waitFor(async () => expect(await running()).toBe(0), { timeout: 10_000, interval: 50 })
    }, 60_000)

    it('token: a source that keeps returning a rejected password fails clearly after one refetch', async () => {
      const cluster = clusters.get(engine) as OwnCluster
      const wrong = newAppPassword()
      const source = sourceFor('token', wrong)
      const db = createDb<Record<string, never>>({
        dialect: engine,
        writer: urlWithoutPassword(cluster),
        auth: source.auth,
        retry: { retries: 4, minDelayMs: 1, maxDelayMs: 5 },
      })
      dbs.push(db)

      const failure = await sql`select 1`.execute(db).then(
        () => undefined,
        (error: unknown) => error,
      )
      expect(failure).toBeInstanceOf(AuthenticationFailedError)
      const error = failure as AuthenticationFailedError
      expect(error.endpoint).toBe('writer')
      expect(error.authType).toBe('token')
      expect(error.message).toContain("for user 'app'")
      expect(classifyError(error)).toMatchObject({ category: 'fatal', retryable: false })
      // The server's own refusal is kept as the cause: 28P01 / 1045.
      const cause = error.cause as { code?: unknown; errno?: unknown }
      expect(engine === 'postgres' ? cause.code : cause.errno).toBe(engine === 'postgres' ? '28P01' : 1045)
      // One fetch, one refetch after the rejection; 'fatal' is never retried.
      expect(source.calls()).toBe(2)
    }, 60_000)
  })
}
