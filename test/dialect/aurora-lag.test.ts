import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createDb, type ResilientDb } from '../../src/index.js'
import { collectEvents } from '../support/fault-helpers.js'
import { pollUntil } from '../support/poll.js'
import { type PostgresCluster, startPostgresCluster } from '../support/postgres-cluster.js'
import { registerSecret } from '../support/secrets.js'
import { pgQuery } from '../support/sql.js'

// Replay lag from each platform's own source, on real servers. Aurora PostgreSQL cannot run here, so
// a cluster of this file's own gets Aurora's two functions, filled from the real replication state:
//
// - aurora_replica_status(): one row per instance, server_id, session_id ('MASTER_SESSION_ID' for
//   the writer) and replica_lag_in_msec (NULL where Aurora has none). Columns as documented in
//   "aurora_replica_status" (Aurora PostgreSQL functions reference,
//   https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/aurora_replica_status.html), and as
//   the AWS Advanced NodeJS Wrapper's topology query reads them.
// - aurora_db_instance_identifier(): the instance this session is on (the wrapper's instance query).
//
// Here the replica's lag is its real one: 0 once it has replayed all it received, else the age of its
// last replayed commit, with a flag table that makes Aurora report no lag (NULL). The replica applies
// each commit 1.5 s late, so "behind" is real and the position check does not short-circuit it.

interface Database {
  beat: { id: number }
  aurora_sim_flags: { unknown: boolean }
}

const SIMULATED_AURORA = [
  'create table aurora_sim_flags (unknown boolean not null)',
  'insert into aurora_sim_flags values (false)',
  'create table beat (id int primary key)',
  'grant select on aurora_sim_flags to app',
  'grant all on beat to app',
  `create function aurora_db_instance_identifier() returns text language sql stable as $$
     select case when pg_is_in_recovery() then 'reader-1' else 'writer-1' end $$`,
  `create function aurora_replica_status()
     returns table (server_id text, session_id text, replica_lag_in_msec double precision)
     language sql stable as $$
     select 'writer-1', 'MASTER_SESSION_ID', null::double precision
     union all
     select 'reader-1', 'aurora-reader-session',
            case when (select unknown from aurora_sim_flags) then null
                 when not pg_is_in_recovery() then null
                 when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then 0
                 else extract(epoch from now() - pg_last_xact_replay_timestamp()) * 1000 end $$`,
]

const dbs: Array<ResilientDb<Database>> = []
afterEach(async () => {
  await Promise.all(dbs.splice(0).map((db) => db.destroy()))
})

describe('replay lag from Aurora PostgreSQL’s aurora_replica_status() (simulated)', () => {
  let cluster: PostgresCluster

  beforeAll(async () => {
    cluster = await startPostgresCluster({ replicaApplyDelayMs: 1_500 })
    registerSecret(cluster.password)
    for (const statement of SIMULATED_AURORA) await pgQuery(cluster.adminWriterUrl, statement)
    await pollUntil(
      async () =>
        (
          await pgQuery(
            cluster.adminReaderUrl,
            `select to_regproc('aurora_replica_status') is not null as ok`,
          )
        )[0]?.ok === true || undefined,
      { timeoutMs: 20_000, what: 'the simulated Aurora functions on the replica' },
    )
  }, 120_000)

  afterAll(async () => {
    await cluster?.stop()
  })

  it('detects Aurora, ejects a lagging reader, keeps it out while Aurora reports no lag, and restores it when it does', async () => {
    const db = createDb<Database>({
      dialect: 'postgres',
      writer: cluster.writerUrl,
      readers: [cluster.readerUrl],
      routing: { maxReplicaLagMs: 500, lagCheckIntervalMs: 100, readerCooldownMs: 200 },
    })
    dbs.push(db)
    const events = collectEvents(db)
    // The db connects (and starts its lag checks) on first use. A write the replica applies 1.5 s
    // late: behind by more than 500 ms meanwhile (a replica caught up by position is not asked).
    await db.insertInto('beat').values({ id: 1 }).execute()
    await pollUntil(async () => (events['reader-ejected'].length > 0 ? true : undefined), {
      timeoutMs: 10_000,
      what: 'the lagging reader to be ejected',
    })
    expect(events['reader-ejected'][0]).toMatchObject({ endpoint: 'reader-0', reason: 'lagging' })
    expect(events['reader-ejected'][0]?.lagMs).toBeGreaterThan(500)
    expect(db.stats().readers[0]?.lagSource).toBe('aurora-postgres')
    await pollUntil(async () => (events['reader-restored'].length > 0 ? true : undefined), {
      timeoutMs: 10_000,
      what: 'the reader to be restored once it replayed the write',
    })

    // Aurora reports no lag for it: unknown, so it stays out of rotation, never taken for 0. (The flag
    // is itself a write the replica applies late, so it is first ejected as lagging.)
    await pgQuery(cluster.adminWriterUrl, 'update aurora_sim_flags set unknown = true')
    await pollUntil(
      async () =>
        (await pgQuery(cluster.adminReaderUrl, 'select unknown from aurora_sim_flags'))[0]?.unknown ===
          true || undefined,
      { timeoutMs: 10_000, what: 'the replica to apply the flag' },
    )
    const restoredSoFar = events['reader-restored'].length
    // Five probe rounds (cooldown 200 ms) with no lag reported: still out.
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    expect(events['reader-restored']).toHaveLength(restoredSoFar)
    expect(db.stats().readers[0]).toMatchObject({ healthy: false })
    expect(db.stats().readers[0]?.lagMs).toBeUndefined()

    await pgQuery(cluster.adminWriterUrl, 'update aurora_sim_flags set unknown = false')
    await pollUntil(async () => (events['reader-restored'].length > restoredSoFar ? true : undefined), {
      timeoutMs: 10_000,
      what: 'the reader to be restored once Aurora reports its lag again',
    })
    expect(db.stats().readers[0]).toMatchObject({ healthy: true, lagSource: 'aurora-postgres' })
    expect(events.error).toEqual([])
  }, 60_000)
})
