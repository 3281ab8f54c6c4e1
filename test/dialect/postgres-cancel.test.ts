import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { parseControlStatement, sendCancelRequest } from '../../src/dialect/postgres-cancel.js'
import { clusterFor } from '../support/database.js'
import { serverErrorCode } from '../support/sql.js'

// The protocol-level CancelRequest the library sends behind a connection proxy (instead of
// `select pg_cancel_backend(pid)`, whose pid would be the proxy's key), checked against a real server.

describe('sendCancelRequest', () => {
  const info = clusterFor('postgres')
  const url = new URL(info.writerUrl)

  it("cancels the statement of the session whose key it carries, and only that one's", async () => {
    const target = new pg.Client({ connectionString: info.writerUrl })
    const bystander = new pg.Client({ connectionString: info.writerUrl })
    for (const client of [target, bystander]) client.on('error', () => {})
    await Promise.all([target.connect(), bystander.connect()])
    try {
      const running = target.query('select pg_sleep(30)').then(
        () => undefined,
        (error: unknown) => error,
      )
      const untouched = bystander.query('select pg_sleep(1) as done')
      await new Promise((resolve) => setTimeout(resolve, 200))
      const { processID, secretKey } = target as unknown as { processID: number; secretKey: number }
      const startedAt = performance.now()
      await sendCancelRequest(url.hostname, Number(url.port), processID, secretKey, 5_000)
      expect(serverErrorCode(await running)).toBe('57014')
      expect(performance.now() - startedAt).toBeLessThan(2_000)
      await expect(untouched).resolves.toMatchObject({ rowCount: 1 })
      // The session survives a cancel.
      await expect(target.query('select 1 as one')).resolves.toMatchObject({ rows: [{ one: 1 }] })
    } finally {
      await Promise.all([target.end(), bystander.end()])
    }
  })

  it('a wrong key cancels nothing', async () => {
    const target = new pg.Client({ connectionString: info.writerUrl })
    target.on('error', () => {})
    await target.connect()
    try {
      const running = target.query('select pg_sleep(0.5) as done')
      const { processID, secretKey } = target as unknown as { processID: number; secretKey: number }
      await sendCancelRequest(url.hostname, Number(url.port), processID, (secretKey ^ 1) | 0, 5_000)
      await expect(running).resolves.toMatchObject({ rowCount: 1 })
    } finally {
      await target.end()
    }
  })

  it('fails, bounded, when nothing listens', async () => {
    await expect(sendCancelRequest('127.0.0.1', 1, 1, 1, 2_000)).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    })
  })
})

describe("parseControlStatement (Kysely's cancel and kill statements)", () => {
  it.each([
    ['select pg_cancel_backend(4242)', { processId: 4242, kill: false }],
    ['select pg_terminate_backend(4242)', { processId: 4242, kill: true }],
    // A proxy's key (PgBouncer's is random) is negative half the time.
    ['select pg_cancel_backend(-1256602978)', { processId: -1256602978, kill: false }],
    ['select pg_terminate_backend(-7)', { processId: -7, kill: true }],
    ['select pg_sleep(1)', undefined],
    ['select pg_cancel_backend(1); drop table x', undefined],
  ])('%s', (statement, expected) => {
    expect(parseControlStatement(statement)).toEqual(expected)
  })
})
