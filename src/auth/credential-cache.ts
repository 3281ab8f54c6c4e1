import { OPERATION_SPANS, type OperationFields, traceOperation } from '../diagnostics/operation-spans.js'
import type { Credentials } from './credentials.js'

/** When a fetched value is refreshed and when it may no longer be used. */
export interface CredentialTiming {
  /** Age at which a background refresh starts; connections keep using the value meanwhile. */
  readonly refreshAfterMs: number
  /** Age after which the value is not used: new connections wait for a fresh one. */
  readonly ttlMs: number
}

/** What the cache reports, for events. */
export interface CredentialCacheHooks {
  /** A fetch succeeded; `reason` says why it ran. */
  onFetched(reason: 'initial' | 'refresh' | 'rejected' | 'expired', durationMs: number): void
  /** A background refresh failed; the current value is still used until it expires. */
  onBackgroundFailure(error: unknown): void
}

interface Cached {
  readonly value: Credentials
  readonly refreshAt: number
  readonly expiresAt: number
}

/**
 * One endpoint's credentials, fetched once and shared by every new connection.
 *
 * - While the value is fresh, `get()` returns it synchronously: opening a connection never waits for
 *   a signer or a network call.
 * - From `refreshAfterMs` on, the first `get()` starts one background fetch; the current value is
 *   still handed out until `ttlMs`.
 * - After `ttlMs` (or after `invalidate`), callers wait, all for the same single fetch, so a burst
 *   of new connections costs one call to the source.
 */
export class CredentialCache {
  readonly #fetch: () => Promise<Credentials>
  readonly #timing: CredentialTiming
  readonly #hooks: CredentialCacheHooks
  readonly #fields: OperationFields
  #cached: Cached | undefined
  #inFlight: Promise<Credentials> | undefined
  #invalidated = false

  /**
   * @param fields - What a fetch's span says about the endpoint (its name, role, address, auth type);
   *   never a credential.
   */
  constructor(
    fetch: () => Promise<Credentials>,
    timing: CredentialTiming,
    hooks: CredentialCacheHooks,
    fields: OperationFields = {},
  ) {
    this.#fetch = fetch
    this.#timing = timing
    this.#hooks = hooks
    this.#fields = fields
  }

  /** The current credentials, or a promise of fresh ones when there are none that may be used. */
  get(): Credentials | Promise<Credentials> {
    const cached = this.#cached
    // Date.now(), not performance.now(): a token's expiry is wall-clock time, and a frozen Lambda
    // container's monotonic clock may not have advanced while the token's lifetime ran out.
    const now = Date.now()
    if (cached !== undefined && now < cached.expiresAt) {
      if (now >= cached.refreshAt && this.#inFlight === undefined) {
        this.#start('refresh').catch((error: unknown) => this.#hooks.onBackgroundFailure(error))
      }
      return cached.value
    }
    return (
      this.#inFlight ??
      this.#start(this.#invalidated ? 'rejected' : cached === undefined ? 'initial' : 'expired')
    )
  }

  /** The current value without fetching: for a best-effort use such as a cancel request. */
  peek(): Credentials | undefined {
    return this.#cached?.value
  }

  /**
   * The database rejected `stale`: stop handing it out. Only the first report of a value counts, so
   * a burst of connections failing with the same old password causes one new fetch.
   */
  invalidate(stale: Credentials): void {
    if (this.#cached?.value !== stale) return
    this.#cached = undefined
    this.#invalidated = true
  }

  #start(reason: 'initial' | 'refresh' | 'rejected' | 'expired'): Promise<Credentials> {
    const startedAt = Date.now()
    const fields = () => ({ ...this.#fields, 'kysely_resilient.reason': reason })
    const pending = traceOperation(OPERATION_SPANS.credentialFetch, fields, this.#fetch).then(
      (value) => {
        const fetchedAt = Date.now()
        // Ages count from the start of the fetch: a token's validity starts when it is signed,
        // which may be well before a slow credential provider (STS, SSO) lets the fetch finish.
        this.#cached = {
          value,
          refreshAt: startedAt + this.#timing.refreshAfterMs,
          expiresAt: startedAt + this.#timing.ttlMs,
        }
        this.#invalidated = false
        this.#inFlight = undefined
        this.#hooks.onFetched(reason, fetchedAt - startedAt)
        return value
      },
      (error: unknown) => {
        this.#inFlight = undefined
        throw error
      },
    )
    this.#inFlight = pending
    return pending
  }
}
