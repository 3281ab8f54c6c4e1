import { describe, expect, it, test } from 'vitest'
import { isRdsProxyHost } from '../../src/aws/rds-host.js'
import { resolveConfig } from '../../src/config/resolve-config.js'
import type { CreateDbConfig } from '../../src/index.js'
import { configError } from '../support/config-error.js'

// The `proxy` setting: behind PgBouncer or RDS Proxy, the settings the proxy refuses (startup
// parameters) or pins a session on (SET at connect) are refused at createDb, naming the setting and
// what to use instead; RDS Proxy endpoints are recognised by name, with their own TLS default.

const PROXY_HOST = 'orders.proxy-abc123def456.eu-west-1.rds.amazonaws.com'
const CUSTOM_PROXY_HOST = 'reporting.endpoint.proxy-abc123def456.eu-west-1.rds.amazonaws.com'

function resolved(config: CreateDbConfig) {
  return resolveConfig(config)
}

describe('isRdsProxyHost', () => {
  test.each([
    PROXY_HOST,
    CUSTOM_PROXY_HOST,
    'ORDERS.PROXY-ABC123.US-EAST-1.RDS.AMAZONAWS.COM',
    'p.proxy-x1.cn-north-1.rds.amazonaws.com.cn',
  ])('%s is an RDS Proxy endpoint', (host) => {
    expect(isRdsProxyHost(host)).toBe(true)
  })

  test.each([
    ['a cluster endpoint', 'orders.cluster-abc123.eu-west-1.rds.amazonaws.com'],
    ['an instance whose name contains proxy', 'proxy-db.abc123.eu-west-1.rds.amazonaws.com'],
    ['a private name', 'orders.proxy-abc123.internal'],
    ['a Unix socket path', `/run/${PROXY_HOST}`],
    ['no host', undefined],
  ])('%s is not', (_name, host) => {
    expect(isRdsProxyHost(host)).toBe(false)
  })
})

describe('proxy detection and defaults', () => {
  it('an RDS Proxy host name is behind RDS Proxy, verified against the system trust store', () => {
    const config = resolved({ dialect: 'postgres', writer: `postgres://app:pw@${PROXY_HOST}/orders` })
    const [writer] = config.writers
    expect(writer?.proxy).toBe('rds-proxy')
    // ACM certificates (Amazon Trust Services), not the RDS CAs.
    expect(writer?.tls).toEqual({ mode: 'verify', trust: 'system', options: undefined })
    expect(writer?.toJSON()).toMatchObject({ proxy: 'rds-proxy', tls: 'verify (system CA)' })
  })

  it('IAM auth through an RDS Proxy endpoint is accepted with the default TLS (IAM needs TLS)', () => {
    const config = resolved({
      dialect: 'mysql',
      writer: `mysql://app@${PROXY_HOST}/orders`,
      auth: { type: 'iam' },
    })
    expect(config.writers[0]?.proxy).toBe('rds-proxy')
    expect(config.writers[0]?.auth.type).toBe('iam')
    expect(config.writers[0]?.tls.mode).toBe('verify')
  })

  it('other RDS hosts keep the RDS CAs and no proxy; proxy: false overrides the detection', () => {
    const cluster = resolved({
      dialect: 'postgres',
      writer: 'postgres://app:pw@orders.cluster-abc.eu-west-1.rds.amazonaws.com/orders',
    })
    expect(cluster.writers[0]?.proxy).toBeUndefined()
    expect(cluster.writers[0]?.tls).toMatchObject({ trust: 'rds' })
    const notProxied = resolved({
      dialect: 'postgres',
      writer: `postgres://app:pw@${PROXY_HOST}/orders`,
      proxy: false,
    })
    expect(notProxied.writers[0]?.proxy).toBeUndefined()
  })

  it("an endpoint's own proxy wins over the top level's", () => {
    const config = resolved({
      dialect: 'postgres',
      writer: 'postgres://app:pw@pgbouncer.internal:6432/orders',
      readers: [{ url: 'postgres://app:pw@replica.internal/orders', proxy: false }],
      proxy: 'pgbouncer',
    })
    expect(config.writers[0]?.proxy).toBe('pgbouncer')
    expect(config.readers[0]?.proxy).toBeUndefined()
  })
})

describe('proxy validation', () => {
  it('rejects an unknown proxy, listing the known ones', () => {
    const error = configError({ dialect: 'postgres', writer: 'postgres://a@h/d', proxy: 'odyssey' })
    expect(error.setting).toBe('proxy')
    expect(error.message).toMatch(/expected 'pgbouncer', 'rds-proxy' or false, got 'odyssey'/)
    expect(
      configError({ dialect: 'postgres', writer: { url: 'postgres://a@h/d', proxy: true } }).setting,
    ).toBe('writer.proxy')
  })

  it("refuses 'pgbouncer' with MySQL: PgBouncer speaks only PostgreSQL's protocol", () => {
    const error = configError({ dialect: 'mysql', writer: 'mysql://a@h/d', proxy: 'pgbouncer' })
    expect(error.setting).toBe('proxy')
    expect(error.detail).toMatch(/only PostgreSQL's protocol/)
  })

  test.each([
    ['pgbouncer', 'postgres', /PgBouncer refuses \(unsupported startup parameter\).*ALTER ROLE/],
    ['rds-proxy', 'postgres', /pins every session on RDS Proxy.*ALTER ROLE/],
    [
      'rds-proxy',
      'mysql',
      /SET SESSION at connect, which pins every session on RDS Proxy.*initialization query/,
    ],
  ] as const)(
    'behind %s (%s), pool.statementTimeoutMs is refused with what to use instead',
    (proxy, dialect, reason) => {
      const error = configError({
        dialect,
        writer: `${dialect}://a@h/d`,
        proxy,
        pool: { statementTimeoutMs: 5_000 },
      })
      expect(error.setting).toBe('pool.statementTimeoutMs')
      expect(error.detail).toMatch(reason)
      expect(error.detail).toMatch(/pool\.queryTimeoutMs/)
    },
  )

  it("names the endpoint's own pool setting, and sessionIdleTimeoutMs with the proxy's own idle timeout", () => {
    const error = configError({
      dialect: 'postgres',
      writer: 'postgres://a@h/d',
      readers: [{ url: 'postgres://a@r/d', pool: { sessionIdleTimeoutMs: 60_000 } }],
      proxy: 'pgbouncer',
    })
    expect(error.setting).toBe('readers[0].pool.sessionIdleTimeoutMs')
    expect(error.detail).toMatch(/client_idle_timeout/)
    const rds = configError({
      dialect: 'mysql',
      writer: `mysql://a@${PROXY_HOST}/d`,
      pool: { sessionIdleTimeoutMs: 60_000 },
    })
    expect(rds.setting).toBe('pool.sessionIdleTimeoutMs')
    // Detected, not set: the message says so, and how to say it is not a proxy.
    expect(rds.detail).toMatch(/RDS Proxy \(writer \(an RDS Proxy host name; set proxy: false/)
    expect(rds.detail).toMatch(/IdleClientTimeout/)
  })

  test.each(['options', 'lock_timeout', 'idle_in_transaction_session_timeout'] as const)(
    'behind PgBouncer, the pg startup parameter %s is refused',
    (key) => {
      const value = key === 'options' ? '-c search_path=app' : 1_000
      const error = configError({
        dialect: 'postgres',
        writer: 'postgres://a@h/d',
        proxy: 'pgbouncer',
        pg: { [key]: value },
      })
      expect(error.setting).toBe(`pg.${key}`)
      expect(error.detail).toMatch(/startup parameter/)
      const own = configError({
        dialect: 'postgres',
        writer: { url: 'postgres://a@h/d', pg: { [key]: value } },
        proxy: 'pgbouncer',
      })
      expect(own.setting).toBe(`writer.pg.${key}`)
    },
  )

  it('accepts what works behind a proxy: application_name, queryTimeoutMs, validateAfterIdleMs', () => {
    const config = resolved({
      dialect: 'postgres',
      writer: 'postgres://a@h/d',
      proxy: 'pgbouncer',
      pg: { application_name: 'orders' },
      pool: { queryTimeoutMs: 5_000, validateAfterIdleMs: 1_000 },
    })
    expect(config.writers[0]?.proxy).toBe('pgbouncer')
    expect(config.writers[0]?.pool.statementTimeoutMs).toBeUndefined()
  })
})
