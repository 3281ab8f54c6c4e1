import { afterEach, describe, expect, it } from 'vitest'
import { createDb, type ResilientDb } from '../../src/index.js'

// db.dialect and db.settings: the configuration after defaults, readable from the db for a health
// check or a log line, with no secret in it. Server-free: createDb opens no connection.

const PASSWORD = 'Settings-Secret-Pw-7731'
const TOKEN = 'Settings-Secret-Token-7731'
const AWS_SECRET = 'Settings-Secret-AwsKey-7731'
const OPTION_SECRET = 'Settings-Secret-Option-7731'

const dbs: Array<ResilientDb<Record<string, never>>> = []
afterEach(async () => {
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
})

function track(db: ResilientDb<Record<string, never>>): ResilientDb<Record<string, never>> {
  dbs.push(db)
  return db
}

describe('db.dialect and db.settings', () => {
  it('show every endpoint and setting after defaults, and never a secret', () => {
    const db = track(
      createDb({
        dialect: 'postgres',
        writer: {
          url: `postgres://app:${PASSWORD}@db-primary.internal:5432/orders`,
          pg: { options: `-c search_path=${OPTION_SECRET}` },
        },
        readers: [
          {
            url: `postgres://app@replica.internal/orders`,
            auth: { type: 'token', getToken: async () => TOKEN, ttlMs: 60_000 },
          },
          {
            url: 'postgres://app_iam@orders.proxy-abc123.eu-west-1.rds.amazonaws.com/orders',
            auth: {
              type: 'iam',
              region: 'eu-west-1',
              credentials: { accessKeyId: 'AKIAEXAMPLE', secretAccessKey: AWS_SECRET },
            },
          },
        ],
        pool: { max: 20, queryTimeoutMs: 5_000 },
        pg: { application_name: 'orders-api' },
        onCreateConnection: async () => {},
        routing: { maxReplicaLagMs: 2_000 },
      }),
    )
    expect(db.dialect).toBe('postgres')
    const { settings } = db
    expect(settings.dialect).toBe('postgres')
    expect(settings.writers).toHaveLength(1)
    expect(settings.writers[0]).toMatchObject({
      name: 'writer',
      role: 'writer',
      host: 'db-primary.internal',
      port: 5432,
      user: 'app',
      database: 'orders',
      auth: 'password',
      tls: 'off',
      proxy: undefined,
      driverOptions: ['application_name', 'options'],
      hooks: ['onCreateConnection'],
    })
    // Defaults applied under the given pool settings.
    expect(settings.writers[0]?.pool).toMatchObject({
      max: 20,
      queryTimeoutMs: 5_000,
      acquireTimeoutMs: 10_000,
      min: 0,
    })
    expect(settings.readers.map((reader) => [reader.name, reader.auth, reader.tls, reader.proxy])).toEqual([
      ['reader-0', 'token', 'off', undefined],
      ['reader-1', 'iam', 'verify (system CA)', 'rds-proxy'],
    ])
    expect(settings.routing).toMatchObject({
      readerStrategy: 'round-robin',
      fallback: 'writer',
      maxReplicaLagMs: 2_000,
    })
    expect(settings.retry).toMatchObject({ maxElapsedMs: 10_000, retries: Number.POSITIVE_INFINITY })
    expect(settings.consistency).toMatchObject({ readYourWrites: 'scoped', whenBehind: 'writer' })

    const printed = JSON.stringify(settings)
    for (const secret of [PASSWORD, TOKEN, AWS_SECRET, OPTION_SECRET]) expect(printed).not.toContain(secret)
    expect(JSON.parse(printed).readers[1].host).toBe('orders.proxy-abc123.eu-west-1.rds.amazonaws.com')
  })

  it('are frozen, the same object each time, and say mysql for MariaDB URLs', () => {
    const db = track(createDb({ dialect: 'mysql', writer: 'mariadb://app:pw@db.internal/orders' }))
    expect(db.dialect).toBe('mysql')
    expect(db.settings).toBe(db.settings)
    expect(Object.isFrozen(db.settings)).toBe(true)
    expect(Object.isFrozen(db.settings.writers[0]?.pool)).toBe(true)
    expect(() => {
      ;(db.settings.writers as unknown as unknown[]).push({})
    }).toThrow(TypeError)
    expect(db.settings.readers).toEqual([])
  })
})
