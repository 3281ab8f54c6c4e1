import { describe, expect, it } from 'vitest'
import { instanceAddress } from '../../src/config/topology-options.js'
import { createDb } from '../../src/index.js'
import { configError } from '../support/config-error.js'

// `topology`: on by default for an Aurora / Multi-AZ cluster endpoint, off for any other writer,
// and every wrong value refused at createDb with the setting named. Server-free.

const CLUSTER = 'postgres://app@orders.cluster-c9xyz.eu-west-1.rds.amazonaws.com:5432/orders'

describe('topology defaults', () => {
  it('is on for a cluster endpoint, with the instances’ domain as the host pattern and a 30 s refresh', async () => {
    const db = createDb({ dialect: 'postgres', writer: CLUSTER, auth: { type: 'iam' } })
    try {
      expect(db.settings.topology).toEqual({
        instanceHostPattern: '?.c9xyz.eu-west-1.rds.amazonaws.com',
        refreshIntervalMs: 30_000,
      })
    } finally {
      await db.destroy()
    }
  })

  it('is off for any other writer, and off on a cluster endpoint with discovery: false', async () => {
    for (const config of [
      { dialect: 'postgres' as const, writer: 'postgres://app:pw@db.internal/orders' },
      {
        dialect: 'postgres' as const,
        writer: CLUSTER,
        auth: { type: 'iam' as const },
        topology: { discovery: false },
      },
    ]) {
      const db = createDb(config)
      expect(db.settings.topology).toBe(false)
      await db.destroy()
    }
  })

  it('takes a pattern with a port for a writer that is no cluster endpoint', async () => {
    const db = createDb({
      dialect: 'mysql',
      writer: 'mysql://app:pw@10.0.0.5:3306/orders',
      topology: { discovery: true, instanceHostPattern: '?.db.internal:3307', refreshIntervalMs: 5_000 },
    })
    expect(db.settings.topology).toEqual({
      instanceHostPattern: '?.db.internal:3307',
      refreshIntervalMs: 5_000,
    })
    await db.destroy()
  })
})

describe('topology validation', () => {
  const base = { dialect: 'postgres', writer: 'postgres://app:pw@db.internal/orders' }

  it.each([
    ['not an object', { topology: 'on' }, 'topology', /expected an object, got 'on'/],
    [
      'an unknown key',
      { topology: { refresh: 5 } },
      'topology.refresh',
      /unknown option \(known: discovery, instanceHostPattern, refreshIntervalMs\)/,
    ],
    [
      'discovery not a boolean',
      { topology: { discovery: 'yes' } },
      'topology.discovery',
      /expected true or false, got 'yes'/,
    ],
    [
      'a refresh below 100 ms',
      { topology: { refreshIntervalMs: 10 } },
      'topology.refreshIntervalMs',
      /from 100 to 2147483647/,
    ],
    [
      'a refresh past the timer limit',
      { topology: { refreshIntervalMs: 2 ** 31 } },
      'topology.refreshIntervalMs',
      /about 24.8 days/,
    ],
    [
      'a pattern without ?',
      { topology: { instanceHostPattern: 'db.internal' } },
      'topology.instanceHostPattern',
      /one '\?'/,
    ],
    [
      'a pattern with two ?',
      { topology: { instanceHostPattern: '?.?.internal' } },
      'topology.instanceHostPattern',
      /one '\?'/,
    ],
    [
      'a pattern with a bad port',
      { topology: { instanceHostPattern: '?.db.internal:70000' } },
      'topology.instanceHostPattern',
      /port 70000: expected 1 to 65535/,
    ],
    [
      'a URL as pattern',
      { topology: { instanceHostPattern: 'postgres://?.db.internal' } },
      'topology.instanceHostPattern',
      /no scheme, user, path or spaces/,
    ],
    [
      'discovery on a writer that is no cluster endpoint, without a pattern',
      { topology: { discovery: true } },
      'topology.instanceHostPattern',
      /is required with topology.discovery on when the writer is not an RDS cluster endpoint \(got host 'db.internal'\)/,
    ],
  ])('refuses %s', (_name, extra, setting, message) => {
    const error = configError({ ...base, ...extra })
    expect(error.setting).toBe(setting)
    expect(error.detail).toMatch(message)
  })
})

describe('instanceAddress', () => {
  it.each([
    [
      '?.c9xyz.eu-west-1.rds.amazonaws.com',
      'orders-2',
      5432,
      'orders-2.c9xyz.eu-west-1.rds.amazonaws.com',
      5432,
    ],
    ['?.db.internal:3307', 'node-a', 3306, 'node-a.db.internal', 3307],
    ['127.0.0.1:?', '45123', 5432, '127.0.0.1', 45123],
  ])('%s with %s', (pattern, id, defaultPort, host, port) => {
    expect(instanceAddress(pattern, id, defaultPort)).toEqual({ host, port })
  })
})
