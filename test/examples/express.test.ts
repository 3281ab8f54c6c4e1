// The Express example (examples/express) against the shared clusters of both engines, over real HTTP,
// plus `npm run demo` end to end.
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { createApp } from '../../examples/express/app.js'
import { type AppDatabase, createDatabase, migrate } from '../../examples/express/db.js'
import { findPostgresBinDir } from '../support/binaries.js'
import { describeEngines, waitForReplica } from '../support/database.js'
import { getFreePort, isPortOpen } from '../support/ports.js'

interface Reply {
  readonly status: number
  readonly servedBy: string | null
  readonly text: string
  readonly body: Record<string, unknown>
}

describeEngines('express example', (engine, info) => {
  let database: AppDatabase
  let server: Server
  let baseUrl: string
  // Unique per engine and per run: the shared servers (and external ones) outlive this file.
  const email = `ada.${engine}.${randomUUID()}@example.com`
  let createdId: number

  const call = async (method: 'GET' | 'POST', path: string, body?: string): Promise<Reply> => {
    const response = await fetch(`${baseUrl}${path}`, {
      method,
      ...(body === undefined ? {} : { body, headers: { 'content-type': 'application/json' } }),
    })
    const text = await response.text()
    return {
      status: response.status,
      servedBy: response.headers.get('x-served-by'),
      text,
      body: JSON.parse(text) as Record<string, unknown>,
    }
  }
  const post = (body: unknown) => call('POST', '/users', JSON.stringify(body))

  beforeAll(async () => {
    database = createDatabase({
      DB_DIALECT: engine,
      DB_WRITER_URL: info.writerUrl,
      DB_READER_URLS: info.readerUrl,
    })
    await migrate(database.db, database.dialect)
    await waitForReplica(engine) // the table itself must exist on the reader
    const app = createApp(database.db, { dialect: database.dialect })
    server = await new Promise<Server>((resolve, reject) => {
      const listening = app.listen(0, '127.0.0.1', (error?: Error) =>
        error ? reject(error) : resolve(listening),
      )
    })
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  afterAll(async () => {
    if (server !== undefined) {
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
    }
    await database?.db.destroy()
  })

  it('POST /users creates a user on the writer (201)', async () => {
    const reply = await post({ name: 'Ada Lovelace', email })
    expect(reply.status).toBe(201)
    expect(reply.servedBy).toBe('writer')
    expect(reply.body).toMatchObject({ name: 'Ada Lovelace', email })
    expect(reply.body.id).toEqual(expect.any(Number))
    expect(new Date(String(reply.body.created_at)).getTime()).not.toBeNaN()
    createdId = Number(reply.body.id)
  })

  it('GET /users/:id reads the user from the reader once it has replayed', async () => {
    await waitForReplica(engine)
    const reply = await call('GET', `/users/${createdId}`)
    expect(reply.status).toBe(200)
    expect(reply.servedBy).toBe('reader-0')
    expect(reply.body).toMatchObject({ id: createdId, name: 'Ada Lovelace', email })
  })

  it('GET /users lists users from the reader, newest first', async () => {
    const reply = await call('GET', '/users?limit=100')
    expect(reply.status).toBe(200)
    expect(reply.servedBy).toBe('reader-0')
    const users = reply.body.users as Array<Record<string, unknown>>
    expect(users.length).toBeGreaterThan(0)
    expect(users.length).toBeLessThanOrEqual(100)
    expect(users.map((user) => user.email)).toContain(email)
    const ids = users.map((user) => Number(user.id))
    expect(ids).toEqual([...ids].sort((a, b) => b - a))

    const defaultLimit = await call('GET', '/users')
    expect(defaultLimit.status).toBe(200)
    expect((defaultLimit.body.users as unknown[]).length).toBeLessThanOrEqual(20)
  })

  it('answers bad JSON with 400, not 500', async () => {
    const reply = await call('POST', '/users', '{"name": "Ada", ')
    expect(reply.status).toBe(400)
    expect(reply.body.error).toMatch(/JSON/)
    expect(reply.servedBy).toBe('none')
  })

  it('rejects a missing or invalid name with 400 naming the field', async () => {
    const missing = await post({ email: `x.${randomUUID()}@example.com` })
    expect(missing.status).toBe(400)
    expect(missing.body.error).toMatch(/\bname\b/)
    const tooLong = await post({ name: 'x'.repeat(101), email: `x.${randomUUID()}@example.com` })
    expect(tooLong.status).toBe(400)
    expect(tooLong.body.error).toMatch(/\bname\b/)
    const notAString = await post({ name: 42, email: `x.${randomUUID()}@example.com` })
    expect(notAString.status).toBe(400)
    expect(notAString.body.error).toMatch(/\bname\b/)
  })

  it('rejects an invalid email with 400 naming the field', async () => {
    for (const bad of ['not-an-email', `${'x'.repeat(200)}@example.com`, 7]) {
      const reply = await post({ name: 'Ada', email: bad })
      expect(reply.status).toBe(400)
      expect(reply.body.error).toMatch(/\bemail\b/)
      expect(reply.servedBy).toBe('none')
    }
    const notAnObject = await call('POST', '/users', '[1, 2]')
    expect(notAnObject.status).toBe(400)
  })

  it('rejects an invalid limit with 400', async () => {
    for (const limit of ['abc', '0', '101', '1.5', '-1']) {
      const reply = await call('GET', `/users?limit=${limit}`)
      expect(reply.status, `limit=${limit}`).toBe(400)
      expect(reply.body.error).toMatch(/\blimit\b/)
    }
  })

  it('rejects a non-integer id with 400', async () => {
    for (const id of ['abc', '1.5', '0', '-3', '99999999999']) {
      const reply = await call('GET', `/users/${id}`)
      expect(reply.status, `id=${id}`).toBe(400)
      expect(reply.body.error).toMatch(/\bid\b/)
    }
  })

  it('answers an unknown id with 404', async () => {
    const reply = await call('GET', '/users/2147483647')
    expect(reply.status).toBe(404)
    expect(reply.servedBy).toBe('reader-0')
  })

  it('answers a duplicate email with 409', async () => {
    const reply = await post({ name: 'Ada Again', email })
    expect(reply.status).toBe(409)
    expect(reply.servedBy).toBe('writer')
    expect(reply.body.error).toMatch(/email/)
  })

  it('answers an unknown route with a JSON 404', async () => {
    const reply = await call('GET', '/nowhere')
    expect(reply.status).toBe(404)
    expect(reply.body.error).toEqual(expect.any(String))
  })

  it('GET /health answers 503 when a reader is down, while reads fall back to the writer', async () => {
    // The same writer, but a reader on a port where nothing listens.
    const deadReader = new URL(info.readerUrl)
    deadReader.port = String(await getFreePort())
    const broken = createDatabase({
      DB_DIALECT: engine,
      DB_WRITER_URL: info.writerUrl,
      DB_READER_URLS: deadReader.href,
    })
    const app = createApp(broken.db, { dialect: broken.dialect })
    const brokenServer = await new Promise<Server>((resolve) => {
      const listening = app.listen(0, '127.0.0.1', () => resolve(listening))
    })
    const brokenUrl = `http://127.0.0.1:${(brokenServer.address() as AddressInfo).port}`
    try {
      const health = await fetch(`${brokenUrl}/health`)
      expect(health.status).toBe(503)
      expect(await health.json()).toMatchObject({ status: 'degraded', writer: 'up', readers: ['down'] })

      const list = await fetch(`${brokenUrl}/users`)
      expect(list.status).toBe(200)
      expect(list.headers.get('x-served-by')).toBe('writer')
    } finally {
      await new Promise<void>((resolve) => {
        brokenServer.close(() => resolve())
        brokenServer.closeAllConnections()
      })
      await broken.db.destroy()
    }
  })

  it('a statement that fails is a generic 500 whose log holds no password', async () => {
    // A writer on a port where nothing listens, and no reader to fall back to.
    const deadWriter = new URL(info.writerUrl)
    deadWriter.port = String(await getFreePort())
    const broken = createDatabase({ DB_DIALECT: engine, DB_WRITER_URL: deadWriter.href })
    const logged = vi.spyOn(console, 'error').mockImplementation(() => {})
    const app = createApp(broken.db, { dialect: broken.dialect })
    const brokenServer = await new Promise<Server>((resolve) => {
      const listening = app.listen(0, '127.0.0.1', () => resolve(listening))
    })
    const brokenUrl = `http://127.0.0.1:${(brokenServer.address() as AddressInfo).port}`
    try {
      const list = await fetch(`${brokenUrl}/users`)
      expect(list.status).toBe(500)
      expect(await list.json()).toEqual({ error: 'internal server error' })
      const log = logged.mock.calls.flat().map(String).join('\n')
      expect(log).toMatch(/GET \/users failed/)
      if (info.password) expect(log).not.toContain(info.password)
    } finally {
      logged.mockRestore()
      await new Promise<void>((resolve) => {
        brokenServer.close(() => resolve())
        brokenServer.closeAllConnections()
      })
      await broken.db.destroy()
    }
  })

  it('GET /health pings writer and reader and returns their stats without secrets', async () => {
    const reply = await call('GET', '/health')
    expect(reply.status).toBe(200)
    expect(reply.body).toMatchObject({ status: 'ok', writer: 'up', readers: ['up'] })
    expect(reply.servedBy).toBe('writer,reader-0')
    const stats = reply.body.stats as { writer: Record<string, unknown>; readers: Record<string, unknown>[] }
    expect(stats.writer).toMatchObject({ name: 'writer', role: 'writer', queries: expect.any(Number) })
    expect(stats.readers).toHaveLength(1)
    expect(stats.readers[0]).toMatchObject({ name: 'reader-0', role: 'reader', queries: expect.any(Number) })
    if (info.password) expect(reply.text).not.toContain(info.password)
  })
})

describe('express demo (npm run demo)', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url))
  const hasPostgres = findPostgresBinDir() !== undefined

  it.skipIf(!hasPostgres)(
    'starts its own cluster, serves writes from the writer and reads from the replica, and cleans up',
    async () => {
      const env = { ...process.env }
      for (const name of ['DB_DIALECT', 'DB_WRITER_URL', 'DB_READER_URLS', 'PORT']) delete env[name]
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
      expect(output).toMatch(/^POST \/users -> 201 served by writer\b/m)
      expect(output).toMatch(/^GET \/users\S* -> 200 served by reader-0\b/m)
      expect(output).toMatch(/^GET \/users\/\d+ -> 200 served by reader-0\b/m)
      expect(output).toMatch(/^POST \/users -> 400 served by none\b/m)
      expect(output).toMatch(/^GET \/health -> 200 served by writer,reader-0\b/m)
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
