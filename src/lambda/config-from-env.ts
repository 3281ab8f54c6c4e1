import type { AuthConfig } from '../auth/auth-config.js'
import type { CreateDbConfig, EndpointConfig, SqlDialect } from '../config/create-db-config.js'
import type { ConnectionProxy } from '../config/proxy.js'
import { resolveConfig } from '../config/resolve-config.js'
import { ConfigError } from '../errors.js'
import { isUnixSocket } from '../host/unix-socket.js'
import { defaultTls } from '../tls/resolve-tls.js'
import type { TlsConfig } from '../tls/tls-config.js'

/**
 * The environment variables `getConnection()` reads when it is called without options.
 *
 * - `DB_DIALECT`: `postgres` or `mysql`. Required.
 * - `DB_WRITER_URL`: the writer's connection URL. Required, except with `DB_AUTH=secret` when the
 *   secret holds the host (then `DB_TLS` is required, since TLS cannot be chosen by a host name that
 *   is only known at run time). With `iam` or `secret` the URL names the user but has no password,
 *   e.g. `postgres://app_iam@mydb.cluster-abc.eu-west-1.rds.amazonaws.com:5432/orders`; with
 *   `secret` its host, port and database take precedence over the secret's.
 * - `DB_READER_URLS`: reader URLs separated by commas. Optional; absent or empty means no readers.
 *   They authenticate as `DB_AUTH` says, like the writer.
 * - `DB_AUTH`: how connections authenticate.
 *   - `password` (the default): the password is in the URLs.
 *   - `iam`: Amazon RDS IAM database authentication. Every new connection presents a 15-minute token
 *     signed with the function's execution role (which needs `rds-db:connect`), via
 *     `@aws-sdk/rds-signer`. Needs TLS: on by default for `*.rds.amazonaws.com` hosts (RDS Proxy
 *     endpoints verified against Node's trust store, others against the RDS CAs); for any other host
 *     name, such as a Route 53 alias, set `DB_TLS`.
 *   - `secret`: the user name and password (and, where the URL does not give them, the host, port
 *     and database) come from the AWS Secrets Manager secret `DB_SECRET_ID`, in RDS's JSON shape,
 *     via `@aws-sdk/client-secrets-manager`; fetched again when the database rejects the password.
 * - `DB_SECRET_ID`: the secret's name or ARN. Required with `DB_AUTH=secret`, rejected otherwise
 *   (set without it, it most likely means `DB_AUTH=secret` was forgotten).
 * - `DB_TLS`: `verify-full`, `rds`, `require` or `false` (see `TlsConfig`), for every endpoint.
 *   Optional; unset means `rds` for `*.rds.amazonaws.com` hosts and plain TCP elsewhere.
 * - `DB_PROXY`: `pgbouncer`, `rds-proxy` or `false`, for every endpoint (see `ConnectionProxy`).
 *   Optional; unset means `rds-proxy` for RDS Proxy host names and none elsewhere.
 * - `DB_TOPOLOGY`: `true` or `false`: topology discovery (see `TopologyConfig`). Optional; unset
 *   means on for an Aurora / Multi-AZ cluster endpoint in `DB_WRITER_URL`, off elsewhere.
 * - `DB_INSTANCE_HOST_PATTERN`: the instance host pattern (`?` for the instance identifier), for
 *   discovery behind a writer host that is no RDS cluster endpoint. Optional.
 * - `AWS_REGION`: the region to sign IAM tokens for and to read the secret from. Lambda sets it to
 *   the function's own region; set it yourself only when the database or the secret is elsewhere.
 *   Not used with `password`.
 *
 * @example
 * ```ts
 * import { LAMBDA_ENV_VARIABLES } from 'kysely-resilient/lambda'
 *
 * for (const name of LAMBDA_ENV_VARIABLES) console.log(name, name in process.env)
 * ```
 */
export const LAMBDA_ENV_VARIABLES: ReadonlyArray<string> = Object.freeze([
  'DB_DIALECT',
  'DB_WRITER_URL',
  'DB_READER_URLS',
  'DB_AUTH',
  'DB_SECRET_ID',
  'DB_TLS',
  'DB_PROXY',
  'DB_TOPOLOGY',
  'DB_INSTANCE_HOST_PATTERN',
  'AWS_REGION',
])

type EnvAuth = 'password' | 'iam' | 'secret'

const PROXY_VALUES: Readonly<Record<string, ConnectionProxy | false>> = {
  pgbouncer: 'pgbouncer',
  'rds-proxy': 'rds-proxy',
  false: false,
}

const DIALECTS: ReadonlyArray<SqlDialect> = ['postgres', 'mysql']
const AUTH_TYPES: ReadonlyArray<EnvAuth> = ['password', 'iam', 'secret']
const TLS_VALUES: Readonly<Record<string, TlsConfig>> = {
  'verify-full': 'verify-full',
  rds: 'rds',
  require: 'require',
  false: false,
}

/**
 * Builds `createDb`'s config from environment variables (see {@link LAMBDA_ENV_VARIABLES}). Every
 * problem is a `ConfigError` whose `setting` is the variable's name; a URL is never part of a
 * message (it may hold a password).
 *
 * @example
 * ```ts
 * configFromEnv({
 *   DB_DIALECT: 'postgres',
 *   DB_AUTH: 'iam',
 *   DB_WRITER_URL: 'postgres://app_iam@mydb.cluster-abc.eu-west-1.rds.amazonaws.com/orders',
 *   AWS_REGION: 'eu-west-1',
 * })
 * // { dialect: 'postgres', writer: 'postgres://app_iam@…/orders', readers: [],
 * //   auth: { type: 'iam', region: 'eu-west-1' } }
 * ```
 */
export function configFromEnv(env: Readonly<Record<string, string | undefined>>): CreateDbConfig {
  const authType = value(env, 'DB_AUTH') ?? 'password'
  if (!AUTH_TYPES.includes(authType as EnvAuth)) {
    throw new ConfigError(
      'DB_AUTH',
      `expected 'password' (or unset), 'iam' or 'secret', got '${authType.slice(0, 20)}'`,
    )
  }

  const dialect = value(env, 'DB_DIALECT')
  if (dialect === undefined) {
    throw new ConfigError('DB_DIALECT', "is not set: expected 'postgres' or 'mysql'")
  }
  if (!DIALECTS.includes(dialect as SqlDialect)) {
    throw new ConfigError('DB_DIALECT', `expected 'postgres' or 'mysql', got '${dialect.slice(0, 20)}'`)
  }

  const tlsText = value(env, 'DB_TLS')
  if (tlsText !== undefined && !Object.hasOwn(TLS_VALUES, tlsText)) {
    throw new ConfigError(
      'DB_TLS',
      `expected 'verify-full', 'rds', 'require' or 'false' (or unset), got '${tlsText.slice(0, 20)}'`,
    )
  }
  const tls = tlsText === undefined ? undefined : TLS_VALUES[tlsText]

  const proxyText = value(env, 'DB_PROXY')
  if (proxyText !== undefined && !Object.hasOwn(PROXY_VALUES, proxyText)) {
    throw new ConfigError(
      'DB_PROXY',
      `expected 'pgbouncer', 'rds-proxy' or 'false' (or unset), got '${proxyText.slice(0, 20)}'`,
    )
  }
  const proxy = proxyText === undefined ? undefined : PROXY_VALUES[proxyText]

  const topologyText = value(env, 'DB_TOPOLOGY')
  if (topologyText !== undefined && topologyText !== 'true' && topologyText !== 'false') {
    throw new ConfigError(
      'DB_TOPOLOGY',
      `expected 'true' or 'false' (or unset), got '${topologyText.slice(0, 20)}'`,
    )
  }
  const instanceHostPattern = value(env, 'DB_INSTANCE_HOST_PATTERN')
  const topology = {
    ...(topologyText === undefined ? {} : { discovery: topologyText === 'true' }),
    ...(instanceHostPattern === undefined ? {} : { instanceHostPattern }),
  }

  const secretId = value(env, 'DB_SECRET_ID')
  if (authType === 'secret' && secretId === undefined) {
    throw new ConfigError('DB_SECRET_ID', 'is not set: DB_AUTH=secret needs the secret name or ARN')
  }
  if (authType !== 'secret' && secretId !== undefined) {
    // Most likely DB_AUTH=secret was forgotten: connecting with the URL's password instead would
    // hide that until the password changes.
    throw new ConfigError(
      'DB_SECRET_ID',
      `is set, but DB_AUTH is '${authType}'; set DB_AUTH=secret to use the secret, or remove DB_SECRET_ID`,
    )
  }
  const region = value(env, 'AWS_REGION')

  const writerUrl = value(env, 'DB_WRITER_URL')
  if (writerUrl === undefined && authType !== 'secret') {
    throw new ConfigError(
      'DB_WRITER_URL',
      authType === 'iam'
        ? 'is not set: expected a connection URL with the IAM user, such as postgres://app_iam@host/db'
        : 'is not set: expected a connection URL such as postgres://user:password@host/db',
    )
  }
  if (writerUrl === undefined && tls === undefined) {
    throw new ConfigError(
      'DB_TLS',
      "is not set, and without DB_WRITER_URL the host comes from the secret, so TLS cannot default by host name: set 'rds' for RDS and Aurora (or 'verify-full', or 'false' for plain TCP)",
    )
  }
  const readers = (env.DB_READER_URLS ?? '')
    .split(',')
    .map((url) => url.trim())
    .filter((url) => url.length > 0)

  if (authType === 'iam') requireIamTls(tls, tlsText, writerUrl, readers)

  let auth: AuthConfig | undefined
  if (authType === 'iam') auth = region === undefined ? { type: 'iam' } : { type: 'iam', region }
  if (authType === 'secret') {
    auth = {
      type: 'secret',
      secretId: secretId as string,
      ...(region === undefined ? {} : { region }),
    }
  }
  // No URL: an endpoint without a host, which the secret's "host" fills in.
  const writer: EndpointConfig = writerUrl ?? {}
  const config: CreateDbConfig = {
    dialect: dialect as SqlDialect,
    writer,
    readers,
    ...(auth === undefined ? {} : { auth }),
    ...(tls === undefined ? {} : { tls }),
    ...(proxy === undefined ? {} : { proxy }),
    ...(Object.keys(topology).length === 0 ? {} : { topology }),
  }
  try {
    // Validate here, so a problem is reported under the variable that holds the wrong value.
    resolveConfig(config)
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    const index = /^readers\[(\d+)\]/.exec(error.setting)?.[1]
    // resolveConfig never puts a URL in a message; keep its explanation, name the variable instead.
    throw new ConfigError(
      variableOf(error.setting),
      index === undefined ? error.detail : `URL #${Number(index) + 1}: ${error.detail}`,
    )
  }
  return config
}

/** A variable's value, trimmed; empty counts as unset (a template often leaves a variable blank). */
function value(env: Readonly<Record<string, string | undefined>>, name: string): string | undefined {
  const text = env[name]?.trim()
  return text === undefined || text === '' ? undefined : text
}

/** Which variable holds the value a `createDb` setting came from. */
function variableOf(setting: string): string {
  if (setting.startsWith('readers')) return 'DB_READER_URLS'
  if (setting.startsWith('auth.region')) return 'AWS_REGION'
  if (setting.startsWith('auth.secretId')) return 'DB_SECRET_ID'
  if (setting.startsWith('auth')) return 'DB_AUTH'
  if (setting.startsWith('tls')) return 'DB_TLS'
  if (setting.startsWith('proxy')) return 'DB_PROXY'
  if (setting === 'topology.discovery') return 'DB_TOPOLOGY'
  if (setting.startsWith('topology')) return 'DB_INSTANCE_HOST_PATTERN'
  return 'DB_WRITER_URL'
}

/**
 * IAM tokens need TLS. createDb checks that too, but would name the endpoint; the fix is DB_TLS, so
 * name that, and say why TLS is off.
 */
function requireIamTls(
  tls: TlsConfig | undefined,
  tlsText: string | undefined,
  writerUrl: string | undefined,
  readers: ReadonlyArray<string>,
): void {
  if (tls === false) {
    throw new ConfigError(
      'DB_TLS',
      `is '${tlsText}', but DB_AUTH=iam needs TLS (RDS refuses IAM tokens over plain TCP): set 'rds' or 'verify-full'`,
    )
  }
  if (tls !== undefined) return
  const urls = [
    ...(writerUrl === undefined ? [] : [{ variable: 'DB_WRITER_URL', url: writerUrl }]),
    ...readers.map((url, index) => ({ variable: `DB_READER_URLS URL #${index + 1}`, url })),
  ]
  for (const { variable, url } of urls) {
    const host = hostOf(url)
    // An unparsable URL is createDb's to report, under its own variable; so is IAM over a Unix
    // socket, which no DB_TLS can fix.
    if (host === undefined || isUnixSocket(host)) continue
    if (defaultTls(host).mode === 'off') {
      throw new ConfigError(
        'DB_TLS',
        `is not set, and the host in ${variable} is not an *.rds.amazonaws.com name, so TLS would be off; DB_AUTH=iam needs TLS: set 'rds' (an RDS or Aurora database behind another DNS name) or 'verify-full'`,
      )
    }
  }
}

/** The URL's host, percent-decoded (a Unix socket path is percent-encoded there). */
function hostOf(url: string): string | undefined {
  try {
    const { hostname } = new URL(url)
    return hostname === '' ? undefined : decodeURIComponent(hostname)
  } catch {
    return undefined
  }
}
