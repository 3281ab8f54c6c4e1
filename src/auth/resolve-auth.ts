import { ConfigError } from '../errors.js'
import { numberSetting } from '../validation/number-setting.js'
import { settingKeys } from '../validation/setting-keys.js'
import type {
  AuthConfig,
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

const KEYS: Record<AuthConfig['type'], ReadonlyArray<string>> = {
  password: settingKeys<PasswordAuthConfig>()('type'),
  iam: settingKeys<IamAuthConfig>()('type', 'region', 'credentials', 'profile', 'refreshAfterMs'),
  secret: settingKeys<SecretAuthConfig>()('type', 'secretId', 'region', 'ttlMs'),
  token: settingKeys<TokenAuthConfig>()('type', 'getToken', 'ttlMs'),
}

/** Validates an `auth` setting; every problem is a `ConfigError` naming it. Never echoes values. */
export function resolveAuth(input: AuthConfig | undefined, setting: string): ResolvedAuth {
  if (input === undefined) return PASSWORD_AUTH
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConfigError(
      setting,
      "expected an object with a 'type' ('password', 'iam', 'secret' or 'token')",
    )
  }
  const type = (input as { type?: unknown }).type
  if (typeof type !== 'string' || !Object.hasOwn(KEYS, type)) {
    throw new ConfigError(
      `${setting}.type`,
      `expected 'password', 'iam', 'secret' or 'token', got ${typeof type === 'string' ? `'${type.slice(0, 40)}'` : String(type)}`,
    )
  }
  const known = KEYS[type as AuthConfig['type']]
  for (const key of Object.keys(input)) {
    if (!known.includes(key)) {
      throw new ConfigError(
        `${setting}.${key}`,
        `unknown setting for auth type '${type}' (known: ${known.join(', ')})`,
      )
    }
  }
  const fields = input as unknown as Record<string, unknown>
  const optionalString = (key: string): string | undefined => {
    const value = fields[key]
    if (value === undefined) return undefined
    if (typeof value !== 'string' || value.length === 0) {
      throw new ConfigError(`${setting}.${key}`, `expected a non-empty string, got a ${typeof value}`)
    }
    return value
  }
  const duration = (key: string, min: number, max: number): number | undefined =>
    numberSetting(fields[key], `${setting}.${key}`, { min, max, milliseconds: true })

  switch (type as AuthConfig['type']) {
    case 'password':
      return PASSWORD_AUTH
    case 'iam': {
      const credentials = fields.credentials
      if (
        credentials !== undefined &&
        typeof credentials !== 'function' &&
        !(
          typeof credentials === 'object' &&
          credentials !== null &&
          typeof (credentials as { accessKeyId?: unknown }).accessKeyId === 'string' &&
          typeof (credentials as { secretAccessKey?: unknown }).secretAccessKey === 'string'
        )
      ) {
        throw new ConfigError(
          `${setting}.credentials`,
          'expected { accessKeyId, secretAccessKey, sessionToken? } or a credential provider function',
        )
      }
      const profile = optionalString('profile')
      if (profile !== undefined && credentials !== undefined) {
        throw new ConfigError(setting, "give either 'credentials' or 'profile', not both")
      }
      return Object.freeze({
        type: 'iam',
        region: optionalString('region'),
        credentials: credentials as AwsCredentials | undefined,
        profile,
        // At least a minute of refresh-ahead margin, and not so often that the signer's credential
        // provider is hammered.
        refreshAfterMs: duration('refreshAfterMs', 10_000, IAM_TOKEN_USABLE_MS - 60_000) ?? 600_000,
      })
    }
    case 'secret': {
      const secretId = optionalString('secretId')
      if (secretId === undefined) {
        throw new ConfigError(`${setting}.secretId`, 'is required: the secret name or ARN')
      }
      return Object.freeze({
        type: 'secret',
        secretId,
        region: optionalString('region'),
        ttlMs: duration('ttlMs', 1_000, 7 * 24 * 3_600_000) ?? 3_600_000,
      })
    }
    case 'token': {
      if (typeof fields.getToken !== 'function') {
        throw new ConfigError(
          `${setting}.getToken`,
          `expected a function (endpoint) => Promise<string>, got ${fields.getToken === undefined ? 'nothing' : `a ${typeof fields.getToken}`}`,
        )
      }
      const ttlMs = duration('ttlMs', 1_000, 7 * 24 * 3_600_000)
      if (ttlMs === undefined) {
        throw new ConfigError(
          `${setting}.ttlMs`,
          'is required: how long a token may be used, in milliseconds',
        )
      }
      return Object.freeze({
        type: 'token',
        getToken: fields.getToken as (endpoint: AuthEndpoint) => Promise<string>,
        ttlMs,
      })
    }
  }
}
