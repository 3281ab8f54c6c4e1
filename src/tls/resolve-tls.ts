import { isRdsHost, isRdsProxyHost } from '../aws/rds-host.js'
import { ConfigError } from '../errors.js'
import { describeValue } from '../validation/describe-value.js'
import { settingKeys } from '../validation/setting-keys.js'
import type { TlsConfig, TlsOptions } from './tls-config.js'

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

const OPTION_KEYS = settingKeys<TlsOptions>()('ca', 'cert', 'key')

/**
 * Validates a `tls` setting. `undefined` means the default: `'verify-full'` for RDS Proxy endpoints,
 * `'rds'` for other Amazon RDS hosts, plain
 * TCP elsewhere (the drivers' own default, so a local or private server keeps working unchanged).
 */
export function resolveTls(
  input: TlsConfig | undefined,
  host: string | undefined,
  setting: string,
): ResolvedTls {
  if (input === undefined) {
    // RDS Proxy presents an AWS Certificate Manager certificate (Amazon Trust Services roots, in
    // Node's trust store), not one from the RDS CAs: its endpoints are verified against the system store.
    if (isRdsProxyHost(host)) return { mode: 'verify', trust: 'system', options: undefined }
    return isRdsHost(host) ? { mode: 'verify', trust: 'rds', options: undefined } : { mode: 'off' }
  }
  if (input === false) return { mode: 'off' }
  if (input === 'require') return { mode: 'unverified' }
  if (input === 'verify-full') return { mode: 'verify', trust: 'system', options: undefined }
  if (input === 'rds') return { mode: 'verify', trust: 'rds', options: undefined }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConfigError(
      setting,
      `expected 'verify-full', 'rds', 'require', false or an object with 'ca', got ${describeValue(input)}`,
    )
  }
  for (const key of Object.keys(input)) {
    if (!(OPTION_KEYS as ReadonlyArray<string>).includes(key)) {
      throw new ConfigError(`${setting}.${key}`, `unknown setting (known: ${OPTION_KEYS.join(', ')})`)
    }
  }
  const ca = input.ca as unknown
  const pems = Array.isArray(ca) ? ca : [ca]
  if (ca === undefined || pems.length === 0 || !pems.every(isPem)) {
    throw new ConfigError(
      `${setting}.ca`,
      "expected the CA certificate as a PEM string or Buffer (or a list of them); to use Node's trust store, set tls to 'verify-full'",
    )
  }
  if ((input.cert === undefined) !== (input.key === undefined)) {
    throw new ConfigError(
      input.cert === undefined ? `${setting}.cert` : `${setting}.key`,
      "a client certificate needs both 'cert' and 'key'",
    )
  }
  for (const key of ['cert', 'key'] as const) {
    // Never echo the value: a key is a secret.
    if (input[key] !== undefined && !isPem(input[key])) {
      throw new ConfigError(
        `${setting}.${key}`,
        `expected a PEM string or Buffer, got ${typeof input[key] === 'object' ? 'an object' : `a ${typeof input[key]}`}`,
      )
    }
  }
  return { mode: 'verify', trust: 'custom', options: input }
}

function isPem(value: unknown): boolean {
  return (typeof value === 'string' && value.length > 0) || Buffer.isBuffer(value)
}
