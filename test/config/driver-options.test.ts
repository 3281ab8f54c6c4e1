// The `pg` / `mysql2` driver options and Kysely's connection hooks, as createDb validates them:
// without a server. What they do on real connections: test/dialect/driver-options.test.ts.
import { inspect } from 'node:util'
import type { ConnectionOptions } from 'mysql2'
import type pg from 'pg'
import type { Client, ClientConfig } from 'pg'
import { describe, expect, expectTypeOf, it } from 'vitest'
import { resolveConfig } from '../../src/config/resolve-config.js'
import type { MysqlDriverOptions, PostgresDriverOptions } from '../../src/index.js'
import { configError } from '../support/config-error.js'

const PG = 'postgres://app:pw@db.internal:5432/app'
const MY = 'mysql://app:pw@db.internal:3306/app'

describe('driver options are typed from the drivers’ own option types', () => {
  it('every pg option the library accepts is one pg’s ClientConfig takes, and pg.types fits `types`', () => {
    // `binary` is read by pg's Client although @types/pg lists it under Defaults only.
    expectTypeOf<Omit<PostgresDriverOptions, 'binary'>>().toExtend<ClientConfig>()
    expectTypeOf<PostgresDriverOptions['binary']>().toEqualTypeOf<boolean | undefined>()
    expectTypeOf<typeof pg.types>().toExtend<NonNullable<PostgresDriverOptions['types']>>()
    expectTypeOf<Client['getTypeParser']>().toExtend<
      NonNullable<PostgresDriverOptions['types']>['getTypeParser']
    >()
  })

  it('every mysql2 option the library accepts is one mysql2’s ConnectionOptions takes', () => {
    // mysql2 types its arrays as mutable; the library's options are readonly and never written to.
    type Mutable<V> = V extends ReadonlyArray<infer E> ? E[] : V
    type Writable<T> = { -readonly [K in keyof T]: Mutable<T[K]> }
    const options = {} as Writable<MysqlDriverOptions>
    // Compiles only while each option has mysql2's name and a type mysql2 accepts.
    const accepted: ConnectionOptions = options
    expect(accepted).toBe(options)
    expectTypeOf<NonNullable<MysqlDriverOptions['typeCast']>>().toExtend<
      NonNullable<ConnectionOptions['typeCast']>
    >()
  })
})

describe('createDb validates driver options and hooks', () => {
  it.each([
    ['postgres', PG, { pg: { password: 'x' } }, 'pg.password', "set the endpoint's url or password, or auth"],
    ['postgres', PG, { pg: { ssl: true } }, 'pg.ssl', 'use the tls setting'],
    ['postgres', PG, { pg: { statement_timeout: 5 } }, 'pg.statement_timeout', 'use pool.statementTimeoutMs'],
    ['postgres', PG, { pg: { query_timeout: 5 } }, 'pg.query_timeout', 'use pool.queryTimeoutMs'],
    [
      'postgres',
      PG,
      { pg: { connectionTimeoutMillis: 5 } },
      'pg.connectionTimeoutMillis',
      'pool.connectTimeoutMs',
    ],
    ['postgres', PG, { pg: { keepAlive: false } }, 'pg.keepAlive', 'pool.keepAlive'],
    ['postgres', PG, { pg: { host: 'x' } }, 'pg.host', "endpoint's url or host"],
    ['mysql', MY, { mysql2: { connectTimeout: 5 } }, 'mysql2.connectTimeout', 'use pool.connectTimeoutMs'],
    ['mysql', MY, { mysql2: { ssl: {} } }, 'mysql2.ssl', 'use the tls setting'],
    ['mysql', MY, { mysql2: { connectionLimit: 5 } }, 'mysql2.connectionLimit', 'use pool.max'],
    [
      'mysql',
      MY,
      { mysql2: { rowsAsArray: true } },
      'mysql2.rowsAsArray',
      'Kysely reads each row as an object',
    ],
    ['mysql', MY, { mysql2: { namedPlaceholders: true } }, 'mysql2.namedPlaceholders', '? placeholders'],
    ['mysql', MY, { mysql2: { authPlugins: {} } }, 'mysql2.authPlugins', 'use the auth setting'],
  ])('%s: %o is refused, naming the setting to use instead', (dialect, writer, extra, setting, hint) => {
    const error = configError({ dialect, writer, ...extra })
    expect(error.setting).toBe(setting)
    expect(error.detail).toContain(hint)
  })

  it('refuses the other driver’s options, unknown options and wrong types, never echoing a string', () => {
    expect(configError({ dialect: 'postgres', writer: PG, mysql2: { dateStrings: true } })).toMatchObject({
      setting: 'mysql2',
      detail: "is for the 'mysql' dialect; with dialect 'postgres' use 'pg'",
    })
    expect(configError({ dialect: 'mysql', writer: MY, pg: {} })).toMatchObject({ setting: 'pg' })
    const unknown = configError({ dialect: 'postgres', writer: PG, pg: { aplication_name: 'x' } })
    expect(unknown.setting).toBe('pg.aplication_name')
    expect(unknown.detail).toMatch(/^unknown pg option \(supported: application_name, .*types.*\)$/)
    const wrongType = configError({
      dialect: 'mysql',
      writer: MY,
      mysql2: { supportBigNumbers: 'yes', timezone: 'Z' },
    })
    expect(wrongType).toMatchObject({
      setting: 'mysql2.supportBigNumbers',
      detail: 'expected boolean, got a string',
    })
    expect(wrongType.message).not.toContain('yes')
    expect(configError({ dialect: 'postgres', writer: PG, pg: 'application_name=x' })).toMatchObject({
      setting: 'pg',
      detail: "expected an object of pg options, got 'application_name=x'",
    })
    expect(
      configError({ dialect: 'postgres', writer: PG, pg: { types: { getTypeParser: 1 } }, readers: [] })
        .setting,
    ).toBe('pg.types')
  })

  it('names the endpoint setting for an endpoint’s own options and hooks', () => {
    expect(configError({ dialect: 'postgres', writer: { url: PG, pg: { port: 1 } } }).setting).toBe(
      'writer.pg.port',
    )
    expect(
      configError({ dialect: 'mysql', writer: MY, readers: [{ url: MY, mysql2: { uri: MY } }] }),
    ).toMatchObject({
      setting: 'readers[0].mysql2.uri',
      detail: "is the library's: give the URL as the writer or reader",
    })
    expect(configError({ dialect: 'postgres', writer: PG, onCreateConnection: 'set x' })).toMatchObject({
      setting: 'onCreateConnection',
    })
    expect(configError({ dialect: 'postgres', writer: { url: PG, onReserveConnection: {} } }).setting).toBe(
      'writer.onReserveConnection',
    )
  })

  it('merges an endpoint’s options over the top level key by key; an endpoint’s hook replaces the top level’s', () => {
    const top = async () => {}
    const own = async () => {}
    const config = resolveConfig({
      dialect: 'postgres',
      writer: { url: PG, pg: { application_name: 'writer-app' }, onCreateConnection: own },
      readers: [PG],
      pg: { application_name: 'app', lock_timeout: 500 },
      onCreateConnection: top,
      onReserveConnection: top,
    })
    const [writer] = config.writers
    const [reader] = config.readers
    expect(writer?.driverOptions).toEqual({ application_name: 'writer-app', lock_timeout: 500 })
    expect(reader?.driverOptions).toEqual({ application_name: 'app', lock_timeout: 500 })
    expect(writer?.hooks).toEqual({ onCreateConnection: own, onReserveConnection: top })
    expect(reader?.hooks).toEqual({ onCreateConnection: top, onReserveConnection: top })
  })

  it('shows only the names of driver options and hooks when an endpoint is printed', () => {
    const config = resolveConfig({
      dialect: 'postgres',
      writer: PG,
      pg: { options: '-c app.secret=hunter2-driver-secret' },
      onCreateConnection: async () => {},
    })
    const [writer] = config.writers
    const printed = `${inspect(writer, { depth: 10 })} ${JSON.stringify(writer)}`
    expect(printed).not.toContain('hunter2-driver-secret')
    expect(JSON.parse(JSON.stringify(writer))).toMatchObject({
      driverOptions: ['options'],
      hooks: ['onCreateConnection'],
    })
  })
})
