import { describe, expect, it } from 'vitest'
import { ReplayLagReader } from '../../src/dialect/lag-queries.js'
import { connection } from '../support/fake-connection.js'

// How each platform reports replay lag, from the result shapes each one returns (the columns as
// MySQL 8.0/8.4, MariaDB, Aurora and PostgreSQL document them), without a server: a replica that
// reports no lag is unknown, never 0. Real servers: test/dialect/aurora-lag.test.ts, reader-health.

function mysqlError(errno: number, message: string): Error {
  return Object.assign(new Error(message), { errno, sqlState: '42000', sqlMessage: message })
}

describe('PostgreSQL streaming replica', () => {
  it.each([
    ['not a replica', { replica: false, caught_up: null, lag_ms: null }, 0],
    ['replayed all it received', { replica: true, caught_up: true, lag_ms: '86400000' }, 0],
    ['behind, by the last replayed commit', { replica: true, caught_up: false, lag_ms: '1234.5' }, 1234.5],
    ['behind, clock skew says negative', { replica: true, caught_up: false, lag_ms: -3 }, 0],
    [
      'no replay timestamp (nothing replayed, or fed from an archive)',
      { replica: true, caught_up: false, lag_ms: null },
      undefined,
    ],
    ['no WAL receiver and no timestamp', { replica: true, caught_up: null, lag_ms: null }, undefined],
  ])('%s', async (_name, row, expected) => {
    const reader = new ReplayLagReader()
    expect(await reader.read(connection([[/as lag_ms/, [row]]]), 'postgres')).toBe(expected)
    expect(reader.source).toBe('postgres')
  })
})

describe('Aurora PostgreSQL (aurora_replica_status())', () => {
  it.each([
    ['the writer', [{ writer: true, lag_ms: null }], 0],
    ['a reader', [{ writer: false, lag_ms: 17.25 }], 17.25],
    ['a reader without a lag yet', [{ writer: false, lag_ms: null }], undefined],
    ['an instance not listed yet', [], undefined],
  ])('%s', async (_name, rows, expected) => {
    const reader = new ReplayLagReader()
    const conn = connection([
      [/aurora_replica_status\(\) where server_id = aurora_db_instance_identifier/, rows],
    ])
    expect(await reader.read(conn, 'aurora-postgres')).toBe(expected)
    expect(reader.source).toBe('aurora-postgres')
    // One statement per check.
    await reader.read(conn, 'aurora-postgres')
    expect(conn.sent).toHaveLength(2)
  })
})

describe('MySQL and MariaDB replica status', () => {
  const MYSQL_80_REPLICA = {
    Replica_IO_Running: 'Yes',
    Replica_SQL_Running: 'Yes',
    Source_Log_File: 'binlog.000012',
    Read_Source_Log_Pos: 1577,
    Relay_Source_Log_File: 'binlog.000012',
    Exec_Source_Log_Pos: 1577,
    Seconds_Behind_Source: 3,
  }
  const MARIADB_REPLICA = {
    Slave_IO_Running: 'Yes',
    Slave_SQL_Running: 'Yes',
    Master_Log_File: 'mariadb-bin.000003',
    Read_Master_Log_Pos: '4242',
    Relay_Master_Log_File: 'mariadb-bin.000003',
    Exec_Master_Log_Pos: '4242',
    Seconds_Behind_Master: 2,
  }

  it('MySQL 8.0.22+ / 8.4: SHOW REPLICA STATUS with Source_* columns; SHOW SLAVE STATUS is never sent', async () => {
    const reader = new ReplayLagReader()
    const conn = connection([
      [/^show replica status$/, [MYSQL_80_REPLICA]],
      // MySQL 8.4 removed it.
      [/^show slave status$/, mysqlError(1064, 'You have an error in your SQL syntax')],
    ])
    expect(await reader.read(conn, 'mysql')).toBe(3_000)
    expect(reader.source).toBe('mysql-replica')
    expect(conn.sent).not.toContain('show slave status')
  })

  it('MariaDB 10.5+: SHOW REPLICA STATUS keeps the Slave_* / Master_* columns', async () => {
    const reader = new ReplayLagReader()
    expect(await reader.read(connection([[/^show replica status$/, [MARIADB_REPLICA]]]), 'mariadb')).toBe(
      2_000,
    )
  })

  it('before MySQL 8.0.22 / MariaDB 10.5.1: falls back to SHOW SLAVE STATUS once and keeps it', async () => {
    const reader = new ReplayLagReader()
    const conn = connection([
      [/^show replica status$/, mysqlError(1064, 'You have an error in your SQL syntax')],
      [/^show slave status$/, [{ ...MARIADB_REPLICA, Seconds_Behind_Master: 0 }]],
    ])
    expect(await reader.read(conn, 'mysql')).toBe(0)
    expect(await reader.read(conn, 'mysql')).toBe(0)
    expect(reader.source).toBe('mysql-slave')
    expect(conn.sent.filter((sql) => sql === 'show replica status')).toHaveLength(1)
  })

  it.each([
    [
      'SQL thread stopped with relay log pending',
      { ...MYSQL_80_REPLICA, Seconds_Behind_Source: null, Exec_Source_Log_Pos: 900 },
      Number.POSITIVE_INFINITY,
    ],
    [
      'source unreachable, everything received applied',
      { ...MYSQL_80_REPLICA, Seconds_Behind_Source: null, Replica_IO_Running: 'Connecting' },
      0,
    ],
  ])('NULL seconds behind: %s', async (_name, row, expected) => {
    const reader = new ReplayLagReader()
    expect(await reader.read(connection([[/^show replica status$/, [row]]]), 'mysql')).toBe(expected)
  })

  it.each([
    ['a writable server (not a replica)', { ro: 0, iro: 0 }, 0],
    ['a read-only server with no replication channel', { ro: 1, iro: 0 }, undefined],
    ['an InnoDB-read-only server', { ro: 0, iro: 1 }, undefined],
  ])('no status row: %s', async (_name, flags, expected) => {
    const reader = new ReplayLagReader()
    const conn = connection([
      [/^show replica status$/, []],
      [/@@global.read_only/, [flags]],
    ])
    expect(await reader.read(conn, 'mysql')).toBe(expected)
  })

  it('another error (no REPLICATION CLIENT privilege) is not taken for an old server', async () => {
    const reader = new ReplayLagReader()
    const denied = mysqlError(
      1227,
      'Access denied; you need (at least one of) the REPLICATION CLIENT privilege(s)',
    )
    await expect(reader.read(connection([[/^show replica status$/, denied]]), 'mysql')).rejects.toBe(denied)
    expect(reader.source).toBe('mysql-replica')
  })
})

describe('Aurora MySQL (information_schema.replica_host_status)', () => {
  it.each([
    ['the writer', [{ writer: 1, lag_ms: 0 }], 0],
    ['a reader', [{ writer: 0, lag_ms: 21 }], 21],
    ['a reader not listed yet', [], undefined],
  ])('%s', async (_name, rows, expected) => {
    const reader = new ReplayLagReader()
    const conn = connection([[/replica_host_status where server_id = @@aurora_server_id/, rows]])
    expect(await reader.read(conn, 'aurora-mysql')).toBe(expected)
    expect(reader.source).toBe('aurora-mysql')
    expect(conn.sent.some((sql) => /show (replica|slave) status/.test(sql))).toBe(false)
  })
})
