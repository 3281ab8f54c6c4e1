/**
 * A short client session against a running users service: what each route answers, one line per
 * request. Plain HTTP (fetch); nothing here knows about the database.
 *
 *   BASE_URL=http://127.0.0.1:3000 npx tsx examples/express/demo.ts
 *
 * With ADMIN_TOKEN (the server's), it ends with the statements each endpoint served (/admin/stats).
 * Exits 1 if any request got a status other than the one expected. `npm run demo` starts a throwaway
 * database, the migration and the server first (scripts/demo.ts).
 */
import { randomBytes, randomUUID } from 'node:crypto'

const baseUrl = process.env.BASE_URL?.replace(/\/+$/, '')
if (!baseUrl) {
  console.error('BASE_URL is not set (the users service, e.g. http://127.0.0.1:3000)')
  process.exit(1)
}

let failures = 0
/** The token of the session's latest write: sent back so reads see it, on any instance or replica. */
let token: string | undefined

interface Exchange {
  readonly status: number
  readonly body: Record<string, unknown>
}

async function request(
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
  path: string,
  expected: number,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Exchange> {
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(token === undefined ? {} : { 'x-consistency-token': token }),
      ...headers,
    },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  })
  token = response.headers.get('x-consistency-token') ?? token
  const text = await response.text()
  const exchange: Exchange = { status: response.status, body: text === '' ? {} : JSON.parse(text) }
  const unexpected = exchange.status !== expected
  if (unexpected) failures++
  console.log(
    `${method} ${path} -> ${exchange.status}${summary(exchange.body)}` +
      `${unexpected ? `   <-- UNEXPECTED (expected ${expected})` : ''}`,
  )
  return exchange
}

function summary(body: Record<string, unknown>): string {
  if ('error' in body) return `  (error: ${String(body.error)})`
  if (Array.isArray(body.users)) return `  (${body.users.length} users, next: ${String(body.next)})`
  if ('transfer' in body) {
    const t = body.transfer as Record<string, unknown>
    return `  (${String(t.amount)} credits ${String(t.from)} -> ${String(t.to)}, replayed: ${String(body.replayed)})`
  }
  if ('writer' in body && 'status' in body) {
    return `  (status: ${String(body.status)}, writer ${String(body.writer)}, readers ${JSON.stringify(body.readers)})`
  }
  if ('email' in body)
    return `  (id ${String(body.id)}, ${String(body.name)}, ${String(body.credits)} credits)`
  return ''
}

const run = randomBytes(4).toString('hex')
const ids: number[] = []
for (const name of ['Ada Lovelace', 'Grace Hopper', 'Edsger Dijkstra']) {
  const email = `${name.split(' ')[0]?.toLowerCase()}.${run}@example.com`
  const { body } = await request('POST', '/users', 201, { name, email })
  ids.push(Number(body.id))
}
const [ada = 0, grace = 0, edsger = 0] = ids

// Reads right after the writes: the token makes them see the writes even on a replica that is behind.
const first = await request('GET', `/users?limit=2&after=${ada - 1}`, 200)
if (typeof first.body.next === 'string') await request('GET', `/users?limit=2&after=${first.body.next}`, 200)
await request('GET', `/users/${grace}`, 200)
await request('PATCH', `/users/${grace}`, 200, { name: 'Rear Admiral Grace Hopper' })

const transfer = { 'idempotency-key': randomUUID() }
await request('POST', `/users/${ada}/credits`, 201, { to: grace, amount: 30 }, transfer)
// The client did not get (or did not trust) the answer and sends the same request again: not applied twice.
await request('POST', `/users/${ada}/credits`, 200, { to: grace, amount: 30 }, transfer)
await request('GET', `/users/${ada}`, 200)

await request('POST', '/users', 409, { name: 'Ada Again', email: `ada.${run}@example.com` })
await request('POST', '/users', 400, { name: 'No Email' })
await request(
  'POST',
  `/users/${ada}/credits`,
  409,
  { to: grace, amount: 1_000 },
  { 'idempotency-key': randomUUID() },
)
await request('DELETE', `/users/${edsger}`, 204)
await request('GET', `/users/${edsger}`, 404)
await request('GET', '/health', 200)

const adminToken = process.env.ADMIN_TOKEN
if (adminToken) {
  const response = await fetch(`${baseUrl}/admin/stats`, {
    headers: { authorization: `Bearer ${adminToken}` },
  })
  const stats = (await response.json()) as {
    writer: { name: string; queries: number }
    readers: Array<{ name: string; queries: number; healthy: boolean }>
  }
  console.log('\nstatements per endpoint (GET /admin/stats):')
  for (const endpoint of [stats.writer, ...stats.readers])
    console.log(`  ${endpoint.name}: ${endpoint.queries}`)
}

if (failures > 0) {
  console.error(`\n${failures} request(s) got an unexpected status`)
  process.exit(1)
}
