// The Express example (examples/express) against the shared clusters of both engines, over real HTTP,
// plus `npm run demo` end to end.
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { createDb } from 'kysely-resilient'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createApp } from '../../examples/express/app.js'
import {
  type AppDatabase,
  createDatabase,
  type Database,
  type LogEntry,
  type Logger,
  logDatabaseEvents,
  type ResilientDb,
} from '../../examples/express/db.js'
import { migrateToLatest } from '../../examples/express/migrate.js'
import { type Metrics, startMetrics } from '../../examples/express/telemetry.js'
import { findPostgresBinDir } from '../support/binaries.js'
import { describeEngines, waitForReplica } from '../support/database.js'
import { PollAbort, pollUntil } from '../support/poll.js'
import { getFreePort, isPortOpen } from '../support/ports.js'
import { queryOnce } from '../support/sql.js'

interface Reply {
  readonly status: number
  readonly headers: Headers
  readonly text: string
  readonly body: Record<string, unknown>
}

type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE'

interface Logged extends LogEntry {
  readonly level: string
}

/** A logger that keeps what it is given, for the assertions. */
function collectingLogger(): { log: Logger; lines: Logged[] } {
  const lines: Logged[] = []
  return { lines, log: (level, entry) => lines.push({ level, ...entry }) }
}

/** Serves `db` on a free local port until `close`. */
async function serve(
  db: ResilientDb<Database>,
  options: Parameters<typeof createApp>[1],
): Promise<{ url: string; close: () => Promise<void> }> {
  const app = createApp(db, options)
  const server = await new Promise<Server>((resolve, reject) => {
    const listening = app.listen(0, '127.0.0.1', (error?: Error) =>
      error ? reject(error) : resolve(listening),
    )
  })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

async function send(
  url: string,
  method: Method,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  })
  const text = await response.text()
  return {
    status: response.status,
    headers: response.headers,
    text,
    body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>),
  }
}

/** The series of one metric in a Prometheus text exposition, each with its labels and value. */
function series(text: string, name: string): Array<{ labels: Record<string, string>; value: number }> {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`))
    .map((line) => {
      const close = line.lastIndexOf('}')
      const labels = Object.fromEntries(
        Array.from(line.slice(name.length + 1, close).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g), (match) => [
          match[1] as string,
          match[2] as string,
        ]),
      )
      return { labels, value: Number(line.slice(close + 1).trim()) }
    })
}

// One meter provider for the whole file, registered before any db opens (as server.ts does before
// createDatabase): every db below records through it, and /metrics serves what they recorded.
let telemetry: Metrics | undefined
const metricsToken = randomUUID()
beforeAll(() => {
  telemetry = startMetrics()
})
afterAll(async () => {
  await telemetry?.shutdown()
})

/** GET /metrics on `url` with the scrape token: the Prometheus text. */
async function scrape(url: string): Promise<string> {
  const response = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${metricsToken}` } })
  expect(response.status).toBe(200)
  expect(response.headers.get('content-type')).toMatch(/^text\/plain/)
  return response.text()
}

describeEngines('express example', (engine, info) => {
  let database: AppDatabase
  let server: { url: string; close: () => Promise<void> }
  const { log, lines } = collectingLogger()
  const adminToken = randomUUID()
  // Unique per engine and per run: the shared servers (and external ones) outlive this file.
  const run = randomUUID().slice(0, 8)
  const email = (name: string) => `${name}.${engine}.${run}@example.com`

  const call = (method: Method, path: string, body?: unknown, headers?: Record<string, string>) =>
    send(server.url, method, path, body, headers)
  /** Creates a user and returns its id. */
  const createUser = async (name: string): Promise<number> => {
    const reply = await call('POST', '/users', { name, email: email(`${name}.${randomUUID().slice(0, 8)}`) })
    expect(reply.status, reply.text).toBe(201)
    return Number(reply.body.id)
  }
  const credits = async (id: number): Promise<number> => {
    const row = await database.db.writer
      .selectFrom('users')
      .select('credits')
      .where('id', '=', id)
      .executeTakeFirst()
    return Number(row?.credits)
  }
  const readerQueries = () => database.db.stats().readers[0]?.queries ?? 0

  beforeAll(async () => {
    database = createDatabase({
      DB_DIALECT: engine,
      DB_WRITER_URL: info.writerUrl,
      DB_READER_URLS: info.readerUrl,
    })
    logDatabaseEvents(database.db, log)
    await migrateToLatest(database.db, database.dialect, log)
    await waitForReplica(engine) // the tables themselves must exist on the reader
    server = await serve(database.db, {
      dialect: database.dialect,
      log,
      adminToken,
      metrics: { token: metricsToken, handle: (telemetry as Metrics).handle },
    })
  })

  afterAll(async () => {
    await server?.close()
    await database?.db.destroy()
  })

  it('migrate: the Migrator applied the schema once; a second run (even two at once) applies nothing', async () => {
    const again = await Promise.all([
      migrateToLatest(database.db, database.dialect, log),
      migrateToLatest(database.db, database.dialect, log),
    ])
    expect(again).toEqual([[], []])
    const executed = await database.db.writer
      .selectFrom('kysely_migration' as never)
      .select('name' as never)
      .execute()
    expect(executed.map((row) => (row as { name: string }).name)).toEqual([
      '2026_12_01_001_users',
      '2026_12_01_002_credits',
    ])
  })

  it('CRUD: create, read (token round trip), update with a read-your-writes read, delete', async () => {
    const created = await call('POST', '/users', { name: ' Ada Lovelace ', email: email('ada') })
    expect(created.status).toBe(201)
    expect(created.body).toMatchObject({ name: 'Ada Lovelace', email: email('ada'), credits: 100 })
    expect(new Date(String(created.body.created_at)).getTime()).not.toBeNaN()
    const id = Number(created.body.id)
    const token = created.headers.get('x-consistency-token')
    expect(token).toMatch(/^[\w.-]+$/)

    // Right after the write, no waiting: the token makes the read see it wherever it runs.
    const read = await call('GET', `/users/${id}`, undefined, { 'x-consistency-token': token ?? '' })
    expect(read).toMatchObject({ status: 200, body: { id, email: email('ada') } })

    const patched = await call('PATCH', `/users/${id}`, { name: 'Augusta Ada King' })
    expect(patched.status, patched.text).toBe(200)
    // The read in the same request saw the update, whichever endpoint served it.
    expect(patched.body).toMatchObject({ id, name: 'Augusta Ada King', email: email('ada'), credits: 100 })
    const patchedEmail = await call('PATCH', `/users/${id}`, { email: email('ada.king') })
    expect(patchedEmail.body).toMatchObject({ name: 'Augusta Ada King', email: email('ada.king') })

    const token2 = patchedEmail.headers.get('x-consistency-token') ?? ''
    const reread = await call('GET', `/users/${id}`, undefined, { 'x-consistency-token': token2 })
    expect(reread.body).toMatchObject({ name: 'Augusta Ada King', email: email('ada.king') })

    const deleted = await call('DELETE', `/users/${id}`)
    expect(deleted.status).toBe(204)
    expect(deleted.text).toBe('')
    const gone = await call('GET', `/users/${id}`, undefined, {
      'x-consistency-token': deleted.headers.get('x-consistency-token') ?? '',
    })
    expect(gone.status).toBe(404)
    expect((await call('DELETE', `/users/${id}`)).status).toBe(404)
    expect((await call('PATCH', `/users/${id}`, { name: 'Nobody' })).status).toBe(404)
  })

  it('plain reads without a token go to the reader', async () => {
    const id = await createUser('reader')
    await waitForReplica(engine)
    const before = readerQueries()
    const reply = await call('GET', `/users/${id}`)
    expect(reply.status).toBe(200)
    expect(readerQueries()).toBeGreaterThan(before)
  })

  it('GET /users pages by keyset (?limit=&after=): ascending ids, next until the end, no repeats', async () => {
    const ids = [await createUser('page1'), await createUser('page2'), await createUser('page3')]
    const token = (await call('GET', '/health')).headers.get('x-consistency-token')
    expect(token).toBeNull() // reads issue no token
    await waitForReplica(engine)
    const seen: number[] = []
    let after = String(Math.min(...ids) - 1)
    for (let page = 0; page < 10; page++) {
      const reply = await call('GET', `/users?limit=2&after=${after}`)
      expect(reply.status).toBe(200)
      const users = reply.body.users as Array<{ id: number }>
      expect(users.length).toBeLessThanOrEqual(2)
      seen.push(...users.map((user) => user.id))
      if (reply.body.next === null) break
      after = String(reply.body.next)
    }
    expect(seen).toEqual([...new Set(seen)].sort((a, b) => a - b))
    expect(seen).toEqual(expect.arrayContaining(ids))
    const all = await call('GET', '/users')
    expect((all.body.users as unknown[]).length).toBeLessThanOrEqual(20)
  })

  it('answers a duplicate email with 409, on create and on update', async () => {
    const taken = email(`taken.${randomUUID().slice(0, 8)}`)
    expect((await call('POST', '/users', { name: 'First', email: taken })).status).toBe(201)
    const duplicate = await call('POST', '/users', { name: 'Second', email: taken })
    expect(duplicate.status).toBe(409)
    expect(duplicate.body.error).toMatch(/email .* already exists/)
    const other = await createUser('other')
    const update = await call('PATCH', `/users/${other}`, { email: taken })
    expect(update.status).toBe(409)
    expect(update.body.error).toMatch(/already exists/)
  })

  it('serves concurrent creates, reads, updates and deletes correctly', async () => {
    const names = Array.from({ length: 12 }, (_, i) => `concurrent-${i}`)
    const created = await Promise.all(
      names.map((name) =>
        call('POST', '/users', { name, email: email(`${name}.${randomUUID().slice(0, 8)}`) }),
      ),
    )
    expect(created.map((reply) => reply.status)).toEqual(names.map(() => 201))
    const ids = created.map((reply) => Number(reply.body.id))
    expect(new Set(ids).size).toBe(ids.length)

    // Each read carries the token of its own create, and must see exactly its own user.
    const [reads, patches] = await Promise.all([
      Promise.all(
        created.map((reply, i) =>
          call('GET', `/users/${ids[i]}`, undefined, {
            'x-consistency-token': reply.headers.get('x-consistency-token') ?? '',
          }),
        ),
      ),
      Promise.all(ids.slice(0, 6).map((id, i) => call('PATCH', `/users/${id}`, { name: `renamed-${i}` }))),
    ])
    reads.forEach((reply, i) => {
      expect(reply.status).toBe(200)
      expect(reply.body.id).toBe(ids[i])
    })
    patches.forEach((reply, i) => {
      expect(reply.status).toBe(200)
      expect(reply.body).toMatchObject({ id: ids[i], name: `renamed-${i}` })
    })
    const deletes = await Promise.all(ids.slice(6).map((id) => call('DELETE', `/users/${id}`)))
    expect(deletes.map((reply) => reply.status)).toEqual(ids.slice(6).map(() => 204))
  })

  it('answers every class of bad input with 400 and a message saying what is wrong', async () => {
    const key = { 'idempotency-key': randomUUID() }
    const cases: Array<[Method, string, unknown, Record<string, string> | undefined, RegExp]> = [
      // bodies
      ['POST', '/users', '{"name": "Ada", ', undefined, /not valid JSON/],
      ['POST', '/users', '[1, 2]', undefined, /JSON object/],
      ['POST', '/users', '"text"', undefined, /JSON/],
      ['POST', '/users', undefined, undefined, /JSON object/],
      ['POST', '/users', { email: email('x') }, undefined, /name is required/],
      ['POST', '/users', { name: 'Ada' }, undefined, /email is required/],
      [
        'POST',
        '/users',
        { name: 'Ada', email: email('x'), credits: 1e6 },
        undefined,
        /unknown field 'credits'/,
      ],
      ['POST', '/users', { name: 42, email: email('x') }, undefined, /\bname\b/],
      ['POST', '/users', { name: '   ', email: email('x') }, undefined, /\bname\b/],
      ['POST', '/users', { name: 'x'.repeat(101), email: email('x') }, undefined, /\bname\b/],
      ['POST', '/users', { name: 'Ada', email: 'not-an-email' }, undefined, /\bemail\b/],
      ['POST', '/users', { name: 'Ada', email: `${'x'.repeat(200)}@example.com` }, undefined, /\bemail\b/],
      ['POST', '/users', { name: 'Ada', email: 7 }, undefined, /\bemail\b/],
      ['PATCH', '/users/1', {}, undefined, /at least one of name, email/],
      ['PATCH', '/users/1', { id: 2 }, undefined, /unknown field 'id'/],
      ['PATCH', '/users/1', { name: null }, undefined, /\bname\b/],
      // ids
      ...['abc', '1.5', '0', '-3', '99999999999'].flatMap((id): typeof cases => [
        ['GET', `/users/${id}`, undefined, undefined, /\bid\b/],
        ['PATCH', `/users/${id}`, { name: 'Ada' }, undefined, /\bid\b/],
        ['DELETE', `/users/${id}`, undefined, undefined, /\bid\b/],
        ['POST', `/users/${id}/credits`, { to: 1, amount: 1 }, key, /\bid\b/],
      ]),
      // paging
      ...['abc', '0', '101', '1.5', '-1', ''].map((limit): (typeof cases)[number] => [
        'GET',
        `/users?limit=${limit}`,
        undefined,
        undefined,
        /\blimit\b/,
      ]),
      ['GET', '/users?after=abc', undefined, undefined, /\bafter\b/],
      ['GET', '/users?after=-1', undefined, undefined, /\bafter\b/],
      ['GET', '/users?limit=1&limit=2', undefined, undefined, /\blimit\b/],
      ['GET', '/users?offset=10', undefined, undefined, /unknown query parameter 'offset'/],
      // transfers
      ['POST', '/users/1/credits', { to: 2, amount: 1 }, undefined, /Idempotency-Key/],
      [
        'POST',
        '/users/1/credits',
        { to: 2, amount: 1 },
        { 'idempotency-key': 'spaces are bad' },
        /Idempotency-Key/,
      ],
      ['POST', '/users/1/credits', { amount: 1 }, key, /to is required/],
      ['POST', '/users/1/credits', { to: 2 }, key, /amount is required/],
      ['POST', '/users/1/credits', { to: 2, amount: 0 }, key, /\bamount\b/],
      ['POST', '/users/1/credits', { to: 2, amount: '5' }, key, /\bamount\b/],
      ['POST', '/users/1/credits', { to: 2, amount: 1.5 }, key, /\bamount\b/],
      ['POST', '/users/1/credits', { to: 'two', amount: 1 }, key, /\bto\b/],
      ['POST', '/users/1/credits', { to: 1, amount: 1 }, key, /another user/],
      ['POST', '/users/1/credits', { to: 2, amount: 1, memo: 'hi' }, key, /unknown field 'memo'/],
      // a consistency token this service did not issue
      ['GET', '/users/1', undefined, { 'x-consistency-token': 'forged' }, /x-consistency-token/],
    ]
    const before = database.db.stats().writer.queries
    const replies = await Promise.all(
      cases.map(([method, path, body, headers]) => call(method, path, body, headers)),
    )
    replies.forEach((reply, i) => {
      const [method, path, body, , message] = cases[i] ?? []
      const what = `${method} ${path} ${JSON.stringify(body)}`
      expect(reply.status, what).toBe(400)
      expect(reply.body.error, what).toMatch(message as RegExp)
    })
    // Rejected before any statement ran.
    expect(database.db.stats().writer.queries).toBe(before)
  })

  it('answers unknown routes and methods with a JSON 404', async () => {
    for (const [method, path] of [
      ['GET', '/nowhere'],
      ['POST', '/users/1'],
    ] as const) {
      const reply = await call(method, path, method === 'POST' ? {} : undefined)
      expect(reply.status).toBe(404)
      expect(reply.body.error).toEqual(expect.any(String))
    }
  })

  describe('POST /users/:id/credits (withRetry, idempotent by Idempotency-Key)', () => {
    it('moves credits once: 201, then 200 replayed for the same key; 409 for a reused key or too few credits; 404 for an unknown user', async () => {
      const [from, to] = [await createUser('payer'), await createUser('payee')]
      const key = { 'idempotency-key': randomUUID() }
      const first = await call('POST', `/users/${from}/credits`, { to, amount: 30 }, key)
      expect(first.status, first.text).toBe(201)
      expect(first.body).toMatchObject({
        replayed: false,
        transfer: { from, to, amount: 30, requestId: key['idempotency-key'] },
      })
      const again = await call('POST', `/users/${from}/credits`, { to, amount: 30 }, key)
      expect(again.status).toBe(200)
      expect(again.body).toMatchObject({ replayed: true, transfer: { from, to, amount: 30 } })
      expect([await credits(from), await credits(to)]).toEqual([70, 130])

      const reused = await call('POST', `/users/${from}/credits`, { to, amount: 31 }, key)
      expect(reused.status).toBe(409)
      expect(reused.body.error).toMatch(/already used for a different transfer/)
      const tooMuch = await call(
        'POST',
        `/users/${from}/credits`,
        { to, amount: 71 },
        { 'idempotency-key': randomUUID() },
      )
      expect(tooMuch.status).toBe(409)
      expect(tooMuch.body.error).toMatch(/has 70 credits, fewer than 71/)
      const unknown = await call(
        'POST',
        `/users/${from}/credits`,
        { to: 2147483647, amount: 1 },
        { 'idempotency-key': randomUUID() },
      )
      expect(unknown.status).toBe(404)
      const unknownFrom = await call(
        'POST',
        '/users/2147483647/credits',
        { to, amount: 1 },
        { 'idempotency-key': randomUUID() },
      )
      expect(unknownFrom.status).toBe(404)
      // None of the refused transfers left a trace.
      expect([await credits(from), await credits(to)]).toEqual([70, 130])
    })

    it('under concurrency: the same key sent 8 times at once applies once; opposite transfers all apply', async () => {
      const [a, b] = [await createUser('conc-a'), await createUser('conc-b')]
      const key = { 'idempotency-key': randomUUID() }
      const same = await Promise.all(
        Array.from({ length: 8 }, () => call('POST', `/users/${a}/credits`, { to: b, amount: 10 }, key)),
      )
      expect(same.map((reply) => reply.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 201])
      expect([await credits(a), await credits(b)]).toEqual([90, 110])

      const opposite = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          call(
            'POST',
            `/users/${i % 2 ? a : b}/credits`,
            { to: i % 2 ? b : a, amount: 1 + i },
            { 'idempotency-key': randomUUID() },
          ),
        ),
      )
      expect(opposite.map((reply) => reply.status)).toEqual(opposite.map(() => 201))
      // a sent 2+4+6+8+10 = 30 and received 1+3+5+7+9 = 25.
      expect([await credits(a), await credits(b)]).toEqual([85, 115])
    })

    it('a transaction whose session is killed mid-way is retried by withRetry and applied exactly once', async () => {
      const [from, to] = [await createUser('killed-a'), await createUser('killed-b')]
      // Hold the recipient's row, so the transfer's transaction stops at its SELECT ... FOR UPDATE.
      let release = () => {}
      const released = new Promise<void>((resolve) => {
        release = resolve
      })
      let locked = () => {}
      const isLocked = new Promise<void>((resolve) => {
        locked = resolve
      })
      const holder = database.db.transaction().execute(async (trx) => {
        await trx.selectFrom('users').select('id').where('id', '=', to).forUpdate().execute()
        locked()
        await released
      })
      await isLocked
      const retriesBefore = lines.filter((line) => line.msg === 'transfer retry').length
      try {
        const reply = call(
          'POST',
          `/users/${from}/credits`,
          { to, amount: 25 },
          { 'idempotency-key': randomUUID() },
        )
        let answered: Reply | undefined
        void reply.then((settled) => {
          answered = settled
        })
        // The session waiting for the lock is the transfer's: kill it, as a failover or an operator would.
        const waiting = await pollUntil(
          async () => {
            if (answered !== undefined) {
              throw new PollAbort(
                new Error(`answered before it was killed: ${answered.status} ${answered.text}`),
              )
            }
            const rows = await queryOnce(
              engine,
              info.adminWriterUrl,
              engine === 'postgres'
                ? `SELECT pid AS id FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%"credits"%for update'`
                : "SELECT ID AS id FROM information_schema.PROCESSLIST WHERE INFO LIKE '%`credits`%for update'",
            )
            return rows[0]?.id
          },
          { timeoutMs: 10_000, intervalMs: 20, what: 'the transfer to wait for the row lock' },
        )
        await queryOnce(
          engine,
          info.adminWriterUrl,
          engine === 'postgres'
            ? `SELECT pg_terminate_backend(${Number(waiting)})`
            : `KILL CONNECTION ${Number(waiting)}`,
        )
        release()
        await holder
        const answer = await reply
        expect(answer.status, answer.text).toBe(201)
        expect(answer.body).toMatchObject({ replayed: false })
      } finally {
        release()
        await holder.catch(() => {})
      }
      const retries = lines.filter((line) => line.msg === 'transfer retry').slice(retriesBefore)
      expect(retries).toEqual([
        expect.objectContaining({
          level: 'warn',
          attempt: 1,
          category: 'ambiguous',
          delayMs: expect.any(Number),
        }),
      ])
      expect([await credits(from), await credits(to)]).toEqual([75, 125])
    })
  })

  it('GET /health: up/down per role, and nothing of the hosts, ports, databases or users', async () => {
    const reply = await call('GET', '/health')
    expect(reply.status).toBe(200)
    expect(reply.body).toEqual({ status: 'ok', writer: 'up', readers: ['up'] })
    const secrets = [info.writerUrl, info.readerUrl].flatMap((href) => {
      const url = new URL(href)
      return [url.hostname, url.port, url.pathname.slice(1), url.username, url.password, url.host]
    })
    for (const secret of new Set(secrets)) if (secret !== '') expect(reply.text).not.toContain(secret)
  })

  it('GET /admin/stats: db.stats() only with the admin bearer token; no route without ADMIN_TOKEN', async () => {
    expect((await call('GET', '/admin/stats')).status).toBe(401)
    const wrong = await call('GET', '/admin/stats', undefined, { authorization: 'Bearer wrong' })
    expect(wrong.status).toBe(401)
    expect(wrong.headers.get('www-authenticate')).toBe('Bearer')
    const stats = await call('GET', '/admin/stats', undefined, { authorization: `Bearer ${adminToken}` })
    expect(stats.status).toBe(200)
    expect(stats.body.writer).toMatchObject({ name: 'writer', role: 'writer', queries: expect.any(Number) })
    if (info.password) expect(stats.text).not.toContain(info.password)

    const plain = await serve(database.db, { dialect: database.dialect, log })
    try {
      const reply = await send(plain.url, 'GET', '/admin/stats', undefined, {
        authorization: `Bearer ${adminToken}`,
      })
      expect(reply.status).toBe(404)
    } finally {
      await plain.close()
    }
  })

  it('GET /metrics: Prometheus text, only with the scrape token: pool and library series per endpoint, no secret', async () => {
    expect((await call('GET', '/metrics')).status).toBe(401)
    const wrong = await send(server.url, 'GET', '/metrics', undefined, { authorization: 'Bearer wrong' })
    expect(wrong.status).toBe(401)

    // Some traffic on both endpoints first: a write, and a plain read the reader serves.
    const id = await createUser('metrics')
    await waitForReplica(engine)
    expect((await call('GET', `/users/${id}`)).status).toBe(200)
    const text = await scrape(server.url)

    const writer = new URL(info.writerUrl)
    const reader = new URL(info.readerUrl)
    const endpoint = (name: string, url: URL) => ({
      db_system_name: engine === 'postgres' ? 'postgresql' : 'mysql',
      db_client_connection_pool_name: name,
      kysely_resilient_endpoint_role: name === 'writer' ? 'writer' : 'reader',
      server_address: url.hostname,
      server_port: url.port,
    })
    const ofEndpoint = (name: string, url: URL) => (point: { labels: Record<string, string> }) =>
      point.labels.db_client_connection_pool_name === name && point.labels.server_port === url.port
    const writerCounts = series(text, 'db_client_connection_count').filter(ofEndpoint('writer', writer))
    expect(writerCounts.map((point) => point.labels.db_client_connection_state).sort()).toEqual([
      'idle',
      'used',
    ])
    for (const point of writerCounts) expect(point.labels).toMatchObject(endpoint('writer', writer))
    expect(writerCounts.reduce((sum, point) => sum + point.value, 0)).toBeGreaterThanOrEqual(1)
    const readerCounts = series(text, 'db_client_connection_count').filter(ofEndpoint('reader-0', reader))
    expect(readerCounts).toHaveLength(2)
    for (const point of readerCounts) expect(point.labels).toMatchObject(endpoint('reader-0', reader))
    expect(series(text, 'db_client_connection_max').filter(ofEndpoint('writer', writer))).toEqual([
      { labels: expect.objectContaining(endpoint('writer', writer)), value: 10 },
    ])
    expect(
      series(text, 'db_client_connection_pending_requests').filter(ofEndpoint('writer', writer)),
    ).toEqual([{ labels: expect.objectContaining(endpoint('writer', writer)), value: 0 }])
    // The library's own series, by the same labels.
    expect(series(text, 'kysely_resilient_reader_healthy').filter(ofEndpoint('reader-0', reader))).toEqual([
      { labels: expect.objectContaining(endpoint('reader-0', reader)), value: 1 },
    ])

    // Names and addresses of endpoints, never who logs in or with what.
    if (info.password) expect(text).not.toContain(info.password)
    // The database name is a label (db_namespace, rightly); here it is spelled like the user name, so
    // the user-name check reads the text without that label.
    const withoutNamespace = text.replace(/db_namespace="[^"]*"/g, '')
    for (const url of [writer, reader]) {
      if (url.username !== '')
        expect(withoutNamespace).not.toContain(`="${decodeURIComponent(url.username)}"`)
      expect(text).not.toContain(url.href)
    }
  })

  it('a reader that is down: /health 200 degraded, reader-ejected logged, reads fall back to the writer', async () => {
    const deadReader = new URL(info.readerUrl)
    deadReader.port = String(await getFreePort())
    const broken = createDatabase({
      DB_DIALECT: engine,
      DB_WRITER_URL: info.writerUrl,
      DB_READER_URLS: deadReader.href,
    })
    const events = collectingLogger()
    logDatabaseEvents(broken.db, events.log)
    const app = await serve(broken.db, { dialect: broken.dialect, log: events.log })
    try {
      const health = await send(app.url, 'GET', '/health')
      expect(health.status).toBe(200)
      expect(health.body).toEqual({ status: 'degraded', writer: 'up', readers: ['down'] })
      expect(events.lines).toContainEqual(
        expect.objectContaining({
          level: 'warn',
          event: 'reader-ejected',
          endpoint: 'reader-0',
          reason: 'unreachable',
        }),
      )
      const list = await send(app.url, 'GET', '/users?limit=1')
      expect(list.status).toBe(200)
      expect(broken.db.stats().readers[0]?.queries).toBe(0)
      // Every db of the process records through the one meter provider: the ejection is a series.
      const ejections = series(await scrape(server.url), 'kysely_resilient_reader_ejections_total').filter(
        (point) => point.labels.server_port === deadReader.port,
      )
      expect(ejections).toEqual([
        {
          labels: expect.objectContaining({
            db_client_connection_pool_name: 'reader-0',
            kysely_resilient_reason: 'unreachable',
          }),
          value: expect.any(Number),
        },
      ])
      expect(ejections[0]?.value).toBeGreaterThanOrEqual(1)
    } finally {
      await app.close()
      await broken.db.destroy()
    }
  })

  it('a writer that is down: 503 with Retry-After (classifyError: unavailable), logged without the password', async () => {
    const deadWriter = new URL(info.writerUrl)
    deadWriter.port = String(await getFreePort())
    // Short timeouts and retry budget, so the test does not wait out the production settings (the
    // library retries an unavailable statement for up to 10 s by default).
    const db = createDb<Database>({
      dialect: engine,
      writer: deadWriter.href,
      pool: { acquireTimeoutMs: 500, connectTimeoutMs: 500 },
      retry: { maxElapsedMs: 200 },
    })
    const events = collectingLogger()
    const app = await serve(db, { dialect: engine, log: events.log })
    try {
      const [list, create, health] = await Promise.all([
        send(app.url, 'GET', '/users'),
        send(app.url, 'POST', '/users', { name: 'Ada', email: email('down') }),
        send(app.url, 'GET', '/health'),
      ])
      for (const reply of [list, create]) {
        expect(reply.status).toBe(503)
        expect(reply.headers.get('retry-after')).toBe('1')
        expect(reply.body).toEqual({ error: 'the database is unavailable; try again shortly' })
      }
      expect(health.status).toBe(503)
      expect(health.body).toEqual({ status: 'down', writer: 'down', readers: [] })
      expect(events.lines).toContainEqual(
        expect.objectContaining({
          msg: 'request failed',
          method: 'GET',
          path: '/users',
          status: 503,
          category: 'unavailable',
        }),
      )
      if (info.password) expect(JSON.stringify(events.lines)).not.toContain(info.password)
    } finally {
      await app.close()
      await db.destroy()
    }
  })
})

describe('express demo (npm run demo)', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url))
  const hasPostgres = findPostgresBinDir() !== undefined

  it.skipIf(!hasPostgres)(
    'starts a cluster, migrates, runs the server and a client session over every route, and cleans up',
    async () => {
      const env = { ...process.env }
      for (const name of ['DB_DIALECT', 'DB_WRITER_URL', 'DB_READER_URLS', 'PORT', 'ADMIN_TOKEN'])
        delete env[name]
      const child = spawn('npm', ['run', 'demo'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
      let output = ''
      child.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString()
      })
      child.stderr.on('data', (chunk: Buffer) => {
        output += chunk.toString()
      })
      const code = await new Promise<number | null>((resolve, reject) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL')
          reject(new Error(`npm run demo did not finish within 90 s:\n${output}`))
        }, 90_000)
        child.once('error', reject)
        child.once('exit', (exitCode) => {
          clearTimeout(timer)
          resolve(exitCode)
        })
      })

      expect(code, output).toBe(0)
      expect(output).toMatch(/^\[migrate\] .*"migration 2026_12_01_002_credits: Success"/m)
      expect(output).toMatch(/^\[server\] .*"msg":"listening"/m)
      expect(output).toMatch(/^POST \/users -> 201 /m)
      expect(output).toMatch(/^GET \/users\?limit=2&after=\d+ -> 200 /m)
      expect(output).toMatch(/^PATCH \/users\/\d+ -> 200 .*Rear Admiral Grace Hopper/m)
      expect(output).toMatch(/^POST \/users\/\d+\/credits -> 201 .*replayed: false/m)
      expect(output).toMatch(/^POST \/users\/\d+\/credits -> 200 .*replayed: true/m)
      expect(output).toMatch(/^DELETE \/users\/\d+ -> 204/m)
      expect(output).toMatch(/^GET \/health -> 200 /m)
      expect(output).toMatch(/^ {2}reader-0: [1-9]\d*$/m)
      expect(output).toMatch(/"msg":"stopped"/)
      expect(output).not.toMatch(/UNEXPECTED|demo failed/)

      // Nothing left listening: the app server and both PostgreSQL servers are gone.
      const ports = [
        ...new Set(Array.from(output.matchAll(/127\.0\.0\.1:(\d+)/g), (match) => Number(match[1]))),
      ]
      expect(ports.length).toBeGreaterThanOrEqual(3)
      for (const port of ports) expect(await isPortOpen(port), `port ${port}`).toBe(false)
    },
    120_000,
  )
})
