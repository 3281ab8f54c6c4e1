import { createHash, timingSafeEqual } from 'node:crypto'
import express, { type NextFunction, type Request, type Response } from 'express'
import { sql } from 'kysely'
import {
  classifyError,
  type ErrorClassification,
  getErrorClassification,
  InvalidConsistencyTokenError,
  ReplicationPositionUnavailableError,
  withRetry,
} from 'kysely-resilient'
import {
  type CreditTransfer,
  type Database,
  describeError,
  jsonLogger,
  type Logger,
  type ResilientDb,
  type SqlDialect,
  type User,
} from './db.js'
import type { Metrics } from './telemetry.js'

export interface AppOptions {
  /** The engine behind `db`: PostgreSQL returns the created row with `RETURNING`, MySQL does not. */
  readonly dialect: SqlDialect
  /** Where log lines go. Default: one JSON line each on stdout/stderr. */
  readonly log?: Logger
  /**
   * Enables `GET /admin/stats` (`db.stats()`: endpoint names, addresses, counters) for requests with
   * `Authorization: Bearer <adminToken>`. Unset (the default), the route does not exist.
   */
  readonly adminToken?: string | undefined
  /**
   * Enables `GET /metrics` (the OpenTelemetry metrics in the Prometheus text format: pool counts,
   * retries, failovers, ... per endpoint, with each endpoint's host and port) for requests with
   * `Authorization: Bearer <token>`, answered by `handle` (see telemetry.ts). Unset (the default), the
   * route does not exist.
   */
  readonly metrics?: { readonly token: string; readonly handle: Metrics['handle'] } | undefined
}

const MAX_LIMIT = 100
const DEFAULT_LIMIT = 20
/** Largest value of the `integer` id column; a bigger id cannot exist (and would be an SQL error). */
const MAX_ID = 2_147_483_647
const MAX_AMOUNT = 1_000_000
/** How long /health waits for each ping. */
const PING_TIMEOUT_MS = 2_000
/** Seconds a client should wait before retrying a 503. */
const RETRY_AFTER_S = 1
/** The header that carries a consistency token between requests (see README). */
const TOKEN_HEADER = 'x-consistency-token'
/** A unique violation: PostgreSQL's SQLSTATE, MySQL/MariaDB's error number (as classifyError reports them). */
const UNIQUE_VIOLATION = new Set(['23505', '1062'])

/**
 * The users service: CRUD on `/users`, credit transfers, `/health`, and (opt-in) `/admin/stats` and `/metrics`.
 * Plain reads go to a reader, writes to the writer; every request runs in a read-your-writes scope,
 * so a read that follows the request's own write (or a write named by the `x-consistency-token`
 * request header) sees it. Does not listen: see server.ts.
 */
export function createApp(db: ResilientDb<Database>, options: AppOptions): express.Express {
  const { dialect } = options
  const log = options.log ?? jsonLogger
  const app = express()
  app.disable('x-powered-by')
  app.use(express.json({ limit: '10kb' }))

  // After the body parser (whose callbacks run outside this scope): everything a route awaits runs in
  // the scope. An invalid token rejects before `next` runs and becomes a 400 in the error handler.
  app.use((req, _res, next) => {
    db.withReadYourWrites(next, { after: req.get(TOKEN_HEADER) ?? [] }).catch(next)
  })

  /** Answers a write: the body, plus a token another request can send back to read this write. */
  const written = async (res: Response, status: number, body?: unknown): Promise<void> => {
    try {
      res.set(TOKEN_HEADER, await db.consistencyToken())
    } catch (error) {
      // The write committed: a missing token must not turn it into an error. MySQL without GTIDs
      // (ReplicationPositionUnavailableError) never has one; anything else is worth a log line.
      if (!(error instanceof ReplicationPositionUnavailableError)) {
        log('warn', { msg: 'no consistency token for a committed write', error: describeError(error) })
      }
    }
    if (body === undefined) res.status(status).end()
    else res.status(status).json(body)
  }

  app.get('/health', async (_req, res) => {
    // One ping through db.reader reaches the reader the strategy picks; a reader that cannot be
    // reached is ejected by the library (reads fall back to the writer), and stats() says so.
    const [writer, reader] = await Promise.all([
      ping(() => db.writer.selectNoFrom(sql<number>`1`.as('ok')).execute(pingOptions()), log),
      db.stats().readers.length > 0
        ? ping(() => db.reader.selectNoFrom(sql<number>`1`.as('ok')).execute(pingOptions()), log)
        : Promise.resolve<Health>('up'),
    ])
    const readers = db.stats().readers.map((r): Health => (reader === 'up' && r.healthy ? 'up' : 'down'))
    // Up/down per role, nothing more: no names, hosts, ports or databases for an anonymous caller.
    // Only a writer that is down makes the service unhealthy: without readers, reads use the writer.
    const status = writer === 'down' ? 'down' : readers.includes('down') ? 'degraded' : 'ok'
    res.status(writer === 'up' ? 200 : 503).json({ status, writer, readers })
  })

  if (options.adminToken) {
    const authorized = bearer(options.adminToken)
    app.get('/admin/stats', (req, res) => {
      if (!authorized(req, res)) return
      // Endpoint names, host:port/database, pool counts and statement counters; never credentials.
      res.json(db.stats())
    })
  }

  if (options.metrics) {
    const { handle } = options.metrics
    const authorized = bearer(options.metrics.token)
    // Behind a token like /admin/stats: the series name each endpoint's host and port. Prometheus
    // sends it with `authorization: { credentials_file: ... }` in its scrape config.
    app.get('/metrics', (req, res) => {
      if (authorized(req, res)) handle(req, res)
    })
  }

  app.get('/users', async (req, res) => {
    const page = parsePage(req.query)
    if ('error' in page) return badRequest(res, page.error)
    // Keyset paging: ids ascending, `after` the last id of the previous page. Stable while rows are
    // added or deleted, and as cheap for page 1000 as for page 1 (no OFFSET to skip over).
    const rows = await db
      .selectFrom('users')
      .selectAll()
      .where('id', '>', page.after)
      .orderBy('id')
      .limit(page.limit + 1)
      .execute()
    const users = rows.slice(0, page.limit)
    const next = rows.length > page.limit ? String(users.at(-1)?.id) : null
    res.json({ users, next })
  })

  app.get('/users/:id', async (req, res) => {
    const id = parseId(req.params.id)
    if (id === undefined) return badRequest(res, `id must be an integer from 1 to ${MAX_ID}`)
    const user = await findUser(db, id)
    if (user === undefined) return notFound(res, id)
    res.json(user)
  })

  app.post('/users', async (req, res) => {
    const input = parseFields(req.body, { name: parseName, email: parseEmail }, 'all')
    if ('error' in input) return badRequest(res, input.error)
    const { name, email } = input.value as { name: string; email: string }
    try {
      await written(res, 201, await insertUser(db, dialect, { name, email }))
    } catch (error) {
      if (!isUniqueViolation(error)) throw error
      res.status(409).json({ error: `a user with email '${email}' already exists` })
    }
  })

  app.patch('/users/:id', async (req, res) => {
    const id = parseId(req.params.id)
    if (id === undefined) return badRequest(res, `id must be an integer from 1 to ${MAX_ID}`)
    const input = parseFields(req.body, { name: parseName, email: parseEmail }, 'some')
    if ('error' in input) return badRequest(res, input.error)
    try {
      await db.updateTable('users').set(input.value).where('id', '=', id).execute()
    } catch (error) {
      if (!isUniqueViolation(error)) throw error
      return void res
        .status(409)
        .json({ error: `a user with email '${String(input.value.email)}' already exists` })
    }
    // Read-your-writes: a plain read through `db`, in the request's scope, after its write. It runs on a
    // reader that has replayed the update, or on the writer: never on a replica that still has the
    // old row. (The update's row count cannot say "not found" on MySQL, which counts changed rows.)
    const user = await findUser(db, id)
    if (user === undefined) return notFound(res, id)
    await written(res, 200, user)
  })

  app.delete('/users/:id', async (req, res) => {
    const id = parseId(req.params.id)
    if (id === undefined) return badRequest(res, `id must be an integer from 1 to ${MAX_ID}`)
    const { numDeletedRows } = await db.deleteFrom('users').where('id', '=', id).executeTakeFirst()
    if (numDeletedRows === 0n) return notFound(res, id)
    await written(res, 204)
  })

  app.post('/users/:id/credits', async (req, res) => {
    const from = parseId(req.params.id)
    if (from === undefined) return badRequest(res, `id must be an integer from 1 to ${MAX_ID}`)
    const requestId = req.get('idempotency-key')
    if (requestId === undefined || !/^[\w-]{1,64}$/.test(requestId)) {
      return badRequest(res, 'the Idempotency-Key header is required: 1 to 64 letters, digits, _ or -')
    }
    const input = parseFields(req.body, { to: parseUserRef, amount: parseAmount }, 'all')
    if ('error' in input) return badRequest(res, input.error)
    const { to, amount } = input.value as { to: number; amount: number }
    if (to === from) return badRequest(res, 'to must be another user than the sender')

    const outcome = await transferCredits(db, { requestId, from, to, amount }, log)
    if (outcome.kind === 'refused') return void res.status(outcome.status).json({ error: outcome.error })
    if (outcome.kind === 'key-reused') {
      return void res.status(409).json({
        error: `Idempotency-Key '${requestId}' was already used for a different transfer`,
      })
    }
    const body = { replayed: outcome.kind === 'replayed', transfer: transferJson(outcome.transfer) }
    if (outcome.kind === 'replayed') return void res.status(200).json(body)
    await written(res, 201, body)
  })

  app.use((req, res) => {
    res.status(404).json({ error: `no route for ${req.method} ${req.path}` })
  })

  app.use((error: unknown, req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(error)
    const clientError = asClientError(error)
    if (clientError !== undefined)
      return void res.status(clientError.status).json({ error: clientError.message })
    if (error instanceof InvalidConsistencyTokenError) {
      return badRequest(res, `${TOKEN_HEADER} is not a token this service issued`)
    }
    // withRetry attached its verdict to what it threw; anything else is classified here.
    const verdict = getErrorClassification(error) ?? classifyError(error)
    const answer = errorResponse(verdict)
    log(answer.status === 503 ? 'warn' : 'error', {
      msg: 'request failed',
      method: req.method,
      path: req.path,
      status: answer.status,
      category: verdict.category,
      code: verdict.code,
      reason: verdict.reason,
      error: describeError(error),
    })
    if (answer.status === 503) res.set('retry-after', String(RETRY_AFTER_S))
    res.status(answer.status).json({ error: answer.message })
  })

  return app
}

/** What a failed statement means for the client, from classifyError's verdict. */
function errorResponse(verdict: ErrorClassification): { readonly status: number; readonly message: string } {
  switch (verdict.category) {
    // Nothing was applied, and trying again shortly is expected to work.
    case 'unavailable':
    case 'read-only':
      return { status: 503, message: 'the database is unavailable; try again shortly' }
    case 'conflict':
      return { status: 503, message: 'the request collided with concurrent ones; try again shortly' }
    // The connection broke after the statement was sent: it may have been applied. Not a 503, which
    // would invite a blind retry of something that may not be idempotent.
    case 'ambiguous':
      return { status: 500, message: 'the outcome is unknown: check before trying again' }
    case 'fatal':
      return verdict.code !== undefined && UNIQUE_VIOLATION.has(verdict.code)
        ? { status: 409, message: 'conflicts with an existing record' }
        : { status: 500, message: 'internal server error' }
  }
}

function isUniqueViolation(error: unknown): boolean {
  const { category, code } = classifyError(error)
  return category === 'fatal' && code !== undefined && UNIQUE_VIOLATION.has(code)
}

function findUser(db: ResilientDb<Database>, id: number): Promise<User | undefined> {
  return db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst()
}

async function insertUser(
  db: ResilientDb<Database>,
  dialect: SqlDialect,
  input: { name: string; email: string },
): Promise<User> {
  if (dialect === 'postgres') {
    return db.insertInto('users').values(input).returningAll().executeTakeFirstOrThrow()
  }
  // MySQL has no RETURNING: read the row back by its insertId. Through `db`, in the request's
  // read-your-writes scope: a reader that has the row, or the writer.
  const { insertId } = await db.insertInto('users').values(input).executeTakeFirstOrThrow()
  const user = await findUser(db, Number(insertId))
  if (user === undefined) throw new Error(`user ${String(insertId)} not found right after its insert`)
  return user
}

interface TransferRequest {
  readonly requestId: string
  readonly from: number
  readonly to: number
  readonly amount: number
}

type TransferOutcome =
  | { readonly kind: 'applied' | 'replayed'; readonly transfer: CreditTransfer }
  | { readonly kind: 'refused'; readonly status: 404 | 409; readonly error: string }
  | { readonly kind: 'key-reused' }

/** A refusal decided inside the transaction; thrown to roll it back. withRetry never retries it. */
class TransferRefused extends Error {
  constructor(
    readonly status: 404 | 409,
    message: string,
  ) {
    super(message)
  }
}

/**
 * Moves `amount` credits in one transaction, retried as a whole by `withRetry`: after a deadlock, a
 * lost connection, a failover. The transfer's row, keyed by the client's request id, is written in
 * the same transaction, so the work is idempotent and `idempotent: true` is safe: if an attempt did
 * commit before its connection broke (an 'ambiguous' failure), the next attempt's insert is a unique
 * violation and the request is answered as a replay of the committed transfer, never applied twice.
 */
async function transferCredits(
  db: ResilientDb<Database>,
  request: TransferRequest,
  log: Logger,
): Promise<TransferOutcome> {
  const { requestId, from, to, amount } = request
  let replayed = false
  try {
    await withRetry(
      () =>
        db.transaction().execute(async (trx) => {
          // First: a concurrent request with the same key waits here, then fails with a unique violation.
          await trx
            .insertInto('credit_transfers')
            .values({ request_id: requestId, from_user_id: from, to_user_id: to, amount })
            .execute()
          // Both rows locked, in id order, so opposite transfers cannot deadlock (and if they did,
          // withRetry would run the transaction again).
          const users = await trx
            .selectFrom('users')
            .select(['id', 'credits'])
            .where('id', 'in', [from, to])
            .orderBy('id')
            .forUpdate()
            .execute()
          const sender = users.find((user) => user.id === from)
          if (sender === undefined) throw new TransferRefused(404, `no user with id ${from}`)
          if (!users.some((user) => user.id === to)) throw new TransferRefused(404, `no user with id ${to}`)
          if (sender.credits < amount) {
            throw new TransferRefused(409, `user ${from} has ${sender.credits} credits, fewer than ${amount}`)
          }
          await trx
            .updateTable('users')
            .set((eb) => ({ credits: eb('credits', '-', amount) }))
            .where('id', '=', from)
            .execute()
          await trx
            .updateTable('users')
            .set((eb) => ({ credits: eb('credits', '+', amount) }))
            .where('id', '=', to)
            .execute()
        }),
      {
        idempotent: true,
        retries: 3,
        maxElapsedMs: 5_000,
        onRetry: ({ attempt, classification, delayMs }) =>
          log('warn', {
            msg: 'transfer retry',
            requestId,
            attempt,
            category: classification.category,
            code: classification.code,
            reason: classification.reason,
            delayMs,
          }),
      },
    )
  } catch (error) {
    if (error instanceof TransferRefused) {
      return { kind: 'refused', status: error.status, error: error.message }
    }
    if (!isUniqueViolation(error)) throw error
    // The key exists: this request (an earlier attempt, or a client retry) was already applied.
    replayed = true
  }
  // From the writer: a replayed transfer was committed by another request, outside this one's
  // read-your-writes scope, and a replica may not have it yet.
  const transfer = await db.writer
    .selectFrom('credit_transfers')
    .selectAll()
    .where('request_id', '=', requestId)
    .executeTakeFirst()
  if (transfer === undefined) throw new Error(`transfer ${requestId} not found after it was applied`)
  const same = transfer.from_user_id === from && transfer.to_user_id === to && transfer.amount === amount
  if (!same) return { kind: 'key-reused' }
  return { kind: replayed ? 'replayed' : 'applied', transfer }
}

function transferJson(transfer: CreditTransfer) {
  return {
    requestId: transfer.request_id,
    from: transfer.from_user_id,
    to: transfer.to_user_id,
    amount: transfer.amount,
    createdAt: transfer.created_at,
  }
}

function badRequest(res: Response, error: string): void {
  res.status(400).json({ error })
}

function notFound(res: Response, id: number): void {
  res.status(404).json({ error: `no user with id ${id}` })
}

type Parsed<T> = { readonly value: T } | { readonly error: string }
type FieldParser = (value: unknown, field: string) => Parsed<unknown>

/**
 * A JSON object body with exactly the fields of `parsers`: `'all'` of them required, or `'some'`
 * (at least one, for PATCH). Unknown fields are an error, not silently ignored.
 */
function parseFields(
  body: unknown,
  parsers: Readonly<Record<string, FieldParser>>,
  required: 'all' | 'some',
): Parsed<Record<string, unknown>> {
  const names = Object.keys(parsers)
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return {
      error: `the request body must be a JSON object with ${names.join(', ')} (content-type: application/json)`,
    }
  }
  const unknown = Object.keys(body).filter((key) => !Object.hasOwn(parsers, key))
  if (unknown.length > 0) {
    return {
      error: `unknown field${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `'${k}'`).join(', ')} (allowed: ${names.join(', ')})`,
    }
  }
  const value: Record<string, unknown> = {}
  for (const [name, parse] of Object.entries(parsers)) {
    const raw = (body as Record<string, unknown>)[name]
    if (raw === undefined) {
      if (required === 'all') return { error: `${name} is required` }
      continue
    }
    const parsed = parse(raw, name)
    if ('error' in parsed) return parsed
    value[name] = parsed.value
  }
  if (Object.keys(value).length === 0) return { error: `give at least one of ${names.join(', ')}` }
  return { value }
}

const parseName: FieldParser = (value) =>
  typeof value === 'string' && isLength(value.trim(), 1, 100)
    ? { value: value.trim() }
    : { error: 'name must be a string of 1 to 100 characters' }

const parseEmail: FieldParser = (value) =>
  typeof value === 'string' && /^[^\s@]+@[^\s@]+$/.test(value) && isLength(value, 3, 200)
    ? { value }
    : { error: 'email must be an email address (name@domain) of at most 200 characters' }

const parseUserRef: FieldParser = (value, field) =>
  Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_ID
    ? { value }
    : { error: `${field} must be a user id: an integer from 1 to ${MAX_ID}` }

const parseAmount: FieldParser = (value) =>
  Number.isInteger(value) && (value as number) >= 1 && (value as number) <= MAX_AMOUNT
    ? { value }
    : { error: `amount must be an integer from 1 to ${MAX_AMOUNT}` }

/** Length in characters (code points), as varchar(n) counts them. */
function isLength(value: string, min: number, max: number): boolean {
  const length = [...value].length
  return length >= min && length <= max
}

function parsePage(
  query: Request['query'],
): { readonly limit: number; readonly after: number } | { readonly error: string } {
  const unknown = Object.keys(query).filter((key) => key !== 'limit' && key !== 'after')
  if (unknown.length > 0) return { error: `unknown query parameter '${unknown[0]}' (allowed: limit, after)` }
  const { limit: rawLimit, after: rawAfter } = query
  let limit = DEFAULT_LIMIT
  if (rawLimit !== undefined) {
    limit = typeof rawLimit === 'string' && /^\d{1,3}$/.test(rawLimit) ? Number(rawLimit) : Number.NaN
    if (!(limit >= 1 && limit <= MAX_LIMIT))
      return { error: `limit must be an integer from 1 to ${MAX_LIMIT}` }
  }
  let after = 0
  if (rawAfter !== undefined) {
    const id = rawAfter === '0' ? 0 : typeof rawAfter === 'string' ? parseId(rawAfter) : undefined
    if (id === undefined) return { error: `after must be a user id (0 to ${MAX_ID}), such as a page's next` }
    after = id
  }
  return { limit, after }
}

function parseId(value: string | undefined): number | undefined {
  if (value === undefined || !/^[1-9]\d{0,9}$/.test(value)) return undefined
  const id = Number(value)
  return id <= MAX_ID ? id : undefined
}

type Health = 'up' | 'down'

function pingOptions() {
  return { signal: AbortSignal.timeout(PING_TIMEOUT_MS) }
}

async function ping(query: () => Promise<unknown>, log: Logger): Promise<Health> {
  try {
    await query()
    return 'up'
  } catch (error) {
    log('warn', { msg: 'health ping failed', error: describeError(error) })
    return 'down'
  }
}

/**
 * A check for `Authorization: Bearer <token>` (compared in constant time): true when it matches, else
 * answers 401 itself and returns false.
 */
function bearer(token: string): (req: Request, res: Response) => boolean {
  const expected = digest(token)
  return (req, res) => {
    const match = /^Bearer (\S+)$/.exec(req.get('authorization') ?? '')
    if (match !== null && timingSafeEqual(digest(match[1] ?? ''), expected)) return true
    res.set('www-authenticate', 'Bearer').status(401).json({ error: 'a valid bearer token is required' })
    return false
  }
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest()
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
