import { randomBytes } from 'node:crypto'
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { chownTo, type OsUser, run } from './processes.js'

// Throwaway X.509 material for TLS tests, made with the openssl CLI: real certificates exercise the
// drivers' real verification (chain, host name) instead of a mocked tls.connect.

/** The CA that signed the server certificate; the tests' "right CA". */
export const TEST_CA_NAME = 'kysely-resilient test CA'
/** A CA that signed nothing the servers present; the tests' "wrong CA". */
export const OTHER_CA_NAME = 'kysely-resilient unrelated test CA'
/** The only name in the server certificate's subjectAltName. */
export const SERVER_NAME = 'localhost'
/** The only name in the other-host certificate: a name this machine does not connect by. */
export const OTHER_HOST_NAME = 'db.example.test'

export interface TestCertificates {
  /** The test CA's certificate. */
  readonly caFile: string
  readonly caPem: string
  /** The server certificate (leaf only, as servers are usually set up), signed by the test CA. */
  readonly serverCertFile: string
  readonly serverCertPem: string
  /** The server certificate's private key (unencrypted PEM). */
  readonly serverKeyFile: string
  /**
   * A server certificate signed by the test CA for another host name only (`db.example.test`): a server
   * presenting it, reached as `localhost`, must fail the host-name check by name, not by IP address.
   */
  readonly otherHostCertFile: string
  readonly otherHostKeyFile: string
  /** An unrelated CA's certificate: verifying the server against it must fail. */
  readonly otherCaFile: string
  readonly otherCaPem: string
}

/** What a test cluster needs to serve TLS (`tls` of startPostgresCluster / startMariaDbCluster). */
export interface ServerTlsOptions {
  readonly certFile: string
  readonly keyFile: string
  /** The CA clients' certificates are checked against, if they send one. */
  readonly caFile: string
  /**
   * Refuse the app user's unencrypted connections: PostgreSQL by pg_hba.conf (`hostnossl ... reject`),
   * MariaDB by `require_secure_transport`. The harness's own admin connections keep working.
   */
  readonly require: boolean
}

// One config for every command, so nothing depends on the system's openssl.cnf (whose defaults differ
// between distributions and OpenSSL versions).
const OPENSSL_CONFIG = `[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:${SERVER_NAME}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[other_host_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:${OTHER_HOST_NAME}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`

// P-256 keys take milliseconds to make; RSA-4096 would take seconds per key.
const NEW_EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
const VALID_DAYS = '7'

/**
 * Writes a test CA, a server certificate it signed (subjectAltName `DNS:localhost` only, so `localhost`
 * verifies and `127.0.0.1` fails the host-name check) and an unrelated CA into `dir`, which the caller
 * owns and removes. Returns file paths and the certificates' PEM text.
 */
export async function generateTestCertificates(dir: string): Promise<TestCertificates> {
  const openssl = 'openssl'
  const config = join(dir, 'openssl.cnf')
  await writeFile(config, OPENSSL_CONFIG)
  const path = (name: string) => join(dir, name)
  const selfSignedCa = (name: string, cn: string) =>
    run(openssl, [
      ...['req', '-x509', '-config', config, ...NEW_EC_KEY, '-subj', `/CN=${cn}`],
      ...['-extensions', 'ca_ext', '-days', VALID_DAYS, '-keyout', path(`${name}.key`)],
      ...['-out', path(`${name}.crt`)],
    ])
  await Promise.all([
    selfSignedCa('ca', TEST_CA_NAME),
    selfSignedCa('other-ca', OTHER_CA_NAME),
    ...['server', 'other-host'].map((name) =>
      run(openssl, [
        ...['req', '-new', '-config', config, ...NEW_EC_KEY, '-subj', `/CN=kysely-resilient test ${name}`],
        ...['-keyout', path(`${name}.key`), '-out', path(`${name}.csr`)],
      ]),
    ),
  ])
  const sign = (name: string, extensions: string) =>
    run(openssl, [
      ...['x509', '-req', '-in', path(`${name}.csr`), '-CA', path('ca.crt'), '-CAkey', path('ca.key')],
      // An explicit random serial: -CAcreateserial would leave a serial file behind and repeat serials.
      ...['-set_serial', `0x${randomBytes(8).toString('hex')}`, '-days', VALID_DAYS],
      ...['-extfile', config, '-extensions', extensions, '-out', path(`${name}.crt`)],
    ])
  await Promise.all([sign('server', 'server_ext'), sign('other-host', 'other_host_ext')])
  const read = (name: string) => readFile(path(name), 'utf8')
  const [caPem, serverCertPem, otherCaPem] = await Promise.all([
    read('ca.crt'),
    read('server.crt'),
    read('other-ca.crt'),
  ])
  return {
    caFile: path('ca.crt'),
    caPem,
    serverCertFile: path('server.crt'),
    serverCertPem,
    serverKeyFile: path('server.key'),
    otherHostCertFile: path('other-host.crt'),
    otherHostKeyFile: path('other-host.key'),
    otherCaFile: path('other-ca.crt'),
    otherCaPem,
  }
}

export interface InstalledServerTls {
  readonly certFile: string
  readonly keyFile: string
  readonly caFile: string
}

/**
 * Copies a server's certificate, key and CA into `serverDir` (the server's own directory, removed with
 * it), owned by the server's OS user. The key is 0600: PostgreSQL refuses to start with a key that group
 * or others can read (unless root owns it with 0640), and the caller's copy may be neither.
 */
export async function installServerTls(
  tls: ServerTlsOptions,
  serverDir: string,
  user: OsUser | undefined,
): Promise<InstalledServerTls> {
  const dir = join(serverDir, 'tls')
  await mkdir(dir, { mode: 0o700 })
  await chownTo(dir, user)
  const install = async (from: string, name: string, mode: number): Promise<string> => {
    const to = join(dir, name)
    await copyFile(from, to)
    await chmod(to, mode)
    await chownTo(to, user)
    return to
  }
  const [certFile, keyFile, caFile] = await Promise.all([
    install(tls.certFile, 'server.crt', 0o644),
    install(tls.keyFile, 'server.key', 0o600),
    install(tls.caFile, 'ca.crt', 0o644),
  ])
  return { certFile, keyFile, caFile }
}
