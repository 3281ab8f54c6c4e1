import { randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import { Signer } from '@aws-sdk/rds-signer'
import * as mysql2 from 'mysql2'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { CredentialCache, CredentialCacheHooks } from '../../src/auth/credential-cache.js'
import { createCredentialCache } from '../../src/auth/credential-source.js'
import type { Credentials } from '../../src/auth/credentials.js'
import type { CreateDbConfig } from '../../src/config/create-db-config.js'
import type { EndpointSettings } from '../../src/config/endpoint-settings.js'
import { resolveConfig } from '../../src/config/resolve-config.js'
import { MysqlConnector } from '../../src/dialect/mysql-connector.js'
import { createDb } from '../../src/index.js'
import { loadRdsCaBundle } from '../../src/tls/rds-ca-bundle.js'
import { configError } from '../support/config-error.js'
import { registerSecret } from '../support/secrets.js'

// RDS IAM authentication with the real @aws-sdk/rds-signer: tokens are signed locally from static test
// credentials, so nothing here talks to AWS or to a database.

const ACCESS_KEY_ID = 'AKIAIOSFODNN7EXAMPLE'
/** 30 random bytes in base64: 40 characters, with '/' and '+' as often as a real secret access key. */
const SECRET_ACCESS_KEY = randomBytes(30).toString('base64')
registerSecret(SECRET_ACCESS_KEY, 'fake AWS secret access key (iam.test.ts)')
const CREDENTIALS = { accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET_ACCESS_KEY }

const WRITER_HOST = 'mydb.cluster-abc123.eu-west-1.rds.amazonaws.com'
const READER_HOST = 'mydb.cluster-ro-abc123.eu-west-1.rds.amazonaws.com'
const WRITER_URL = `postgres://app_iam@${WRITER_HOST}:5432/orders`
const READER_URL = `postgres://app_iam@${READER_HOST}:5432/orders`

const TOKEN_LIFETIME_MS = 15 * 60_000
const DAY_MS = 24 * 3_600_000
const DEFAULT_REFRESH_AFTER_MS = 600_000

/** What a token says, parsed back out of the presigned URL (host:port/?Action=connect&...). */
interface ParsedToken {
  readonly host: string
  readonly port: string
  readonly path: string
  readonly params: URLSearchParams
  /** X-Amz-Date as epoch milliseconds. */
  readonly signedAt: number
  readonly signature: string
}

function parseToken(token: string): ParsedToken {
  // The token is a presigned URL without its scheme; a URL parser needs one.
  if (/^[a-z]+:\/\//i.test(token)) throw new Error('the IAM token starts with a URL scheme')
  const url = new URL(`https://${token}`)
  const date = url.searchParams.get('X-Amz-Date') ?? ''
  const parts = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(date)
  if (parts === null) throw new Error('the IAM token has no X-Amz-Date of the form yyyymmddThhmmssZ')
  const [year, month, day, hour, minute, second] = parts.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  return {
    host: url.hostname,
    port: url.port,
    path: url.pathname,
    params: url.searchParams,
    signedAt: Date.UTC(year, month - 1, day, hour, minute, second),
    signature: url.searchParams.get('X-Amz-Signature') ?? '',
  }
}

/** yyyymmdd (UTC) of an epoch time: the date part of X-Amz-Credential's scope. */
function scopeDate(epochMs: number): string {
  return new Date(epochMs).toISOString().slice(0, 10).replaceAll('-', '')
}

/** Tokens are passwords for 15 minutes: every one a test sees is registered with the leak watch. */
const registered = new Set<string>()
function registerToken(token: string): void {
  // The signature is what makes the token usable; the rest (host, user, key id, date) is public.
  const { signature } = parseToken(token)
  if (registered.has(signature)) return
  registered.add(signature)
  registerSecret(signature, 'IAM token signature (iam.test.ts)')
}

function recordingHooks(): CredentialCacheHooks & {
  fetched: string[]
  failures: unknown[]
} {
  const fetched: string[] = []
  const failures: unknown[] = []
  return {
    fetched,
    failures,
    onFetched: (reason) => fetched.push(reason),
    onBackgroundFailure: (error) => failures.push(error),
  }
}

function cacheFor(
  settings: EndpointSettings,
  hooks: CredentialCacheHooks = recordingHooks(),
): CredentialCache {
  const cache = createCredentialCache(settings, hooks)
  if (cache === undefined) throw new Error(`no credential cache for auth type '${settings.auth.type}'`)
  return cache
}

/** The first writer of a postgres config with IAM auth; `auth` fields are merged over the defaults. */
function iamWriter(
  auth: Record<string, unknown> = {},
  writer: CreateDbConfig['writer'] = WRITER_URL,
): EndpointSettings {
  const config = resolveConfig({
    dialect: 'postgres',
    writer,
    auth: { type: 'iam', region: 'eu-west-1', credentials: CREDENTIALS, ...auth } as CreateDbConfig['auth'],
    tls: 'rds',
  })
  return config.writers[0] as EndpointSettings
}

// AWS_REGION changes what IAM auth signs for; a developer's shell or a CI runner on AWS may set it.
// Every test starts without it and gets the original back afterwards.
let savedRegion: string | undefined
beforeEach(() => {
  savedRegion = process.env.AWS_REGION
  delete process.env.AWS_REGION
})
afterEach(() => {
  if (savedRegion === undefined) delete process.env.AWS_REGION
  else process.env.AWS_REGION = savedRegion
  vi.useRealTimers()
  vi.restoreAllMocks()
})

describe('IAM tokens from the real RDS signer', () => {
  it('signs a connect token for the endpoint host, port and user, valid for 15 minutes', async () => {
    const settings = iamWriter()
    const hooks = recordingHooks()
    const credentials = await cacheFor(settings, hooks).get()
    const token = credentials.password()
    registerToken(token)

    const parsed = parseToken(token)
    expect(parsed.host).toBe(WRITER_HOST)
    expect(parsed.port).toBe('5432')
    expect(parsed.path).toBe('/')
    expect(parsed.params.get('Action')).toBe('connect')
    expect(parsed.params.get('DBUser')).toBe('app_iam')
    expect(parsed.params.get('X-Amz-Algorithm')).toBe('AWS4-HMAC-SHA256')
    expect(parsed.params.get('X-Amz-Expires')).toBe('900')
    expect(Math.abs(parsed.signedAt - Date.now())).toBeLessThan(5_000)
    expect(parsed.params.get('X-Amz-Credential')).toBe(
      `${ACCESS_KEY_ID}/${scopeDate(parsed.signedAt)}/eu-west-1/rds-db/aws4_request`,
    )
    expect(parsed.signature).toMatch(/^[0-9a-f]{64}$/)
    expect(credentials.user).toBe('app_iam')
    expect(hooks.fetched).toEqual(['initial'])

    for (const form of [SECRET_ACCESS_KEY, encodeURIComponent(SECRET_ACCESS_KEY)]) {
      expect(token).not.toContain(form)
    }
    // The token is a password: printing the credentials shows neither it nor its signature.
    for (const printed of [inspect(credentials), JSON.stringify(credentials)]) {
      expect(printed).not.toContain(parsed.signature)
      expect(printed).toContain('app_iam')
    }
  })

  it('signs for the port of the endpoint, and a MySQL endpoint the same way', async () => {
    const config = resolveConfig({
      dialect: 'mysql',
      writer: `mysql://app_iam@${WRITER_HOST}:3307/orders`,
      auth: { type: 'iam', region: 'eu-west-1', credentials: CREDENTIALS },
      tls: 'rds',
    })
    const token = (await cacheFor(config.writers[0] as EndpointSettings).get()).password()
    registerToken(token)
    const parsed = parseToken(token)
    expect(`${parsed.host}:${parsed.port}`).toBe(`${WRITER_HOST}:3307`)
    expect(parsed.params.get('DBUser')).toBe('app_iam')
  })

  it('without region or AWS_REGION, signs for the region in the RDS host name', async () => {
    const host = 'mydb.cluster-abc123.ap-southeast-2.rds.amazonaws.com'
    const settings = iamWriter({ region: undefined }, `postgres://app_iam@${host}:5432/orders`)
    expect(settings.auth.type === 'iam' && settings.auth.region).toBeUndefined()
    const token = (await cacheFor(settings).get()).password()
    registerToken(token)
    expect(parseToken(token).params.get('X-Amz-Credential')).toMatch(
      /^AKIAIOSFODNN7EXAMPLE\/\d{8}\/ap-southeast-2\/rds-db\/aws4_request$/,
    )
  })

  it('AWS_REGION wins over the region in the host name', async () => {
    process.env.AWS_REGION = 'us-east-2'
    const settings = iamWriter({ region: undefined })
    const token = (await cacheFor(settings).get()).password()
    registerToken(token)
    expect(parseToken(token).params.get('X-Amz-Credential')).toMatch(/\/us-east-2\/rds-db\/aws4_request$/)
  })

  it('an explicit region wins over AWS_REGION', async () => {
    process.env.AWS_REGION = 'us-east-2'
    const token = (await cacheFor(iamWriter({ region: 'eu-central-1' })).get()).password()
    registerToken(token)
    expect(parseToken(token).params.get('X-Amz-Credential')).toMatch(/\/eu-central-1\/rds-db\/aws4_request$/)
  })

  it('a burst of 1000 connections at a cold start signs exactly one token', async () => {
    const signer = vi.spyOn(Signer.prototype, 'getAuthToken')
    const cache = cacheFor(iamWriter())
    const all = await Promise.all(Array.from({ length: 1000 }, () => cache.get()))
    expect(signer).toHaveBeenCalledTimes(1)
    const tokens = new Set(all.map((credentials) => credentials.password()))
    expect(tokens.size).toBe(1)
    for (const token of tokens) registerToken(token)
    // Once fetched, the token is handed out without waiting for anything.
    expect(cache.get()).not.toBeInstanceOf(Promise)
    expect(signer).toHaveBeenCalledTimes(1)
  })
})

function nextMacrotask(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

interface DayResult {
  /** Signer calls per endpoint host. */
  readonly calls: Map<string, number>
  /** Every hand-out that broke a rule, described; empty when all is well. */
  readonly violations: string[]
  /** Why each fetch ran, per endpoint host. */
  readonly reasons: Map<string, string[]>
  /** How often get() made the caller wait (returned a promise), per endpoint host. */
  readonly waits: Map<string, number>
  /** The oldest token handed out, in milliseconds of age at the time. */
  readonly oldestHandedOutMs: number
}

/**
 * A day of steady traffic on a writer and a reader: every 7 s of simulated time each endpoint opens a
 * new connection (`cache.get()`). Only Date is faked, so the signer's real crypto and promises run
 * normally; the signer signs with the simulated clock, so X-Amz-Date follows it.
 */
async function simulateDay(refreshAfterMs: number | undefined): Promise<DayResult> {
  vi.useFakeTimers({ toFake: ['Date'] })
  const start = Date.UTC(2025, 0, 15, 0, 0, 3)
  vi.setSystemTime(start)
  // Spying on a method already spied on returns the same spy: start its count from zero.
  const signer = vi.spyOn(Signer.prototype, 'getAuthToken').mockClear()
  const config = resolveConfig({
    dialect: 'postgres',
    writer: WRITER_URL,
    readers: [READER_URL],
    auth: {
      type: 'iam',
      region: 'eu-west-1',
      credentials: CREDENTIALS,
      ...(refreshAfterMs === undefined ? {} : { refreshAfterMs }),
    },
    tls: 'rds',
  })
  const endpoints = [...config.writers, ...config.readers].map((settings) => {
    const hooks = recordingHooks()
    return { settings, hooks, cache: cacheFor(settings, hooks) }
  })
  const violations: string[] = []
  const waits = new Map<string, number>()
  let oldestHandedOutMs = 0
  const stepMs = 7_000

  for (let now = start; now <= start + DAY_MS; now += stepMs) {
    vi.setSystemTime(now)
    for (const { settings, cache } of endpoints) {
      const host = settings.host as string
      const callsBefore = signer.mock.calls.length
      const got = cache.get()
      let credentials: Credentials
      if (got instanceof Promise) {
        waits.set(host, (waits.get(host) ?? 0) + 1)
        credentials = await got
      } else {
        credentials = got
      }
      // Seven seconds pass between connections: let a background refresh run meanwhile. The signer is
      // only called a few microtasks after get() starts the refresh, so yield to the event loop at
      // every step (a loop that never yields would starve the refresh until the token expired), then
      // wait for any signature that started.
      await nextMacrotask()
      if (signer.mock.calls.length > callsBefore) {
        await Promise.allSettled(signer.mock.results.slice(callsBefore).map((result) => result.value))
        await nextMacrotask()
      }
      const token = credentials.password()
      const parsed = parseToken(token)
      registerToken(token)
      const age = now - parsed.signedAt
      oldestHandedOutMs = Math.max(oldestHandedOutMs, age)
      if (parsed.host !== host) violations.push(`${host} got a token for ${parsed.host}`)
      if (age < 0 || age >= TOKEN_LIFETIME_MS) {
        violations.push(`${host} got a token signed ${age} ms before it was handed out at ${now - start} ms`)
      }
    }
  }

  const calls = new Map<string, number>()
  for (const context of signer.mock.contexts) {
    const host = (context as { hostname: string }).hostname
    calls.set(host, (calls.get(host) ?? 0) + 1)
  }
  const reasons = new Map(endpoints.map(({ settings, hooks }) => [settings.host as string, hooks.fetched]))
  for (const { settings, hooks } of endpoints) {
    if (hooks.failures.length > 0) violations.push(`${settings.host} had background failures`)
  }
  return { calls, violations, reasons, waits, oldestHandedOutMs }
}

describe('IAM token refresh over a simulated day', () => {
  it('signs at most once per refreshAfterMs per endpoint and never hands out an expired token', async () => {
    const day = await simulateDay(undefined)
    expect(day.violations).toEqual([])
    const maxCalls = DAY_MS / DEFAULT_REFRESH_AFTER_MS + 1
    for (const host of [WRITER_HOST, READER_HOST]) {
      const calls = day.calls.get(host) ?? 0
      expect(calls, host).toBeLessThanOrEqual(maxCalls)
      // And it does re-sign: a token lives 15 minutes, a day has 96 of them.
      expect(calls, host).toBeGreaterThan(DAY_MS / TOKEN_LIFETIME_MS)
      // Steady traffic never waits for the signer after the first connection: refreshes run ahead.
      expect(day.waits.get(host), host).toBe(1)
      const reasons = day.reasons.get(host) ?? []
      expect(reasons[0], host).toBe('initial')
      expect(new Set(reasons.slice(1)), host).toEqual(new Set(['refresh']))
      expect(reasons.length, host).toBe(calls)
    }
    // A refresh starts with the first connection past refreshAfterMs, so no token handed out is older
    // than that plus one step (and the step is far below the 5 minutes of margin to expiry).
    expect(day.oldestHandedOutMs).toBeLessThanOrEqual(DEFAULT_REFRESH_AFTER_MS + 7_000)
  })

  it('refreshAfterMs: 300_000 signs twice as often', async () => {
    const normal = await simulateDay(undefined)
    const often = await simulateDay(300_000)
    expect(often.violations).toEqual([])
    for (const host of [WRITER_HOST, READER_HOST]) {
      const base = normal.calls.get(host) ?? 0
      const doubled = often.calls.get(host) ?? 0
      expect(doubled, host).toBeLessThanOrEqual(DAY_MS / 300_000 + 1)
      // Twice as many refreshes, give or take the initial signature and the 7 s step rounding.
      expect(doubled, host).toBeGreaterThanOrEqual(2 * base - 3)
    }
    expect(often.oldestHandedOutMs).toBeLessThanOrEqual(300_000 + 7_000)
  })

  it('after a quiet period longer than 15 minutes, a new connection waits for a new token', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    const start = Date.UTC(2025, 0, 15, 12, 0, 0)
    vi.setSystemTime(start)
    const signer = vi.spyOn(Signer.prototype, 'getAuthToken')
    const hooks = recordingHooks()
    const cache = cacheFor(iamWriter(), hooks)
    const first = (await cache.get()).password()
    registerToken(first)

    vi.setSystemTime(start + 20 * 60_000)
    const got = cache.get()
    // The old token expired: handing it out would fail the connection, so the caller waits instead.
    expect(got).toBeInstanceOf(Promise)
    const second = (await got).password()
    registerToken(second)
    expect(second).not.toBe(first)
    expect(parseToken(second).signedAt).toBe(start + 20 * 60_000)
    expect(signer).toHaveBeenCalledTimes(2)
    expect(hooks.fetched).toEqual(['initial', 'expired'])
  })

  it('never hands out a token past 14 of its 15 minutes, even when signing was slow', async () => {
    vi.useFakeTimers({ toFake: ['Date'] })
    const start = Date.UTC(2025, 0, 15, 0, 0, 3)
    vi.setSystemTime(start)
    const original = Signer.prototype.getAuthToken
    // A slow credential provider (STS, SSO, IMDS): the token is signed, then 5 s pass before it arrives.
    vi.spyOn(Signer.prototype, 'getAuthToken').mockImplementation(async function (this: Signer) {
      const token = await original.call(this)
      vi.setSystemTime(Date.now() + 5_000)
      return token
    })
    const cache = cacheFor(iamWriter())
    registerToken((await cache.get()).password())
    // No connection asked for a token between minutes 10 and 14; at 14 min 30 s (counted from the
    // start of signing) the cached token would have 30 s left: the caller must wait for a new one.
    for (const age of [839_000, 870_000]) {
      vi.setSystemTime(start + age)
      const got = cache.get()
      const token = (got instanceof Promise ? await got : got).password()
      registerToken(token)
      const left = parseToken(token).signedAt + TOKEN_LIFETIME_MS - Date.now()
      expect(left, `token handed out at ${age} ms`).toBeGreaterThanOrEqual(60_000 - 5_000)
    }
  })
})

describe('IAM config errors', () => {
  const rdsUrl = `postgres://app_iam@${WRITER_HOST}:5432/orders`
  const iam = { type: 'iam', region: 'eu-west-1' } as const

  it('refuses tls: false, naming TLS and what to set', () => {
    const error = configError({ dialect: 'postgres', writer: rdsUrl, auth: iam, tls: false })
    expect(error.setting).toBe('writer')
    expect(error.message).toMatch(/needs TLS/)
    expect(error.message).toMatch(/'rds'|'verify-full'/)
  })

  it('refuses a non-RDS host without a tls setting (plain TCP is the default there)', () => {
    const error = configError({
      dialect: 'mysql',
      writer: 'mysql://app_iam@db.internal:3306/orders',
      auth: iam,
    })
    expect(error.setting).toBe('writer')
    expect(error.message).toMatch(/needs TLS/)
  })

  it('refuses an endpoint without a user', () => {
    const error = configError({
      dialect: 'postgres',
      writer: `postgres://${WRITER_HOST}:5432/orders`,
      auth: iam,
    })
    expect(error.setting).toBe('writer')
    expect(error.message).toMatch(/user/)
  })

  it('refuses a password in the URL without echoing it', () => {
    const password = `pw${randomBytes(12).toString('hex')}`
    registerSecret(password, 'URL password next to IAM auth (iam.test.ts)')
    const error = configError({
      dialect: 'postgres',
      writer: `postgres://app_iam:${password}@${WRITER_HOST}:5432/orders`,
      auth: iam,
    })
    expect(error.setting).toBe('writer')
    expect(error.message).toMatch(/password/)
    expect(error.message).toMatch(/'iam'/)
    expect(error.message).not.toContain(password)
    expect(inspect(error)).not.toContain(password)
  })

  it('refuses a missing region when neither AWS_REGION nor the host name gives one', () => {
    const config = {
      dialect: 'postgres',
      writer: 'postgres://app_iam@db.internal:5432/orders',
      auth: { type: 'iam' },
      tls: 'verify-full',
    }
    const error = configError(config)
    expect(error.setting).toBe('auth.region')
    expect(error.message).toMatch(/AWS_REGION/)
    // With AWS_REGION set, the same config is fine.
    process.env.AWS_REGION = 'eu-west-1'
    expect(() => resolveConfig(config as CreateDbConfig)).not.toThrow()
  })

  it('refuses refreshAfterMs that leaves less than a minute before a token stops being handed out', () => {
    // Tokens live 15 minutes and are handed out for 14; a refresh must start at least a minute earlier.
    for (const refreshAfterMs of [900_000, 780_001]) {
      const error = configError({ dialect: 'postgres', writer: rdsUrl, auth: { ...iam, refreshAfterMs } })
      expect(error.setting).toBe('auth.refreshAfterMs')
      expect(error.message).toMatch(/expected an integer from 10000 to 780000/)
    }
    expect(
      resolveConfig({ dialect: 'postgres', writer: rdsUrl, auth: { ...iam, refreshAfterMs: 780_000 } })
        .writers[0]?.auth,
    ).toMatchObject({ type: 'iam', refreshAfterMs: 780_000 })
  })

  it('refuses credentials of the wrong shape without echoing them', () => {
    const pasted = `${ACCESS_KEY_ID}:${SECRET_ACCESS_KEY}`
    for (const credentials of [
      pasted,
      { accessKeyId: ACCESS_KEY_ID },
      { accessKeyId: 1, secretAccessKey: 2 },
    ]) {
      const error = configError({ dialect: 'postgres', writer: rdsUrl, auth: { ...iam, credentials } })
      expect(error.setting).toBe('auth.credentials')
      expect(error.message).toMatch(/accessKeyId, secretAccessKey/)
      expect(error.message).not.toContain(SECRET_ACCESS_KEY)
    }
  })

  it('refuses credentials and profile together', () => {
    const error = configError({
      dialect: 'postgres',
      writer: rdsUrl,
      auth: { ...iam, credentials: CREDENTIALS, profile: 'prod-db' },
    })
    expect(error.setting).toBe('auth')
    expect(error.message).toMatch(/either 'credentials' or 'profile'/)
    expect(error.message).not.toContain(SECRET_ACCESS_KEY)
  })

  it("an endpoint's own auth overrides the global one, and errors name the endpoint's setting", () => {
    const password = `pw${randomBytes(12).toString('hex')}`
    registerSecret(password, 'reader URL password (iam.test.ts)')
    const replicaUrl = `postgres://app:${password}@replica.internal:5432/orders`
    const config = resolveConfig({
      dialect: 'postgres',
      writer: rdsUrl,
      readers: [{ url: replicaUrl, auth: { type: 'password' } }],
      auth: iam,
    })
    expect(config.writers[0]?.auth.type).toBe('iam')
    expect(config.readers[0]?.auth.type).toBe('password')
    expect(config.readers[0]?.password()).toBe(password)

    // Without the override, the global IAM auth applies to the reader and its password is refused.
    const inherited = configError({ dialect: 'postgres', writer: rdsUrl, readers: [replicaUrl], auth: iam })
    expect(inherited.setting).toBe('readers[0]')
    expect(inherited.message).toMatch(/auth is 'iam'/)
    expect(inherited.message).not.toContain(password)

    // An endpoint's own auth is validated under its own path.
    const own = configError({
      dialect: 'postgres',
      writer: rdsUrl,
      readers: [
        { url: 'postgres://app_iam@replica.internal:5432/orders', auth: { type: 'iam' }, tls: 'rds' },
      ],
    })
    expect(own.setting).toBe('readers[0].auth.region')
    const ownKey = configError({
      dialect: 'postgres',
      writer: rdsUrl,
      readers: [{ url: READER_URL, auth: { ...iam, refreshAfterMs: 900_000 } }],
    })
    expect(ownKey.setting).toBe('readers[0].auth.refreshAfterMs')
  })
})

describe('RDS defaults and printing', () => {
  it('an *.rds.amazonaws.com host without a tls setting verifies against the RDS CAs, an RDS Proxy one against the system store', async () => {
    const config: CreateDbConfig = {
      dialect: 'postgres',
      writer: WRITER_URL,
      readers: [`postgres://app_iam@mydb-proxy.proxy-abc123.eu-west-1.rds.amazonaws.com:5432/orders`],
      auth: { type: 'iam', region: 'eu-west-1', credentials: CREDENTIALS },
    }
    const db = createDb(config)
    await db.destroy()
    const resolved = resolveConfig(config)
    expect(resolved.writers[0]?.tls).toEqual({ mode: 'verify', trust: 'rds', options: undefined })
    // RDS Proxy serves ACM certificates (Amazon Trust Services roots), which the RDS bundle does not hold.
    expect(resolved.readers[0]?.tls).toEqual({ mode: 'verify', trust: 'system', options: undefined })
    // Elsewhere the default stays plain TCP, so IAM there is refused (see above) rather than sent in clear.
    expect(
      resolveConfig({ dialect: 'postgres', writer: 'postgres://app@db.internal/orders' }).writers[0]?.tls,
    ).toEqual({ mode: 'off' })
  })

  it('printing the resolved config shows the auth type only, never the AWS keys', () => {
    const resolved = resolveConfig({
      dialect: 'postgres',
      writer: WRITER_URL,
      readers: [READER_URL],
      auth: {
        type: 'iam',
        region: 'eu-west-1',
        credentials: { ...CREDENTIALS, sessionToken: `st${SECRET_ACCESS_KEY}` },
      },
    })
    const json = JSON.stringify(resolved)
    const printed = inspect(resolved, { depth: 10 })
    for (const text of [json, printed]) {
      expect(text).not.toContain(SECRET_ACCESS_KEY)
      expect(text).not.toContain(ACCESS_KEY_ID)
    }
    const parsed = JSON.parse(json) as { writers: Array<{ auth: unknown; tls: unknown }> }
    expect(parsed.writers[0]?.auth).toBe('iam')
    expect(parsed.writers[0]?.tls).toBe('verify (rds CA)')
    expect(printed).toMatch(/auth: 'iam'/)
  })
})

describe("MySQL's cleartext plugin", () => {
  async function connectorOptions(config: CreateDbConfig): Promise<Record<string, unknown>> {
    const settings = resolveConfig(config).writers[0] as EndpointSettings
    const cache = createCredentialCache(settings, recordingHooks())
    const bundle =
      settings.tls.mode === 'verify' && settings.tls.trust === 'rds' ? await loadRdsCaBundle() : undefined
    return new MysqlConnector(mysql2, settings, cache, bundle).connectionOptions as Record<string, unknown>
  }
  const getToken = async () => `tok${randomBytes(12).toString('hex')}`

  it('is enabled for IAM over TLS: RDS asks for mysql_clear_password', async () => {
    const options = await connectorOptions({
      dialect: 'mysql',
      writer: `mysql://app_iam@${WRITER_HOST}:3306/orders`,
      auth: { type: 'iam', region: 'eu-west-1', credentials: CREDENTIALS },
      tls: 'rds',
    })
    expect(options.enableCleartextPlugin).toBe(true)
    expect(options.ssl).toMatchObject({ rejectUnauthorized: true, verifyIdentity: true })
  })

  it('is enabled for a token source over TLS', async () => {
    const options = await connectorOptions({
      dialect: 'mysql',
      writer: 'mysql://app@db.internal:3306/orders',
      auth: { type: 'token', getToken, ttlMs: 60_000 },
      tls: 'verify-full',
    })
    expect(options.enableCleartextPlugin).toBe(true)
  })

  it('is not enabled for a plain password, even over TLS', async () => {
    const options = await connectorOptions({
      dialect: 'mysql',
      writer: 'mysql://app@db.internal:3306/orders',
      tls: 'verify-full',
    })
    expect(options.enableCleartextPlugin).toBeUndefined()
  })

  it('is not enabled for a token source over plain TCP: the token would cross the network in clear', async () => {
    const options = await connectorOptions({
      dialect: 'mysql',
      writer: 'mysql://app@db.internal:3306/orders',
      auth: { type: 'token', getToken, ttlMs: 60_000 },
      tls: false,
    })
    expect(options.enableCleartextPlugin).toBeUndefined()
    expect(options.ssl).toBeUndefined()
  })
})
