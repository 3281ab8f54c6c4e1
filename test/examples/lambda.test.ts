// The Lambda example (examples/lambda): the handler invoked in-process against the shared clusters of
// both engines, a simulated freeze, and the esbuild bundle (one driver per engine).
import { spawnSync } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda'
import { sql } from 'kysely'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { type BundleOptions, bundle, isAwsSdkPackage } from '../../examples/lambda/bundle.js'
import { closeConnection, connection } from '../../examples/lambda/db.js'
import { apiGatewayEvent, localContext } from '../../examples/lambda/events.js'
import { handler } from '../../examples/lambda/handler.js'
import { handler as migrate } from '../../examples/lambda/migrate.js'
import { getConnection } from '../../src/lambda/index.js'
import { describeEngines, waitForReplica } from '../support/database.js'
import { killWhileFrozen } from '../support/freeze.js'
import { getFreePort } from '../support/ports.js'
import { registerSecret } from '../support/secrets.js'

const root = fileURLToPath(new URL('../..', import.meta.url))

interface Reply {
  readonly status: number
  readonly body: Record<string, unknown>
}

async function invoke(method: 'GET' | 'POST', path: string, body?: string): Promise<Reply> {
  const result = await handler(apiGatewayEvent(method, path, body), localContext(), () => undefined)
  if (typeof result !== 'object') throw new Error(`expected a structured result, got ${typeof result}`)
  const structured: APIGatewayProxyStructuredResultV2 = result
  return {
    status: structured.statusCode ?? 0,
    body: JSON.parse(structured.body ?? 'null') as Record<string, unknown>,
  }
}

/**
 * Runs the bundled handler once in a fresh process, in a directory with no node_modules (only what is
 * inside the bundle is available), and returns what it answered or the error it threw.
 */
function runBundle(
  outfile: string,
  env: Record<string, string>,
  event: unknown,
): { stderr: string; reply?: { statusCode: number }; error?: { name: string; message: string } } {
  const script = `const { handler } = await import(${JSON.stringify(pathToFileURL(outfile).href)})
try {
  console.log(JSON.stringify({ reply: await handler(JSON.parse(process.env.EVENT), {}, () => {}) }))
} catch (error) {
  console.log(JSON.stringify({ error: { name: error.name, message: error.message } }))
}
process.exit(0)`
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: dirname(outfile),
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', ...env, EVENT: JSON.stringify(event) },
    timeout: 30_000,
  })
  const last = result.stdout.trim().split('\n').at(-1) ?? '{}'
  return { stderr: result.stderr, ...(JSON.parse(last) as object) }
}

describeEngines('lambda example', (engine, info) => {
  const email = `ada.${engine}.${randomUUID()}@example.com`
  let createdId: number

  beforeEach(async () => {
    await closeConnection()
    vi.stubEnv('DB_DIALECT', engine)
    vi.stubEnv('DB_WRITER_URL', info.writerUrl)
    vi.stubEnv('DB_READER_URLS', info.readerUrl)
  })

  afterEach(async () => {
    await closeConnection()
    vi.unstubAllEnvs()
    vi.restoreAllMocks()
  })

  /** The JSON log lines the functions wrote to stdout while `fn` ran. */
  async function logLines(fn: () => Promise<unknown>): Promise<Array<Record<string, unknown>>> {
    const logged = vi.spyOn(console, 'log').mockImplementation(() => {})
    try {
      await fn()
      return logged.mock.calls.map(([line]) => JSON.parse(String(line)) as Record<string, unknown>)
    } finally {
      logged.mockRestore()
    }
  }

  it('the migrate function applies the schema once, as its own step; a second run applies nothing', async () => {
    // Two containers deploying at once: the Migrator's lock makes one of them apply, the other wait.
    const lines = await logLines(async () => {
      const [first, second] = await Promise.all([migrate(), migrate()])
      expect([...first.applied, ...second.applied]).toEqual(['2026_12_01_001_lambda_users'])
      expect(await migrate()).toEqual({ applied: [] })
    })
    expect(lines).toContainEqual({
      level: 'info',
      msg: 'migration 2026_12_01_001_lambda_users: Success',
      migration: '2026_12_01_001_lambda_users',
      status: 'Success',
    })
    await waitForReplica(engine) // the table itself must exist on the reader
  })

  it('POST /users creates a user (201)', async () => {
    const reply = await invoke('POST', '/users', JSON.stringify({ name: 'Ada Lovelace', email }))
    expect(reply.status).toBe(201)
    expect(reply.body).toMatchObject({ name: 'Ada Lovelace', email })
    expect(reply.body.id).toEqual(expect.any(Number))
    createdId = Number(reply.body.id)
  })

  it('GET /users/{id} reads it back once the reader has it (200)', async () => {
    await waitForReplica(engine)
    const reply = await invoke('GET', `/users/${createdId}`)
    expect(reply.status).toBe(200)
    expect(reply.body).toMatchObject({ id: createdId, name: 'Ada Lovelace', email })
  })

  it('answers bad input with 400 and a message, an unknown id with 404', async () => {
    const badJson = await invoke('POST', '/users', '{"name": "Ada",')
    expect(badJson.status).toBe(400)
    expect(badJson.body.error).toMatch(/not valid JSON/)

    const missing = await invoke('POST', '/users', JSON.stringify({ name: 'Ada' }))
    expect(missing.status).toBe(400)
    expect(missing.body.error).toMatch(/'email'/)

    const notObject = await invoke('POST', '/users', '[1, 2]')
    expect(notObject.status).toBe(400)

    const badId = await invoke('GET', '/users/abc')
    expect(badId.status).toBe(400)
    const hugeId = await invoke('GET', '/users/99999999999')
    expect(hugeId.status).toBe(400)

    const unknown = await invoke('GET', '/users/2147483000')
    expect(unknown.status).toBe(404)
    expect(unknown.body.error).toMatch(/no user with id 2147483000/)

    const noRoute = await invoke('GET', '/nothing')
    expect(noRoute.status).toBe(404)
  })

  it('serves the next invocation after the server killed its sessions while the container was frozen', async () => {
    await waitForReplica(engine)
    expect((await invoke('GET', `/users/${createdId}`)).status).toBe(200)

    // The sessions this container's db holds: the reader's (routed read) and the writer's.
    const { db } = await connection()
    const idExpr = engine === 'postgres' ? sql<number>`pg_backend_pid()` : sql<number>`connection_id()`
    const onReader = await db.selectNoFrom(idExpr.as('id')).executeTakeFirstOrThrow()
    const onWriter = await db.writer.selectNoFrom(idExpr.as('id')).executeTakeFirstOrThrow()
    killWhileFrozen(engine, info.adminReaderUrl, [Number(onReader.id)])
    killWhileFrozen(engine, info.adminWriterUrl, [Number(onWriter.id)])

    const read = await invoke('GET', `/users/${createdId}`)
    expect(read).toMatchObject({ status: 200, body: { id: createdId, email } })
    const write = await invoke(
      'POST',
      '/users',
      JSON.stringify({ name: 'Grace Hopper', email: `g.${email}` }),
    )
    expect(write.status).toBe(201)

    // The killed sessions really are gone: the db now talks through new ones.
    const readerNow = await db.selectNoFrom(idExpr.as('id')).executeTakeFirstOrThrow()
    const writerNow = await db.writer.selectNoFrom(idExpr.as('id')).executeTakeFirstOrThrow()
    expect(Number(readerNow.id)).not.toBe(Number(onReader.id))
    expect(Number(writerNow.id)).not.toBe(Number(onWriter.id))
  })

  it('logs one JSON line per database event: a reader that is down is ejected, reads use the writer', async () => {
    const deadReader = new URL(info.readerUrl)
    deadReader.port = String(await getFreePort())
    vi.stubEnv('DB_READER_URLS', deadReader.href)
    let reply: Reply | undefined
    const lines = await logLines(async () => {
      reply = await invoke('GET', `/users/${createdId}`)
    })
    expect(reply?.status).toBe(200)
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 'warn',
        event: 'reader-ejected',
        endpoint: 'reader-0',
        reason: 'unreachable',
      }),
    )
    // Endpoint names only: no host, port or credentials in what goes to CloudWatch.
    expect(JSON.stringify(lines)).not.toContain(deadReader.port)
    if (info.password) expect(JSON.stringify(lines)).not.toContain(info.password)
  })

  it('a writer that is down: POST /users is a 503 with Retry-After and one JSON line saying why', async () => {
    const deadWriter = new URL(info.writerUrl)
    deadWriter.port = String(await getFreePort())
    // getConnection() keeps the first call's config: this one, with a short retry budget (the
    // library's default, 10 s, is for production), is what the handler gets.
    await getConnection({
      dialect: engine,
      writer: deadWriter.href,
      pool: { acquireTimeoutMs: 500, connectTimeoutMs: 500 },
      retry: { maxElapsedMs: 200 },
    })
    let result: APIGatewayProxyStructuredResultV2 | undefined
    const lines = await logLines(async () => {
      const reply = await handler(
        apiGatewayEvent('POST', '/users', JSON.stringify({ name: 'Ada', email: `down.${email}` })),
        localContext(),
        () => undefined,
      )
      if (typeof reply === 'object') result = reply
    })
    expect(result?.statusCode).toBe(503)
    expect(result?.headers?.['retry-after']).toBe('1')
    expect(lines).toContainEqual(
      expect.objectContaining({
        level: 'warn',
        msg: 'request failed',
        method: 'POST',
        category: 'unavailable',
      }),
    )
    expect(JSON.stringify(lines)).not.toContain(deadWriter.port)
    if (info.password) expect(JSON.stringify(lines)).not.toContain(info.password)
  })

  it('invoke.ts migrates, posts a user then reads it back against DB_WRITER_URL', () => {
    const result = spawnSync(join(root, 'node_modules/.bin/tsx'), ['examples/lambda/invoke.ts'], {
      cwd: root,
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '', DB_DIALECT: engine, DB_WRITER_URL: info.writerUrl },
      timeout: 60_000,
    })
    expect(result.status, result.stderr).toBe(0)
    expect(result.stdout).toMatch(/^migrate -> \{"applied":\[\]\}$/m)
    expect(result.stdout).toMatch(/^POST \/users -> 201 /m)
    expect(result.stdout).toMatch(/^GET \/users\/\d+ -> 200 /m)
  })

  it('the bundled handler (one driver) serves a request in a fresh process', async () => {
    const outdir = mkdtempSync(join(tmpdir(), 'lambda-bundle-test-'))
    try {
      const { outfile } = await bundle(engine, outdir)
      const result = runBundle(
        outfile,
        { DB_DIALECT: engine, DB_WRITER_URL: info.writerUrl },
        apiGatewayEvent('GET', `/users/${createdId}`),
      )
      expect(result.stderr).toBe('')
      expect(result.reply?.statusCode).toBe(200)
    } finally {
      rmSync(outdir, { recursive: true, force: true })
    }
  })

  describe('configured for IAM from the environment (DB_AUTH=iam)', () => {
    // What Lambda gives the function: its region and the execution role's credentials. Local servers
    // cannot check an IAM token, so these tests stop at what happens before the server's answer.
    const secretAccessKey = `fake${randomBytes(18).toString('hex')}`
    const iamEnv = (): Record<string, string> => {
      const url = new URL(info.writerUrl)
      url.password = ''
      // mysql2 checks a certificate for an IP address against 'localhost', so createDb refuses
      // verify-full for one; by name, the request gets as far as the server.
      if (engine === 'mysql') url.hostname = 'localhost'
      return {
        DB_DIALECT: engine,
        DB_AUTH: 'iam',
        DB_WRITER_URL: url.toString(),
        // The local server is not an *.rds.amazonaws.com host: TLS must be asked for.
        DB_TLS: 'verify-full',
        AWS_REGION: 'eu-west-1',
        AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE',
        AWS_SECRET_ACCESS_KEY: secretAccessKey,
      }
    }
    let outdir: string
    beforeAll(() => {
      registerSecret(secretAccessKey)
      outdir = mkdtempSync(join(tmpdir(), 'lambda-bundle-iam-'))
    })
    afterAll(() => {
      rmSync(outdir, { recursive: true, force: true })
    })

    async function invokeBundled(options: BundleOptions) {
      const { outfile } = await bundle(engine, join(outdir, options.awsSdk ?? 'external'), options)
      return runBundle(outfile, iamEnv(), apiGatewayEvent('GET', '/users/1'))
    }

    it('with the AWS SDK external and no runtime to provide it, fails clearly, naming @aws-sdk/rds-signer', async () => {
      const result = await invokeBundled({})
      expect(result.stderr).toBe('')
      expect(result.error?.name).toBe('MissingDriverError')
      expect(result.error?.message).toContain("needs the '@aws-sdk/rds-signer' package for auth type 'iam'")
    })

    it('with the AWS SDK bundled, signs the token from inside the bundle before connecting', async () => {
      const result = await invokeBundled({ awsSdk: 'bundled' })
      expect(result.stderr).toBe('')
      // The token is signed before the connection opens, so reaching the server proves signing worked
      // (a missing or failing signer would be a MissingDriverError or CredentialSourceError). The
      // local server, having no TLS to offer, is what stops the request.
      expect(result.error?.message).toMatch(
        engine === 'postgres' ? /does not support SSL connections/ : /does not support secure connection/,
      )
    })
  })
})

describe('lambda example bundle script', () => {
  let outdir: string
  beforeAll(() => {
    outdir = mkdtempSync(join(tmpdir(), 'lambda-bundle-script-'))
  })
  afterAll(() => {
    rmSync(outdir, { recursive: true, force: true })
  })

  it('bundles each engine without the other engine’s driver and prints the sizes', () => {
    const result = spawnSync(join(root, 'node_modules/.bin/tsx'), ['examples/lambda/bundle.ts', outdir], {
      cwd: root,
      encoding: 'utf8',
      timeout: 60_000,
    })
    expect(result.status, result.stderr).toBe(0)
    expect(result.stdout).toMatch(/^postgres: \d+\.\d KiB/m)
    expect(result.stdout).toMatch(/^mysql: \d+\.\d KiB/m)
    expect(result.stdout).toContain('ok: no mysql2 input in the postgres bundle')
    expect(result.stdout).toContain('ok: no pg / pg-cursor input in the mysql bundle')
    expect(result.stdout.match(/^ {2}ok: no @aws-sdk input/gm)).toHaveLength(2)
  })

  it('the metafiles confirm it: no node_modules/mysql2 in postgres, no node_modules/pg in mysql', async () => {
    const postgres = await bundle('postgres', outdir)
    const mysql = await bundle('mysql', outdir)
    const names = (report: typeof postgres) => report.packages.map(({ name }) => name)
    expect(names(postgres)).toContain('pg')
    expect(names(postgres)).not.toContain('mysql2')
    expect(names(mysql)).toContain('mysql2')
    expect(names(mysql)).not.toContain('pg')
    expect(names(mysql)).not.toContain('pg-cursor')
    expect(postgres.bytes).toBeGreaterThan(0)
    // The AWS SDK is left to the Lambda runtime by default.
    expect([...names(postgres), ...names(mysql)].filter(isAwsSdkPackage)).toEqual([])
  })

  it('with awsSdk: bundled, the SDK packages the library imports are inside', async () => {
    const external = await bundle('postgres', join(outdir, 'external'))
    const bundled = await bundle('postgres', join(outdir, 'bundled'), { awsSdk: 'bundled' })
    const names = bundled.packages.map(({ name }) => name)
    expect(names).toContain('@aws-sdk/rds-signer')
    expect(names).toContain('@aws-sdk/client-secrets-manager')
    expect(names).not.toContain('mysql2')
    expect(bundled.bytes).toBeGreaterThan(external.bytes)
  })
})
