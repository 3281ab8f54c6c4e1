import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type RawBuilder, sql } from 'kysely'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  ConfigError,
  type CreateDbConfig,
  getConnection,
  LAMBDA_POOL_DEFAULTS,
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

afterEach(async () => {
  await resetConnection()
  vi.unstubAllEnvs()
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

  it('without validation, the same freeze fails the first query (the test really simulates it)', async () => {
    const before = await invoke(engine, { ...options(), pool: {} })
    const db = await getConnection()
    killWhileFrozen(engine, info.adminWriterUrl, before)

    await expect(db.selectNoFrom(sessionIdExpr(engine).as('id')).execute()).rejects.toThrow()
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

  it('says IAM and Secrets Manager are not supported yet instead of pretending', () => {
    for (const auth of ['iam', 'secret']) {
      const fn = env({ DB_DIALECT: 'postgres', DB_WRITER_URL: 'postgres://app:pw@h/db', DB_AUTH: auth })
      expect(settingOf(fn)).toBe('DB_AUTH')
      expect(messageOf(fn)).toMatch(/not supported yet.*credentials support/)
    }
  })

  it('getConnection() without options reads process.env and rejects with the ConfigError', async () => {
    vi.stubEnv('DB_DIALECT', 'postgres')
    vi.stubEnv('DB_AUTH', 'iam')
    vi.stubEnv('DB_WRITER_URL', 'postgres://app:pw@127.0.0.1:1/db')
    await expect(getConnection()).rejects.toMatchObject({ setting: 'DB_AUTH' })

    vi.stubEnv('DB_AUTH', 'password')
    vi.stubEnv('DB_READER_URLS', '')
    const db = await getConnection()
    expect(db.stats().writer.address).toBe('127.0.0.1:1/db')
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
