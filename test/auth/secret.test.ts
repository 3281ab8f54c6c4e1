import { randomBytes } from 'node:crypto'
import { setTimeout as delay } from 'node:timers/promises'
import { inspect } from 'node:util'
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { type AwsClientStub, mockClient } from 'aws-sdk-client-mock'
import { sql } from 'kysely'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import {
  AuthenticationFailedError,
  type CreateDbConfig,
  CredentialSourceError,
  classifyError,
  createDb,
  type ResilientDb,
} from '../../src/index.js'
import { type ClusterInfo, describeEngines, type Engine } from '../support/database.js'
import { collectEvents, failureOf, sessionId } from '../support/fault-helpers.js'
import { getFreePort } from '../support/ports.js'
import { registerSecret } from '../support/secrets.js'

// auth: { type: 'secret' } with the AWS SDK's Secrets Manager client mocked by aws-sdk-client-mock. The
// library loads @aws-sdk/client-secrets-manager itself (dynamic import); the mock stubs the client class's
// `send`, which is shared by every importer of the module, and the first test proves it applies (the
// real client would fail here: there are no AWS credentials, and it must never be called).

type Database = Record<string, never>

const SECRET_ID = 'test/app'

let secretsManager: AwsClientStub<SecretsManagerClient>
const dbs: Array<ResilientDb<Database>> = []

beforeEach(() => {
  secretsManager = mockClient(SecretsManagerClient)
})

afterEach(async () => {
  vi.useRealTimers()
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
  secretsManager.reset()
  secretsManager.restore()
})

function track(db: ResilientDb<Database>): ResilientDb<Database> {
  dbs.push(db)
  return db
}

function getSecretCalls(): number {
  return secretsManager.commandCalls(GetSecretValueCommand).length
}

/** A long random password, registered with the leak watch. */
function newSecretValue(prefix: string): string {
  const value = `${prefix}${randomBytes(16).toString('hex')}`
  registerSecret(value, `secret.test.ts: ${prefix}`)
  return value
}

/** The app login of a shared cluster, from its writer URL. */
function appLogin(info: ClusterInfo): {
  host: string
  port: number
  user: string
  password: string
  database: string
} {
  const url = new URL(info.writerUrl)
  return {
    host: url.hostname,
    port: Number(url.port),
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password),
    database: decodeURIComponent(url.pathname.slice(1)),
  }
}

/** A secret in the shape RDS creates for a database: `{ username, password, engine, host, port, dbname }`. */
function rdsSecret(engine: Engine, info: ClusterInfo, overrides: Record<string, unknown> = {}): string {
  const login = appLogin(info)
  return JSON.stringify({
    username: login.user,
    password: login.password,
    engine: engine === 'postgres' ? 'postgres' : 'mariadb',
    host: login.host,
    port: login.port,
    dbname: login.database,
    ...overrides,
  })
}

/** An error as the AWS SDK v3 throws a service exception. */
function awsError(name: string, message: string, httpStatusCode: number): Error {
  return Object.assign(new Error(message), {
    name,
    $fault: httpStatusCode >= 500 ? 'server' : 'client',
    $metadata: { httpStatusCode, requestId: randomBytes(8).toString('hex'), attempts: 1 },
  })
}

function selectOne(db: ResilientDb<Database>, n = 1): Promise<number> {
  return sql<{ n: number }>`select ${sql.lit(n)} as n`.execute(db).then((result) => Number(result.rows[0]?.n))
}

function sessionOf(db: ResilientDb<Database>, engine: Engine): Promise<number> {
  return sql<{ id: number }>`select ${sessionId(engine)} as id`
    .execute(db)
    .then((result) => Number(result.rows[0]?.id))
}

describeEngines('secret auth', (engine, info) => {
  it('connects with host, port, database, user and password all from an RDS-shaped secret', async () => {
    const login = appLogin(info)
    secretsManager.on(GetSecretValueCommand, { SecretId: SECRET_ID }).resolves({
      SecretString: rdsSecret(engine, info),
      Name: SECRET_ID,
    })
    const db = track(
      createDb<Database>({ dialect: engine, writer: { auth: { type: 'secret', secretId: SECRET_ID } } }),
    )
    const events = collectEvents(db)

    const results = await Promise.all(Array.from({ length: 20 }, (_, index) => selectOne(db, index)))
    expect(results).toEqual(Array.from({ length: 20 }, (_, index) => index))

    // One fetch for the whole burst, although it opened several connections at once.
    expect(db.stats().writer.total).toBeGreaterThan(1)
    expect(getSecretCalls()).toBe(1)
    expect(secretsManager.commandCalls(GetSecretValueCommand)[0]?.args[0].input).toEqual({
      SecretId: SECRET_ID,
    })
    expect(events['credentials-refreshed']).toEqual([
      { endpoint: 'writer', authType: 'secret', reason: 'initial', durationMs: expect.any(Number) },
    ])
    expect(events.error).toEqual([])

    const { address } = db.stats().writer
    expect(typeof address).toBe('string')
    expect(address.length).toBeGreaterThan(0)
    for (const printed of [address, JSON.stringify(db.stats()), inspect(db.stats(), { depth: 5 })]) {
      expect(printed).not.toContain(login.password)
    }
  })

  it("an endpoint's own host, port and database win over the secret's; the secret's login is used", async () => {
    const login = appLogin(info)
    secretsManager.on(GetSecretValueCommand).resolves({
      // Values that cannot work: if any of them were used, the query would fail.
      SecretString: rdsSecret(engine, info, { host: 'elsewhere.invalid', port: 1, dbname: 'no_such_db' }),
    })
    const db = track(
      createDb<Database>({
        dialect: engine,
        writer: {
          host: login.host,
          port: login.port,
          database: login.database,
          // The secret's username is always used: it belongs with its password.
          user: 'not_the_secret_user',
          auth: { type: 'secret', secretId: SECRET_ID },
        },
      }),
    )
    const who =
      engine === 'postgres'
        ? sql<{ u: string; d: string }>`select current_user as u, current_database() as d`
        : sql<{ u: string; d: string }>`select substring_index(current_user(), '@', 1) as u, database() as d`
    const { rows } = await who.execute(db)
    expect(rows[0]).toEqual({ u: login.user, d: login.database })
    expect(db.stats().writer.address).toBe(`${login.host}:${login.port}/${login.database}`)
    expect(getSecretCalls()).toBe(1)
  })

  it('a wrong password in the secret is fetched again once, then fails as AuthenticationFailedError', async () => {
    const login = appLogin(info)
    const wrong = newSecretValue('wrong')
    secretsManager
      .on(GetSecretValueCommand)
      .resolves({ SecretString: rdsSecret(engine, info, { password: wrong }) })
    const db = track(
      createDb<Database>({ dialect: engine, writer: { auth: { type: 'secret', secretId: SECRET_ID } } }),
    )
    const events = collectEvents(db)

    const error = await failureOf(selectOne(db))
    expect(error).toBeInstanceOf(AuthenticationFailedError)
    const failed = error as AuthenticationFailedError
    expect(failed.code).toBe('AUTH_REJECTED')
    expect(failed.endpoint).toBe('writer')
    expect(failed.authType).toBe('secret')
    expect(classifyError(failed).category).toBe('fatal')
    const cause = failed.cause as { code?: unknown; errno?: unknown }
    if (engine === 'postgres') expect(cause.code).toBe('28P01')
    else expect(cause.errno).toBe(1045)
    // Once with the cached secret, once more after the database rejected it; then no retry (fatal).
    expect(getSecretCalls()).toBe(2)
    expect(events['credentials-refreshed'].map((event) => event.reason)).toEqual(['initial', 'rejected'])
    for (const text of [failed.message, inspect(failed, { depth: 5 })]) {
      expect(text).not.toContain(wrong)
      expect(text).not.toContain(login.password)
    }
  })

  it('after two thirds of ttlMs, a new connection refreshes the secret in the background', async () => {
    // How to force a new connection at a chosen (simulated) time: the pool's maxLifetimeMs. The pool
    // compares Date.now() with each connection's expiry (src/pool/connection-pool.ts), so with Date faked
    // a pooled connection is "expired" once the clock passes it, and the next query closes it and opens
    // a new one, which asks the credential cache. Only Date is faked: sockets and timers stay real.
    vi.useFakeTimers({ toFake: ['Date'] })
    const start = Date.now()
    const ttlMs = 60_000
    let releaseRefresh: (() => void) | undefined
    secretsManager
      .on(GetSecretValueCommand)
      .resolvesOnce({ SecretString: rdsSecret(engine, info) })
      // The background refresh answers only when the test says so: the query must not wait for it.
      .callsFakeOnce(
        () =>
          new Promise((resolve) => {
            releaseRefresh = () => resolve({ SecretString: rdsSecret(engine, info) })
          }),
      )
    const db = track(
      createDb<Database>({
        dialect: engine,
        writer: { auth: { type: 'secret', secretId: SECRET_ID, ttlMs } },
        pool: { max: 1, maxLifetimeMs: 10_000 },
      }),
    )
    const events = collectEvents(db)

    const firstSession = await sessionOf(db, engine)
    vi.setSystemTime(start + 30_000)
    // Before two thirds of ttlMs the secret is not fetched again (the connection is recycled, though).
    expect(await sessionOf(db, engine)).not.toBe(firstSession)
    expect(getSecretCalls()).toBe(1)

    vi.setSystemTime(start + (ttlMs * 2) / 3 + 1_000)
    const thirdSession = await sessionOf(db, engine)
    expect(thirdSession).not.toBe(firstSession)
    // The refresh started, and the new connection opened with the cached secret while it is pending.
    expect(getSecretCalls()).toBe(2)
    expect(events['credentials-refreshed'].map((event) => event.reason)).toEqual(['initial'])

    expect(releaseRefresh).toBeDefined()
    releaseRefresh?.()
    await vi.waitFor(() => expect(events['credentials-refreshed']).toHaveLength(2), { timeout: 5_000 })
    expect(events['credentials-refreshed'][1]).toMatchObject({ endpoint: 'writer', reason: 'refresh' })
    expect(await selectOne(db, 7)).toBe(7)
    expect(getSecretCalls()).toBe(2)
    expect(events.error).toEqual([])
  })

  it('a failed background refresh is reported and does not fail queries until the secret expires', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    const start = Date.now()
    const ttlMs = 60_000
    secretsManager
      .on(GetSecretValueCommand)
      .resolvesOnce({ SecretString: rdsSecret(engine, info) })
      .rejectsOnce(awsError('ThrottlingException', 'Rate exceeded', 400))
      .rejects(awsError('AccessDeniedException', 'not authorized to perform GetSecretValue', 400))
    const db = track(
      createDb<Database>({
        dialect: engine,
        writer: { auth: { type: 'secret', secretId: SECRET_ID, ttlMs } },
        pool: { max: 1, maxLifetimeMs: 10_000 },
      }),
    )
    const events = collectEvents(db)
    expect(await selectOne(db, 1)).toBe(1)

    // Past two thirds of ttlMs: a new connection starts a refresh, which fails in the background.
    vi.setSystemTime(start + 41_000)
    expect(await selectOne(db, 2)).toBe(2)
    await vi.waitFor(() => expect(events.error).toHaveLength(1), { timeout: 5_000 })
    expect(events.error[0]).toMatchObject({
      endpoint: 'writer',
      category: 'unavailable',
      code: 'CREDENTIALS_UNAVAILABLE',
    })
    expect(events.error[0]?.reason).toMatch(/background secret credential refresh failed/)

    // Still before ttlMs: the old secret keeps working for new connections; each tries to refresh again.
    vi.setSystemTime(start + 52_000)
    expect(await selectOne(db, 3)).toBe(3)
    await vi.waitFor(() => expect(events.error).toHaveLength(2), { timeout: 5_000 })
    expect(events.error[1]).toMatchObject({
      endpoint: 'writer',
      category: 'fatal',
      code: 'CREDENTIALS_FAILED',
    })
    expect(getSecretCalls()).toBe(3)

    // Past ttlMs the old secret is no longer used: a new connection (the one opened at 52 s has outlived
    // its 9-10 s lifetime by then) waits for a fetch, which fails.
    vi.setSystemTime(start + ttlMs + 11_000)
    const error = await failureOf(selectOne(db, 4))
    expect(error).toBeInstanceOf(CredentialSourceError)
    expect((error as CredentialSourceError).code).toBe('CREDENTIALS_FAILED')
    expect(getSecretCalls()).toBe(4)
    expect(events['credentials-refreshed'].map((event) => event.reason)).toEqual(['initial'])
  })
})

describe('secret errors', () => {
  let port: number

  beforeEach(async () => {
    // Nothing listens here: a secret that fails must fail before any connection is attempted.
    port = await getFreePort()
  })

  function secretDb(overrides: Partial<CreateDbConfig> = {}): ResilientDb<Database> {
    return track(
      createDb<Database>({
        dialect: 'postgres',
        writer: { host: '127.0.0.1', port, auth: { type: 'secret', secretId: SECRET_ID } },
        ...overrides,
      }),
    )
  }

  async function credentialFailure(db: ResilientDb<Database>): Promise<CredentialSourceError> {
    const error = await failureOf(selectOne(db))
    expect(error).toBeInstanceOf(CredentialSourceError)
    return error as CredentialSourceError
  }

  const malformed: Array<[string, (password: string) => Record<string, unknown>, RegExp]> = [
    ['is not JSON', (password) => ({ SecretString: `username=app password=${password}` }), /not JSON/],
    [
      'has no password field',
      // A misspelt field: its value is the password, and must not be echoed either.
      (password) => ({ SecretString: JSON.stringify({ username: 'app', passwd: password }) }),
      /no "password" field/,
    ],
    [
      'has a port that is not a number',
      (password) => ({
        SecretString: JSON.stringify({ username: 'app', password, port: 'five-four-three-two' }),
      }),
      /"port" field is not a TCP port/,
    ],
    [
      'is binary (SecretBinary only)',
      (password) => ({
        SecretBinary: new TextEncoder().encode(JSON.stringify({ username: 'app', password })),
      }),
      /no SecretString \(binary secrets are not supported\)/,
    ],
  ]

  for (const [problem, response, expected] of malformed) {
    it(`a secret that ${problem} is a fatal CredentialSourceError naming the problem, not the password`, async () => {
      const password = newSecretValue('malformed')
      secretsManager.on(GetSecretValueCommand).resolves(response(password))
      const db = secretDb()
      const error = await credentialFailure(db)
      expect(error.code).toBe('CREDENTIALS_FAILED')
      expect(error.endpoint).toBe('writer')
      expect(error.authType).toBe('secret')
      expect(classifyError(error).category).toBe('fatal')
      expect(error.message).toMatch(expected)
      for (const text of [error.message, inspect(error, { depth: 5 })]) expect(text).not.toContain(password)
      // Fatal: not retried.
      expect(getSecretCalls()).toBe(1)
    })
  }

  it('ThrottlingException is a transient CredentialSourceError (unavailable), retried like one', async () => {
    const throttled = awsError('ThrottlingException', 'Rate exceeded', 400)
    secretsManager.on(GetSecretValueCommand).rejects(throttled)
    const db = secretDb({ retry: { retries: 2, minDelayMs: 1, maxDelayMs: 5 } })
    const events = collectEvents(db)
    const error = await credentialFailure(db)
    expect(error.code).toBe('CREDENTIALS_UNAVAILABLE')
    expect(classifyError(error).category).toBe('unavailable')
    expect(error.message).toMatch(/ThrottlingException/)
    expect((error.cause as Error).name).toBe('ThrottlingException')
    // Nothing reached the database, so the statement was retried: 1 attempt + retry.retries.
    expect(events.retry.map((event) => event.code)).toEqual([
      'CREDENTIALS_UNAVAILABLE',
      'CREDENTIALS_UNAVAILABLE',
    ])
    // Exactly one fetch per attempt: a credential-source failure says nothing about where the writer is,
    // so it must not start writer discovery, whose probes would fetch the secret again and again.
    expect(getSecretCalls()).toBe(3)
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    expect(getSecretCalls()).toBe(3)
    expect(events.failover).toEqual([])
  })

  it('ResourceNotFoundException is fatal and fails fast, without a retry storm', async () => {
    secretsManager
      .on(GetSecretValueCommand)
      .rejects(awsError('ResourceNotFoundException', "Secrets Manager can't find the specified secret.", 400))
    const db = secretDb()
    const events = collectEvents(db)
    const startedAt = performance.now()
    const error = await credentialFailure(db)
    expect(performance.now() - startedAt).toBeLessThan(1_000)
    expect(error.code).toBe('CREDENTIALS_FAILED')
    expect(classifyError(error).category).toBe('fatal')
    expect(error.message).toMatch(/ResourceNotFoundException/)
    // Expected: exactly 1 GetSecretValue call. The library retries a statement automatically (up to
    // retry.retries = 4 more times, src/routing/routing-connection.ts) only when classifyError says
    // 'unavailable' (or 'read-only', or 'ambiguous' for a read); a missing secret is 'fatal', so the
    // first failure is final. Nor is a fatal error a reason to suspect the writer (only 'unavailable' or a
    // lost connection start writer discovery, whose probes would fetch again). Wait a little to see
    // that nothing fetches in the background either.
    await delay(300)
    expect(getSecretCalls()).toBe(1)
    expect(events.retry).toEqual([])

    // The next query tries again (the failure is not cached), once.
    await credentialFailure(db)
    expect(getSecretCalls()).toBe(2)
  })
})
