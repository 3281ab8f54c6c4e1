import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/index.js'
import { configFromEnv } from '../../src/lambda/config-from-env.js'

// configFromEnv re-labels createDb's ConfigErrors with the DB_* variable that holds the wrong value.
// (The variables themselves, and getConnection, are tested in get-connection.test.ts.)

/** The ConfigError configFromEnv throws for `env`; fails the test if it throws nothing else. */
function envError(env: Record<string, string>): ConfigError {
  let thrown: unknown
  try {
    configFromEnv(env)
  } catch (error) {
    thrown = error
  }
  expect(thrown, 'configFromEnv accepted the environment').toBeInstanceOf(ConfigError)
  return thrown as ConfigError
}

const RAW_PERCENT_PASSWORD = 'Env%Pct-S3cret-pw'
const RAW_PERCENT = "has a '%' that is not followed by two hex digits; percent-encode a literal '%' as %25"

describe("a '%' that starts no percent-escape in a DB_* URL", () => {
  it('in DB_WRITER_URL names DB_WRITER_URL and the part, never the password', () => {
    const error = envError({
      DB_DIALECT: 'postgres',
      DB_WRITER_URL: `postgres://app:${RAW_PERCENT_PASSWORD}@db.internal/orders`,
    })
    expect(error.setting).toBe('DB_WRITER_URL')
    expect(error.detail).toContain(`the URL's password ${RAW_PERCENT}`)
    expect(error.message).toMatch(/^Invalid kysely-resilient config: DB_WRITER_URL: the URL's password/)
    expect(error.message).not.toContain(RAW_PERCENT_PASSWORD)
    expect(error.message).not.toContain('S3cret')
  })

  it('in the second of DB_READER_URLS names DB_READER_URLS and the URL by its position', () => {
    const error = envError({
      DB_DIALECT: 'mysql',
      DB_WRITER_URL: 'mysql://app:pw@writer/db',
      DB_READER_URLS: `mysql://app:pw@r1/db,mysql://app:${RAW_PERCENT_PASSWORD}@r2/db`,
    })
    expect(error.setting).toBe('DB_READER_URLS')
    expect(error.detail).toMatch(/^URL #2: the URL's password has a '%'/)
    expect(error.message).not.toContain(RAW_PERCENT_PASSWORD)
  })

  it('in the user or the database of DB_WRITER_URL', () => {
    const user = envError({ DB_DIALECT: 'mysql', DB_WRITER_URL: 'mysql://u%zz:x@h/db' })
    expect(user.setting).toBe('DB_WRITER_URL')
    expect(user.detail).toContain(`the URL's user ${RAW_PERCENT}`)
    const database = envError({ DB_DIALECT: 'postgres', DB_WRITER_URL: 'postgres://a:b@h/d%b' })
    expect(database.setting).toBe('DB_WRITER_URL')
    expect(database.detail).toContain(`the URL's database ${RAW_PERCENT}`)
  })
})

describe('DB_PROXY', () => {
  const PROXY_URL = 'postgres://app_iam@orders.proxy-abc123.eu-west-1.rds.amazonaws.com/orders'

  it('sets proxy for every endpoint; unset leaves it to the host name', () => {
    const behind = configFromEnv({
      DB_DIALECT: 'postgres',
      DB_WRITER_URL: 'postgres://a:b@pgbouncer/db',
      DB_PROXY: 'pgbouncer',
    })
    expect(behind.proxy).toBe('pgbouncer')
    const detected = configFromEnv({
      DB_DIALECT: 'postgres',
      DB_WRITER_URL: PROXY_URL,
      DB_AUTH: 'iam',
      AWS_REGION: 'eu-west-1',
    })
    expect(detected.proxy).toBeUndefined()
    const off = configFromEnv({ DB_DIALECT: 'postgres', DB_WRITER_URL: PROXY_URL, DB_PROXY: 'false' })
    expect(off.proxy).toBe(false)
  })

  it('rejects an unknown value, and pgbouncer with MySQL, naming DB_PROXY', () => {
    const unknown = envError({
      DB_DIALECT: 'postgres',
      DB_WRITER_URL: 'postgres://a:b@h/db',
      DB_PROXY: 'odyssey',
    })
    expect(unknown.setting).toBe('DB_PROXY')
    expect(unknown.detail).toMatch(/'pgbouncer', 'rds-proxy' or 'false'/)
    const mysql = envError({ DB_DIALECT: 'mysql', DB_WRITER_URL: 'mysql://a:b@h/db', DB_PROXY: 'pgbouncer' })
    expect(mysql.setting).toBe('DB_PROXY')
    expect(mysql.detail).toMatch(/only PostgreSQL's protocol/)
  })
})

describe('DB_TOPOLOGY and DB_INSTANCE_HOST_PATTERN', () => {
  const CLUSTER_URL = 'postgres://app_iam@orders.cluster-c9xyz.eu-west-1.rds.amazonaws.com/orders'

  it('unset leaves discovery to the host name; set, they become topology', () => {
    expect(
      configFromEnv({ DB_DIALECT: 'postgres', DB_WRITER_URL: CLUSTER_URL, DB_AUTH: 'iam' }).topology,
    ).toBeUndefined()
    expect(
      configFromEnv({
        DB_DIALECT: 'postgres',
        DB_WRITER_URL: CLUSTER_URL,
        DB_AUTH: 'iam',
        DB_TOPOLOGY: 'false',
      }).topology,
    ).toEqual({ discovery: false })
    expect(
      configFromEnv({
        DB_DIALECT: 'mysql',
        DB_WRITER_URL: 'mysql://a:b@db.internal/orders',
        DB_TOPOLOGY: 'true',
        DB_INSTANCE_HOST_PATTERN: '?.db.internal',
      }).topology,
    ).toEqual({ discovery: true, instanceHostPattern: '?.db.internal' })
  })

  it('names the variable that is wrong', () => {
    const notBoolean = envError({ DB_DIALECT: 'postgres', DB_WRITER_URL: CLUSTER_URL, DB_TOPOLOGY: 'yes' })
    expect(notBoolean.setting).toBe('DB_TOPOLOGY')
    expect(notBoolean.detail).toMatch(/'true' or 'false'/)
    const noPattern = envError({
      DB_DIALECT: 'postgres',
      DB_WRITER_URL: 'postgres://a:b@db.internal/orders',
      DB_TOPOLOGY: 'true',
    })
    expect(noPattern.setting).toBe('DB_INSTANCE_HOST_PATTERN')
    expect(noPattern.detail).toMatch(/is required with topology.discovery on/)
    const badPattern = envError({
      DB_DIALECT: 'postgres',
      DB_WRITER_URL: 'postgres://a:b@db.internal/orders',
      DB_INSTANCE_HOST_PATTERN: 'db.internal',
    })
    expect(badPattern.setting).toBe('DB_INSTANCE_HOST_PATTERN')
  })
})
