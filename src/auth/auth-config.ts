/**
 * What a credential source is told about the endpoint it serves. Never holds a secret.
 *
 * @example
 * ```ts
 * const getToken = async (endpoint: AuthEndpoint) => vault.read(`db/${endpoint.name}/${endpoint.user}`)
 * ```
 */
export interface AuthEndpoint {
  /** The endpoint's name, e.g. `'writer'` or `'reader-0'`. */
  readonly name: string
  readonly role: 'writer' | 'reader'
  /**
   * Host name, IP address or Unix socket path; `undefined` only for `'secret'` auth when the secret
   * supplies the host.
   */
  readonly host: string | undefined
  readonly port: number
  readonly user: string | undefined
  readonly database: string | undefined
}

/**
 * AWS credentials as the AWS SDK takes them: fixed keys, or a function that returns (and may
 * refresh) them. Declared here so this package's types do not depend on the optional AWS SDK.
 *
 * @example
 * ```ts
 * import { fromNodeProviderChain } from '@aws-sdk/credential-providers'
 *
 * const credentials: AwsCredentials = fromNodeProviderChain()
 * ```
 */
export type AwsCredentials =
  | {
      readonly accessKeyId: string
      readonly secretAccessKey: string
      readonly sessionToken?: string
      readonly expiration?: Date
    }
  | (() => Promise<{
      readonly accessKeyId: string
      readonly secretAccessKey: string
      readonly sessionToken?: string
      readonly expiration?: Date
    }>)

/**
 * The password from the URL or the endpoint object. The default.
 *
 * @example
 * ```ts
 * createDb({ dialect: 'postgres', writer: process.env.DATABASE_URL!, auth: { type: 'password' } })
 * ```
 */
export interface PasswordAuthConfig {
  readonly type: 'password'
}

/**
 * Amazon RDS IAM database authentication: each new connection presents a token signed locally by
 * `@aws-sdk/rds-signer` (an optional peer dependency, loaded only when this is used) for the
 * endpoint's host, port and user. One token per endpoint is shared by every new connection and
 * re-signed in the background before it expires. Needs TLS (RDS refuses IAM over plain TCP).
 *
 * @example
 * ```ts
 * createDb({
 *   dialect: 'postgres',
 *   writer: 'postgres://app_iam@mydb.cluster-abc.eu-west-1.rds.amazonaws.com:5432/orders',
 *   auth: { type: 'iam', region: 'eu-west-1' },
 * })
 * ```
 */
export interface IamAuthConfig {
  readonly type: 'iam'
  /**
   * The AWS region of the database.
   *
   * Default: `AWS_REGION`, then the region in an `*.rds.amazonaws.com` host name. Example: `'eu-west-1'`.
   */
  readonly region?: string
  /**
   * AWS credentials to sign with.
   *
   * Default: the AWS SDK's default provider chain (environment, profile, container, instance role).
   * Example: `fromTemporaryCredentials({ params: { RoleArn } })`.
   */
  readonly credentials?: AwsCredentials
  /**
   * A named profile from `~/.aws/config` to sign with, instead of `credentials`.
   *
   * Default: unset. Example: `'prod-db'`.
   */
  readonly profile?: string
  /**
   * Age at which a token is re-signed (in the background; connections keep using the current one
   * meanwhile). Tokens are valid for 15 minutes and handed out for at most 14, so this is at most
   * `780_000` (13 minutes).
   *
   * Default: `600_000` (10 minutes). Example: `300_000`.
   */
  readonly refreshAfterMs?: number
}

/**
 * User name and password from an AWS Secrets Manager secret in RDS's JSON shape
 * (`{ "username", "password", "host"?, "port"?, "dbname"? }`), via
 * `@aws-sdk/client-secrets-manager` (an optional peer dependency, loaded only when this is used).
 * The secret's `username` and `password` are always used; its `host`, `port` and `dbname` fill in
 * whatever the endpoint does not set itself. When the database rejects the password (the secret was
 * rotated), the secret is fetched again once.
 *
 * @example
 * ```ts
 * createDb({
 *   dialect: 'mysql',
 *   writer: { auth: { type: 'secret', secretId: 'prod/orders/app' } },
 *   tls: 'rds',
 * })
 * ```
 */
export interface SecretAuthConfig {
  readonly type: 'secret'
  /**
   * The secret's name or ARN.
   *
   * Default: none, required. Example: `'prod/orders/app'`.
   */
  readonly secretId: string
  /**
   * The region of the secret.
   *
   * Default: `AWS_REGION` (the SDK's default). Example: `'eu-west-1'`.
   */
  readonly region?: string
  /**
   * How long a fetched secret is used before it is fetched again (in the background from two thirds
   * of this on).
   *
   * Default: `3_600_000` (1 hour, as AWS's own caching clients). Example: `900_000`.
   */
  readonly ttlMs?: number
}

/**
 * Any other source of a password or token (Vault, a sidecar, your own signer). `getToken` is
 * called once per endpoint per `ttlMs` (in the background from two thirds of `ttlMs` on, one call
 * at a time however many connections open), and again once when the database rejects the token.
 *
 * @example
 * ```ts
 * createDb({
 *   dialect: 'postgres',
 *   writer: 'postgres://app@db.internal/orders',
 *   auth: { type: 'token', getToken: () => vault.dbPassword('orders'), ttlMs: 300_000 },
 * })
 * ```
 */
export interface TokenAuthConfig {
  readonly type: 'token'
  /** Returns the password or token to present, for the endpoint described. */
  readonly getToken: (endpoint: AuthEndpoint) => Promise<string>
  /**
   * How long a token is used.
   *
   * Default: none, required. Example: `300_000`.
   */
  readonly ttlMs: number
}

/**
 * How connections authenticate; see each member. Set it for all endpoints in `config.auth`, or for
 * one endpoint in its own `auth` (a reader may use other credentials than the writer).
 *
 * @example
 * ```ts
 * const auth: AuthConfig = { type: 'iam', region: 'eu-west-1' }
 * ```
 */
export type AuthConfig = PasswordAuthConfig | IamAuthConfig | SecretAuthConfig | TokenAuthConfig
