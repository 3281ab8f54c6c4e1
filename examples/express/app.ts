import express, { type NextFunction, type Request, type Response } from 'express'
import { sql } from 'kysely'
import type { Database, DbStats, ResilientDb, SqlDialect, User } from './db.js'

export interface AppOptions {
  /** The engine behind `db`: PostgreSQL returns the created row with `RETURNING`, MySQL does not. */
  readonly dialect: SqlDialect
}

const MAX_LIMIT = 100
const DEFAULT_LIMIT = 20
/** Largest value of the `integer` id column; a bigger id cannot exist (and would be an SQL error). */
const MAX_ID = 2_147_483_647
/** How long /health waits for each ping. */
const PING_TIMEOUT_MS = 2_000

/**
 * The users service: `POST /users`, `GET /users`, `GET /users/:id` and `GET /health`. Plain reads go to
 * a reader, writes to the writer, and every response says which endpoint served it in `x-served-by`.
 * Does not listen: see server.ts.
 */
export function createApp(db: ResilientDb<Database>, options: AppOptions): express.Express {
  const app = express()
  app.disable('x-powered-by')

  // x-served-by: snapshot the per-endpoint statement counters when a request arrives, and name the
  // endpoints whose counters moved when it is answered (see `reply`).
  const countsAtStart = new WeakMap<Response, QueryCounts>()
  const reply = (res: Response, status: number, body: unknown): void => {
    const before = countsAtStart.get(res) ?? queryCounts(db.stats())
    res.set('x-served-by', servedBy(before, queryCounts(db.stats())))
    res.status(status).json(body)
  }

  app.use((_req, res, next) => {
    countsAtStart.set(res, queryCounts(db.stats()))
    next()
  })
  app.use(express.json({ limit: '10kb' }))

  app.post('/users', async (req, res) => {
    const input = parseNewUser(req.body as unknown)
    if ('error' in input) return reply(res, 400, { error: input.error })
    try {
      reply(res, 201, await insertUser(db, options.dialect, input))
    } catch (error) {
      if (!isUniqueViolation(error)) throw error
      reply(res, 409, { error: `a user with email '${input.email}' already exists` })
    }
  })

  app.get('/users', async (req, res) => {
    const limit = parseLimit(req.query.limit)
    if (typeof limit === 'string') return reply(res, 400, { error: limit })
    const users = await db.selectFrom('users').selectAll().orderBy('id', 'desc').limit(limit).execute()
    reply(res, 200, { users })
  })

  app.get('/users/:id', async (req, res) => {
    const id = parseId(req.params.id)
    if (id === undefined) return reply(res, 400, { error: `id must be an integer from 1 to ${MAX_ID}` })
    const user = await db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst()
    if (user === undefined) return reply(res, 404, { error: `no user with id ${id}` })
    reply(res, 200, user)
  })

  app.get('/health', async (_req, res) => {
    // One ping through db.reader reaches the reader the strategy picks; a reader that cannot be
    // reached is ejected by the library (its read falls back to the writer), and stats() says so.
    const [writer, reader] = await Promise.all([
      ping(() => db.writer.selectNoFrom(sql<number>`1`.as('ok')).execute(pingOptions())),
      db.stats().readers.length > 0
        ? ping(() => db.reader.selectNoFrom(sql<number>`1`.as('ok')).execute(pingOptions()))
        : Promise.resolve<Health>('up'),
    ])
    const stats = db.stats()
    const readers = stats.readers.map((r): Health => (reader === 'up' && r.healthy ? 'up' : 'down'))
    const healthy = writer === 'up' && readers.every((r) => r === 'up')
    reply(res, healthy ? 200 : 503, {
      status: healthy ? 'ok' : 'degraded',
      writer,
      readers,
      // Names, addresses (host:port/database) and counters; never users or passwords.
      stats,
    })
  })

  app.use((req, res) => {
    reply(res, 404, { error: `no route for ${req.method} ${req.path}` })
  })

  app.use((error: unknown, req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(error)
    const clientError = asClientError(error)
    if (clientError !== undefined) return reply(res, clientError.status, { error: clientError.message })
    console.error(`[app] ${req.method} ${req.path} failed: ${describeError(error)}`)
    reply(res, 500, { error: 'internal server error' })
  })

  return app
}

async function insertUser(db: ResilientDb<Database>, dialect: SqlDialect, input: NewUser): Promise<User> {
  if (dialect === 'postgres') {
    return db.insertInto('users').values(input).returningAll().executeTakeFirstOrThrow()
  }
  // MySQL has no RETURNING: read the row back by its insertId, from the writer (the replica may not have
  // it yet: read-your-writes).
  const { insertId } = await db.insertInto('users').values(input).executeTakeFirstOrThrow()
  return db.writer
    .selectFrom('users')
    .selectAll()
    .where('id', '=', Number(insertId))
    .executeTakeFirstOrThrow()
}

interface NewUser {
  readonly name: string
  readonly email: string
}

function parseNewUser(body: unknown): NewUser | { readonly error: string } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { error: 'the request body must be a JSON object with name and email' }
  }
  const { name, email } = body as Record<string, unknown>
  if (name === undefined) return { error: 'name is required' }
  if (typeof name !== 'string' || !isLength(name, 1, 100)) {
    return { error: 'name must be a string of 1 to 100 characters' }
  }
  if (email === undefined) return { error: 'email is required' }
  if (typeof email !== 'string' || !email.includes('@') || !isLength(email, 1, 200)) {
    return { error: "email must be a string of at most 200 characters containing '@'" }
  }
  return { name, email }
}

/** Length in characters (code points), as varchar(n) counts them. */
function isLength(value: string, min: number, max: number): boolean {
  const length = [...value].length
  return length >= min && length <= max
}

function parseLimit(value: unknown): number | string {
  if (value === undefined) return DEFAULT_LIMIT
  const limit = typeof value === 'string' && /^\d{1,3}$/.test(value) ? Number(value) : Number.NaN
  return limit >= 1 && limit <= MAX_LIMIT ? limit : `limit must be an integer from 1 to ${MAX_LIMIT}`
}

function parseId(value: string | undefined): number | undefined {
  if (value === undefined || !/^[1-9]\d{0,9}$/.test(value)) return undefined
  const id = Number(value)
  return id <= MAX_ID ? id : undefined
}

/** PostgreSQL `unique_violation` or MySQL/MariaDB `ER_DUP_ENTRY`; driver errors keep their codes. */
function isUniqueViolation(error: unknown): boolean {
  const code = typeof error === 'object' && error !== null && 'code' in error ? error.code : undefined
  return code === '23505' || code === 'ER_DUP_ENTRY'
}

type Health = 'up' | 'down'

function pingOptions() {
  return { signal: AbortSignal.timeout(PING_TIMEOUT_MS) }
}

async function ping(query: () => Promise<unknown>): Promise<Health> {
  try {
    await query()
    return 'up'
  } catch (error) {
    console.error(`[app] health ping failed: ${describeError(error)}`)
    return 'down'
  }
}

type QueryCounts = ReadonlyMap<string, number>

function queryCounts(stats: DbStats): QueryCounts {
  return new Map([stats.writer, ...stats.readers].map((endpoint) => [endpoint.name, endpoint.queries]))
}

/**
 * The endpoints whose statement counters moved, e.g. `writer`, `reader-0` or `writer,reader-0`; `none`
 * when the request ran no statement. The counters are shared by all requests, so under concurrent load
 * this may also name endpoints that served a request running at the same time.
 */
function servedBy(before: QueryCounts, after: QueryCounts): string {
  const moved = [...after]
    .filter(([name, queries]) => queries > (before.get(name) ?? 0))
    .map(([name]) => name)
  return moved.length > 0 ? moved.join(',') : 'none'
}

/** Errors that are the client's fault: body-parser's (bad JSON, body too large, bad charset...). */
function asClientError(error: unknown): { readonly status: number; readonly message: string } | undefined {
  if (typeof error !== 'object' || error === null) return undefined
  const { status, type, expose } = error as { status?: unknown; type?: unknown; expose?: unknown }
  if (error instanceof SyntaxError && type === 'entity.parse.failed') {
    return { status: 400, message: 'the request body is not valid JSON' }
  }
  if (typeof status === 'number' && status >= 400 && status < 500 && expose === true) {
    return { status, message: error instanceof Error ? error.message : 'bad request' }
  }
  return undefined
}

/**
 * One line for the server log: error class, code and message, with any credentials in a URL or a
 * `password=` pair masked. (This library and the drivers keep passwords out of their messages; this is
 * a second line of defence for everything else.)
 */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return 'non-Error value thrown'
  const code = 'code' in error && typeof error.code === 'string' ? ` [${error.code}]` : ''
  const message = error.message
    .replace(/\/\/([^:/@\s]*):[^@/\s]*@/g, '//$1:***@')
    .replace(/(password\s*[=:]\s*)\S+/gi, '$1***')
  return `${error.name}${code}: ${message}`
}
