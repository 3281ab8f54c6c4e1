import { sql } from 'kysely'
import { afterEach, expect, it } from 'vitest'
import { createDb, type ResilientDb } from '../../src/index.js'
import { describeEngines } from '../support/database.js'

// Platform detection on real servers: on each endpoint's first connection, without a lag check or
// topology discovery, invisible to Kysely's log and costing no connection of its own. The cluster
// platforms' detection is in test/topology/cluster-topology.test.ts, aurora-mysql.test.ts and
// multi-az-mysql.test.ts; the statements' result shapes in test/dialect/topology-queries.test.ts.

const dbs: Array<ResilientDb<Record<string, never>>> = []
afterEach(async () => {
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
})

describeEngines('platform detection', (engine, info) => {
  it('finds the platform on each endpoint’s first connection, with no statement in Kysely’s log and no extra connection', async () => {
    const logged: string[] = []
    const db = createDb<Record<string, never>>({
      dialect: engine,
      writer: info.writerUrl,
      readers: [info.readerUrl],
      log: (event) => {
        logged.push(event.query.sql)
      },
    })
    dbs.push(db)
    expect(db.stats().writer.platform).toBeUndefined()
    await sql`select 1 as one`.execute(db.writer)
    await db.selectNoFrom(sql<number>`2`.as('two')).execute()
    const stats = db.stats()
    const expected = engine === 'postgres' ? 'postgres' : 'mariadb'
    expect(stats.writer.platform).toBe(expected)
    expect(stats.readers[0]?.platform).toBe(expected)
    // Only the caller's statements, each on the one connection its endpoint opened.
    expect(logged).toHaveLength(2)
    expect(stats.writer.total).toBe(1)
    expect(stats.readers[0]?.total).toBe(1)
  })
})
