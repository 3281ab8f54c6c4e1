import { inspect } from 'node:util'
import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { resolveConfig } from '../../src/config/resolve-config.js'
import { ConfigError, type CreateDbConfig, createDb } from '../../src/index.js'
import { configFromEnv } from '../../src/lambda/config-from-env.js'
import { configError } from '../support/config-error.js'
import { type ClusterInfo, clusters } from '../support/database.js'

// A Unix-socket host: an absolute path, as pg and libpq take it (PostgreSQL: the socket's directory;
// MySQL: the socket file). Accepted from `host` and from URLs, never with TLS or IAM, and proven
// against the test servers' own sockets.

const PG_SOCKET_DIR = '/var/run/postgresql'
const MYSQL_SOCKET = '/run/mysqld/mysqld.sock'
const SECRET = 'Sock3t-S3cret-pw'

function writerOf(config: CreateDbConfig) {
  return resolveConfig(config).writers[0]!
}

describe('a Unix-socket host is accepted', () => {
  it("from 'host' on PostgreSQL: the directory, with the port that picks the socket file", () => {
    const db = createDb({
      dialect: 'postgres',
      writer: { host: PG_SOCKET_DIR, user: 'app', database: 'orders' },
      readers: [{ host: PG_SOCKET_DIR, port: 5433, database: 'orders' }],
    })
    expect(db.stats().writer.address).toBe('/var/run/postgresql:5432/orders')
    expect(db.stats().readers[0]?.address).toBe('/var/run/postgresql:5433/orders')
  })

  it('from a URL whose host is the percent-encoded path', () => {
    const writer = writerOf({
      dialect: 'postgres',
      writer: `postgres://app:${SECRET}@%2Fvar%2Frun%2Fpostgresql:5433/orders`,
    })
    expect(writer).toMatchObject({ host: PG_SOCKET_DIR, port: 5433, user: 'app', database: 'orders' })
    expect(writer.password()).toBe(SECRET)
    expect(writer.address).toBe('/var/run/postgresql:5433/orders')
  })

  it("from libpq's ?host= form, the only query parameter accepted, with the user next to the url", () => {
    const writer = writerOf({
      dialect: 'postgres',
      writer: { url: `postgres:///orders?host=${PG_SOCKET_DIR}`, user: 'app' },
    })
    expect(writer).toMatchObject({ host: PG_SOCKET_DIR, port: 5432, user: 'app', database: 'orders' })
    // Only for a socket path, and only with no host in the URL: anything else is still refused.
    for (const url of [
      'postgres:///orders?host=db.internal',
      'postgres://db.internal/orders?host=/var/run/postgresql',
      `postgres:///orders?host=${PG_SOCKET_DIR}&sslmode=disable`,
    ]) {
      expect(configError({ dialect: 'postgres', writer: url }).setting, url).toBe('writer')
    }
  })

  it('on MySQL: the socket file, whose address has no port (mysql2 does not use it)', () => {
    const db = createDb({
      dialect: 'mysql',
      writer: { host: MYSQL_SOCKET, user: 'app', database: 'orders' },
      readers: ['mysql://app@%2Frun%2Fmysqld%2Fmysqld.sock/orders'],
    })
    expect(db.stats().writer.address).toBe('/run/mysqld/mysqld.sock/orders')
    expect(db.stats().readers[0]?.address).toBe('/run/mysqld/mysqld.sock/orders')
  })

  it('with TLS off by default, even for a path that ends like an RDS host name', () => {
    for (const host of [PG_SOCKET_DIR, '/sockets/mydb.cluster-abc.eu-west-1.rds.amazonaws.com']) {
      expect(writerOf({ dialect: 'postgres', writer: { host } }).tls).toEqual({ mode: 'off' })
      expect(writerOf({ dialect: 'postgres', writer: { host, tls: false } }).tls).toEqual({ mode: 'off' })
    }
    // The same name as a TCP host does get the RDS default.
    expect(
      writerOf({ dialect: 'postgres', writer: { host: 'mydb.cluster-abc.eu-west-1.rds.amazonaws.com' } }).tls,
    ).toMatchObject({ mode: 'verify', trust: 'rds' })
  })

  it("with 'secret' and 'token' auth", () => {
    for (const auth of [
      { type: 'secret', secretId: 'prod/orders/app' },
      { type: 'token', getToken: async () => 'unused', ttlMs: 60_000 },
    ] as const) {
      expect(
        writerOf({ dialect: 'postgres', writer: { host: PG_SOCKET_DIR, user: 'app' }, auth }).auth.type,
      ).toBe(auth.type)
    }
  })
})

describe('a Unix-socket host is refused', () => {
  it('with TLS, naming the tls setting that turned it on', () => {
    const cases: Array<[unknown, string]> = [
      [{ dialect: 'postgres', writer: { host: PG_SOCKET_DIR }, tls: 'verify-full' }, 'tls'],
      [{ dialect: 'postgres', writer: { host: PG_SOCKET_DIR, tls: 'rds' } }, 'writer.tls'],
      [
        {
          dialect: 'mysql',
          writer: 'mysql://db.internal/x',
          readers: [{ host: MYSQL_SOCKET, tls: 'require' }],
        },
        'readers[0].tls',
      ],
      [{ dialect: 'postgres', writer: { url: 'postgres://%2Ftmp/db', tls: { ca: 'PEM' } } }, 'writer.tls'],
    ]
    for (const [config, setting] of cases) {
      const error = configError(config)
      expect(error.setting).toBe(setting)
      expect(error.detail).toMatch(
        /^cannot apply to (writer|readers\[0\]), a Unix socket: TLS is for TCP connections/,
      )
    }
  })

  it("with auth type 'iam', naming the endpoint (before any TLS or region complaint)", () => {
    const cases: Array<[unknown, string]> = [
      [
        { dialect: 'postgres', writer: { host: PG_SOCKET_DIR, user: 'app_iam' }, auth: { type: 'iam' } },
        'writer',
      ],
      [
        {
          dialect: 'mysql',
          writer: { url: 'mysql://app_iam@db.internal/x', tls: 'verify-full' },
          readers: [{ url: 'mysql://app_iam@%2Frun%2Fmysqld%2Fmysqld.sock/x', tls: 'rds' }],
          auth: { type: 'iam', region: 'eu-west-1' },
        },
        'readers[0]',
      ],
    ]
    for (const [config, setting] of cases) {
      const error = configError(config)
      expect(error.setting).toBe(setting)
      expect(error.detail).toMatch(/^is a Unix socket, but auth type 'iam' needs TCP/)
    }
  })

  it("that names PostgreSQL's socket file instead of its directory", () => {
    const error = configError({ dialect: 'postgres', writer: { host: '/var/run/postgresql/.s.PGSQL.5432' } })
    expect(error.setting).toBe('writer.host')
    expect(error.detail).toMatch(/^names the socket file itself; give the directory that holds it/)
    const fromUrl = configError({ dialect: 'postgres', writer: 'postgres://%2Ftmp%2F.s.PGSQL.5432/db' })
    expect(fromUrl.setting).toBe('writer')
    expect(fromUrl.detail).toMatch(/^the URL's host names the socket file itself/)
  })

  it('with an @ in the path (a pasted URL), without echoing it', () => {
    const error = configError({ dialect: 'postgres', writer: { host: `//app:${SECRET}@db.internal/orders` } })
    expect(error.setting).toBe('writer.host')
    expect(error.detail).toBe(
      "expected a bare host name, an IP address or an absolute Unix socket path; put a URL in 'url'",
    )
    expect(inspect(error, { depth: 10, showHidden: true })).not.toContain(SECRET)
  })

  it("that is relative, or a host that is not percent-decodable, naming the URL's host", () => {
    expect(configError({ dialect: 'postgres', writer: { host: 'var/run/postgresql' } }).setting).toBe(
      'writer.host',
    )
    const relative = configError({ dialect: 'postgres', writer: 'postgres://var%2Frun%2Fpostgresql/db' })
    expect(relative.detail).toBe(
      "the URL's host is not a host name, an IP address or an absolute Unix socket path",
    )
    const malformed = configError({ dialect: 'postgres', writer: `postgres://app:${SECRET}@%2Ftmp%zz/db` })
    expect(malformed.setting).toBe('writer')
    expect(malformed.detail).toMatch(/^the URL's host has a '%' that is not followed by two hex digits/)
    expect(malformed.message).not.toContain(SECRET)
  })
})

describe('a Unix-socket URL under Lambda', () => {
  it('is passed on as it is', () => {
    const url = 'postgres://app:pw@%2Fvar%2Frun%2Fpostgresql/orders'
    expect(configFromEnv({ DB_DIALECT: 'postgres', DB_WRITER_URL: url }).writer).toBe(url)
  })

  it('with DB_AUTH=iam names DB_WRITER_URL, not DB_TLS (no TLS setting can fix it)', () => {
    for (const DB_TLS of [undefined, 'rds']) {
      let thrown: unknown
      try {
        configFromEnv({
          DB_DIALECT: 'postgres',
          DB_AUTH: 'iam',
          AWS_REGION: 'eu-west-1',
          DB_WRITER_URL: 'postgres://app_iam@%2Fvar%2Frun%2Fpostgresql/orders',
          ...(DB_TLS === undefined ? {} : { DB_TLS }),
        })
      } catch (error) {
        thrown = error
      }
      expect(thrown).toBeInstanceOf(ConfigError)
      expect((thrown as ConfigError).setting).toBe('DB_WRITER_URL')
      expect((thrown as ConfigError).detail).toMatch(/^is a Unix socket, but auth type 'iam' needs TCP/)
    }
  })

  it('with DB_TLS on names DB_TLS', () => {
    let thrown: unknown
    try {
      configFromEnv({
        DB_DIALECT: 'mysql',
        DB_TLS: 'verify-full',
        DB_WRITER_URL: 'mysql://app:pw@db.internal/orders',
        DB_READER_URLS: 'mysql://app:pw@%2Frun%2Fmysqld%2Fmysqld.sock/orders',
      })
    } catch (error) {
      thrown = error
    }
    expect(thrown).toBeInstanceOf(ConfigError)
    expect((thrown as ConfigError).setting).toBe('DB_TLS')
    expect((thrown as ConfigError).detail).toMatch(/^cannot apply to readers\[0\], a Unix socket/)
  })
})

/** A query over the writer's own Unix socket, through createDb, in each form a socket can be given. */
function describeOverSocket(
  engine: 'postgres' | 'mysql',
  fn: (info: ClusterInfo & { writerSocket: string }) => void,
): void {
  const info = clusters()[engine]
  describe(`queries over a Unix socket [${engine}]`, () => {
    if (info?.writerSocket === undefined) {
      it.skip(`!!! SKIPPED: no ${engine} server of our own, so no known Unix socket !!!`, () => {})
      return
    }
    fn(info as ClusterInfo & { writerSocket: string })
  })
}

describeOverSocket('postgres', (info) => {
  const { port } = new URL(info.writerUrl)
  const configs: Array<[string, CreateDbConfig['writer']]> = [
    ['host', { host: info.writerSocket, port: Number(port), user: 'app', database: 'app' }],
    ['a percent-encoded URL host', `postgres://app@${encodeURIComponent(info.writerSocket)}:${port}/app`],
    ['?host=', { url: `postgres:///app?host=${info.writerSocket}`, port: Number(port), user: 'app' }],
  ]

  it.each(configs)('given as %s', async (_form, writer) => {
    const db = createDb({ dialect: 'postgres', writer })
    try {
      // inet_server_addr() is null on a Unix-socket connection, an address over TCP.
      const row = await sql<{ local: boolean; user: string }>`
        select inet_server_addr() is null as local, current_user as user`
        .execute(db)
        .then((result) => result.rows[0])
      expect(row).toEqual({ local: true, user: 'app' })
      expect(db.stats().writer.address).toBe(`${info.writerSocket}:${port}/app`)
    } finally {
      await db.destroy()
    }
  })
})

describeOverSocket('mysql', (info) => {
  const password = decodeURIComponent(new URL(info.writerUrl).password)
  const configs: Array<[string, CreateDbConfig['writer']]> = [
    ['host', { host: info.writerSocket, user: 'app', password, database: 'app' }],
    [
      'a percent-encoded URL host',
      `mysql://app:${encodeURIComponent(password)}@${encodeURIComponent(info.writerSocket)}/app`,
    ],
  ]

  it.each(configs)('given as %s', async (_form, writer) => {
    const db = createDb({ dialect: 'mysql', writer })
    try {
      // Over a socket MariaDB sees the client as 'localhost' (over TCP: '127.0.0.1').
      const row = await sql<{ user: string; host: string }>`
        select current_user() as user, host from information_schema.processlist where id = connection_id()`
        .execute(db)
        .then((result) => result.rows[0])
      expect(row).toEqual({ user: 'app@localhost', host: 'localhost' })
      expect(db.stats().writer.address).toBe(`${info.writerSocket}/app`)
    } finally {
      await db.destroy()
    }
  })
})
