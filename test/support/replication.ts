import { pollUntil } from './poll.js'
import { type Engine, mysqlQuery, pgQuery } from './sql.js'

/**
 * Resolves once everything committed on the writer so far is visible on the reader. Works against any
 * servers given by URL (local clusters or external ones), using short-lived admin connections so it
 * needs no teardown. When the reader is not a replica (same server, or no replication configured) it
 * returns at once: there is nothing to wait for.
 */
export async function waitForReplica(
  engine: Engine,
  adminWriterUrl: string,
  adminReaderUrl: string,
  timeoutMs = 10_000,
): Promise<void> {
  if (adminWriterUrl === adminReaderUrl) return
  if (engine === 'postgres') await waitForPostgresReplica(adminWriterUrl, adminReaderUrl, timeoutMs)
  else await waitForMariaDbReplica(adminWriterUrl, adminReaderUrl, timeoutMs)
}

async function waitForPostgresReplica(
  writerUrl: string,
  readerUrl: string,
  timeoutMs: number,
): Promise<void> {
  // The flush position: every acknowledged commit is flushed (synchronous_commit stays on; fsync=off
  // keeps that cheap), and it always ends on a record, so the replica can reach it. The insert
  // position cannot serve: at a page boundary it points past the next page header, which no replica
  // replays until more WAL is written.
  const [writer] = await pgQuery(writerUrl, 'SELECT pg_current_wal_flush_lsn()::text AS lsn')
  const target = String(writer?.lsn)
  let replayed = 'unknown'
  try {
    await pollUntil(
      async () => {
        // pg_lsn compares numerically; comparing the text forms would not.
        const [reader] = await pgQuery(
          readerUrl,
          `SELECT NOT pg_is_in_recovery() AS primary,
                  pg_last_wal_replay_lsn()::text AS replayed,
                  coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false) AS caught_up`,
          [target],
        )
        replayed = String(reader?.replayed)
        return reader?.primary === true || reader?.caught_up === true ? true : undefined
      },
      { timeoutMs, intervalMs: 10, what: 'replay' },
    )
  } catch (error) {
    throw new Error(
      `PostgreSQL replica did not replay the writer's WAL within ${timeoutMs} ms: ` +
        `writer at ${target}, reader replayed up to ${replayed}`,
      { cause: error },
    )
  }
}

async function waitForMariaDbReplica(writerUrl: string, readerUrl: string, timeoutMs: number): Promise<void> {
  const [[writer], [reader]] = await Promise.all([
    mysqlQuery(writerUrl, 'SELECT @@gtid_binlog_pos AS pos, @@server_id AS id'),
    mysqlQuery(readerUrl, 'SELECT @@server_id AS id'),
  ])
  // Same server reached through two URLs: MASTER_GTID_WAIT would wait for a replication that never comes.
  if (writer?.id === reader?.id) return
  const position = String(writer?.pos ?? '')
  const seconds = Math.max(timeoutMs / 1000, 0.001)
  const [result] = await mysqlQuery(readerUrl, 'SELECT MASTER_GTID_WAIT(?, ?) AS result', [position, seconds])
  // 0 = reached; -1 = timed out. NULL means the arguments were invalid.
  if (Number(result?.result) !== 0) {
    const [now] = await mysqlQuery(readerUrl, 'SELECT @@gtid_slave_pos AS at')
    throw new Error(
      `MariaDB replica did not reach the writer's GTID position within ${timeoutMs} ms: ` +
        `writer at '${position}', reader at '${String(now?.at)}'`,
    )
  }
}
