import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager'
import { Signer } from '@aws-sdk/rds-signer'
import { mockClient } from 'aws-sdk-client-mock'
import { type RawBuilder, sql } from 'kysely'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  ConfigError,
  type CreateDbConfig,
  CredentialSourceError,
  getConnection,
  LAMBDA_POOL_DEFAULTS,
  MissingDriverError,
  resetConnection,
} from '../../src/index.js'
import { configFromEnv } from '../../src/lambda/config-from-env.js'
import * as lambdaEntry from '../../src/lambda/index.js'
import { withLambdaDefaults } from '../../src/lambda/lambda-defaults.js'
import { describeEngines, type Engine } from '../support/database.js'
import { killWhileFrozen } from '../support/freeze.js'
import { type MariaDbCluster, startMariaDbCluster } from '../support/mariadb-cluster.js'
import { pollUntil } from '../support/poll.js'
import { type PostgresCluster, startPostgresCluster } from '../support/postgres-cluster.js'
import { registerSecret } from '../support/secrets.js'
import { queryOnce } from '../support/sql.js'

// getConnection() as an AWS Lambda handler uses it: one db per container, reused by warm
// invocations, surviving whatever happened to its sessions while the container was frozen.

const root = fileURLToPath(new URL('../..', import.meta.url))

function sessionIdExpr(engine: Engine): RawBuilder<number> {
  return engine === 'postgres' ? sql<number>`pg_backend_pid()` : sql<number>`connection_id()`
}

/** One invocation: a read (routed) and a raw statement (writer); returns the session ids used. */
async function invoke(engine: Engine, options: CreateDbConfig): Promise<number[]> {
  const db = await getConnection(options)
  const read = await db.selectNoFrom(sessionIdExpr(engine).as('id')).executeTakeFirstOrThrow()
  const raw = await sql<{ id: number }>`select ${sessionIdExpr(engine)} as id`.execute(db)
  return [Number(read.id), Number(raw.rows[0]?.id)]
}

async function liveSessions(engine: Engine, adminUrl: string, ids: readonly number[]): Promise<number[]> {
  const rows =
    engine === 'postgres'
      ? await queryOnce(engine, adminUrl, 'select pid as id from pg_stat_activity where pid = any($1)', [
          [...ids],
        ])
      : await queryOnce(engine, adminUrl, 'select id from information_schema.processlist where id in (?)', [
          [...ids],
        ])
  return rows.map((row) => Number(row.id))
}

async function waitUntilGone(engine: Engine, adminUrl: string, ids: readonly number[]): Promise<void> {
  await pollUntil(async () => ((await liveSessions(engine, adminUrl, ids)).length === 0 ? true : undefined), {
    timeoutMs: 10_000,
    what: `sessions ${ids.join(', ')} to end on the server`,
  })
}

// One mock for the file: a second mockClient of the same class would replace the first one's stub.
const secretsManager = mockClient(SecretsManagerClient)

afterEach(async () => {
  await resetConnection()
  vi.unstubAllEnvs()
})

afterAll(() => {
  secretsManager.restore()
})

describeEngines('getConnection across warm invocations', (engine, info) => {
  // retry: false, so nothing but validation and broken-connection detection can heal a dead session.
  const options = (pool: CreateDbConfig['pool'] = {}): CreateDbConfig => ({
    dialect: engine,
    writer: info.writerUrl,
    retry: false,
    pool: { validateAfterIdleMs: 1, ...pool },
  })

  it('returns one instance to concurrent first calls and to later invocations', async () => {
    const first = await Promise.all(Array.from({ length: 5 }, () => getConnection(options())))
    expect(new Set(first).size).toBe(1)
    expect(await getConnection(options())).toBe(first[0])
    expect(await lambdaEntry.getConnection()).toBe(first[0])

    await resetConnection()
    const fresh = await getConnection(options())
    expect(fresh).not.toBe(first[0])
  })

  it('does not keep a failed creation: the next call tries again', async () => {
    const failed = await getConnection({ dialect: engine, writer: 'not a url' }).then(
      () => undefined,
      (error: unknown) => error,
    )
    expect(failed).toBeInstanceOf(ConfigError)
    const db = await getConnection(options())
    await expect(db.selectNoFrom(sql<number>`1`.as('one')).execute()).resolves.toHaveLength(1)
  })

  it('serves the next invocation after the server killed every session while the container was frozen', async () => {
    const before = await invoke(engine, options())
    killWhileFrozen(engine, info.adminWriterUrl, before)

    const after = await invoke(engine, options())
    expect(after.some((id) => before.includes(id))).toBe(false)
  })

  it('without validation, the sessions the freeze closed are seen closed before use, never reused', async () => {
    const before = await invoke(engine, { ...options(), pool: {} })
    const db = await getConnection()
    killWhileFrozen(engine, info.adminWriterUrl, before)

    // The first query runs on a new session: the killed ones (the test really killed them) were
    // dropped when their closes landed, one event-loop turn before reuse.
    const rows = await db.selectNoFrom(sessionIdExpr(engine).as('id')).execute()
    expect(before).not.toContain(Number(rows[0]?.id))
  })

  it('closes its sessions on SIGTERM and forgets the instance', async () => {
    // Another listener, so the handler does not re-raise SIGTERM and end this test worker.
    const keepAlive = (): void => {}
    process.on('SIGTERM', keepAlive)
    try {
      const db = await getConnection(options())
      // Two overlapping statements: both pooled connections are open.
      const ids = await Promise.all([
        sql<{ id: number }>`select ${sessionIdExpr(engine)} as id`.execute(db),
        sql<{ id: number }>`select ${sessionIdExpr(engine)} as id`.execute(db),
      ]).then((results) => results.map((result) => Number(result.rows[0]?.id)))
      expect(await liveSessions(engine, info.adminWriterUrl, ids)).not.toHaveLength(0)

      process.emit('SIGTERM', 'SIGTERM')

      await waitUntilGone(engine, info.adminWriterUrl, ids)
      expect(db.stats().writer.total).toBe(0)
      expect(await getConnection(options())).not.toBe(db)
    } finally {
      process.off('SIGTERM', keepAlive)
    }
  })

  it('with no other SIGTERM listener, closes its sessions and then ends the process by the signal', () => {
    const idSql = engine === 'postgres' ? 'pg_backend_pid()' : 'connection_id()'
    // A separate process, since the signal must really end it. It stays alive 5 s unless the signal ends it.
    const script = `import { sql } from 'kysely'
import { getConnection } from './src/lambda/index.ts'
const db = await getConnection({ dialect: ${JSON.stringify(engine)}, writer: process.env.URL })
const result = await sql.raw('select ${idSql} as id').execute(db)
console.log(Number(result.rows[0].id))
process.kill(process.pid, 'SIGTERM')
setTimeout(() => console.log('still alive'), 5000)`
    const pinned = join(root, 'node_modules', '.bin', 'node')
    const result = spawnSync(
      existsSync(pinned) ? pinned : process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      {
        cwd: root,
        encoding: 'utf8',
        env: { PATH: process.env.PATH ?? '', URL: info.writerUrl },
        timeout: 20_000,
      },
    )
    expect(result.stderr).toBe('')
    expect(result.signal).toBe('SIGTERM')
    const id = Number(result.stdout.trim())
    expect(Number.isInteger(id) && id > 0).toBe(true)
    return waitUntilGone(engine, info.adminWriterUrl, [id])
  })

  it('registers one SIGTERM listener however often it is called, and removes it on reset', async () => {
    const before = process.listenerCount('SIGTERM')
    await getConnection(options())
    await getConnection(options())
    expect(process.listenerCount('SIGTERM')).toBe(before + 1)
    await resetConnection()
    expect(process.listenerCount('SIGTERM')).toBe(before)
  })

  it('sessionIdleTimeoutMs makes the server close an idle session, and the next invocation still succeeds', async () => {
    const config = options({ sessionIdleTimeoutMs: 1_000 })
    const db = await getConnection(config)
    const setting =
      engine === 'postgres'
        ? await sql<{ v: string }>`select current_setting('idle_session_timeout') as v`.execute(db)
        : await sql<{ v: string }>`select @@session.wait_timeout as v`.execute(db)
    expect(String(setting.rows[0]?.v)).toBe(engine === 'postgres' ? '1s' : '1')

    const before = await invoke(engine, config)
    // The server, not the client, ends the sessions.
    await waitUntilGone(engine, info.adminWriterUrl, before)

    const after = await invoke(engine, config)
    expect(after.some((id) => before.includes(id))).toBe(false)
  })
})

describeEngines('getConnection across a server restart', (engine) => {
  let own: PostgresCluster | MariaDbCluster

  beforeAll(async () => {
    own =
      engine === 'postgres'
        ? await startPostgresCluster({ replica: false })
        : await startMariaDbCluster({ replica: false })
  })

  afterAll(async () => {
    await resetConnection()
    await own?.stop()
  })

  it('serves the next invocation after the server restarted between invocations', async () => {
    const options: CreateDbConfig = {
      dialect: engine,
      writer: own.writerUrl,
      retry: false,
      pool: { validateAfterIdleMs: 1 },
    }
    await invoke(engine, options)
    await own.primary.stop('fast')
    await own.primary.start()

    const after = await invoke(engine, options)
    expect(after).toHaveLength(2)
    expect(await getConnection(options)).toBe(await getConnection())
  })
})

describe('getConnection from the environment', () => {
  const env = (vars: Record<string, string>) => () => configFromEnv(vars)

  function settingOf(fn: () => unknown): string | undefined {
    try {
      fn()
    } catch (error) {
      if (error instanceof ConfigError) return error.setting
      throw error
    }
    return undefined
  }

  function messageOf(fn: () => unknown): string {
    try {
      fn()
    } catch (error) {
      return error instanceof Error ? error.message : String(error)
    }
    return ''
  }

  it('builds the config from DB_DIALECT, DB_WRITER_URL and DB_READER_URLS', () => {
    expect(
      configFromEnv({
        DB_DIALECT: 'postgres',
        DB_WRITER_URL: 'postgres://app:pw@writer/db',
        DB_READER_URLS: ' postgres://app:pw@r1/db, ,postgres://app:pw@r2/db ',
        DB_AUTH: 'password',
      }),
    ).toEqual({
      dialect: 'postgres',
      writer: 'postgres://app:pw@writer/db',
      readers: ['postgres://app:pw@r1/db', 'postgres://app:pw@r2/db'],
    })
    expect(configFromEnv({ DB_DIALECT: 'mysql', DB_WRITER_URL: 'mysql://app:pw@writer/db' })).toEqual({
      dialect: 'mysql',
      writer: 'mysql://app:pw@writer/db',
      readers: [],
    })
  })

  it('names the missing or wrong variable', () => {
    const url = 'postgres://app:pw@writer/db'
    expect(settingOf(env({ DB_WRITER_URL: url }))).toBe('DB_DIALECT')
    expect(settingOf(env({ DB_DIALECT: 'oracle', DB_WRITER_URL: url }))).toBe('DB_DIALECT')
    expect(settingOf(env({ DB_DIALECT: 'postgres' }))).toBe('DB_WRITER_URL')
    expect(settingOf(env({ DB_DIALECT: 'postgres', DB_WRITER_URL: ' ' }))).toBe('DB_WRITER_URL')
    expect(settingOf(env({ DB_DIALECT: 'mysql', DB_WRITER_URL: url }))).toBe('DB_WRITER_URL')
    expect(
      settingOf(env({ DB_DIALECT: 'postgres', DB_WRITER_URL: url, DB_READER_URLS: `${url},oops` })),
    ).toBe('DB_READER_URLS')
    expect(settingOf(env({ DB_DIALECT: 'postgres', DB_WRITER_URL: url, DB_AUTH: 'kerberos' }))).toBe(
      'DB_AUTH',
    )
  })

  it('never echoes a URL, which may hold a password', () => {
    const secret = 'Sup3rS3cretPw'
    const messages = [
      messageOf(env({ DB_DIALECT: 'postgres', DB_WRITER_URL: `not a url ${secret}` })),
      messageOf(env({ DB_DIALECT: 'postgres', DB_WRITER_URL: `postgres://app:${secret}@h/db?ssl=1` })),
      messageOf(env({ DB_DIALECT: 'mysql', DB_WRITER_URL: `postgres://app:${secret}@h/db` })),
      messageOf(
        env({
          DB_DIALECT: 'postgres',
          DB_WRITER_URL: 'postgres://app:pw@h/db',
          DB_READER_URLS: `postgres://app:pw@h/db,http://app:${secret}@h/db`,
        }),
      ),
    ]
    for (const message of messages) {
      expect(message).toMatch(/DB_(WRITER|READER)_URL/)
      expect(message).not.toContain(secret)
    }
    expect(messages[3]).toContain('URL #2')
  })

  const RDS_WRITER = 'postgres://app_iam@mydb.cluster-abc.eu-west-1.rds.amazonaws.com/orders'
  const RDS_READER = 'postgres://app_iam@mydb.cluster-ro-abc.eu-west-1.rds.amazonaws.com/orders'

  it('maps DB_AUTH=iam to IAM auth for AWS_REGION; RDS host names get TLS by default, others from DB_TLS', () => {
    expect(
      configFromEnv({
        DB_DIALECT: 'postgres',
        DB_AUTH: 'iam',
        DB_WRITER_URL: RDS_WRITER,
        DB_READER_URLS: RDS_READER,
        AWS_REGION: 'eu-west-1',
      }),
    ).toEqual({
      dialect: 'postgres',
      writer: RDS_WRITER,
      readers: [RDS_READER],
      auth: { type: 'iam', region: 'eu-west-1' },
    })
    // An RDS database behind another DNS name (a Route 53 alias): DB_TLS turns TLS on.
    const alias = 'mysql://app_iam@orders-db.example.internal:3306/orders'
    expect(
      configFromEnv({
        DB_DIALECT: 'mysql',
        DB_AUTH: ' iam ',
        DB_WRITER_URL: alias,
        DB_TLS: 'rds',
        AWS_REGION: 'us-east-1',
      }),
    ).toEqual({
      dialect: 'mysql',
      writer: alias,
      readers: [],
      auth: { type: 'iam', region: 'us-east-1' },
      tls: 'rds',
    })
    // Without AWS_REGION, createDb takes the region from the RDS host name.
    expect(configFromEnv({ DB_DIALECT: 'postgres', DB_AUTH: 'iam', DB_WRITER_URL: RDS_WRITER }).auth).toEqual(
      {
        type: 'iam',
      },
    )
  })

  it('maps DB_AUTH=secret to DB_SECRET_ID in AWS_REGION; DB_WRITER_URL may be left to the secret', () => {
    const writer = 'mysql://mydb.cluster-abc.eu-west-1.rds.amazonaws.com/orders'
    expect(
      configFromEnv({
        DB_DIALECT: 'mysql',
        DB_AUTH: 'secret',
        DB_SECRET_ID: 'prod/orders/app',
        DB_WRITER_URL: writer,
        AWS_REGION: 'eu-west-1',
      }),
    ).toEqual({
      dialect: 'mysql',
      writer,
      readers: [],
      auth: { type: 'secret', secretId: 'prod/orders/app', region: 'eu-west-1' },
    })
    // The secret holds host, port and dbname: an endpoint without a host, and TLS as DB_TLS says.
    const arn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/orders/app-AbCdEf'
    expect(
      configFromEnv({ DB_DIALECT: 'postgres', DB_AUTH: 'secret', DB_SECRET_ID: arn, DB_TLS: 'rds' }),
    ).toEqual({
      dialect: 'postgres',
      writer: {},
      readers: [],
      auth: { type: 'secret', secretId: arn },
      tls: 'rds',
    })
  })

  it('maps DB_TLS for every DB_AUTH', () => {
    const base = { DB_DIALECT: 'postgres', DB_WRITER_URL: 'postgres://app:pw@db.internal/orders' }
    expect(configFromEnv(base).tls).toBeUndefined()
    expect(configFromEnv({ ...base, DB_TLS: 'verify-full' }).tls).toBe('verify-full')
    expect(configFromEnv({ ...base, DB_TLS: 'rds' }).tls).toBe('rds')
    expect(configFromEnv({ ...base, DB_TLS: 'false' }).tls).toBe(false)
    expect(configFromEnv({ ...base, DB_TLS: ' ' }).tls).toBeUndefined()
  })

  it('names the variable for each missing or wrong auth or TLS setting', () => {
    vi.stubEnv('AWS_REGION', undefined)
    const iam = { DB_DIALECT: 'postgres', DB_AUTH: 'iam', AWS_REGION: 'eu-west-1' }
    const secret = { DB_DIALECT: 'postgres', DB_AUTH: 'secret', DB_SECRET_ID: 'prod/orders/app' }
    const cases: Array<[Record<string, string>, string, RegExp]> = [
      [{ ...iam, DB_AUTH: 'IAM', DB_WRITER_URL: RDS_WRITER }, 'DB_AUTH', /'password'.*'iam' or 'secret'/],
      [{ ...iam }, 'DB_WRITER_URL', /is not set.*IAM user/],
      [
        { ...iam, DB_WRITER_URL: 'postgres://mydb.cluster-abc.eu-west-1.rds.amazonaws.com/orders' },
        'DB_WRITER_URL',
        /user name/,
      ],
      [
        {
          ...iam,
          DB_WRITER_URL: 'postgres://app_iam:pw@mydb.cluster-abc.eu-west-1.rds.amazonaws.com/orders',
        },
        'DB_WRITER_URL',
        /has a password/,
      ],
      [
        { ...iam, DB_WRITER_URL: 'postgres://app_iam@db.internal/orders' },
        'DB_TLS',
        /host in DB_WRITER_URL is not an \*\.rds\.amazonaws\.com name/,
      ],
      [
        {
          ...iam,
          DB_WRITER_URL: RDS_WRITER,
          DB_READER_URLS: `${RDS_READER},postgres://app_iam@10.0.0.7/orders`,
        },
        'DB_TLS',
        /DB_READER_URLS URL #2/,
      ],
      [{ ...iam, DB_WRITER_URL: RDS_WRITER, DB_TLS: 'false' }, 'DB_TLS', /needs TLS/],
      [
        { ...iam, DB_WRITER_URL: RDS_WRITER, DB_TLS: 'yes' },
        'DB_TLS',
        /expected 'verify-full', 'rds', 'require' or 'false'/,
      ],
      [
        { ...iam, AWS_REGION: '', DB_WRITER_URL: 'postgres://app_iam@db.internal/orders', DB_TLS: 'rds' },
        'AWS_REGION',
        /region/,
      ],
      [
        { ...iam, DB_WRITER_URL: RDS_WRITER, DB_SECRET_ID: 'prod/orders/app' },
        'DB_SECRET_ID',
        /DB_AUTH is 'iam'/,
      ],
      [
        { DB_DIALECT: 'postgres', DB_WRITER_URL: 'postgres://app:pw@h/db', DB_SECRET_ID: 'x' },
        'DB_SECRET_ID',
        /DB_AUTH=secret/,
      ],
      [{ ...secret, DB_SECRET_ID: ' ', DB_WRITER_URL: RDS_WRITER }, 'DB_SECRET_ID', /is not set/],
      [{ ...secret }, 'DB_TLS', /host comes from the secret/],
      [{ ...secret, DB_WRITER_URL: 'postgres://app:pw@h/db' }, 'DB_WRITER_URL', /has a password/],
      [
        { ...secret, DB_WRITER_URL: 'postgres://h/db', DB_READER_URLS: 'postgres://app:pw@r/db' },
        'DB_READER_URLS',
        /URL #1: has a password/,
      ],
    ]
    for (const [vars, variable, message] of cases) {
      const fn = env(vars)
      expect(settingOf(fn), JSON.stringify(vars)).toBe(variable)
      expect(messageOf(fn)).toMatch(message)
    }
  })

  it('never echoes a password given next to DB_AUTH=iam or secret', () => {
    const secret = 'Sup3rS3cretPw'
    const messages = [
      messageOf(
        env({
          DB_DIALECT: 'postgres',
          DB_AUTH: 'iam',
          DB_WRITER_URL: RDS_WRITER.replace('app_iam', `app_iam:${secret}`),
        }),
      ),
      messageOf(
        env({
          DB_DIALECT: 'mysql',
          DB_AUTH: 'secret',
          DB_SECRET_ID: 'prod/orders/app',
          DB_WRITER_URL: `mysql://app:${secret}@h/db`,
        }),
      ),
    ]
    for (const message of messages) {
      expect(message).toMatch(/DB_WRITER_URL: has a password/)
      expect(message).not.toContain(secret)
    }
  })

  it('getConnection() without options reads process.env and rejects with the ConfigError', async () => {
    vi.stubEnv('DB_DIALECT', 'postgres')
    vi.stubEnv('DB_AUTH', 'kerberos')
    vi.stubEnv('DB_WRITER_URL', 'postgres://app:pw@127.0.0.1:1/db')
    await expect(getConnection()).rejects.toMatchObject({ setting: 'DB_AUTH' })

    vi.stubEnv('DB_AUTH', 'password')
    vi.stubEnv('DB_READER_URLS', '')
    const db = await getConnection()
    expect(db.stats().writer.address).toBe('127.0.0.1:1/db')
  })

  it('getConnection() with DB_AUTH=iam signs a token with the credentials of the environment before connecting', async () => {
    // What Lambda gives the function: its region and the execution role's credentials.
    const secretAccessKey = `fake${randomBytes(18).toString('hex')}`
    registerSecret(secretAccessKey)
    vi.stubEnv('AWS_REGION', 'eu-west-1')
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'AKIAIOSFODNN7EXAMPLE')
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', secretAccessKey)
    vi.stubEnv('AWS_SESSION_TOKEN', undefined)
    vi.stubEnv('AWS_PROFILE', undefined)
    vi.stubEnv('DB_DIALECT', 'postgres')
    vi.stubEnv('DB_AUTH', 'iam')
    vi.stubEnv('DB_TLS', 'verify-full')
    // Nothing listens there: the token is signed (locally), then connecting fails.
    vi.stubEnv('DB_WRITER_URL', 'postgres://app_iam@127.0.0.1:1/orders')
    vi.stubEnv('DB_READER_URLS', undefined)
    const signer = vi.spyOn(Signer.prototype, 'getAuthToken')
    try {
      const db = await getConnection()
      const refreshed: unknown[] = []
      db.on('credentials-refreshed', (event) => refreshed.push(event))

      const error = await db
        .selectNoFrom(sql<number>`1`.as('one'))
        .execute()
        .then(
          () => undefined,
          (caught: unknown) => caught,
        )
      expect(error).toBeInstanceOf(Error)
      expect(error).not.toBeInstanceOf(MissingDriverError)
      expect(error).not.toBeInstanceOf(CredentialSourceError)
      expect(signer).toHaveBeenCalledTimes(1)
      expect(refreshed).toEqual([
        { endpoint: 'writer', authType: 'iam', reason: 'initial', durationMs: expect.any(Number) },
      ])
    } finally {
      signer.mockRestore()
    }
  })
})

describeEngines('getConnection from the environment with DB_AUTH=secret', (engine, info) => {
  afterEach(() => {
    secretsManager.reset()
  })

  it('connects to the host, port and database the secret names when DB_WRITER_URL is not set', async () => {
    // An RDS-shaped secret pointing at the shared test server (the mock replaces the AWS call only).
    const url = new URL(info.writerUrl)
    const secretString = JSON.stringify({
      engine: engine === 'postgres' ? 'postgres' : 'mysql',
      username: decodeURIComponent(url.username),
      password: decodeURIComponent(url.password),
      host: url.hostname,
      port: Number(url.port),
      dbname: url.pathname.slice(1),
    })
    secretsManager.on(GetSecretValueCommand).resolves({ SecretString: secretString })
    vi.stubEnv('DB_DIALECT', engine)
    vi.stubEnv('DB_AUTH', 'secret')
    vi.stubEnv('DB_SECRET_ID', 'prod/orders/app')
    vi.stubEnv('DB_TLS', 'false')
    vi.stubEnv('AWS_REGION', 'eu-west-1')
    vi.stubEnv('DB_WRITER_URL', undefined)
    vi.stubEnv('DB_READER_URLS', undefined)

    const db = await getConnection()
    const refreshed: unknown[] = []
    db.on('credentials-refreshed', (event) => refreshed.push(event))
    const rows = await db.selectNoFrom(sql<number>`1`.as('one')).execute()

    expect(rows.map((row) => Number(row.one))).toEqual([1])
    expect(secretsManager.commandCalls(GetSecretValueCommand)).toHaveLength(1)
    expect(secretsManager.commandCalls(GetSecretValueCommand)[0]?.args[0].input).toEqual({
      SecretId: 'prod/orders/app',
    })
    expect(refreshed).toMatchObject([{ endpoint: 'writer', authType: 'secret', reason: 'initial' }])
  })
})

describe('Lambda pool defaults', () => {
  it('apply under the settings the user gave', () => {
    expect(withLambdaDefaults({ dialect: 'postgres', writer: 'postgres://h/db' }).pool).toEqual(
      LAMBDA_POOL_DEFAULTS,
    )
    expect(
      withLambdaDefaults({ dialect: 'postgres', writer: 'postgres://h/db', pool: { max: 5, min: 1 } }).pool,
    ).toEqual({ ...LAMBDA_POOL_DEFAULTS, max: 5, min: 1 })
    expect(LAMBDA_POOL_DEFAULTS).toMatchObject({ max: 2, min: 0, validateAfterIdleMs: 5_000 })
  })
})
