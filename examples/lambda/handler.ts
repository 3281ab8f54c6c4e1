import type {
  APIGatewayProxyEventV2,
  APIGatewayProxyHandlerV2,
  APIGatewayProxyStructuredResultV2,
} from 'aws-lambda'
import { classifyError, getErrorClassification, withRetry } from 'kysely-resilient'
import { type Connection, connection, type LambdaUser, log } from './db.js'

/** Largest value of the `integer` id column; a bigger id cannot exist (and would be an SQL error). */
const MAX_ID = 2_147_483_647
const MAX_BODY_BYTES = 10_240

/** Seconds a client should wait before retrying a 503. */
const RETRY_AFTER_S = 1

/**
 * API Gateway (HTTP API, payload format 2.0) handler for `GET /users/{id}` and `POST /users`.
 * Reads go through `db` (a reader when `DB_READER_URLS` is set), writes to the writer. Bad input is
 * a 400 with a message, an unknown id or route a 404. A database that is unavailable (after the
 * retries) is a 503 with `Retry-After`; anything else is logged as one JSON line and rethrown, so
 * Lambda counts a failed invocation and API Gateway answers 500. How it authenticates is
 * configuration, not code: deployed with `DB_AUTH=iam`, locally with a password (see `connection()`
 * in db.ts and the README). The schema is migrate.ts's job, at deploy time: nothing here creates it.
 */
export const handler: APIGatewayProxyHandlerV2 = async (event, context) => {
  try {
    return await route(event)
  } catch (error) {
    const verdict = getErrorClassification(error) ?? classifyError(error)
    const retryLater =
      verdict.category === 'unavailable' ||
      verdict.category === 'read-only' ||
      verdict.category === 'conflict'
    log(retryLater ? 'warn' : 'error', {
      msg: 'request failed',
      requestId: context?.awsRequestId,
      method: event.requestContext.http.method,
      path: event.rawPath,
      category: verdict.category,
      code: verdict.code,
      reason: verdict.reason,
      error: error instanceof Error ? error.name : typeof error,
    })
    if (retryLater) {
      return json(
        503,
        { error: 'the database is unavailable; try again shortly' },
        { 'retry-after': String(RETRY_AFTER_S) },
      )
    }
    throw error
  }
}

async function route(event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> {
  const method = event.requestContext.http.method.toUpperCase()
  const path = event.rawPath.replace(/\/+$/, '') || '/'

  if (path === '/users') {
    if (method !== 'POST')
      return json(405, { error: `${method} is not allowed on /users` }, { allow: 'POST' })
    const input = parseNewUser(event)
    if ('error' in input) return json(400, { error: input.error })
    const conn = await connection()
    return json(201, await insertUser(conn, input))
  }

  const match = /^\/users\/([^/]+)$/.exec(path)
  if (match !== null) {
    if (method !== 'GET') return json(405, { error: `${method} is not allowed on ${path}` }, { allow: 'GET' })
    const id = parseId(decodeURIComponent(match[1] ?? ''))
    if (id === undefined) return json(400, { error: `id must be an integer from 1 to ${MAX_ID}` })
    const { db } = await connection()
    const user = await db.selectFrom('lambda_users').selectAll().where('id', '=', id).executeTakeFirst()
    if (user === undefined) return json(404, { error: `no user with id ${id}` })
    return json(200, user)
  }

  return json(404, { error: `no route for ${method} ${path}` })
}

interface NewUser {
  readonly name: string
  readonly email: string
}

function parseNewUser(event: APIGatewayProxyEventV2): NewUser | { readonly error: string } {
  if (event.body === undefined || event.body === '') return { error: 'the body must be a JSON object' }
  const text = event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body
  if (Buffer.byteLength(text) > MAX_BODY_BYTES)
    return { error: `the body must be at most ${MAX_BODY_BYTES} bytes` }
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return { error: 'the body is not valid JSON' }
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { error: 'the body must be a JSON object' }
  }
  const { name, email } = body as Record<string, unknown>
  if (typeof name !== 'string' || name.trim() === '' || name.length > 100) {
    return { error: "'name' must be a non-empty string of at most 100 characters" }
  }
  if (typeof email !== 'string' || !/^[^\s@]+@[^\s@]+$/.test(email) || email.length > 200) {
    return { error: "'email' must be an email address of at most 200 characters" }
  }
  return { name: name.trim(), email }
}

function parseId(value: string): number | undefined {
  if (!/^[1-9]\d{0,9}$/.test(value)) return undefined
  const id = Number(value)
  return id <= MAX_ID ? id : undefined
}

/**
 * The insert, as one unit of work under `withRetry`: retried after a failure that certainly did not
 * apply it (unavailable, a failover's read-only writer, a deadlock). Not `idempotent`: a second
 * insert would create a second user, so a connection lost after the statement was sent
 * ('ambiguous') is not retried; the client gets a 500 and decides.
 */
async function insertUser({ db, dialect }: Connection, input: NewUser): Promise<LambdaUser> {
  return withRetry(
    async () => {
      if (dialect === 'postgres') {
        return db.insertInto('lambda_users').values(input).returningAll().executeTakeFirstOrThrow()
      }
      // MySQL/MariaDB has no RETURNING: insert and read back in one transaction (the writer's).
      return db.transaction().execute(async (trx) => {
        const result = await trx.insertInto('lambda_users').values(input).executeTakeFirstOrThrow()
        return trx
          .selectFrom('lambda_users')
          .selectAll()
          .where('id', '=', Number(result.insertId))
          .executeTakeFirstOrThrow()
      })
    },
    {
      retries: 2,
      maxElapsedMs: 3_000,
      onRetry: ({ attempt, classification, delayMs }) =>
        log('warn', {
          msg: 'insert retry',
          attempt,
          category: classification.category,
          code: classification.code,
          delayMs,
        }),
    },
  )
}

function json(
  statusCode: number,
  body: unknown,
  headers: Record<string, string> = {},
): APIGatewayProxyStructuredResultV2 {
  return {
    statusCode,
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  }
}
