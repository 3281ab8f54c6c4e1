import { loadRdsSigner, loadSecretsManager, type SecretsManagerModule } from '../aws/load-sdk.js'
import { regionFromRdsHost } from '../aws/rds-host.js'
import { CredentialSourceError, MissingDriverError } from '../errors.js'
import { classifyError } from '../retry/classify-error.js'
import type { AuthEndpoint } from './auth-config.js'
import { CredentialCache, type CredentialCacheHooks, type CredentialTiming } from './credential-cache.js'
import { Credentials } from './credentials.js'
import { IAM_TOKEN_USABLE_MS, type ResolvedAuth } from './resolve-auth.js'

/**
 * An endpoint as the credential code sees it: what its source is told ({@link AuthEndpoint}) and its
 * validated `auth`. config/'s `EndpointSettings` is one; declared here so auth/ does not depend on
 * config/, which builds on it.
 */
export interface CredentialEndpoint extends AuthEndpoint {
  readonly auth: ResolvedAuth
}

/**
 * The credential cache for one endpoint with `auth` other than `'password'`, or `undefined` for
 * password auth (the password is fixed; nothing to fetch or refresh).
 */
export function createCredentialCache(
  endpoint: CredentialEndpoint,
  hooks: CredentialCacheHooks,
): CredentialCache | undefined {
  const { auth } = endpoint
  // The span of each fetch names the endpoint, never the user or a credential.
  const fields = {
    'kysely_resilient.endpoint.name': endpoint.name,
    'kysely_resilient.endpoint.role': endpoint.role,
    'kysely_resilient.auth.type': auth.type,
    ...(endpoint.host === undefined ? {} : { 'server.address': endpoint.host }),
    'server.port': endpoint.port,
  }
  switch (auth.type) {
    case 'password':
      return undefined
    case 'iam': {
      const timing: CredentialTiming = { refreshAfterMs: auth.refreshAfterMs, ttlMs: IAM_TOKEN_USABLE_MS }
      return new CredentialCache(() => guard(endpoint, signIamToken(endpoint)), timing, hooks, fields)
    }
    case 'secret': {
      const timing: CredentialTiming = { refreshAfterMs: Math.floor((auth.ttlMs * 2) / 3), ttlMs: auth.ttlMs }
      const fetchSecret = secretFetcher(endpoint)
      return new CredentialCache(() => guard(endpoint, fetchSecret()), timing, hooks, fields)
    }
    case 'token': {
      const timing: CredentialTiming = { refreshAfterMs: Math.floor((auth.ttlMs * 2) / 3), ttlMs: auth.ttlMs }
      const described: AuthEndpoint = Object.freeze({
        name: endpoint.name,
        role: endpoint.role,
        host: endpoint.host,
        port: endpoint.port,
        user: endpoint.user,
        database: endpoint.database,
      })
      const fetchToken = async (): Promise<Credentials> => {
        const token: unknown = await auth.getToken(described)
        if (typeof token !== 'string' || token.length === 0) {
          throw new CredentialSourceError(
            endpoint.name,
            'token',
            `getToken() resolved to ${typeof token === 'string' ? 'an empty string' : `a ${typeof token}`}, expected the password or token`,
            false,
          )
        }
        return new Credentials({ password: token, user: endpoint.user })
      }
      return new CredentialCache(() => guard(endpoint, fetchToken()), timing, hooks, fields)
    }
  }
}

/** Every failure of a source becomes a `CredentialSourceError`, transient or not. */
async function guard(endpoint: CredentialEndpoint, pending: Promise<Credentials>): Promise<Credentials> {
  try {
    return await pending
  } catch (error) {
    if (error instanceof CredentialSourceError || error instanceof MissingDriverError) throw error
    const name = (error as { name?: unknown } | null)?.name
    throw new CredentialSourceError(
      endpoint.name,
      endpoint.auth.type,
      `the source failed${typeof name === 'string' ? ` with ${name}` : ''} (see cause)`,
      isTransient(error),
      { cause: error },
    )
  }
}

// AWS SDK v3 errors carrying these names are throttling or service-side trouble: worth retrying.
const TRANSIENT_AWS_ERRORS = new Set([
  'ThrottlingException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'InternalServiceError',
  'InternalFailure',
  'ServiceUnavailable',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
])

function isTransient(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false
  const { name, $metadata, $retryable } = error as {
    name?: unknown
    $metadata?: { httpStatusCode?: number }
    $retryable?: unknown
  }
  if (typeof name === 'string' && TRANSIENT_AWS_ERRORS.has(name)) return true
  if ($retryable !== undefined && $retryable !== null) return true
  if (($metadata?.httpStatusCode ?? 0) >= 500) return true
  // Network errors reaching the source (refused, reset, DNS) never touched the database either.
  return classifyError(error).category === 'unavailable'
}

async function signIamToken(endpoint: CredentialEndpoint): Promise<Credentials> {
  const auth = endpoint.auth
  if (auth.type !== 'iam') throw new Error('unreachable')
  const { Signer } = await loadRdsSigner()
  // Host and user are checked by createDb; the region may come from the environment at run time.
  const signer = new Signer({
    hostname: endpoint.host as string,
    port: endpoint.port,
    username: endpoint.user as string,
    region: auth.region ?? process.env.AWS_REGION ?? regionFromRdsHost(endpoint.host),
    ...(auth.credentials === undefined ? {} : { credentials: auth.credentials }),
    ...(auth.profile === undefined ? {} : { profile: auth.profile }),
  })
  // Signing is local (SigV4 over the credentials); only resolving the credentials may call AWS.
  return new Credentials({ password: await signer.getAuthToken(), user: endpoint.user })
}

function secretFetcher(endpoint: CredentialEndpoint): () => Promise<Credentials> {
  const auth = endpoint.auth
  if (auth.type !== 'secret') throw new Error('unreachable')
  let client: InstanceType<SecretsManagerModule['SecretsManagerClient']> | undefined
  return async () => {
    const sdk = await loadSecretsManager()
    // One client per endpoint, created on first use: it holds the SDK's connection pool.
    client ??= new sdk.SecretsManagerClient(auth.region === undefined ? {} : { region: auth.region })
    const { SecretString } = await client.send(new sdk.GetSecretValueCommand({ SecretId: auth.secretId }))
    return parseSecret(endpoint.name, SecretString)
  }
}

/**
 * Reads RDS's secret shape. Problems name the missing or mistyped field, never a value.
 */
export function parseSecret(endpoint: string, secretString: string | undefined): Credentials {
  const fail = (problem: string): never => {
    throw new CredentialSourceError(endpoint, 'secret', problem, false)
  }
  if (secretString === undefined)
    return fail('the secret has no SecretString (binary secrets are not supported)')
  let parsed: unknown
  try {
    parsed = JSON.parse(secretString)
  } catch {
    return fail('the secret is not JSON; expected { "username", "password", "host"?, "port"?, "dbname"? }')
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return fail('the secret is not a JSON object; expected { "username", "password", ... }')
  }
  const fields = parsed as Record<string, unknown>
  const text = (key: string, required: boolean): string | undefined => {
    const value = fields[key]
    if (value === undefined || value === null) {
      return required ? fail(`the secret has no "${key}" field`) : undefined
    }
    if (typeof value !== 'string' || value.length === 0) {
      return fail(`the secret's "${key}" field is not a non-empty string`)
    }
    return value
  }
  const username = text('username', true)
  const password = text('password', true) as string
  const host = text('host', false)
  const database = text('dbname', false)
  let port: number | undefined
  if (fields.port !== undefined && fields.port !== null) {
    port = Number(fields.port)
    if (!Number.isInteger(port) || port < 1 || port > 65_535)
      fail('the secret\'s "port" field is not a TCP port')
  }
  return new Credentials({ password, user: username, host, port, database })
}
