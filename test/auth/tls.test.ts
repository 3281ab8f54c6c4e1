import { type Kysely, sql } from 'kysely'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import { type CreateDbConfig, classifyError, createDb, type ResilientDb } from '../../src/index.js'
import { generateTestCertificates, type TestCertificates } from '../support/certificates.js'
import { describeEngines, type Engine } from '../support/database.js'
import { collectEvents, type EventLog } from '../support/fault-helpers.js'
import { startMariaDbCluster } from '../support/mariadb-cluster.js'
import type { OwnCluster } from '../support/own-clusters.js'
import { startPostgresCluster } from '../support/postgres-cluster.js'
import { makeServerDirectory, type ServerDirectory } from '../support/processes.js'

// TLS against real servers that require it, with a real certificate chain (test/support/certificates.ts):
// a test CA, and a server certificate it signed whose only subjectAltName is DNS:localhost. Each mode of
// the `tls` setting must encrypt when asked, verify what it promises to verify, refuse what it cannot
// verify at once (a `fatal` error, no retry loop) and never fall back to plain TCP.
//
// Each engine gets its own server: the shared clusters speak plain TCP, and these require TLS.

const UNVERIFIED_WARNING = 'KYSELY_RESILIENT_TLS_UNVERIFIED'

/**
 * The servers send their chain up to the root (OpenSSL completes it from ssl_ca_file), so a client that
 * does not trust the test CA sees an untrusted self-signed root in the chain, not a lone leaf. mysql2
 * overwrites the code of every error from its TLS upgrade with its own; Node's message stays.
 */
const UNTRUSTED_CHAIN: Record<Engine, object> = {
  postgres: { code: 'SELF_SIGNED_CERT_IN_CHAIN', message: 'self-signed certificate in certificate chain' },
  mysql: { code: 'HANDSHAKE_SSL_ERROR', message: 'self-signed certificate in certificate chain' },
}

/**
 * Node's host-name check against a certificate that names another host: by IP address on PostgreSQL
 * (127.0.0.1 against a certificate for localhost), by name on both (localhost against a certificate for
 * db.example.test). mysql2 overwrites the code with its own; Node's message stays.
 */
const WRONG_IP = {
  code: 'ERR_TLS_CERT_ALTNAME_INVALID',
  message: expect.stringContaining("IP: 127.0.0.1 is not in the cert's list"),
}
const WRONG_NAME: Record<Engine, object> = {
  postgres: {
    code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    message: expect.stringContaining("Host: localhost. is not in the cert's altnames"),
  },
  mysql: {
    code: 'HANDSHAKE_SSL_ERROR',
    message: expect.stringContaining("Host: localhost. is not in the cert's altnames"),
  },
}

/**
 * What each server answers the app user's plain connection. PostgreSQL: pg_hba.conf's `hostnossl ...
 * reject`. MariaDB 10.11: require_secure_transport answers 1045, the same "Access denied" as a wrong
 * password (MySQL 8 has a dedicated 3159); the first test shows the password itself is right.
 */
const PLAIN_REFUSED: Record<Engine, object> = {
  postgres: { code: '28000', message: expect.stringContaining('no encryption') },
  mysql: { errno: 1045, code: 'ER_ACCESS_DENIED_ERROR' },
}

/** What the drivers say when they asked for TLS and the server does not offer it. */
const NO_TLS_ON_SERVER: Record<Engine, object> = {
  postgres: { message: 'The server does not support SSL connections' },
  mysql: { code: 'HANDSHAKE_NO_SSL_SUPPORT' },
}

const FATAL = { category: 'fatal', retryable: false }

/** Far below what the default retry policy (4 retries, backoff up to 1 s) would take to give up. */
const FAIL_FAST_MS = 2_000

interface Opened {
  readonly db: ResilientDb<Record<string, never>>
  readonly events: EventLog
}

describeEngines('TLS against a server that requires it', (engine) => {
  let certDir: ServerDirectory | undefined
  let certs: TestCertificates
  let cluster: OwnCluster | undefined
  /** A server without TLS at all, to show that no mode falls back to plain TCP. */
  let plainCluster: OwnCluster | undefined
  /** A server whose certificate (from the right CA) names db.example.test only. */
  let otherHostCluster: OwnCluster | undefined
  const opened: Opened[] = []

  beforeAll(async () => {
    certDir = await makeServerDirectory('kr-tls-', undefined)
    certs = await generateTestCertificates(certDir.path)
    const tls = {
      certFile: certs.serverCertFile,
      keyFile: certs.serverKeyFile,
      caFile: certs.caFile,
      require: true,
    }
    const start = engine === 'postgres' ? startPostgresCluster : startMariaDbCluster
    const otherHostTls = { ...tls, certFile: certs.otherHostCertFile, keyFile: certs.otherHostKeyFile }
    const [withTls, plain, otherHost] = await Promise.allSettled([
      start({ replica: false, tls }),
      start({ replica: false }),
      start({ replica: false, tls: otherHostTls }),
    ])
    if (withTls.status === 'fulfilled') cluster = withTls.value
    if (plain.status === 'fulfilled') plainCluster = plain.value
    if (otherHost.status === 'fulfilled') otherHostCluster = otherHost.value
    for (const result of [withTls, plain, otherHost]) if (result.status === 'rejected') throw result.reason
  })

  afterAll(async () => {
    await Promise.all([cluster?.stop(), plainCluster?.stop(), otherHostCluster?.stop()])
    await certDir?.remove()
  })

  afterEach(async () => {
    await Promise.all(opened.splice(0).map(({ db }) => db.destroy()))
  })

  function own(): OwnCluster {
    if (cluster === undefined) throw new Error(`no ${engine} TLS server (see beforeAll)`)
    return cluster
  }

  /** The app user's URL with host `localhost`: the name the server certificate was issued for. */
  function localhostUrl(of: OwnCluster = own()): string {
    const url = new URL(of.writerUrl)
    url.hostname = 'localhost'
    return url.href
  }

  /** createDb, destroyed after the test; every event is kept, to check that nothing was retried. */
  function open(config: Omit<CreateDbConfig, 'dialect'>): Opened {
    const db = createDb<Record<string, never>>({ dialect: engine, ...config })
    const entry = { db, events: collectEvents(db) }
    opened.push(entry)
    return entry
  }

  /** The TLS cipher of the session that runs the statement, as the server sees it; '' when plain. */
  async function sessionCipher(db: Kysely<Record<string, never>>): Promise<string> {
    if (engine === 'postgres') {
      const { rows } = await sql<{ ssl: boolean; cipher: string | null }>`
        select ssl, cipher from pg_stat_ssl where pid = pg_backend_pid()`.execute(db)
      return rows[0]?.ssl === true ? (rows[0].cipher ?? '') : ''
    }
    const { rows } = await sql<{ Value: string }>`show session status like 'Ssl_cipher'`.execute(db)
    return rows[0]?.Value ?? ''
  }

  /** The error the first statement fails with, and how long it took to get it. */
  async function firstFailure({ db, events }: Opened): Promise<{ error: unknown; ms: number }> {
    const startedAt = performance.now()
    const error = await db
      .selectNoFrom(sql<number>`1`.as('one'))
      .execute()
      .then(
        () => {
          throw new Error('expected the first statement to fail, but it succeeded')
        },
        (e: unknown) => e,
      )
    const ms = performance.now() - startedAt
    // A refusal that cannot change on its own is reported at once, never retried.
    expect(events.retry).toEqual([])
    return { error, ms }
  }

  /** Runs `body` while recording the process warnings Node emits (emitWarning delivers them later). */
  async function recordingWarnings(body: () => Promise<void>): Promise<Error[]> {
    const warnings: Error[] = []
    const listener = (warning: Error) => warnings.push(warning)
    process.on('warning', listener)
    try {
      await body()
      await new Promise((resolve) => setImmediate(resolve))
    } finally {
      process.off('warning', listener)
    }
    return warnings
  }

  function unverifiedWarnings(warnings: Error[]): Error[] {
    return warnings.filter((warning) => (warning as { code?: string }).code === UNVERIFIED_WARNING)
  }

  it('{ ca } with the test CA connects to host localhost, and the session is encrypted', async () => {
    const warnings = await recordingWarnings(async () => {
      const { db } = open({ writer: { url: localhostUrl(), tls: { ca: certs.caPem } } })
      expect(await sessionCipher(db)).not.toBe('')
    })
    // Only 'require' warns: this connection is verified.
    expect(unverifiedWarnings(warnings)).toEqual([])
  })

  it('{ ca } with an unrelated CA is refused at once, as fatal', async () => {
    const failed = open({ writer: { url: localhostUrl(), tls: { ca: certs.otherCaPem } } })
    const { error, ms } = await firstFailure(failed)
    expect(error).toMatchObject(UNTRUSTED_CHAIN[engine])
    expect(classifyError(error)).toMatchObject(FATAL)
    expect(ms).toBeLessThan(FAIL_FAST_MS)
  })

  it('{ ca } with the right CA, reached by a name the certificate does not hold, fails the host-name check', async () => {
    if (otherHostCluster === undefined) throw new Error(`no ${engine} other-host server (see beforeAll)`)
    const failed = open({ writer: { url: localhostUrl(otherHostCluster), tls: { ca: certs.caPem } } })
    const { error, ms } = await firstFailure(failed)
    expect(error).toMatchObject(WRONG_NAME[engine])
    expect(classifyError(error)).toMatchObject(FATAL)
    expect(ms).toBeLessThan(FAIL_FAST_MS)
  })

  if (engine === 'postgres') {
    it('{ ca } with the right CA but host 127.0.0.1 fails the host-name check, as fatal', async () => {
      // The certificate names localhost only: a trusted chain for another name is not enough.
      const failed = open({ writer: { url: own().writerUrl, tls: { ca: certs.caPem } } })
      const { error, ms } = await firstFailure(failed)
      expect(error).toMatchObject(WRONG_IP)
      expect(classifyError(error)).toMatchObject(FATAL)
      expect(ms).toBeLessThan(FAIL_FAST_MS)
    })
  } else {
    it('a verifying tls mode with an IP-address host is refused by createDb: mysql2 would check "localhost"', () => {
      // mysql2 gives Node no server name for an IP address, so Node checks the certificate against
      // 'localhost', and this certificate (for localhost) would pass for 127.0.0.1. Refused up front.
      for (const tls of [{ ca: certs.caPem }, 'verify-full', 'rds'] as const) {
        expect(() => createDb({ dialect: engine, writer: { url: own().writerUrl, tls } })).toThrow(
          expect.objectContaining({
            name: 'ConfigError',
            setting: 'writer.tls',
            message: expect.stringContaining(
              "connect by the host name the certificate names, or use tls: 'require'",
            ),
          }),
        )
      }
    })
  }

  it("'verify-full' trusts Node's default store, which does not hold the test CA", async () => {
    const failed = open({ writer: localhostUrl(), tls: 'verify-full' })
    const { error, ms } = await firstFailure(failed)
    expect(error).toMatchObject(UNTRUSTED_CHAIN[engine])
    expect(classifyError(error)).toMatchObject(FATAL)
    expect(ms).toBeLessThan(FAIL_FAST_MS)
  })

  it("'rds' trusts the Amazon RDS CA bundle only, so a certificate from the test CA is refused", async () => {
    // The same server and host that `{ ca }` connects to above: the refusal is about whom 'rds' trusts,
    // and it is a certificate error, so TLS was attempted (a plain connection would get PLAIN_REFUSED).
    const failed = open({ writer: localhostUrl(), tls: 'rds' })
    const { error, ms } = await firstFailure(failed)
    expect(error).toMatchObject(UNTRUSTED_CHAIN[engine])
    expect(classifyError(error)).toMatchObject(FATAL)
    expect(ms).toBeLessThan(FAIL_FAST_MS)
  })

  it("'require' encrypts without verifying (unknown CA, host 127.0.0.1) and warns once per createDb", async () => {
    const warnings = await recordingWarnings(async () => {
      // Writer and reader both unverified: still one warning for this createDb call.
      const { db } = open({ writer: own().writerUrl, readers: [own().writerUrl], tls: 'require' })
      expect(await sessionCipher(db)).not.toBe('')
      expect(await sessionCipher(db.writer)).not.toBe('')
    })
    const unverified = unverifiedWarnings(warnings)
    expect(unverified).toHaveLength(1)
    expect(unverified[0]?.message).toContain("tls 'require'")
  })

  it('tls: false is plain TCP, which the server refuses, as fatal', async () => {
    const failed = open({ writer: own().writerUrl, tls: false })
    const { error, ms } = await firstFailure(failed)
    expect(error).toMatchObject(PLAIN_REFUSED[engine])
    expect(classifyError(error)).toMatchObject(FATAL)
    expect(ms).toBeLessThan(FAIL_FAST_MS)
  })

  it('without a tls setting, a host outside *.rds.amazonaws.com gets plain TCP (like tls: false)', async () => {
    // The default keeps local and private servers working unchanged; only RDS hosts default to 'rds'.
    const failed = open({ writer: own().writerUrl })
    const { error } = await firstFailure(failed)
    expect(error).toMatchObject(PLAIN_REFUSED[engine])
    expect(classifyError(error)).toMatchObject(FATAL)
  })

  it('no mode falls back to plain TCP when the server has no TLS at all', async () => {
    if (plainCluster === undefined) throw new Error(`no ${engine} plain server (see beforeAll)`)
    const url = new URL(plainCluster.writerUrl)
    url.hostname = 'localhost'
    for (const tls of ['require', 'verify-full', { ca: certs.caPem }] as const) {
      const failed = open({ writer: url.href, tls })
      const { error, ms } = await firstFailure(failed)
      expect(error, `tls: ${JSON.stringify(tls)}`).toMatchObject(NO_TLS_ON_SERVER[engine])
      expect(classifyError(error)).toMatchObject(FATAL)
      expect(ms).toBeLessThan(FAIL_FAST_MS)
    }
  })

  it("an endpoint's own tls wins over the top-level setting, both ways", async () => {
    const verified = open({ writer: { url: localhostUrl(), tls: { ca: certs.caPem } }, tls: 'verify-full' })
    expect(await sessionCipher(verified.db)).not.toBe('')

    const plain = open({ writer: { url: localhostUrl(), tls: false }, tls: { ca: certs.caPem } })
    const { error } = await firstFailure(plain)
    expect(error).toMatchObject(PLAIN_REFUSED[engine])
  })
})
