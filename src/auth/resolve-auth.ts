import { ConfigError } from '../errors.js'
import { type Check, func, oneOf, required, text } from '../validation/check.js'
import { type ConfigSpec, checkObject, isPlainObject, type ObjectRule } from '../validation/config-spec.js'
import { duration } from '../validation/number-setting.js'
import type {
  AuthEndpoint,
  AwsCredentials,
  IamAuthConfig,
  PasswordAuthConfig,
  SecretAuthConfig,
  TokenAuthConfig,
} from './auth-config.js'

/**
 * How long a cached IAM token is handed out: 14 of its 15 minutes (fixed by RDS), so a token given
 * to a new connection always outlives the TLS handshake and authentication.
 */
export const IAM_TOKEN_USABLE_MS = 840_000

/** A validated `auth` setting with its defaults applied. */
export type ResolvedAuth =
  | { readonly type: 'password' }
  | {
      readonly type: 'iam'
      readonly region: string | undefined
      readonly credentials: AwsCredentials | undefined
      readonly profile: string | undefined
      readonly refreshAfterMs: number
    }
  | {
      readonly type: 'secret'
      readonly secretId: string
      readonly region: string | undefined
      readonly ttlMs: number
    }
  | {
      readonly type: 'token'
      readonly getToken: (endpoint: AuthEndpoint) => Promise<string>
      readonly ttlMs: number
    }

export const PASSWORD_AUTH: ResolvedAuth = Object.freeze({ type: 'password' })

// `auth: {}` names the missing type the way a wrong one is named.
const AUTH_TYPE = required(
  oneOf('password', 'iam', 'secret', 'token'),
  "expected 'password', 'iam', 'secret' or 'token', got undefined",
)
// Auth settings sit next to credentials: a wrong value is described by its type, never repeated.
const NAME = text({ secret: true })
const TTL_MS = duration({ min: 1_000, max: 7 * 24 * 3_600_000 })

const CREDENTIALS: Check<AwsCredentials | undefined> = (value, setting) => {
  if (
    value === undefined ||
    typeof value === 'function' ||
    (isPlainObject(value) &&
      typeof value.accessKeyId === 'string' &&
      typeof value.secretAccessKey === 'string')
  ) {
    return value as AwsCredentials | undefined
  }
  throw new ConfigError(
    setting,
    'expected { accessKeyId, secretAccessKey, sessionToken? } or a credential provider function',
  )
}

// One table per auth type: the keys another type takes are unknown here.
const PASSWORD_SPEC = { type: AUTH_TYPE } satisfies ConfigSpec<PasswordAuthConfig>
const IAM_SPEC = {
  type: AUTH_TYPE,
  region: NAME,
  credentials: CREDENTIALS,
  profile: NAME,
  // At least a minute of refresh-ahead margin, and not so often that the signer's credential
  // provider is hammered.
  refreshAfterMs: duration({ min: 10_000, max: IAM_TOKEN_USABLE_MS - 60_000 }),
} satisfies ConfigSpec<IamAuthConfig>
const SECRET_SPEC = {
  type: AUTH_TYPE,
  secretId: required(NAME, 'is required: the secret name or ARN'),
  region: NAME,
  ttlMs: TTL_MS,
} satisfies ConfigSpec<SecretAuthConfig>
const TOKEN_SPEC = {
  type: AUTH_TYPE,
  getToken: required(
    func<(endpoint: AuthEndpoint) => Promise<string>>({
      expected: 'a function (endpoint) => Promise<string>',
      secret: true,
    }),
    'expected a function (endpoint) => Promise<string>, got nothing',
  ),
  ttlMs: required(TTL_MS, 'is required: how long a token may be used, in milliseconds'),
} satisfies ConfigSpec<TokenAuthConfig>

/** Validates an `auth` setting; every problem is a `ConfigError` naming it. Never echoes values. */
export function resolveAuth(input: unknown, setting: string): ResolvedAuth {
  if (input === undefined) return PASSWORD_AUTH
  if (!isPlainObject(input)) {
    throw new ConfigError(
      setting,
      "expected an object with a 'type' ('password', 'iam', 'secret' or 'token')",
    )
  }
  // The type picks the table, so it is checked first.
  const type = AUTH_TYPE(input.type, `${setting}.type`)
  const rule: ObjectRule = {
    unknownKey: (_key, known) => `unknown setting for auth type '${type}' (known: ${known.join(', ')})`,
  }
  switch (type) {
    case 'password':
      checkObject(input, setting, PASSWORD_SPEC, rule)
      return PASSWORD_AUTH
    case 'iam': {
      const iam = checkObject(input, setting, IAM_SPEC, rule)
      if (iam.profile !== undefined && iam.credentials !== undefined) {
        throw new ConfigError(setting, "give either 'credentials' or 'profile', not both")
      }
      return Object.freeze({
        type: 'iam',
        region: iam.region,
        credentials: iam.credentials,
        profile: iam.profile,
        refreshAfterMs: iam.refreshAfterMs ?? 600_000,
      })
    }
    case 'secret': {
      const secret = checkObject(input, setting, SECRET_SPEC, rule)
      return Object.freeze({
        type: 'secret',
        secretId: secret.secretId,
        region: secret.region,
        ttlMs: secret.ttlMs ?? 3_600_000,
      })
    }
    case 'token': {
      const token = checkObject(input, setting, TOKEN_SPEC, rule)
      return Object.freeze({ type: 'token', getToken: token.getToken, ttlMs: token.ttlMs })
    }
  }
}
