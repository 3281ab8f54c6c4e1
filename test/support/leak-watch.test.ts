import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { createDb as createDbDirect } from '../../src/create-db.js'
import {
  ConfigError,
  createDb,
  getConnection,
  type ResilientEventMap,
  resetConnection,
} from '../../src/index.js'
import * as lambdaEntry from '../../src/lambda/index.js'
import { EVENT_NAMES } from './fault-helpers.js'
import {
  configSecrets,
  findLeaks,
  fingerprint,
  formatFindings,
  LEAK_WATCH_DIR_ENV,
  type LeakRecord,
  type SecretEntry,
  urlSecrets,
} from './leak-scan.js'
import { flushLeakRecords, isWatched } from './leak-watch.js'
import { getFreePort } from './ports.js'
import { registerSecret } from './secrets.js'

// The leak watch itself: the scanner must find what it is meant to find (or a clean run means nothing),
// and the createDb mock must reach every importer without changing what createDb does.

/** A fresh random secret, never registered: the planted leaks below stay inside this file's arrays. */
const planted = (prefix = 'plant') => `${prefix}${randomBytes(12).toString('hex')}`

const record = (
  text: string,
  kind: LeakRecord['kind'] = 'kysely-error',
  view = 'util.inspect',
): LeakRecord => ({
  kind,
  view,
  text,
  testPath: '/repo/test/x.test.ts',
  testName: 'suite > test',
})
const secret = (value: string, source = 'unit test'): SecretEntry => ({
  value,
  length: value.length,
  source,
  testPath: undefined,
})

/** The findings must name a secret, never show it, in any form. */
function expectNoSecretIn(text: string, value: string): void {
  expect(text).not.toContain(value)
  expect(text).not.toContain(encodeURIComponent(value))
}

describe('findLeaks', () => {
  it('finds a secret in an error message and names the record, the test and a fingerprint', () => {
    const value = planted()
    const error = new Error(`password authentication failed for ${value}`)
    const findings = findLeaks(
      [record('connect ECONNREFUSED'), record(inspect(error, { depth: 10 }))],
      [secret(value, 'cluster password (postgres)')],
    )
    expect(findings).toHaveLength(1)
    expect(findings[0]).toMatchObject({
      kind: 'kysely-error',
      view: 'util.inspect',
      testPath: '/repo/test/x.test.ts',
      testName: 'suite > test',
      form: 'raw',
      fingerprint: fingerprint(value),
      length: value.length,
      source: 'cluster password (postgres)',
    })
    expect(findings[0]?.excerpt).toContain('password authentication failed for <<LEAK>>')
    expectNoSecretIn(JSON.stringify(findings), value)
    const report = formatFindings(findings, '/repo')
    expect(report).toContain('test/x.test.ts')
    expect(report).toContain(fingerprint(value))
    expectNoSecretIn(report, value)
  })

  it("finds a secret only in an error's cause", () => {
    const value = planted()
    const error = new Error('query failed', { cause: new Error(`login as app:${value} refused`) })
    expect(error.message).not.toContain(value)
    const inspected = record(inspect(error, { depth: 10 }))
    const stack = record(String(error.stack), 'kysely-error', 'String(error.stack)')
    const findings = findLeaks([inspected, stack], [secret(value)])
    // util.inspect prints the cause chain; the stack alone does not, which is why both are recorded.
    expect(findings.map((finding) => finding.view)).toEqual(['util.inspect'])
  })

  it('finds a secret left in a stack trace after the message was scrubbed', () => {
    const value = planted()
    const error = new Error(`connect to postgres://app:${value}@db failed`)
    // V8 formats the stack (message included) on first read; once anything has read it (a logger, an
    // error tracker), scrubbing the message no longer reaches the stack.
    expect(error.stack).toContain(value)
    error.message = 'connect to postgres://app:***@db failed'
    const findings = findLeaks(
      [
        record(error.message, 'create-error', 'message'),
        record(String(error.stack), 'create-error', 'stack'),
      ],
      [secret(value)],
    )
    expect(findings.map((finding) => finding.view)).toEqual(['stack'])
  })

  it('finds a percent-encoded secret, as a password sits in a connection URL', () => {
    const value = `${planted('p@ss w/rd:')}%+`
    const url = new URL('postgres://app@db.internal/orders')
    url.password = value
    const encoded = `retry: could not reach postgres://app:${encodeURIComponent(value)}@db.internal/orders`
    const findings = findLeaks(
      [record(encoded, 'event', 'retry: JSON.stringify'), record(url.href, 'console', 'console.error')],
      [secret(value)],
    )
    expect(encoded).not.toContain(value)
    expect(findings.map((finding) => [finding.view, finding.form])).toEqual([
      ['retry: JSON.stringify', 'encodeURIComponent'],
      ['console.error', 'URL userinfo'],
    ])
    expectNoSecretIn(JSON.stringify(findings), value)
  })

  it('finds a secret escaped inside JSON, and with lower-case percent escapes', () => {
    const value = `${planted()}"\\/`
    const lower = encodeURIComponent(value).replace(/%[0-9A-F]{2}/g, (hex) => hex.toLowerCase())
    const findings = findLeaks(
      [record(JSON.stringify({ token: value }), 'event'), record(`?token=${lower}`, 'warning')],
      [secret(value)],
    )
    expect(findings.map((finding) => `${finding.kind}: ${finding.form}`).sort()).toEqual([
      'event: JSON-escaped',
      'warning: encodeURIComponent',
    ])
  })

  it('reports every record that holds the secret, however many share the text', () => {
    const value = planted()
    const text = `token ${value}`
    const findings = findLeaks(
      [record(text), record(text, 'console', 'console.warn'), record('clean')],
      [secret(value)],
    )
    expect(findings.map((finding) => finding.kind)).toEqual(['kysely-error', 'console'])
  })

  it('redacts every known secret from the excerpt, not only the one found', () => {
    const first = planted('first')
    const second = planted('second')
    const findings = findLeaks(
      [record(`a=${first} b=${encodeURIComponent(second)}`)],
      [secret(first), secret(second)],
    )
    expect(findings).toHaveLength(2)
    for (const finding of findings) {
      expectNoSecretIn(finding.excerpt, first)
      expectNoSecretIn(finding.excerpt, second)
    }
    // The hit itself is marked; every other secret is named by its fingerprint.
    const [ofFirst, ofSecond] = [fingerprint(first), fingerprint(second)].map((print) =>
      findings.find((finding) => finding.fingerprint === print),
    )
    expect(ofFirst?.excerpt).toBe(`a=<<LEAK>> b=<secret ${fingerprint(second)}>`)
    expect(ofSecond?.excerpt).toBe(`a=<secret ${fingerprint(first)}> b=<<LEAK>>`)
  })

  it('finds nothing in clean records', () => {
    const value = planted()
    const clean = [
      record(inspect(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { depth: 10 })),
      record(JSON.stringify({ endpoint: 'writer', category: 'unavailable', code: '57P01' }), 'event'),
      record('ResilientKysely { writer: Kysely {}, reader: Kysely {} }', 'db'),
      record(value.slice(0, -1), 'console'),
    ]
    expect(findLeaks(clean, [secret(value)])).toEqual([])
    expect(findLeaks([], [secret(value)])).toEqual([])
    expect(findLeaks(clean, [])).toEqual([])
  })

  it('ignores secrets too short to check and entries that carry only a length', () => {
    const findings = findLeaks(
      [record('password pw is short; secret is a common word')],
      [
        secret('pw'),
        secret('secret'),
        { length: 2, source: 'createDb config (too short)', testPath: undefined },
      ],
    )
    expect(findings).toEqual([])
  })
})

describe('registerSecret', () => {
  it('rejects a secret shorter than 8 characters, which would match by accident', () => {
    expect(() => registerSecret('short')).toThrow(RangeError)
    expect(() => registerSecret('1234567')).toThrow(/at least 8 characters \(got 7\)/)
    expect(() => registerSecret(7 as unknown as string)).toThrow(TypeError)
  })

  it('accepts a long one and writes it where the final check reads', () => {
    const value = planted('registered')
    registerSecret(value, 'leak-watch.test')
    const directory = process.env[LEAK_WATCH_DIR_ENV] as string
    const lines = readFileSync(join(directory, `secrets-${process.pid}.jsonl`), 'utf8').split('\n')
    const entry = lines.filter(Boolean).map((line) => JSON.parse(line) as SecretEntry)
    expect(entry).toContainEqual(expect.objectContaining({ value, source: 'leak-watch.test' }))
  })
})

describe('passwords found in a createDb config', () => {
  it('decodes URL passwords, including one given as a query parameter', () => {
    expect(urlSecrets('postgres://app:p%40ss%2Fw0rd@db/orders')).toEqual(['p@ss/w0rd'])
    expect(urlSecrets('postgres://db/orders?password=qp-secret-1')).toEqual(['qp-secret-1'])
    expect(urlSecrets('mysql://app@db/orders')).toEqual([])
  })

  it('finds the password of a URL that does not parse', () => {
    for (const url of [
      'postgres://app:pass%40word@db internal/orders',
      'postgres://app:pass word@db:99999/x',
    ]) {
      expect(() => new URL(url)).toThrow()
    }
    expect(urlSecrets('postgres://app:pass%40word@db internal/orders')).toEqual(['pass@word'])
    expect(urlSecrets('postgres://app:pass word@db:99999/x')).toEqual(['pass word'])
    expect(urlSecrets('postgres://db:0/x?password=qp%20secret')).toEqual(['qp secret'])
    expect(urlSecrets('not a url pass word')).toEqual([])
  })

  it('looks in object passwords, object URLs, writer lists, readers and fixed AWS keys', () => {
    const found = configSecrets({
      dialect: 'postgres',
      auth: { type: 'iam', credentials: { accessKeyId: 'AKIA-public', secretAccessKey: 'aws-secret-key' } },
      writer: ['postgres://app:writer-a-pw@a/db', { host: 'b', password: 'writer-b-pw' }],
      readers: {
        url: 'postgres://app:reader-pw@c/db',
        auth: { credentials: { sessionToken: 'aws-session' } },
      },
    })
    expect(found).toEqual([
      { value: 'aws-secret-key', setting: 'auth.credentials.secretAccessKey' },
      { value: 'writer-a-pw', setting: 'writer[0]' },
      { value: 'writer-b-pw', setting: 'writer[1].password' },
      { value: 'aws-session', setting: 'readers.auth.credentials.sessionToken' },
      { value: 'reader-pw', setting: 'readers.url' },
    ])
    expect(configSecrets(undefined)).toEqual([])
    expect(configSecrets({ writer: { host: 'db', password: 7 } })).toEqual([])
  })
})

/** The records this process wrote during the current test. */
function recordsOfThisTest(): LeakRecord[] {
  flushLeakRecords()
  const directory = process.env[LEAK_WATCH_DIR_ENV] as string
  const name = expect.getState().currentTestName
  return readFileSync(join(directory, `records-${process.pid}.jsonl`), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as LeakRecord)
    .filter((entry) => entry.testName === name)
}

/** A writer nothing listens on, so the first statement fails fast with ECONNREFUSED. */
async function deadWriter(): Promise<string> {
  return `postgres://app:${planted('deadpw')}@127.0.0.1:${await getFreePort()}/app`
}

describe('the createDb mock', () => {
  afterEach(async () => {
    await resetConnection()
    vi.restoreAllMocks()
  })

  it('reaches every importer: the package root, the module itself, getConnection and the lambda entry', async () => {
    const config = { dialect: 'postgres', writer: 'postgres://app@db.internal/app' } as const
    const dbs = [createDb(config), createDbDirect(config), await getConnection(config)]
    await resetConnection()
    dbs.push(await lambdaEntry.getConnection(config))
    for (const db of dbs) expect(isWatched(db)).toBe(true)
    await Promise.all(dbs.map((db) => db.destroy()))
  })

  it('records a ConfigError createDb throws, then rethrows the very same error', () => {
    let thrown: unknown
    try {
      createDb({ dialect: 'postgres', writer: 'postgres://app@db.internal/app', pool: { max: 0 } })
    } catch (error) {
      thrown = error
    }
    expect(thrown).toBeInstanceOf(ConfigError)
    const recorded = recordsOfThisTest().filter((entry) => entry.kind === 'create-error')
    expect(recorded.map((entry) => entry.view)).toEqual(['util.inspect', 'String(error.stack)'])
    expect(recorded[0]?.text).toContain((thrown as Error).message)
  })

  it('records how the db prints and its events', async () => {
    const db = createDb({ dialect: 'postgres', writer: await deadWriter(), retry: false })
    await expect(db.selectNoFrom((eb) => eb.lit(1).as('one')).execute()).rejects.toThrow()
    await db.destroy()
    const views = new Set(recordsOfThisTest().map((entry) => `${entry.kind}: ${entry.view}`))
    expect(views).toContain('db: util.inspect(db)')
    expect(views).toContain('db: JSON.stringify(db.stats())')
    expect(views).toContain('event: error: JSON.stringify')
    expect(views).toContain('event: error: util.inspect')
  })

  it("records errors without a log and prints nothing, as Kysely's default", async () => {
    const printed = [vi.spyOn(console, 'log'), vi.spyOn(console, 'error')]
    const db = createDb({ dialect: 'postgres', writer: await deadWriter(), retry: false })
    await expect(db.selectNoFrom((eb) => eb.lit(1).as('one')).execute()).rejects.toThrow('ECONNREFUSED')
    await db.destroy()
    for (const spy of printed) expect(spy).not.toHaveBeenCalled()
    const views = recordsOfThisTest().flatMap((entry) => (entry.kind === 'kysely-error' ? [entry.view] : []))
    expect(views).toEqual(['util.inspect', 'String(error.stack)'])
  })

  it("keeps a level array's meaning: ['error'] prints errors through Kysely's logger, ['query'] does not", async () => {
    const errors = vi.spyOn(console, 'error').mockImplementation(() => {})
    for (const log of [['error'], ['query']] as const) {
      const db = createDb({ dialect: 'postgres', writer: await deadWriter(), retry: false, log: [...log] })
      await expect(db.selectNoFrom((eb) => eb.lit(1).as('one')).execute()).rejects.toThrow('ECONNREFUSED')
      await db.destroy()
    }
    expect(errors).toHaveBeenCalledTimes(1)
    expect(String(errors.mock.calls[0]?.[0])).toMatch(/^kysely:error: Error: connect ECONNREFUSED/)
    expect(recordsOfThisTest().filter((entry) => entry.kind === 'kysely-error')).toHaveLength(4)
  })

  it("still calls the caller's log function with Kysely's event", async () => {
    const events: unknown[] = []
    const db = createDb({
      dialect: 'postgres',
      writer: await deadWriter(),
      retry: false,
      log: (event) => {
        events.push(event)
      },
    })
    const failure = await db
      .selectNoFrom((eb) => eb.lit(1).as('one'))
      .execute()
      .catch((error: unknown) => error)
    await db.destroy()
    expect(events).toEqual([expect.objectContaining({ level: 'error', error: failure })])
  })

  it('leaves an invalid log untouched, so its ConfigError is unchanged', () => {
    const config = { dialect: 'postgres', writer: 'postgres://app@db/app', log: 'query' }
    expect(() => createDb(config as never)).toThrow(expect.objectContaining({ setting: 'log' }))
  })

  it('records process warnings and console.warn/console.error, still printing them', async () => {
    const marker = planted('probe')
    const warned = new Promise((resolve) => process.once('warning', resolve))
    process.emitWarning(`leak-watch ${marker}`)
    await warned
    console.warn('leak-watch console.warn %s', marker)
    console.error('leak-watch console.error', { nested: { deeper: { marker } } })
    const texts = recordsOfThisTest().map((entry) => `${entry.kind}|${entry.view}|${entry.text}`)
    expect(texts).toContainEqual(expect.stringMatching(new RegExp(`^warning\\|util.inspect\\|.*${marker}`)))
    expect(texts).toContain(`console|console.warn|leak-watch console.warn ${marker}`)
    expect(texts).toContainEqual(expect.stringMatching(new RegExp(`^console\\|console.error\\|.*${marker}`)))
  })

  it('listens to every event a db emits', () => {
    // Fails to compile when ResilientEventMap gains an event this list (and so EVENT_NAMES) lacks.
    const every: { [K in keyof ResilientEventMap]: true } = {
      retry: true,
      failover: true,
      'reader-ejected': true,
      'reader-restored': true,
      'credentials-refreshed': true,
      'endpoint-unresponsive': true,
      'endpoint-responsive': true,
      error: true,
    }
    expect([...EVENT_NAMES].sort()).toEqual(Object.keys(every).sort())
  })
})
