import type { ResolvedTls } from './resolve-tls.js'

/** The CAs to trust for `trust: 'rds'`, loaded once (see `loadRdsCaBundle`). */
export type CaBundle = ReadonlyArray<string>

/** The TLS options common to both drivers' option objects. */
interface VerifyingTlsOptions {
  rejectUnauthorized: true
  ca?: string | Buffer | Array<string | Buffer>
  cert?: string | Buffer
  key?: string | Buffer
}

function verifying(
  tls: ResolvedTls & { mode: 'verify' },
  rdsCa: CaBundle | undefined,
  extra: Record<string, unknown> = {},
): VerifyingTlsOptions {
  const options: VerifyingTlsOptions = { rejectUnauthorized: true, ...extra }
  if (tls.trust === 'rds') {
    if (rdsCa === undefined) throw new Error('kysely-resilient: the RDS CA bundle was not loaded')
    options.ca = [...rdsCa]
  } else if (tls.trust === 'custom' && tls.options !== undefined) {
    const { ca, cert, key } = tls.options
    options.ca = Array.isArray(ca) ? [...(ca as ReadonlyArray<string | Buffer>)] : (ca as string | Buffer)
    if (cert !== undefined) options.cert = cert
    // Not enumerable: the drivers read it by name (pg copies it explicitly for this reason), but
    // printing the options never shows it.
    if (key !== undefined) Object.defineProperty(options, 'key', { value: key, enumerable: false })
  }
  return options
}

/**
 * `pg`'s `ssl` option. `pg` hands it to `tls.connect` with `servername` set to the host, so Node
 * checks the chain (`rejectUnauthorized`) and the host name (its default `checkServerIdentity`).
 */
export function pgSslOptions(tls: ResolvedTls, rdsCa: CaBundle | undefined): false | object {
  if (tls.mode === 'off') return false
  if (tls.mode === 'unverified') return { rejectUnauthorized: false }
  return verifying(tls, rdsCa)
}

/**
 * `mysql2`'s `ssl` option. Unlike `pg`, `mysql2` only checks the host name when `verifyIdentity`
 * is set, so it is set whenever the chain is verified: the same meaning as on PostgreSQL.
 */
export function mysqlSslOptions(tls: ResolvedTls, rdsCa: CaBundle | undefined): object | undefined {
  if (tls.mode === 'off') return undefined
  if (tls.mode === 'unverified') return { rejectUnauthorized: false, verifyIdentity: false }
  return verifying(tls, rdsCa, { verifyIdentity: true })
}
