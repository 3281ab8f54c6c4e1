import { describe, expect, test } from 'vitest'
import {
  instanceHostPatternOf,
  isRdsClusterHost,
  isRdsHost,
  regionFromRdsHost,
} from '../../src/aws/rds-host.js'

// The one place RDS host names are recognised: TLS defaults to the RDS CAs for them, and IAM auth
// takes its signing region from them.

describe('isRdsHost', () => {
  test.each([
    'mydb.cluster-abc123.eu-west-1.rds.amazonaws.com',
    'mydb.cluster-ro-abc123.eu-west-1.rds.amazonaws.com',
    'mydb-proxy.proxy-abc123.eu-west-1.rds.amazonaws.com',
    'mydb.abc123.cn-north-1.rds.amazonaws.com.cn',
    'MYDB.CLUSTER-ABC123.EU-WEST-1.RDS.AMAZONAWS.COM',
    'mydb.rds.amazonaws.com',
  ])('%s is an RDS host', (host) => {
    expect(isRdsHost(host)).toBe(true)
  })

  test.each([
    ['a private DNS name', 'db.internal'],
    ['a name that only contains the RDS domain', 'mydb.rds.amazonaws.com.example.org'],
    ['a Unix socket path named like an RDS host', '/sockets/mydb.cluster-abc123.eu-west-1.rds.amazonaws.com'],
    ['no host (it comes from a secret)', undefined],
  ])('%s is not', (_name, host) => {
    expect(isRdsHost(host)).toBe(false)
  })
})

describe('regionFromRdsHost', () => {
  test.each([
    ['mydb.cluster-abc123.eu-west-1.rds.amazonaws.com', 'eu-west-1'],
    ['mydb-proxy.proxy-abc123.ap-southeast-2.rds.amazonaws.com', 'ap-southeast-2'],
    ['mydb.cluster-abc123.us-gov-west-1.rds.amazonaws.com', 'us-gov-west-1'],
    ['mydb.abc123.cn-north-1.rds.amazonaws.com.cn', 'cn-north-1'],
    ['MYDB.CLUSTER-ABC123.EU-WEST-1.RDS.AMAZONAWS.COM', 'eu-west-1'],
  ])('%s is in %s', (host, region) => {
    expect(regionFromRdsHost(host)).toBe(region)
  })

  test.each([
    ['an RDS name without a region label', 'mydb.rds.amazonaws.com'],
    ['a private DNS name', 'db.internal'],
    ['no host', undefined],
  ])('%s has no region', (_name, host) => {
    expect(regionFromRdsHost(host)).toBeUndefined()
  })
})

describe('cluster endpoints and their instances’ host pattern', () => {
  test.each([
    ['orders.cluster-c9xyz.eu-west-1.rds.amazonaws.com', '?.c9xyz.eu-west-1.rds.amazonaws.com'],
    ['orders.cluster-ro-c9xyz.eu-west-1.rds.amazonaws.com', '?.c9xyz.eu-west-1.rds.amazonaws.com'],
    ['analytics.cluster-custom-c9xyz.us-east-2.rds.amazonaws.com', '?.c9xyz.us-east-2.rds.amazonaws.com'],
    ['orders.cluster-c9xyz.cn-north-1.rds.amazonaws.com.cn', '?.c9xyz.cn-north-1.rds.amazonaws.com.cn'],
    ['ORDERS.CLUSTER-C9XYZ.EU-WEST-1.RDS.AMAZONAWS.COM', '?.c9xyz.eu-west-1.rds.amazonaws.com'],
  ])('%s: instances at %s', (host, pattern) => {
    expect(isRdsClusterHost(host)).toBe(true)
    expect(instanceHostPatternOf(host)).toBe(pattern)
  })

  test.each([
    ['an instance endpoint', 'orders-1.c9xyz.eu-west-1.rds.amazonaws.com'],
    ['an RDS Proxy endpoint', 'orders.proxy-c9xyz.eu-west-1.rds.amazonaws.com'],
    ['a private DNS name', 'orders.cluster.internal'],
    ['a Unix socket path', '/run/orders.cluster-c9xyz.eu-west-1.rds.amazonaws.com'],
    ['no host', undefined],
  ])('%s is not a cluster endpoint', (_name, host) => {
    expect(isRdsClusterHost(host)).toBe(false)
    expect(instanceHostPatternOf(host)).toBeUndefined()
  })
})
