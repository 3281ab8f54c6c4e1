import { AuthenticationFailedError } from '../errors.js'
import type { CredentialCache } from './credential-cache.js'
import type { CredentialEndpoint } from './credential-source.js'
import type { Credentials } from './credentials.js'

/**
 * Opens one connection with the endpoint's current credentials. When the database rejects them
 * (`isAuthFailure`: a rotated password, an expired token), they are dropped from the cache, fresh
 * ones are fetched (one fetch shared by every connection that failed with the same old ones) and
 * the connection is tried once more. A second rejection is an `AuthenticationFailedError`.
 */
export async function connectWithCredentials<C>(
  endpoint: CredentialEndpoint,
  cache: CredentialCache,
  open: (credentials: Credentials) => Promise<C>,
  isAuthFailure: (error: unknown) => boolean,
): Promise<C> {
  const first = await cache.get()
  try {
    return await open(first)
  } catch (error) {
    if (!isAuthFailure(error)) throw error
    cache.invalidate(first)
  }
  const second = await cache.get()
  try {
    return await open(second)
  } catch (error) {
    if (!isAuthFailure(error)) throw error
    // Not invalidated again: the next connection's first attempt does that, so a source whose
    // credentials are simply wrong costs one fetch per failing connection, not a storm.
    throw new AuthenticationFailedError(endpoint.name, endpoint.auth.type, second.user ?? endpoint.user, {
      cause: error,
    })
  }
}
