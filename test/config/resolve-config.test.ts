import { inspect } from 'node:util'
import { Kysely } from 'kysely'
import { describe, expect, test } from 'vitest'
import { POOL_SPEC } from '../../src/config/pool-options.js'
import { resolveConfig } from '../../src/config/resolve-config.js'
import { type ConfigError, type CreateDbConfig, createDb, ResilientError } from '../../src/index.js'
import { writerTables } from '../../src/routing/classify-statement.js'
import { MAX_TIMER_MS } from '../../src/validation/number-setting.js'
import { configError } from '../support/config-error.js'
import { getFreePort } from '../support/ports.js'

const PASSWORD = 'Sup3r-S3cret-pw'
// In a URL the password is percent-encoded; the decoded form must not leak either.
const URL_PASSWORD_ENCODED = 'Ur1%40Secret-pw'
const URL_PASSWORD_DECODED = 'Ur1@Secret-pw'
const SECRETS = [PASSWORD, URL_PASSWORD_ENCODED, URL_PASSWORD_DECODED]

function expectNoSecret(text: string): void {
  for (const secret of SECRETS) expect(text).not.toContain(secret)
}

const pgUrl = 'postgres://app@db.internal:5432/orders'
const mysqlUrl = 'mysql://app@db.internal:3306/orders'

describe('ConfigError', () => {
  test('is a ResilientError with code CONFIG_INVALID whose message names the setting', () => {
    const error = configError({ dialect: 'postgres', writer: pgUrl, pool: { max: 0 } })
    expect(error).toBeInstanceOf(ResilientError)
    expect(error).toBeInstanceOf(Error)
    expect(error.code).toBe('CONFIG_INVALID')
    expect(error.name).toBe('ConfigError')
    expect(error.setting).toBe('pool.max')
    expect(error.detail).toBe('expected an integer >= 1, got 0')
    expect(error.message).toBe('Invalid kysely-resilient config: pool.max: expected an integer >= 1, got 0')
  })

  test('a config that is not an object is rejected', () => {
    expect(configError(undefined).setting).toBe('config')
    expect(configError('postgres://db.internal/orders').setting).toBe('config')
  })
})

describe('invalid configs name the setting', () => {
  const cases: Array<[string, unknown, string]> = [
    ['unknown dialect', { dialect: 'sqlite', writer: pgUrl }, 'dialect'],
    ['missing dialect', { writer: pgUrl }, 'dialect'],
    ['missing writer', { dialect: 'postgres' }, 'writer'],
    ['a writer that is neither a URL nor an object', { dialect: 'postgres', writer: 5432 }, 'writer'],
    ['a writer URL that does not parse', { dialect: 'postgres', writer: 'not a url' }, 'writer'],
    [
      'a writer url field that does not parse',
      { dialect: 'postgres', writer: { url: '//db.internal' } },
      'writer.url',
    ],
    [
      'a reader URL that does not parse',
      { dialect: 'postgres', writer: pgUrl, readers: ['postgres//db.internal'] },
      'readers[0]',
    ],
    ['an unsupported URL scheme', { dialect: 'postgres', writer: 'http://db.internal/orders' }, 'writer'],
    [
      'an unsupported scheme in a url field',
      { dialect: 'mysql', writer: { url: 'redis://db.internal:6379' } },
      'writer.url',
    ],
    ['a URL without a host', { dialect: 'postgres', writer: 'postgres:///orders' }, 'writer'],
    ['a mysql writer URL with dialect postgres', { dialect: 'postgres', writer: mysqlUrl }, 'writer'],
    [
      'a mysql reader URL with dialect postgres',
      { dialect: 'postgres', writer: pgUrl, readers: [mysqlUrl] },
      'readers[0]',
    ],
    [
      'a mariadb reader URL with dialect postgres',
      { dialect: 'postgres', writer: pgUrl, readers: [pgUrl, 'mariadb://replica/orders'] },
      'readers[1]',
    ],
    [
      'a postgres reader URL with dialect mysql',
      { dialect: 'mysql', writer: mysqlUrl, readers: [pgUrl] },
      'readers[0]',
    ],
    [
      'a postgresql reader url field with dialect mysql',
      { dialect: 'mysql', writer: mysqlUrl, readers: { url: 'postgresql://replica/orders' } },
      'readers[0].url',
    ],
    ['URL query parameters', { dialect: 'postgres', writer: `${pgUrl}?sslmode=require` }, 'writer'],
    [
      'URL query parameters on a reader',
      { dialect: 'mysql', writer: mysqlUrl, readers: [`${mysqlUrl}?ssl=true`] },
      'readers[0]',
    ],
    ['a URL port of 0', { dialect: 'postgres', writer: 'postgres://db.internal:0/orders' }, 'writer'],
    [
      'an endpoint port out of range',
      { dialect: 'postgres', writer: { host: 'db', port: 70_000 } },
      'writer.port',
    ],
    [
      'an endpoint port that is a string',
      { dialect: 'postgres', writer: { host: 'db', port: '5432' } },
      'writer.port',
    ],
    ['an endpoint without url or host', { dialect: 'postgres', writer: { user: 'app' } }, 'writer.host'],
    ['an empty host', { dialect: 'postgres', writer: { host: '' } }, 'writer.host'],
    ['a user that is not a string', { dialect: 'postgres', writer: { host: 'db', user: 7 } }, 'writer.user'],
    [
      'a password that is not a string',
      { dialect: 'postgres', writer: { host: 'db', password: 7 } },
      'writer.password',
    ],
    ['an empty endpoint name', { dialect: 'postgres', writer: { host: 'db', name: '' } }, 'writer.name'],
    ['pool.max 0', { dialect: 'postgres', writer: pgUrl, pool: { max: 0 } }, 'pool.max'],
    ['pool.max negative', { dialect: 'postgres', writer: pgUrl, pool: { max: -1 } }, 'pool.max'],
    ['pool.max not an integer', { dialect: 'postgres', writer: pgUrl, pool: { max: 2.5 } }, 'pool.max'],
    ['pool.max a string', { dialect: 'postgres', writer: pgUrl, pool: { max: '10' } }, 'pool.max'],
    ['pool.max NaN', { dialect: 'postgres', writer: pgUrl, pool: { max: Number.NaN } }, 'pool.max'],
    [
      'pool.max Infinity',
      { dialect: 'postgres', writer: pgUrl, pool: { max: Number.POSITIVE_INFINITY } },
      'pool.max',
    ],
    ['pool.min > pool.max', { dialect: 'postgres', writer: pgUrl, pool: { min: 5, max: 2 } }, 'pool.min'],
    ['pool.min above the default max', { dialect: 'postgres', writer: pgUrl, pool: { min: 11 } }, 'pool.min'],
    ['pool.min negative', { dialect: 'postgres', writer: pgUrl, pool: { min: -1 } }, 'pool.min'],
    [
      'pool.idleTimeoutMs negative',
      { dialect: 'postgres', writer: pgUrl, pool: { idleTimeoutMs: -1 } },
      'pool.idleTimeoutMs',
    ],
    [
      'pool.idleTimeoutMs not an integer',
      { dialect: 'postgres', writer: pgUrl, pool: { idleTimeoutMs: 100.5 } },
      'pool.idleTimeoutMs',
    ],
    [
      'pool.acquireTimeoutMs 0',
      { dialect: 'postgres', writer: pgUrl, pool: { acquireTimeoutMs: 0 } },
      'pool.acquireTimeoutMs',
    ],
    [
      'pool.acquireTimeoutMs negative',
      { dialect: 'postgres', writer: pgUrl, pool: { acquireTimeoutMs: -100 } },
      'pool.acquireTimeoutMs',
    ],
    [
      'pool.connectTimeoutMs 0',
      { dialect: 'postgres', writer: pgUrl, pool: { connectTimeoutMs: 0 } },
      'pool.connectTimeoutMs',
    ],
    [
      'pool.maxLifetimeMs negative',
      { dialect: 'postgres', writer: pgUrl, pool: { maxLifetimeMs: -1 } },
      'pool.maxLifetimeMs',
    ],
    [
      'pool.statementTimeoutMs 0',
      { dialect: 'postgres', writer: pgUrl, pool: { statementTimeoutMs: 0 } },
      'pool.statementTimeoutMs',
    ],
    [
      'pool.keepAliveInitialDelayMs negative',
      { dialect: 'postgres', writer: pgUrl, pool: { keepAliveInitialDelayMs: -1 } },
      'pool.keepAliveInitialDelayMs',
    ],
    [
      'pool.validateAfterIdleMs negative',
      { dialect: 'postgres', writer: pgUrl, pool: { validateAfterIdleMs: -1 } },
      'pool.validateAfterIdleMs',
    ],
    [
      'pool.sessionIdleTimeoutMs under a second',
      { dialect: 'mysql', writer: 'mysql://h/db', pool: { sessionIdleTimeoutMs: 500 } },
      'pool.sessionIdleTimeoutMs',
    ],
    [
      'pool.keepAlive not a boolean',
      { dialect: 'postgres', writer: pgUrl, pool: { keepAlive: 'yes' } },
      'pool.keepAlive',
    ],
    ['pool that is not an object', { dialect: 'postgres', writer: pgUrl, pool: 10 }, 'pool'],
    [
      'a reader pool override out of range',
      { dialect: 'postgres', writer: pgUrl, readers: [pgUrl, { url: pgUrl, pool: { max: 0 } }] },
      'readers[1].pool.max',
    ],
    [
      'a writer pool override with min above the inherited max',
      { dialect: 'mysql', writer: { url: mysqlUrl, pool: { min: 4 } }, pool: { max: 3 } },
      'writer.pool.min',
    ],
    [
      'a reader pool override with a negative timeout',
      { dialect: 'postgres', writer: pgUrl, readers: [{ host: 'replica', pool: { idleTimeoutMs: -5 } }] },
      'readers[0].pool.idleTimeoutMs',
    ],
    [
      'an unknown top-level key',
      { dialect: 'postgres', writer: pgUrl, readerStrategy: 'random' },
      'readerStrategy',
    ],
    [
      'an unknown endpoint key',
      { dialect: 'postgres', writer: { url: pgUrl, username: 'app' } },
      'writer.username',
    ],
    [
      'an unknown reader endpoint key',
      { dialect: 'postgres', writer: pgUrl, readers: [pgUrl, { host: 'replica', ssl: true }] },
      'readers[1].ssl',
    ],
    [
      'an unknown pool key',
      { dialect: 'postgres', writer: pgUrl, pool: { maxConnections: 5 } },
      'pool.maxConnections',
    ],
    [
      'an unknown endpoint pool key',
      { dialect: 'postgres', writer: { url: pgUrl, pool: { idleTimeout: 5 } } },
      'writer.pool.idleTimeout',
    ],
    [
      'an unknown routing key',
      { dialect: 'postgres', writer: pgUrl, routing: { strategy: 'random' } },
      'routing.strategy',
    ],
    ['routing that is not an object', { dialect: 'postgres', writer: pgUrl, routing: 'random' }, 'routing'],
    [
      'an unknown readerStrategy',
      { dialect: 'postgres', writer: pgUrl, routing: { readerStrategy: 'fastest' } },
      'routing.readerStrategy',
    ],
    [
      'a reader named like the writer',
      {
        dialect: 'postgres',
        writer: { url: pgUrl, name: 'primary' },
        readers: [{ url: pgUrl, name: 'primary' }],
      },
      'readers[0].name',
    ],
    [
      'two readers with the same name',
      {
        dialect: 'postgres',
        writer: pgUrl,
        readers: [
          { url: pgUrl, name: 'replica' },
          { url: pgUrl, name: 'replica' },
        ],
      },
      'readers[1].name',
    ],
    [
      "a reader named 'writer' next to the default-named writer",
      { dialect: 'postgres', writer: pgUrl, readers: [{ host: 'replica', name: 'writer' }] },
      'readers[0].name',
    ],
    [
      'url and host both given',
      { dialect: 'postgres', writer: { url: pgUrl, host: 'db.internal' } },
      'writer',
    ],
    [
      'url and host both given on a reader',
      { dialect: 'postgres', writer: pgUrl, readers: [pgUrl, { url: pgUrl, host: 'replica' }] },
      'readers[1]',
    ],
    ['plugins that are not an array', { dialect: 'postgres', writer: pgUrl, plugins: {} }, 'plugins'],
    [
      'log that is neither an array nor a function',
      { dialect: 'postgres', writer: pgUrl, log: 'query' },
      'log',
    ],
    [
      'consistency that is not an object',
      { dialect: 'postgres', writer: pgUrl, consistency: 'process' },
      'consistency',
    ],
    [
      'an unknown consistency mode',
      { dialect: 'postgres', writer: pgUrl, consistency: { readYourWrites: 'always' } },
      'consistency.readYourWrites',
    ],
    [
      'an unknown whenBehind',
      { dialect: 'postgres', writer: pgUrl, consistency: { whenBehind: 'reader' } },
      'consistency.whenBehind',
    ],
    [
      'maxWaitMs without whenBehind: wait (it would be ignored)',
      { dialect: 'postgres', writer: pgUrl, consistency: { maxWaitMs: 500 } },
      'consistency.maxWaitMs',
    ],
    [
      'a zero maxWaitMs',
      { dialect: 'postgres', writer: pgUrl, consistency: { whenBehind: 'wait', maxWaitMs: 0 } },
      'consistency.maxWaitMs',
    ],
    [
      'a fractional pollIntervalMs',
      { dialect: 'postgres', writer: pgUrl, consistency: { pollIntervalMs: 0.5 } },
      'consistency.pollIntervalMs',
    ],
    [
      'an unknown consistency key',
      { dialect: 'postgres', writer: pgUrl, consistency: { mode: 'x' } },
      'consistency.mode',
    ],
  ]

  test.each(cases)('%s', (_name, config, setting) => {
    const error = configError(config)
    expect(error.setting).toBe(setting)
    expect(error.message).toContain(setting)
  })

  test('an unsupported scheme is named in the message', () => {
    const error = configError({ dialect: 'postgres', writer: 'http://db.internal/orders' })
    expect(error.message).toContain('http:')
  })

  test('query parameters are named in the message so the user knows what to move', () => {
    const error = configError({ dialect: 'postgres', writer: `${pgUrl}?sslmode=require&application_name=x` })
    expect(error.message).toContain('sslmode')
    expect(error.message).toContain('application_name')
  })
})

describe('passwords never appear', () => {
  const urlWithPassword = `postgres://app:${URL_PASSWORD_ENCODED}@db.internal:5432/orders`
  const mysqlUrlWithPassword = `mysql://app:${URL_PASSWORD_ENCODED}@db.internal:3306/orders`
  const objectWithPassword = { host: 'db.internal', user: 'app', password: PASSWORD, database: 'orders' }

  const cases: Array<[string, unknown]> = [
    [
      'a bad pool value next to a URL password',
      { dialect: 'postgres', writer: urlWithPassword, pool: { max: 0 } },
    ],
    [
      'a bad endpoint pool value next to an object password',
      { dialect: 'postgres', writer: { ...objectWithPassword, pool: { min: -1 } } },
    ],
    [
      'a URL with a password and a bad scheme',
      { dialect: 'postgres', writer: `http://app:${URL_PASSWORD_ENCODED}@db/x` },
    ],
    [
      'a URL with a password that does not parse',
      { dialect: 'postgres', writer: `postgres://app:${URL_PASSWORD_ENCODED}@db.internal:99999/orders` },
    ],
    [
      'a URL with a password and spaces that does not parse',
      { dialect: 'postgres', writer: `postgres://app:${URL_PASSWORD_ENCODED}@db internal/orders` },
    ],
    ['a URL with a password and the other dialect', { dialect: 'postgres', writer: mysqlUrlWithPassword }],
    [
      'a URL with a password and query parameters',
      { dialect: 'postgres', writer: `${urlWithPassword}?ssl=1` },
    ],
    [
      'a password given as a query parameter',
      { dialect: 'postgres', writer: `postgres://db.internal/orders?password=${PASSWORD}` },
    ],
    [
      'a URL with a password and no host',
      { dialect: 'postgres', writer: `postgres://app:${PASSWORD}@/orders` },
    ],
    [
      'a URL with a password and port 0',
      { dialect: 'postgres', writer: `postgres://app:${PASSWORD}@db:0/orders` },
    ],
    [
      'an object password and an unknown key',
      { dialect: 'postgres', writer: { ...objectWithPassword, ssl: true } },
    ],
    [
      'an object password with url and host both',
      { dialect: 'postgres', writer: { ...objectWithPassword, url: pgUrl } },
    ],
    [
      'an object password and a duplicate name',
      {
        dialect: 'postgres',
        writer: { ...objectWithPassword, name: 'db' },
        readers: [{ ...objectWithPassword, name: 'db' }],
      },
    ],
    ['a URL password and an unknown dialect', { dialect: 'oracle', writer: urlWithPassword }],
    [
      'a reader URL password and a bad strategy',
      {
        dialect: 'mysql',
        writer: mysqlUrlWithPassword,
        readers: mysqlUrlWithPassword,
        routing: { readerStrategy: 1 },
      },
    ],
  ]

  test.each(cases)('in the ConfigError for %s', (_name, config) => {
    const error = configError(config)
    expectNoSecret(error.message)
    expectNoSecret(String(error.stack))
    expectNoSecret(inspect(error, { depth: 10, showHidden: true }))
    expectNoSecret(JSON.stringify(error))
  })

  function dbWithPasswords() {
    return createDb({
      dialect: 'postgres',
      writer: urlWithPassword,
      readers: [objectWithPassword, { url: urlWithPassword, name: 'replica-b' }],
      pool: { max: 3 },
    })
  }

  test('in util.inspect of the db', () => {
    const db = dbWithPasswords()
    expectNoSecret(inspect(db, { depth: 10, showHidden: true }))
    expectNoSecret(inspect(db.writer, { depth: 10, showHidden: true }))
    expectNoSecret(inspect(db.reader, { depth: 10, showHidden: true }))
  })

  test('in db.stats(), serialized or inspected', () => {
    const db = dbWithPasswords()
    const stats = db.stats()
    expect(stats.readers).toHaveLength(2)
    expectNoSecret(JSON.stringify(stats))
    expectNoSecret(inspect(stats, { depth: 10, showHidden: true }))
  })

  test.each([
    ['postgres', 'postgres'],
    ['mysql', 'mysql'],
  ] as const)(
    'in the db, its stats and the error after a failed %s connection attempt',
    async (_name, dialect) => {
      // Nothing listens on this port: the attempt is refused at once and the pools now exist.
      const port = await getFreePort()
      const db = createDb({
        dialect,
        writer: `${dialect}://app:${URL_PASSWORD_ENCODED}@127.0.0.1:${port}/orders`,
        readers: [{ host: '127.0.0.1', port, user: 'app', password: PASSWORD, database: 'orders' }],
        pool: { connectTimeoutMs: 5_000 },
      })
      try {
        for (const attempt of [
          () =>
            db
              .selectFrom('person' as never)
              .selectAll()
              .execute(),
          () =>
            db
              .insertInto('person' as never)
              .values({ name: 'x' } as never)
              .execute(),
        ]) {
          const error = await attempt().then(
            () => undefined,
            (caught: unknown) => caught,
          )
          expect(error).toBeInstanceOf(Error)
          expectNoSecret((error as Error).message)
          expectNoSecret(inspect(error, { depth: 10, showHidden: true }))
        }
        expectNoSecret(inspect(db, { depth: 10, showHidden: true }))
        expectNoSecret(JSON.stringify(db.stats()))
        expectNoSecret(inspect(db.stats(), { depth: 10, showHidden: true }))
      } finally {
        await db.destroy()
      }
    },
  )
})

describe('defaults', () => {
  test('stats() before any query lists the writer and readers with zero counts', () => {
    const db = createDb({
      dialect: 'postgres',
      writer: 'postgres://app:pw@primary.internal/orders',
      readers: [
        'postgresql://app:pw@replica-1.internal:6432/orders',
        { host: 'replica-2.internal', database: 'orders' },
      ],
    })
    const zero = { queries: 0, total: 0, idle: 0, inUse: 0, waiting: 0, connecting: 0 }
    const writer = { name: 'writer', role: 'writer', address: 'primary.internal:5432/orders', ...zero }
    expect(db.stats()).toEqual({
      writer,
      writers: [writer],
      readers: [
        {
          name: 'reader-0',
          role: 'reader',
          address: 'replica-1.internal:6432/orders',
          ...zero,
          healthy: true,
        },
        {
          name: 'reader-1',
          role: 'reader',
          address: 'replica-2.internal:5432/orders',
          ...zero,
          healthy: true,
        },
      ],
    })
  })

  test('mysql and mariadb URLs default to port 3306', () => {
    const db = createDb({
      dialect: 'mysql',
      writer: 'mysql://app:pw@primary.internal/orders',
      readers: ['mariadb://app:pw@replica.internal/orders', { host: 'replica-2.internal', port: 3307 }],
    })
    const { writer, readers } = db.stats()
    expect(writer.address).toBe('primary.internal:3306/orders')
    expect(readers.map((reader) => reader.address)).toEqual([
      'replica.internal:3306/orders',
      'replica-2.internal:3307',
    ])
  })

  test('endpoint fields given next to url override the URL', () => {
    const db = createDb({
      dialect: 'postgres',
      writer: { url: 'postgres://app@primary.internal:5432/orders', port: 6543, database: 'billing' },
    })
    expect(db.stats().writer.address).toBe('primary.internal:6543/billing')
  })

  test('the database name in a URL is percent-decoded', () => {
    const db = createDb({ dialect: 'postgres', writer: 'postgres://primary.internal/my%20orders' })
    expect(db.stats().writer.address).toBe('primary.internal:5432/my orders')
  })

  test('endpoint names given in the config are used', () => {
    const db = createDb({
      dialect: 'postgres',
      writer: { url: pgUrl, name: 'primary' },
      readers: [{ url: pgUrl, name: 'replica-eu-west-1b' }, pgUrl],
    })
    const { writer, readers } = db.stats()
    expect(writer.name).toBe('primary')
    expect(readers.map((reader) => reader.name)).toEqual(['replica-eu-west-1b', 'reader-1'])
  })

  test('a single reader given as a string is accepted', () => {
    const db = createDb({ dialect: 'postgres', writer: pgUrl, readers: 'postgres://replica.internal/orders' })
    const { readers } = db.stats()
    expect(readers).toHaveLength(1)
    expect(readers[0]).toMatchObject({
      name: 'reader-0',
      role: 'reader',
      address: 'replica.internal:5432/orders',
    })
  })

  test('a single reader given as an object is accepted', () => {
    const db = createDb({ dialect: 'mysql', writer: mysqlUrl, readers: { host: 'replica.internal' } })
    expect(db.stats().readers.map((reader) => reader.address)).toEqual(['replica.internal:3306'])
  })

  test.each([
    ['absent', undefined],
    ['empty', []],
  ])('%s readers leave stats().readers empty', (_name, readers) => {
    const db = createDb({ dialect: 'postgres', writer: pgUrl, ...(readers ? { readers } : {}) })
    expect(db.stats().readers).toEqual([])
    expect(db.stats().writer.name).toBe('writer')
  })

  test('accepts every documented option at once', () => {
    const db = createDb({
      dialect: 'postgres',
      writer: {
        host: 'primary.internal',
        port: 5432,
        user: 'app',
        password: 'pw',
        database: 'orders',
        name: 'w',
      },
      readers: [{ url: 'postgres://replica.internal/orders', pool: { max: 30 } }],
      pool: {
        max: 20,
        min: 2,
        idleTimeoutMs: 0,
        acquireTimeoutMs: 1,
        connectTimeoutMs: 1,
        maxLifetimeMs: 0,
        statementTimeoutMs: 1,
        keepAlive: false,
        keepAliveInitialDelayMs: 0,
        validateAfterIdleMs: 0,
        sessionIdleTimeoutMs: 1_000,
      },
      routing: { readerStrategy: 'least-busy' },
      consistency: { readYourWrites: 'process', whenBehind: 'wait', maxWaitMs: 500, pollIntervalMs: 20 },
      log: ['error'],
      plugins: [],
    })
    expect(db.stats().writer.name).toBe('w')
  })

  test('createDb returns Kysely instances', () => {
    const db = createDb({ dialect: 'postgres', writer: pgUrl, readers: [pgUrl] })
    expect(db).toBeInstanceOf(Kysely)
    expect(db.writer).toBeInstanceOf(Kysely)
    expect(db.reader).toBeInstanceOf(Kysely)
  })

  test('a db that never ran a query is destroyed without opening anything', async () => {
    const db = createDb({ dialect: 'postgres', writer: pgUrl, readers: [pgUrl] })
    await db.destroy()
    expect(db.stats().writer.total).toBe(0)
  })
})

describe('host and inherited pool settings', () => {
  test('an IPv6 host is bracketed in the address', () => {
    const db = createDb({ dialect: 'postgres', writer: 'postgres://app@[::1]:5433/orders' })
    expect(db.stats().writer.address).toBe('[::1]:5433/orders')
  })

  test('a URL pasted into host is rejected without echoing it', () => {
    const error = configError({
      dialect: 'postgres',
      writer: { host: `postgres://app:${PASSWORD}@db.internal/x` },
    })
    expect(error.setting).toBe('writer.host')
    expectNoSecret(error.message)
  })

  test('an endpoint max below the inherited pool.min names the endpoint max', () => {
    const error = configError({
      dialect: 'postgres',
      writer: pgUrl,
      readers: [pgUrl, { url: pgUrl, pool: { max: 2 } }],
      pool: { min: 5 },
    })
    expect(error.setting).toBe('readers[1].pool.max')
    expect(error.message).toContain('pool.min (5)')
  })
})

describe("a '%' in a URL that starts no percent-escape", () => {
  // A password with a literal '%' pasted into a URL as is: long enough for the leak watch to check it.
  const RAW_PERCENT_PASSWORD = 'Raw%Pct-S3cret-pw'
  const NOT_UTF8_PASSWORD = 'Raw%FF-S3cret-pw'

  function expectPercentError(
    config: unknown,
    setting: string,
    part: string,
    secrets: ReadonlyArray<string> = [],
  ): ConfigError {
    const error = configError(config)
    expect(error.setting).toBe(setting)
    expect(error.detail).toBe(
      `the URL's ${part} has a '%' that is not followed by two hex digits; percent-encode a literal '%' as %25 (encodeURIComponent does)`,
    )
    for (const secret of secrets) {
      expect(error.message).not.toContain(secret)
      expect(inspect(error, { depth: 10, showHidden: true })).not.toContain(secret)
    }
    return error
  }

  test('in the password: a ConfigError naming the endpoint and the part, never the password', () => {
    const error = expectPercentError(
      { dialect: 'postgres', writer: `postgres://app:${RAW_PERCENT_PASSWORD}@db.internal/orders` },
      'writer',
      'password',
      [RAW_PERCENT_PASSWORD, 'Raw%', 'S3cret'],
    )
    expect(error).not.toBeInstanceOf(URIError)
  })

  test('in the user, on a mysql URL', () => {
    expectPercentError({ dialect: 'mysql', writer: 'mysql://u%zz:x@h/db' }, 'writer', 'user')
  })

  test('in the database', () => {
    expectPercentError({ dialect: 'postgres', writer: 'postgres://a:b@h/d%b' }, 'writer', 'database')
  })

  test("in a reader's URL and in an endpoint's url field, named by their paths", () => {
    expectPercentError(
      {
        dialect: 'postgres',
        writer: pgUrl,
        readers: [pgUrl, `postgres://app:${RAW_PERCENT_PASSWORD}@replica/orders`],
      },
      'readers[1]',
      'password',
      [RAW_PERCENT_PASSWORD],
    )
    expectPercentError(
      { dialect: 'mysql', writer: { url: `mysql://app:${RAW_PERCENT_PASSWORD}@h/db`, name: 'primary' } },
      'writer.url',
      'password',
      [RAW_PERCENT_PASSWORD],
    )
  })

  test('an escape that is not UTF-8 gets its own explanation, still without the password', () => {
    const error = configError({
      dialect: 'postgres',
      writer: `postgres://app:${NOT_UTF8_PASSWORD}@db.internal/orders`,
    })
    expect(error.setting).toBe('writer')
    expect(error.detail).toBe(
      "the URL's password has a percent-escape that is not UTF-8 (such as %FF); percent-encode it with encodeURIComponent",
    )
    expect(error.message).not.toContain(NOT_UTF8_PASSWORD)
  })

  test('a literal % encoded as %25 is decoded', () => {
    const resolved = resolveConfig({
      dialect: 'postgres',
      writer: `postgres://a%25b:${encodeURIComponent(RAW_PERCENT_PASSWORD)}@db.internal/100%25`,
    })
    const writer = resolved.writers[0]!
    expect(writer.user).toBe('a%b')
    expect(writer.password()).toBe(RAW_PERCENT_PASSWORD)
    expect(writer.database).toBe('100%')
  })
})

describe('millisecond settings are capped at what a Node.js timer accepts', () => {
  const TOO_LONG = MAX_TIMER_MS + 1
  const CAP_DETAIL =
    'milliseconds; about 24.8 days, the longest delay a Node.js timer accepts), got 2147483648'

  // Every pool setting in milliseconds, taken from the pool's table so a new one is covered too.
  const poolMs = Object.keys(POOL_SPEC).filter((key) => key.endsWith('Ms'))
  const cases: Array<[string, (ms: number) => unknown]> = [
    ...poolMs.map((key): [string, (ms: number) => unknown] => [
      `pool.${key}`,
      (ms) => ({ dialect: 'postgres', writer: pgUrl, pool: { [key]: ms } }),
    ]),
    [
      'readers[0].pool.queryTimeoutMs',
      (ms) => ({
        dialect: 'mysql',
        writer: mysqlUrl,
        readers: [{ url: mysqlUrl, pool: { queryTimeoutMs: ms } }],
      }),
    ],
    ...(['maxReplicaLagMs', 'lagCheckIntervalMs', 'readerCooldownMs'] as const).map(
      (key): [string, (ms: number) => unknown] => [
        `routing.${key}`,
        (ms) => ({ dialect: 'postgres', writer: pgUrl, routing: { [key]: ms } }),
      ],
    ),
    [
      'retry.minDelayMs',
      (ms) => ({ dialect: 'postgres', writer: pgUrl, retry: { minDelayMs: ms, maxDelayMs: ms } }),
    ],
    ['retry.maxDelayMs', (ms) => ({ dialect: 'postgres', writer: pgUrl, retry: { maxDelayMs: ms } })],
    ['retry.maxElapsedMs', (ms) => ({ dialect: 'postgres', writer: pgUrl, retry: { maxElapsedMs: ms } })],
  ]

  test('the list covers every pool setting in milliseconds', () => {
    expect(poolMs).toHaveLength(11)
  })

  test.each(cases)(
    '%s: 2147483647 is accepted, 2147483648 is a ConfigError naming the maximum',
    (setting, config) => {
      expect(() => resolveConfig(config(MAX_TIMER_MS) as CreateDbConfig)).not.toThrow()
      const error = configError(config(TOO_LONG))
      expect(error.setting).toBe(setting)
      expect(error.detail).toMatch(/^expected an integer from \d+ to 2147483647 \(/)
      expect(error.detail).toContain(CAP_DETAIL)
    },
  )

  test('the cap is 2^31 - 1, the largest delay setTimeout keeps', async () => {
    expect(MAX_TIMER_MS).toBe(2 ** 31 - 1)
    // One more and Node fires the timer after 1 ms (with a TimeoutOverflowWarning), which is why the
    // cap exists. Measured, not assumed: this fails if a Node version ever changes it.
    const warning = new Promise<Error>((resolve) => process.once('warning', resolve))
    const startedAt = performance.now()
    await new Promise((resolve) => setTimeout(resolve, MAX_TIMER_MS + 1))
    expect(performance.now() - startedAt).toBeLessThan(1_000)
    expect((await warning).name).toBe('TimeoutOverflowWarning')
  })
})

describe('retry budget and liveness probe settings', () => {
  test('retries are bounded by a 10 s budget by default, with no count limit', () => {
    const { retry } = resolveConfig({ dialect: 'postgres', writer: pgUrl })
    expect(retry).toMatchObject({
      retries: Infinity,
      maxElapsedMs: 10_000,
      minDelayMs: 50,
      maxDelayMs: 1_000,
    })
  })

  test('retry.retries accepts Infinity and integers; retry: false means none', () => {
    expect(
      resolveConfig({ dialect: 'postgres', writer: pgUrl, retry: { retries: Infinity } }).retry.retries,
    ).toBe(Infinity)
    expect(resolveConfig({ dialect: 'postgres', writer: pgUrl, retry: { retries: 2 } }).retry.retries).toBe(2)
    expect(resolveConfig({ dialect: 'postgres', writer: pgUrl, retry: false }).retry.retries).toBe(0)
    expect(configError({ dialect: 'postgres', writer: pgUrl, retry: { retries: -1 } }).setting).toBe(
      'retry.retries',
    )
  })

  test('the liveness probe is on by default (500 ms / 1000 ms), per endpoint, and probeAfterMs: false turns it off', () => {
    const resolved = resolveConfig({
      dialect: 'postgres',
      writer: pgUrl,
      readers: [{ url: pgUrl, pool: { probeAfterMs: false } }],
      pool: { probeTimeoutMs: 3_000 },
    })
    expect(resolved.writers[0]?.pool).toMatchObject({ probeAfterMs: 500, probeTimeoutMs: 3_000 })
    expect(resolved.readers[0]?.pool.probeAfterMs).toBeUndefined()
    expect(configError({ dialect: 'postgres', writer: pgUrl, pool: { probeAfterMs: 0 } }).setting).toBe(
      'pool.probeAfterMs',
    )
    expect(configError({ dialect: 'postgres', writer: pgUrl, pool: { probeTimeoutMs: 'x' } }).setting).toBe(
      'pool.probeTimeoutMs',
    )
  })
})

describe('routing.writerTables', () => {
  test("defaults to Kysely's migration tables; names given are added to them", () => {
    // The config keeps the names given; routing adds Kysely's tables (see Cluster.writerTables).
    const none = resolveConfig({ dialect: 'postgres', writer: pgUrl })
    expect(none.writerTables).toEqual([])
    expect([...writerTables(none.writerTables).names]).toEqual(['kysely_migration', 'kysely_migration_lock'])
    const resolved = resolveConfig({
      dialect: 'postgres',
      writer: pgUrl,
      routing: { writerTables: ['app_migration'] },
    })
    expect(resolved.writerTables).toEqual(['app_migration'])
    expect([...writerTables(resolved.writerTables).names]).toEqual([
      'kysely_migration',
      'kysely_migration_lock',
      'app_migration',
    ])
  })

  test.each([
    ['a string', 'app_migration', 'routing.writerTables'],
    ['an empty name', ['app_migration', ''], 'routing.writerTables[1]'],
    ['a number', [1], 'routing.writerTables[0]'],
  ])('%s is a ConfigError naming the setting', (_name, writerTables, setting) => {
    expect(configError({ dialect: 'postgres', writer: pgUrl, routing: { writerTables } }).setting).toBe(
      setting,
    )
  })
})
