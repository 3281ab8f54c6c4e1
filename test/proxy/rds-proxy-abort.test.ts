import { randomInt } from 'node:crypto'
import { setTimeout as pause } from 'node:timers/promises'
import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { createDb, type ResilientDb } from '../../src/index.js'
import { clusterFor } from '../support/database.js'
import { pollUntil } from '../support/poll.js'
import { mysqlQuery } from '../support/sql.js'

// Behind RDS Proxy, the connection id a MySQL client sees is the proxy's, and a KILL runs on
// whichever database connection the proxy lends: Kysely's 'cancel query' (KILL QUERY <id>) could stop
// another client's statement. With `proxy: 'rds-proxy'` the library sends no KILL. RDS Proxy cannot
// run here, so this sets the proxy on the harness's MariaDB directly: the statement must keep
// running on the server (nothing was killed), while the caller is released at once and its
// connection is replaced. Without the setting, the same abort kills it (the control case).

const dbs: Array<ResilientDb<Record<string, never>>> = []
afterEach(async () => {
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
})

describe('aborting behind RDS Proxy (MySQL)', () => {
  const info = clusterFor('mysql')

  async function runningCount(marker: string): Promise<number> {
    const rows = await mysqlQuery(
      info.adminWriterUrl,
      `select count(*) as n from information_schema.processlist where info like '%${marker}%' and id <> connection_id()`,
    )
    return Number(rows[0]?.n)
  }

  for (const proxied of [true, false]) {
    it(`'cancel query' ${proxied ? 'sends no KILL (the statement runs on)' : 'without the setting kills the statement'}`, async () => {
      let opened = 0
      const db = createDb<Record<string, never>>({
        dialect: 'mysql',
        writer: info.writerUrl,
        ...(proxied ? { proxy: 'rds-proxy' as const } : {}),
        onCreateConnection: async () => {
          opened++
        },
      })
      dbs.push(db)
      const marker = `rds_proxy_abort_${randomInt(1, 1_000_000)}`
      const controller = new AbortController()
      const statement = db
        .selectNoFrom(sql<number>`sleep(3)`.as(marker))
        .execute({ signal: controller.signal, inflightQueryAbortStrategy: 'cancel query' })
      statement.catch(() => {})
      await pollUntil(async () => ((await runningCount(marker)) === 1 ? true : undefined), {
        timeoutMs: 10_000,
        what: 'the statement to run on the server',
      })
      const reason = new Error('caller gave up')
      const abortedAt = performance.now()
      controller.abort(reason)
      await expect(statement).rejects.toBe(reason)
      expect(performance.now() - abortedAt).toBeLessThan(1_000)
      await pause(300)
      expect(await runningCount(marker)).toBe(proxied ? 1 : 0)
      await sql`select 1`.execute(db)
      // Behind a proxy a cancelled connection is never reused.
      expect(opened).toBe(proxied ? 2 : 1)
    })
  }
})
