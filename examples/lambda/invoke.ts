// Invokes the functions locally: the migration (as a deployment does, before any request), then the
// API handler as API Gateway would: a POST /users, then a GET /users/{id}.
//   DB_DIALECT=postgres DB_WRITER_URL=postgres://app:secret@localhost:5432/app npx tsx examples/lambda/invoke.ts
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda'
import { closeConnection } from './db.js'
import { apiGatewayEvent, localContext } from './events.js'
import { handler } from './handler.js'
import { handler as migrate } from './migrate.js'

async function call(
  method: 'GET' | 'POST',
  path: string,
  body?: string,
): Promise<APIGatewayProxyStructuredResultV2> {
  const result = await handler(apiGatewayEvent(method, path, body), localContext(), () => undefined)
  const structured: APIGatewayProxyStructuredResultV2 =
    typeof result === 'object' ? result : { statusCode: 200, body: JSON.stringify(result ?? null) }
  console.log(`${method} ${path} -> ${structured.statusCode} ${structured.body ?? ''}`)
  return structured
}

try {
  process.env.DB_DIALECT ??= 'postgres'
  console.log(`migrate -> ${JSON.stringify(await migrate())}`)
  const email = `ada.${Date.now()}@example.com`
  const created = await call('POST', '/users', JSON.stringify({ name: 'Ada Lovelace', email }))
  if (created.statusCode !== 201) process.exitCode = 1
  else {
    const { id } = JSON.parse(created.body ?? '{}') as { id: number }
    const read = await call('GET', `/users/${id}`)
    if (read.statusCode !== 200) process.exitCode = 1
  }
} finally {
  // A Lambda container keeps its connections; a script must close them to exit.
  await closeConnection()
}
