import { describe, expect, it } from 'vitest'
import { detectPlatform, hasTopology, readTopology } from '../../src/dialect/topology-queries.js'
import { connection } from '../support/fake-connection.js'

// Platform detection and topology parsing from the result shapes each platform returns, without a
// server. The shapes follow AWS's documentation of aurora_replica_status() and
// information_schema.replica_host_status (Aurora), rds_tools.show_topology() /
// rds_tools.multi_az_db_cluster_source_dbi_resource_id() and mysql.rds_topology (Multi-AZ DB
// clusters), and SHOW REPLICA STATUS as MySQL 8.0.22+ / 8.4 names its columns. Real servers:
// test/topology/cluster-topology.test.ts.

describe('detectPlatform', () => {
  it.each([
    [{ aurora: true, multi_az: false }, 'aurora-postgres'],
    [{ aurora: false, multi_az: true }, 'rds-multi-az-postgres'],
    [{ aurora: false, multi_az: false }, 'postgres'],
  ] as const)('PostgreSQL %o is %s, in one statement', async (row, platform) => {
    const conn = connection([[/to_regproc\('aurora_replica_status'\)/, [row]]])
    expect(await detectPlatform(conn, 'postgres')).toBe(platform)
    expect(conn.sent).toHaveLength(1)
  })

  it('Aurora MySQL by its aurora_version variable, in one statement', async () => {
    const conn = connection([[/aurora_version/, [{ Variable_name: 'aurora_version', Value: '3.05.2' }]]])
    expect(await detectPlatform(conn, 'mysql')).toBe('aurora-mysql')
    expect(conn.sent).toHaveLength(1)
  })

  it.each([
    [{ version: '8.0.36', multi_az: 1 }, 'rds-multi-az-mysql'],
    [{ version: '8.4.3', multi_az: '0' }, 'mysql'],
    [{ version: '10.11.9-MariaDB-0+deb12u1-log', multi_az: 0 }, 'mariadb'],
  ] as const)('MySQL-protocol server %o is %s', async (row, platform) => {
    const conn = connection([
      [/aurora_version/, []],
      [/rds_topology/, [row]],
    ])
    expect(await detectPlatform(conn, 'mysql')).toBe(platform)
  })
})

describe('readTopology: Aurora', () => {
  it('PostgreSQL: the writer by its MASTER_SESSION_ID session, readers by the others', async () => {
    const conn = connection([
      [
        /from aurora_replica_status\(\)/,
        [
          { server_id: 'orders-1', writer: true },
          { server_id: 'orders-2', writer: false },
          { server_id: 'orders-3', writer: false },
        ],
      ],
    ])
    expect(await readTopology(conn, 'aurora-postgres')).toEqual([
      { id: 'orders-1', writer: true },
      { id: 'orders-2', writer: false },
      { id: 'orders-3', writer: false },
    ])
  })

  it('MySQL: 0/1 flags, upper-case column names, a lingering duplicate row counted once', async () => {
    const conn = connection([
      [
        /from information_schema\.replica_host_status/,
        [
          { SERVER_ID: 'orders-2', writer: 1 },
          { SERVER_ID: 'orders-1', writer: 0 },
          { SERVER_ID: 'orders-2', writer: 0 },
          { SERVER_ID: '', writer: 0 },
        ],
      ],
    ])
    expect(await readTopology(conn, 'aurora-mysql')).toEqual([
      { id: 'orders-2', writer: true },
      { id: 'orders-1', writer: false },
    ])
  })

  it('a view without a writer (mid-failover) is an error: the last topology is kept', async () => {
    const conn = connection([[/aurora_replica_status/, [{ server_id: 'orders-2', writer: false }]]])
    await expect(readTopology(conn, 'aurora-postgres')).rejects.toThrow(/lists no writer/)
  })
})

describe('readTopology: Multi-AZ DB clusters', () => {
  const TOPOLOGY = [
    { id: 'db-AAA', endpoint: 'orders-1.c9xyz.eu-west-1.rds.amazonaws.com', port: 5432 },
    { id: 'db-BBB', endpoint: 'orders-2.c9xyz.eu-west-1.rds.amazonaws.com', port: '5432' },
    { id: 'db-CCC', endpoint: 'orders-3.c9xyz.eu-west-1.rds.amazonaws.com', port: 5432 },
  ]

  it('PostgreSQL on a reader: the writer is the source it replicates from; endpoints come from the view', async () => {
    const conn = connection([
      [/multi_az_db_cluster_source_dbi_resource_id\(\)/, [{ source: 'db-BBB' }]],
      [/show_topology/, TOPOLOGY],
    ])
    expect(await readTopology(conn, 'rds-multi-az-postgres')).toEqual([
      { id: 'db-AAA', writer: false, host: 'orders-1.c9xyz.eu-west-1.rds.amazonaws.com', port: 5432 },
      { id: 'db-BBB', writer: true, host: 'orders-2.c9xyz.eu-west-1.rds.amazonaws.com', port: 5432 },
      { id: 'db-CCC', writer: false, host: 'orders-3.c9xyz.eu-west-1.rds.amazonaws.com', port: 5432 },
    ])
  })

  it('PostgreSQL on the writer: no source, so the writer is the instance asked', async () => {
    const conn = connection([
      [/multi_az_db_cluster_source_dbi_resource_id\(\)/, [{ source: null }]],
      [/dbi_resource_id\(\)/, [{ self: 'db-AAA' }]],
      [/show_topology/, TOPOLOGY],
    ])
    const instances = await readTopology(conn, 'rds-multi-az-postgres')
    expect(instances.filter((instance) => instance.writer).map((instance) => instance.id)).toEqual(['db-AAA'])
  })

  it('MySQL: the writer is the Source_Server_Id of SHOW REPLICA STATUS, or @@server_id on the writer', async () => {
    const rows = [
      { id: 11, endpoint: 'orders-1.c9xyz.eu-west-1.rds.amazonaws.com', port: 3306 },
      { id: 12, endpoint: 'orders-2.c9xyz.eu-west-1.rds.amazonaws.com', port: 3306 },
    ]
    const onReader = connection([
      [/^show replica status$/, [{ Source_Server_Id: 12, Replica_IO_Running: 'Yes' }]],
      [/mysql\.rds_topology/, rows],
    ])
    expect((await readTopology(onReader, 'rds-multi-az-mysql')).map((i) => [i.id, i.writer])).toEqual([
      ['11', false],
      ['12', true],
    ])
    const onWriter = connection([
      [/^show replica status$/, []],
      [/@@server_id/, [{ self: 11 }]],
      [/mysql\.rds_topology/, rows],
    ])
    expect((await readTopology(onWriter, 'rds-multi-az-mysql')).map((i) => [i.id, i.writer])).toEqual([
      ['11', true],
      ['12', false],
    ])
  })

  it('a writer id that matches no listed instance is an error', async () => {
    const conn = connection([
      [/multi_az_db_cluster_source_dbi_resource_id\(\)/, [{ source: 'db-ZZZ' }]],
      [/show_topology/, TOPOLOGY],
    ])
    await expect(readTopology(conn, 'rds-multi-az-postgres')).rejects.toThrow(/lists no writer/)
  })
})

describe('hasTopology', () => {
  it('only the cluster platforms list their instances', () => {
    expect(
      (
        [
          'postgres',
          'aurora-postgres',
          'rds-multi-az-postgres',
          'mysql',
          'mariadb',
          'aurora-mysql',
          'rds-multi-az-mysql',
        ] as const
      ).filter((platform) => hasTopology(platform)),
    ).toEqual(['aurora-postgres', 'rds-multi-az-postgres', 'aurora-mysql', 'rds-multi-az-mysql'])
  })
})
