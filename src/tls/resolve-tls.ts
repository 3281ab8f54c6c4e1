import { isRdsHost, isRdsProxyHost } from '../aws/rds-host.js'
import { ConfigError } from '../errors.js'
import type { Check } from '../validation/check.js'
import { type ConfigSpec, checkObject, isPlainObject } from '../validation/config-spec.js'
import { describeType, describeValue } from '../validation/describe-value.js'
import type { TlsOptions } from './tls-config.js'

/** A validated TLS setting: what the connectors turn into driver options. */
export type ResolvedTls =
  | { readonly mode: 'off' }
  | { readonly mode: 'unverified' }
  | {
      readonly mode: 'verify'
      /** Which CAs to trust: Node's default store, the Amazon RDS bundle, or the caller's. */
      readonly trust: 'system' | 'rds' | 'custom'
      readonly options: TlsOptions | undefined
    }

const OFF: ResolvedTls = Object.freeze({ mode: 'off' })
const MODES: Readonly<Record<string, ResolvedTls>> = {
  require: Object.freeze({ mode: 'unverified' }),
  'verify-full': Object.freeze({ mode: 'verify', trust: 'system', options: undefined }),
  rds: Object.freeze({ mode: 'verify', trust: 'rds', options: undefined }),
}

const CA: Check<TlsOptions['ca']> = (value, setting) => {
  const pems = Array.isArray(value) ? value : [value]
  if (value !== undefined && pems.length > 0 && pems.every(isPem)) return value as TlsOptions['ca']
  throw new ConfigError(
    setting,
    "expected the CA certificate as a PEM string or Buffer (or a list of them); to use Node's trust store, set tls to 'verify-full'",
  )
}

const PEM: Check<string | Buffer | undefined> = (value, setting) => {
  if (value === undefined || isPem(value)) return value as string | Buffer | undefined
  // Never echo the value: a key is a secret.
  throw new ConfigError(setting, `expected a PEM string or Buffer, got ${describeType(value)}`)
}

const OPTIONS_SPEC = { ca: CA, cert: PEM, key: PEM } satisfies ConfigSpec<TlsOptions>

/**
 * Validates a `tls` setting; `undefined` stays `undefined`, so the endpoint inherits the top level's
 * or, in the end, gets {@link defaultTls} for its host.
 */
export const checkTls: Check<ResolvedTls | undefined> = (input, setting) => {
  if (input === undefined) return undefined
  if (input === false) return OFF
  if (typeof input === 'string' && Object.hasOwn(MODES, input)) return MODES[input]
  if (!isPlainObject(input)) {
    throw new ConfigError(
      setting,
      `expected 'verify-full', 'rds', 'require', false or an object with 'ca', got ${describeValue(input)}`,
    )
  }
  const options = checkObject(input, setting, OPTIONS_SPEC)
  if ((options.cert === undefined) !== (options.key === undefined)) {
    throw new ConfigError(
      options.cert === undefined ? `${setting}.cert` : `${setting}.key`,
      "a client certificate needs both 'cert' and 'key'",
    )
  }
  return { mode: 'verify', trust: 'custom', options }
}

/**
 * The TLS of an endpoint without a `tls` setting: `'verify-full'` for RDS Proxy endpoints, `'rds'` for
 * other Amazon RDS hosts, plain TCP elsewhere (the drivers' own default, so a local or private server
 * keeps working unchanged).
 */
export function defaultTls(host: string | undefined): ResolvedTls {
  // RDS Proxy presents an AWS Certificate Manager certificate (Amazon Trust Services roots, in
  // Node's trust store), not one from the RDS CAs: its endpoints are verified against the system store.
  if (isRdsProxyHost(host)) return MODES['verify-full'] as ResolvedTls
  return isRdsHost(host) ? (MODES.rds as ResolvedTls) : OFF
}

function isPem(value: unknown): value is string | Buffer {
  return (typeof value === 'string' && value.length > 0) || Buffer.isBuffer(value)
}
