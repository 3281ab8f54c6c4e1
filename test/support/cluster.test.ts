import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { findMariaDbBinaries, findPostgresBinDir } from './binaries.js'
import { describeEngines, hasReplica, waitForReplica } from './database.js'
import { startMariaDbCluster } from './mariadb-cluster.js'
import { isPortOpen } from './ports.js'
import { startPostgresCluster } from './postgres-cluster.js'
import { waitForReplica as waitForReplicaAt } from './replication.js'
import { type Engine, queryOnce, serverErrorCode } from './sql.js'

// Tests of the harness itself: if these fail, every integration test's results are suspect.

const READ_ONLY_ERROR: Record<Engine, string> = { postgres: '25006', mysql: '1290' }
const BAD_PASSWORD_ERROR: Record<Engine, string> = { postgres: '28P01', mysql: '1045' }

async function errorOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected the statement to fail')
    },
    (error: unknown) => error,
  )
}

function uniqueTable(): string {
  return `harness_${randomBytes(6).toString('hex')}`
}

describeEngines('shared cluster', (engine, info) => {
  const query = (url: string, sql: string, params?: readonly unknown[]) => queryOnce(engine, url, sql, params)

  it.skipIf(!hasReplica(info))('the writer is a primary and the reader a read-only replica', async () => {
    if (engine === 'postgres') {
      const recovering = 'SELECT pg_is_in_recovery() AS recovering'
      expect(await query(info.writerUrl, recovering)).toEqual([{ recovering: false }])
      expect(await query(info.readerUrl, recovering)).toEqual([{ recovering: true }])
    } else {
      const roles = 'SELECT @@read_only AS readOnly, @@server_id AS serverId'
      const [[writer], [reader]] = await Promise.all([
        query(info.writerUrl, roles),
        query(info.readerUrl, roles),
      ])
      expect(writer?.readOnly).toBe(0)
      expect(reader?.readOnly).toBe(1)
      expect(reader?.serverId).not.toBe(writer?.serverId)
    }
  })

  it('a row written on the writer is visible on the reader after waitForReplica', async () => {
    const table = uniqueTable()
    await query(info.writerUrl, `CREATE TABLE ${table} (id integer PRIMARY KEY, note varchar(40))`)
    try {
      await query(info.writerUrl, `INSERT INTO ${table} (id, note) VALUES (1, 'replicated')`)
      await waitForReplica(engine)
      expect(await query(info.readerUrl, `SELECT id, note FROM ${table}`)).toEqual([
        { id: 1, note: 'replicated' },
      ])
    } finally {
      await query(info.writerUrl, `DROP TABLE ${table}`)
    }
  })

  it.skipIf(!hasReplica(info))('the app user cannot write on the replica', async () => {
    const table = uniqueTable()
    await query(info.writerUrl, `CREATE TABLE ${table} (id integer PRIMARY KEY)`)
    try {
      await waitForReplica(engine)
      const error = await errorOf(query(info.readerUrl, `INSERT INTO ${table} (id) VALUES (1)`))
      expect(serverErrorCode(error)).toBe(READ_ONLY_ERROR[engine])
    } finally {
      await query(info.writerUrl, `DROP TABLE ${table}`)
    }
  })

  it.skipIf(info.password === undefined)('the app user with a wrong password is rejected', async () => {
    const url = new URL(info.writerUrl)
    url.password = 'definitely-not-the-password'
    const error = await errorOf(query(url.toString(), 'SELECT 1'))
    expect(serverErrorCode(error)).toBe(BAD_PASSWORD_ERROR[engine])
  })
})

// Fault helpers, on clusters of their own so breaking them cannot disturb other test files.
describe.concurrent('fault helpers', () => {
  it.skipIf(findPostgresBinDir() === undefined)(
    'postgres: kill the primary, promote the replica, write',
    async () => {
      const cluster = await startPostgresCluster({ maxConnections: 20 })
      try {
        expect(await queryOnce('postgres', cluster.writerUrl, 'SHOW max_connections')).toEqual([
          { max_connections: '20' },
        ])
        await queryOnce('postgres', cluster.writerUrl, 'CREATE TABLE fault (id integer PRIMARY KEY)')
        await waitForReplicaOf(cluster)

        await cluster.primary.kill()
        expect(cluster.primary.pid).toBeUndefined()
        expect(await isPortOpen(cluster.primary.port)).toBe(false)

        await cluster.replica?.promote()
        await queryOnce('postgres', cluster.readerUrl, 'INSERT INTO fault (id) VALUES (1)')
        expect(await queryOnce('postgres', cluster.readerUrl, 'SELECT id FROM fault')).toEqual([{ id: 1 }])

        // The killed primary comes back as a (now diverged) primary: start() after kill() works.
        await cluster.primary.start()
        expect(cluster.primary.pid).toBeTypeOf('number')
        expect(
          await queryOnce('postgres', cluster.writerUrl, 'SELECT count(*)::int AS n FROM fault'),
        ).toEqual([{ n: 0 }])
      } finally {
        await cluster.stop()
      }
    },
  )

  it.skipIf(findMariaDbBinaries() === undefined)(
    'mysql: kill the primary, promote the replica, write',
    async () => {
      const cluster = await startMariaDbCluster({ maxConnections: 20 })
      try {
        expect(await queryOnce('mysql', cluster.writerUrl, 'SELECT @@max_connections AS n')).toEqual([
          { n: 20 },
        ])
        await queryOnce('mysql', cluster.writerUrl, 'CREATE TABLE fault (id integer PRIMARY KEY)')
        await waitForReplicaOf(cluster)

        await cluster.primary.stop('immediate')
        expect(cluster.primary.pid).toBeUndefined()
        expect(await isPortOpen(cluster.primary.port)).toBe(false)

        await cluster.replica?.promote()
        await queryOnce('mysql', cluster.readerUrl, 'INSERT INTO fault (id) VALUES (1)')
        expect(await queryOnce('mysql', cluster.readerUrl, 'SELECT id FROM fault')).toEqual([{ id: 1 }])

        await cluster.primary.start()
        expect(await queryOnce('mysql', cluster.writerUrl, 'SELECT count(*) AS n FROM fault')).toEqual([
          { n: 0 },
        ])
      } finally {
        await cluster.stop()
      }
    },
  )
})

function waitForReplicaOf(cluster: { engine: Engine; adminWriterUrl: string; adminReaderUrl: string }) {
  return waitForReplicaAt(cluster.engine, cluster.adminWriterUrl, cluster.adminReaderUrl)
}
