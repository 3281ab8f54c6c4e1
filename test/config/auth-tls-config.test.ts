import { randomBytes } from 'node:crypto'
import { inspect } from 'node:util'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { resolveConfig } from '../../src/config/resolve-config.js'
import { type ConfigError, type CreateDbConfig, createDb } from '../../src/index.js'
import { configError } from '../support/config-error.js'
import { registerSecret } from '../support/secrets.js'

// Validation of the `auth` and `tls` settings: every mistake is a ConfigError at createDb time that names
// the setting by its path, says what was expected, and never repeats a secret it was given.

const pgUrl = 'postgres://app@db.internal:5432/orders'
const mysqlUrl = 'mysql://app@db.internal:3306/orders'
const getToken = async () => 'not-used-by-these-tests'

/** A private key as a user would paste it: its body is random, and it must never appear in an error. */
const KEY_BODY = randomBytes(48).toString('base64')
registerSecret(KEY_BODY, 'client key body (auth-tls-config.test.ts)')
const CLIENT_KEY = `-----BEGIN PRIVATE KEY-----\n${KEY_BODY}\n-----END PRIVATE KEY-----\n`
const CA = '-----BEGIN CERTIFICATE-----\nMIIBfake-ca\n-----END CERTIFICATE-----\n'
const CERT = '-----BEGIN CERTIFICATE-----\nMIIBfake-client-cert\n-----END CERTIFICATE-----\n'

/** Rejected with `setting`, and a message that says what was expected. */
function expectRejected(config: unknown, setting: string, expected: RegExp): ConfigError {
  const error = configError(config)
  expect(error.setting).toBe(setting)
  expect(error.message).toContain(`${setting}:`)
  expect(error.message).toMatch(expected)
  return error
}

// Unverified-TLS warnings are collected for the tests that count them, and checked to be absent elsewhere.
const warnings: Error[] = []
const onWarning = (warning: Error) => {
  if ((warning as Error & { code?: string }).code === 'KYSELY_RESILIENT_TLS_UNVERIFIED')
    warnings.push(warning)
}
beforeEach(() => {
  warnings.length = 0
  process.on('warning', onWarning)
})
afterEach(() => {
  process.off('warning', onWarning)
})

/** process.emitWarning delivers on the next tick. */
function warningsSoFar(): Promise<Error[]> {
  return new Promise((resolve) => setImmediate(() => resolve([...warnings])))
}

describe('auth validation', () => {
  it('rejects an unknown auth type, listing the known ones', () => {
    const error = expectRejected(
      { dialect: 'postgres', writer: pgUrl, auth: { type: 'kerberos' } },
      'auth.type',
      /expected 'password', 'iam', 'secret' or 'token', got 'kerberos'/,
    )
    expect(error.code).toBe('CONFIG_INVALID')
    expectRejected({ dialect: 'postgres', writer: pgUrl, auth: {} }, 'auth.type', /got undefined/)
  })

  it('rejects an auth setting that is not an object', () => {
    for (const auth of ['iam', true, null, [{ type: 'iam' }]]) {
      expectRejected({ dialect: 'postgres', writer: pgUrl, auth }, 'auth', /expected an object with a 'type'/)
    }
  })

  it('rejects keys that do not belong to the auth type, naming the known ones', () => {
    const cases: Array<[Record<string, unknown>, string, string]> = [
      [{ type: 'password', password: 'in-the-wrong-place' }, 'auth.password', 'type'],
      [
        { type: 'iam', region: 'eu-west-1', foo: 1 },
        'auth.foo',
        'type, region, credentials, profile, refreshAfterMs',
      ],
      [{ type: 'iam', region: 'eu-west-1', secretId: 'x' }, 'auth.secretId', 'type, region, credentials'],
      [
        { type: 'secret', secretId: 'prod/app', refreshAfterMs: 60_000 },
        'auth.refreshAfterMs',
        'type, secretId, region, ttlMs',
      ],
      [
        { type: 'token', getToken, ttlMs: 60_000, region: 'eu-west-1' },
        'auth.region',
        'type, getToken, ttlMs',
      ],
    ]
    for (const [auth, setting, known] of cases) {
      const error = expectRejected(
        { dialect: 'postgres', writer: pgUrl, auth, tls: 'verify-full' },
        setting,
        new RegExp(`unknown setting for auth type '${auth.type}'`),
      )
      expect(error.message).toContain(`(known: ${known}`)
    }
    // The value of an unknown key is not repeated (it may be a password put in the wrong place).
    const secret = `pw${randomBytes(12).toString('hex')}`
    registerSecret(secret, 'password under auth (auth-tls-config.test.ts)')
    const error = configError({
      dialect: 'postgres',
      writer: pgUrl,
      auth: { type: 'password', password: secret },
    })
    expect(error.message).not.toContain(secret)
  })

  it("rejects 'secret' auth without a secretId", () => {
    expectRejected(
      { dialect: 'postgres', writer: pgUrl, auth: { type: 'secret' } },
      'auth.secretId',
      /is required: the secret name or ARN/,
    )
    for (const secretId of ['', 42]) {
      expectRejected(
        { dialect: 'postgres', writer: pgUrl, auth: { type: 'secret', secretId } },
        'auth.secretId',
        /expected a non-empty string/,
      )
    }
  })

  it("rejects 'token' auth without getToken or ttlMs, without echoing a token given instead", () => {
    expectRejected(
      { dialect: 'postgres', writer: pgUrl, auth: { type: 'token', ttlMs: 60_000 } },
      'auth.getToken',
      /expected a function \(endpoint\) => Promise<string>, got nothing/,
    )
    // A common slip: the token itself instead of a function returning it.
    const token = `tok${randomBytes(16).toString('hex')}`
    registerSecret(token, 'token passed as getToken (auth-tls-config.test.ts)')
    const error = expectRejected(
      { dialect: 'postgres', writer: pgUrl, auth: { type: 'token', getToken: token, ttlMs: 60_000 } },
      'auth.getToken',
      /got a string/,
    )
    expect(error.message).not.toContain(token)
    expectRejected(
      { dialect: 'postgres', writer: pgUrl, auth: { type: 'token', getToken } },
      'auth.ttlMs',
      /is required: how long a token may be used, in milliseconds/,
    )
  })

  it('rejects ttlMs outside 1 second to 7 days, or not an integer', () => {
    for (const type of ['token', 'secret'] as const) {
      const base = type === 'token' ? { type, getToken } : { type, secretId: 'prod/app' }
      for (const ttlMs of [999, 7 * 24 * 3_600_000 + 1, 1_500.5, '60000', -1, Number.NaN]) {
        expectRejected(
          { dialect: 'postgres', writer: pgUrl, auth: { ...base, ttlMs } },
          'auth.ttlMs',
          /expected an integer from 1000 to 604800000 \(milliseconds\)/,
        )
      }
      for (const ttlMs of [1_000, 7 * 24 * 3_600_000]) {
        const resolved = resolveConfig({
          dialect: 'postgres',
          writer: pgUrl,
          auth: { ...base, ttlMs },
        } as CreateDbConfig)
        expect(resolved.writers[0]?.auth).toMatchObject({ type, ttlMs })
      }
    }
    // The secret's default: an hour.
    expect(
      resolveConfig({ dialect: 'postgres', writer: pgUrl, auth: { type: 'secret', secretId: 'prod/app' } })
        .writers[0]?.auth,
    ).toMatchObject({ ttlMs: 3_600_000 })
  })

  it("names an endpoint's own auth setting by its path", () => {
    expectRejected(
      { dialect: 'postgres', writer: { host: 'db.internal', auth: { type: 'token', ttlMs: 60_000 } } },
      'writer.auth.getToken',
      /expected a function/,
    )
    expectRejected(
      {
        dialect: 'mysql',
        writer: mysqlUrl,
        readers: [mysqlUrl, { url: mysqlUrl, auth: { type: 'secret', secretId: 'x', ttlMs: 10 } }],
      },
      'readers[1].auth.ttlMs',
      /expected an integer from 1000/,
    )
  })
})

describe('endpoints without url or host', () => {
  const secretAuth = { type: 'secret', secretId: 'prod/orders/app' } as const

  it("are allowed with 'secret' auth, whose secret supplies the host", () => {
    const global = resolveConfig({ dialect: 'postgres', writer: { database: 'orders' }, auth: secretAuth })
    expect(global.writers[0]?.host).toBeUndefined()
    expect(global.writers[0]?.address).toBe('(host from secret)/orders')

    const own = resolveConfig({
      dialect: 'mysql',
      writer: { auth: secretAuth },
      readers: [{ name: 'replica', auth: { ...secretAuth, secretId: 'prod/orders/replica' } }],
    })
    expect(own.writers[0]?.host).toBeUndefined()
    expect(own.readers[0]?.host).toBeUndefined()
    // Without a host, the port is the dialect's default until the secret says otherwise.
    expect(own.writers[0]?.port).toBe(3306)
  })

  it("are rejected with every other auth type, naming 'writer.host'", () => {
    const others: Array<CreateDbConfig['auth']> = [
      undefined,
      { type: 'password' },
      { type: 'token', getToken, ttlMs: 60_000 },
      { type: 'iam', region: 'eu-west-1' },
    ]
    for (const auth of others) {
      expectRejected(
        { dialect: 'postgres', writer: { user: 'app', database: 'orders' }, auth, tls: 'verify-full' },
        'writer.host',
        /expected a host name \(or give 'url'\), got undefined/,
      )
    }
    // Secret auth on one reader does not exempt the writer.
    expectRejected(
      { dialect: 'postgres', writer: { user: 'app' }, readers: [{ auth: secretAuth }] },
      'writer.host',
      /expected a host name/,
    )
    // Nor does it accept an empty host given explicitly.
    expectRejected(
      { dialect: 'postgres', writer: { host: '', auth: secretAuth } },
      'writer.host',
      /expected a host name/,
    )
  })

  it("reject a password next to 'secret' auth without echoing it", () => {
    const password = `pw${randomBytes(12).toString('hex')}`
    registerSecret(password, 'endpoint password next to secret auth (auth-tls-config.test.ts)')
    const error = expectRejected(
      { dialect: 'postgres', writer: { host: 'db.internal', password, auth: secretAuth } },
      'writer',
      /has a password, but writer\.auth is 'secret', which supplies it/,
    )
    expect(error.message).not.toContain(password)
  })
})

describe('tls validation', () => {
  it('rejects a value of the wrong type or an unknown mode, listing the valid ones', () => {
    const cases: Array<[unknown, string]> = [
      [true, 'got true'],
      ['verify-ca', "got 'verify-ca'"],
      ['disable', "got 'disable'"],
      ['VERIFY-FULL', "got 'VERIFY-FULL'"],
      [1, 'got 1'],
      [null, 'got null'],
      [[CA], 'got an array'],
    ]
    for (const [tls, got] of cases) {
      const error = expectRejected(
        { dialect: 'postgres', writer: pgUrl, tls },
        'tls',
        /expected 'verify-full', 'rds', 'require', false or an object with 'ca'/,
      )
      expect(error.message).toContain(got)
    }
  })

  it('rejects an object without a usable ca', () => {
    for (const tls of [
      {},
      { ca: '' },
      { ca: [] },
      { ca: 5 },
      { ca: [CA, 7] },
      { cert: CERT, key: CLIENT_KEY },
    ]) {
      const error = expectRejected(
        { dialect: 'postgres', writer: pgUrl, tls },
        'tls.ca',
        /expected the CA certificate as a PEM string or Buffer \(or a list of them\)/,
      )
      expect(error.message).toMatch(/set tls to 'verify-full'/)
      expect(inspect(error)).not.toContain(KEY_BODY)
    }
  })

  it('rejects unknown keys, so verification cannot be switched off through the object', () => {
    expectRejected(
      { dialect: 'postgres', writer: pgUrl, tls: { ca: CA, rejectUnauthorized: false } },
      'tls.rejectUnauthorized',
      /unknown setting \(known: ca, cert, key\)/,
    )
    expectRejected(
      { dialect: 'mysql', writer: mysqlUrl, tls: { ca: CA, servername: 'x' } },
      'tls.servername',
      /unknown setting/,
    )
  })

  it('rejects a cert without a key and a key without a cert, never echoing the key', () => {
    expectRejected(
      { dialect: 'postgres', writer: pgUrl, tls: { ca: CA, cert: CERT } },
      'tls.key',
      /a client certificate needs both 'cert' and 'key'/,
    )
    const error = expectRejected(
      { dialect: 'postgres', writer: pgUrl, tls: { ca: CA, key: CLIENT_KEY } },
      'tls.cert',
      /a client certificate needs both 'cert' and 'key'/,
    )
    for (const text of [error.message, inspect(error)]) expect(text).not.toContain(KEY_BODY)
  })

  it('rejects a key or cert that is not PEM text or a Buffer, without echoing it', () => {
    const keyAsObject = { pem: CLIENT_KEY }
    const error = expectRejected(
      { dialect: 'postgres', writer: pgUrl, tls: { ca: CA, cert: CERT, key: keyAsObject } },
      'tls.key',
      /expected a PEM string or Buffer, got an? object/,
    )
    expect(inspect(error)).not.toContain(KEY_BODY)
    expectRejected(
      { dialect: 'postgres', writer: pgUrl, tls: { ca: CA, cert: 42, key: CLIENT_KEY } },
      'tls.cert',
      /expected a PEM string or Buffer, got a number/,
    )
    expectRejected(
      { dialect: 'postgres', writer: pgUrl, tls: { ca: CA, cert: CERT, key: '' } },
      'tls.key',
      /expected a PEM string or Buffer/,
    )
  })

  it('accepts a ca as a string, a Buffer or a list, with a client cert and key, and never prints the key', () => {
    for (const ca of [CA, Buffer.from(CA), [CA, Buffer.from(CA)]]) {
      const resolved = resolveConfig({
        dialect: 'postgres',
        writer: pgUrl,
        tls: { ca, cert: CERT, key: CLIENT_KEY },
      })
      const tls = resolved.writers[0]?.tls
      expect(tls).toMatchObject({ mode: 'verify', trust: 'custom' })
      for (const text of [inspect(resolved, { depth: 10 }), JSON.stringify(resolved)]) {
        expect(text).not.toContain(KEY_BODY)
        expect(text).toContain('verify (custom CA)')
      }
    }
  })

  it("names an endpoint's own tls setting by its path", () => {
    expectRejected(
      { dialect: 'postgres', writer: { url: pgUrl, tls: 'verify' } },
      'writer.tls',
      /expected 'verify-full', 'rds', 'require', false/,
    )
    expectRejected(
      {
        dialect: 'postgres',
        writer: pgUrl,
        readers: [pgUrl, { host: 'replica.internal', tls: { cert: CERT } }],
      },
      'readers[1].tls.ca',
      /expected the CA certificate/,
    )
  })

  it("an endpoint's own tls overrides the global one", () => {
    const resolved = resolveConfig({
      dialect: 'postgres',
      writer: pgUrl,
      readers: [{ url: pgUrl, tls: false }, pgUrl],
      tls: 'verify-full',
    })
    expect(resolved.writers[0]?.tls).toEqual({ mode: 'verify', trust: 'system', options: undefined })
    expect(resolved.readers[0]?.tls).toEqual({ mode: 'off' })
    expect(resolved.readers[1]?.tls).toEqual({ mode: 'verify', trust: 'system', options: undefined })
  })
})

describe("the tls 'require' warning", () => {
  it('is emitted once per createDb, naming every unverified endpoint', async () => {
    const config: CreateDbConfig = {
      dialect: 'postgres',
      writer: { url: pgUrl, tls: 'require' },
      readers: [
        { url: pgUrl, tls: 'verify-full' },
        { url: pgUrl, tls: 'require', name: 'replica-b' },
      ],
      tls: 'verify-full',
    }
    const first = createDb(config)
    expect(await warningsSoFar()).toHaveLength(1)
    const second = createDb(config)
    const emitted = await warningsSoFar()
    expect(emitted).toHaveLength(2)
    await Promise.all([first.destroy(), second.destroy()])

    for (const warning of emitted) {
      expect(warning.name).toBe('Warning')
      expect(warning.message).toContain('writer, replica-b')
      expect(warning.message).not.toContain('reader-0')
      expect(warning.message).toMatch(/'verify-full', 'rds' or \{ ca \}/)
    }
  })

  it('is emitted for a global tls: require, naming all endpoints', async () => {
    const db = createDb({ dialect: 'mysql', writer: mysqlUrl, readers: [mysqlUrl], tls: 'require' })
    await db.destroy()
    const emitted = await warningsSoFar()
    expect(emitted).toHaveLength(1)
    expect(emitted[0]?.message).toContain('writer, reader-0')
  })

  it('is not emitted for any other mode', async () => {
    const modes: Array<CreateDbConfig['tls']> = [undefined, false, 'verify-full', 'rds', { ca: CA }]
    for (const tls of modes) {
      const db = createDb({ dialect: 'postgres', writer: pgUrl, readers: [pgUrl], tls })
      await db.destroy()
    }
    // Nor for an RDS host, whose default is verified TLS.
    const rds = createDb({
      dialect: 'postgres',
      writer: 'postgres://app@mydb.cluster-abc.eu-west-1.rds.amazonaws.com/orders',
    })
    await rds.destroy()
    expect(await warningsSoFar()).toEqual([])
  })

  it('is not emitted for a config that is rejected', async () => {
    // routing is validated after the endpoints, so the endpoints' TLS is already known here.
    configError({ dialect: 'postgres', writer: pgUrl, tls: 'require', routing: { fallback: 'nowhere' } })
    expect(await warningsSoFar()).toEqual([])
  })
})

describe('top-level keys', () => {
  it('still rejects unknown ones, listing auth and tls among the known', () => {
    for (const key of ['ssl', 'authentication', 'tlsOptions']) {
      const error = expectRejected(
        { dialect: 'postgres', writer: pgUrl, [key]: true },
        key,
        /unknown setting/,
      )
      expect(error.message).toMatch(/known: .*\bauth\b.*\btls\b/)
    }
    expectRejected(
      { dialect: 'postgres', writer: { url: pgUrl, ssl: true } },
      'writer.ssl',
      /unknown setting/,
    )
  })
})
