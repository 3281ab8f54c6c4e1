import { type RawBuilder, sql } from 'kysely'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import type {
  AuthEndpoint,
  CreateDbConfig,
  CredentialsRefreshedEvent,
  PoolConfig,
  ResilientDb,
} from '../../src/index.js'
import { getConnection, resetConnection } from '../../src/lambda/index.js'
import { newAppPassword, setAppPassword } from '../support/app-password.js'
import { killWhileFrozen } from '../support/freeze.js'
import { startMariaDbCluster } from '../support/mariadb-cluster.js'
import { AVAILABLE, ENGINES, type OwnCluster } from '../support/own-clusters.js'
import { startPostgresCluster } from '../support/postgres-cluster.js'
import { registerSecret } from '../support/secrets.js'
import type { Engine } from '../support/sql.js'

// A Lambda container with IAM auth, frozen for longer than an IAM token lives (15 minutes). Local
// servers cannot check IAM tokens, so a `token` source stands in for the signer: same lifetime, and
// the library treats both alike (one cached token per endpoint, fetched again by wall-clock age).
//
// The freeze is simulated as three things happening while no code of the db runs:
// - the wall clock jumps 20 minutes (only `Date` is faked: sockets, timers and the servers are real);
// - the token stops being accepted: the app user's password is changed on the server, and the source
//   hands out the new one from then on. So a connection opened with the stale token would be
//   refused (as RDS refuses an expired token), and one that succeeds proves it used the new token;
// - in one variant the server also ends the sessions (as test/lambda/get-connection.test.ts does).
//
// Each engine gets its own server: changing the shared app user's password would break every other
// test file running at the same time.

const FREEZE_MS = 20 * 60_000
/** An IAM token's lifetime. */
const TOKEN_TTL_MS = 900_000

const clusters = new Map<Engine, OwnCluster>()

afterEach(async () => {
  await resetConnection()
  vi.useRealTimers()
})

interface TokenSource {
  readonly auth: CreateDbConfig['auth']
  /** Each call of `getToken`, with the (faked) wall-clock time it was made at. */
  readonly calls: Array<{ readonly at: number; readonly endpoint: AuthEndpoint }>
  /** What `getToken` returns from now on. */
  set(token: string): void
}

function tokenSource(initial: string): TokenSource {
  let current = initial
  const calls: Array<{ at: number; endpoint: AuthEndpoint }> = []
  return {
    auth: {
      type: 'token',
      getToken: async (endpoint) => {
        calls.push({ at: Date.now(), endpoint })
        return current
      },
      ttlMs: TOKEN_TTL_MS,
    },
    calls,
    set: (token) => {
      current = token
    },
  }
}

function sessionIdExpr(engine: Engine): RawBuilder<number> {
  return engine === 'postgres' ? sql<number>`pg_backend_pid()` : sql<number>`connection_id()`
}

/** One invocation, as a handler makes it: a read (routed) and a raw statement; the session ids used. */
async function invoke(engine: Engine, options: CreateDbConfig): Promise<number[]> {
  const db = await getConnection(options)
  const read = await db.selectNoFrom(sessionIdExpr(engine).as('id')).executeTakeFirstOrThrow()
  const raw = await sql<{ id: number }>`select ${sessionIdExpr(engine)} as id`.execute(db)
  return [Number(read.id), Number(raw.rows[0]?.id)]
}

function recordRefreshes(db: ResilientDb<unknown>): CredentialsRefreshedEvent[] {
  const events: CredentialsRefreshedEvent[] = []
  db.on('credentials-refreshed', (event) => events.push(event))
  return events
}

for (const engine of ENGINES) {
  describe(`getConnection after the IAM token of the first connection has expired [${engine}]`, () => {
    if (!AVAILABLE[engine]) {
      it.skip(`!!! SKIPPED: no local ${engine} server binaries to start clusters with !!!`, () => {})
      return
    }

    beforeAll(async () => {
      const start = engine === 'postgres' ? startPostgresCluster : startMariaDbCluster
      const cluster = await start({ replica: false })
      clusters.set(engine, cluster)
      registerSecret(cluster.password)
    }, 120_000)

    afterAll(async () => {
      await resetConnection()
      await clusters.get(engine)?.stop()
    })

    /**
     * Sets up a container whose first invocation has run (one token fetched, at T0) and returns what
     * the assertions need. `pool` goes under the Lambda defaults, like a user's own settings.
     */
    async function firstInvocation(pool: PoolConfig) {
      const cluster = clusters.get(engine) as OwnCluster
      // Only Date: real sockets, timers and servers keep working; shouldAdvanceTime keeps the faked
      // clock moving with real time between the jumps.
      vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true })
      const original = newAppPassword('thaw')
      await setAppPassword(engine, cluster, original)
      const source = tokenSource(original)
      // retry: false, so nothing but the pool's own checks can heal a dead or refused connection.
      const options: CreateDbConfig = {
        dialect: engine,
        writer: (() => {
          const url = new URL(cluster.writerUrl)
          url.password = ''
          return url.toString()
        })(),
        auth: source.auth,
        retry: false,
        pool,
      }
      const db = await getConnection(options)
      const refreshed = recordRefreshes(db)

      const t0 = Date.now()
      const before = await invoke(engine, options)
      expect(source.calls).toHaveLength(1)
      expect(refreshed.map((event) => event.reason)).toEqual(['initial'])

      /** The freeze: the token stops being accepted and the clock moves on by FREEZE_MS. */
      const freeze = async (): Promise<void> => {
        const rotated = newAppPassword('thaw')
        await setAppPassword(engine, cluster, rotated)
        source.set(rotated)
        vi.setSystemTime(Date.now() + FREEZE_MS)
      }
      return { cluster, source, options, refreshed, t0, before, freeze }
    }

    // The Lambda default maxLifetimeMs (10 minutes) would retire a 20-minute-old connection on its
    // own; switched off here so only the kill (or its absence) decides whether the connection survives.
    const keepForever: PoolConfig = { maxLifetimeMs: 0 }

    it('the server ended the sessions: the next invocation succeeds on a connection opened with a token fetched after the freeze', async () => {
      const { cluster, source, options, refreshed, t0, before, freeze } = await firstInvocation(keepForever)
      await freeze()
      killWhileFrozen(engine, cluster.adminWriterUrl, before)

      // Throws (and fails the test) if any error reached the handler.
      const after = await invoke(engine, options)

      expect(after.some((id) => before.includes(id))).toBe(false)
      expect(source.calls).toHaveLength(2)
      expect(source.calls[1]?.at).toBeGreaterThanOrEqual(t0 + FREEZE_MS)
      expect(source.calls[1]?.endpoint).toMatchObject({ name: 'writer', role: 'writer', user: 'app' })
      // 'expired', never 'rejected': the stale token was not even tried. The server accepts only the
      // new one, so the connection that served the invocation was opened with it.
      expect(refreshed.map((event) => [event.reason, event.authType, event.endpoint])).toEqual([
        ['initial', 'token', 'writer'],
        ['expired', 'token', 'writer'],
      ])
    })

    it('the server kept the sessions: the open connection is still used, and no token is fetched', async () => {
      const { source, options, refreshed, before, freeze } = await firstInvocation(keepForever)
      await freeze()

      const after = await invoke(engine, options)

      // Token expiry concerns logins only (on RDS too): the session opened with the old token is fine.
      expect(after.every((id) => before.includes(id))).toBe(true)
      expect(source.calls).toHaveLength(1)
      expect(refreshed.map((event) => event.reason)).toEqual(['initial'])
    })

    it('with the Lambda pool defaults, the 20-minute-old connection is retired and replaced using a fresh token', async () => {
      const { source, options, refreshed, t0, before, freeze } = await firstInvocation({})
      await freeze()

      const after = await invoke(engine, options)

      // maxLifetimeMs (10 minutes) retired the kept session, by wall-clock age like the token.
      expect(after.some((id) => before.includes(id))).toBe(false)
      expect(source.calls).toHaveLength(2)
      expect(source.calls[1]?.at).toBeGreaterThanOrEqual(t0 + FREEZE_MS)
      expect(refreshed.map((event) => event.reason)).toEqual(['initial', 'expired'])
    })
  })
}
