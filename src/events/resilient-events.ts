import { eventChannel } from '../diagnostics/channels.js'
import type { ErrorCategory } from '../retry/error-classification.js'

/**
 * A statement outside a transaction failed in a way that is safe to retry and is being retried.
 *
 * @example
 * ```ts
 * db.on('retry', (e) => console.warn(`retry #${e.attempt} on ${e.endpoint} after ${e.category}`))
 * ```
 */
export interface RetryEvent {
  /** The endpoint the failed attempt ran on. */
  readonly endpoint: string
  /** Why it failed: `'unavailable'`, `'read-only'` or (reads only) `'ambiguous'`. */
  readonly category: ErrorCategory
  /** SQLSTATE, MySQL errno or Node error code, when known. */
  readonly code: string | undefined
  /** The attempt that failed, starting at 1. */
  readonly attempt: number
  /** How long the library waits before the next attempt. */
  readonly delayMs: number
  /** Whether the statement was a read (served by a reader) or needed the writer. */
  readonly statement: 'read' | 'write'
}

/**
 * The writer moved: writer discovery found another endpoint accepting writes.
 *
 * @example
 * ```ts
 * db.on('failover', (e) => console.warn(`writer moved ${e.from} -> ${e.to} in ${e.durationMs} ms`))
 * ```
 */
export interface FailoverEvent {
  /** The endpoint that was the writer. */
  readonly from: string
  /** The endpoint that accepts writes now. */
  readonly to: string
  /** From the failure that started discovery to the new writer being found. */
  readonly durationMs: number
  /** What started discovery, e.g. `'read-only'` or `'connection-lost'`. */
  readonly reason: string
}

/**
 * A reader was taken out of rotation.
 *
 * @example
 * ```ts
 * db.on('reader-ejected', (e) => metrics.increment('db.reader.ejected', { reader: e.endpoint }))
 * ```
 */
export interface ReaderEjectedEvent {
  readonly endpoint: string
  /**
   * `'unreachable'`: a connection failed; `'lagging'`: replay lag above `routing.maxReplicaLagMs`;
   * `'lag-unknown'`: with `maxReplicaLagMs` set, a replica that reports no lag (no replication
   * status, no replay timestamp), which could be any distance behind.
   */
  readonly reason: 'unreachable' | 'lagging' | 'lag-unknown'
  /** The measured lag, for `'lagging'`. */
  readonly lagMs: number | undefined
  /** How long until the reader is probed again. */
  readonly cooldownMs: number
}

/**
 * A reader that was ejected answered its probe and is back in rotation.
 *
 * @example
 * ```ts
 * db.on('reader-restored', (e) => console.info(`${e.endpoint} back after ${e.ejectedForMs} ms`))
 * ```
 */
export interface ReaderRestoredEvent {
  readonly endpoint: string
  readonly ejectedForMs: number
}

/**
 * Something failed in the background (a probe, a lag check) or a connection was lost. Never
 * contains secrets: only the endpoint's name, the classification and the code.
 *
 * @example
 * ```ts
 * db.on('error', (e) => log.warn({ endpoint: e.endpoint, category: e.category, code: e.code }, e.reason))
 * ```
 */
export interface ResilientErrorEvent {
  readonly endpoint: string
  readonly category: ErrorCategory
  readonly code: string | undefined
  /** A short description, e.g. `'writer probe failed'`. */
  readonly reason: string
}

/**
 * New credentials were fetched from an endpoint's `auth` source (never for password auth). The
 * payload says when and why, never what: no token, password or secret value.
 *
 * @example
 * ```ts
 * db.on('credentials-refreshed', (e) => log.info(`${e.authType} credentials for ${e.endpoint}: ${e.reason}`))
 * ```
 */
export interface CredentialsRefreshedEvent {
  readonly endpoint: string
  /** `'iam'`, `'secret'` or `'token'`. */
  readonly authType: string
  /**
   * `'initial'`: first use; `'refresh'`: ahead of expiry, in the background; `'expired'`: the old
   * ones had expired (nothing had asked for them in time); `'rejected'`: the database refused the
   * cached ones (a rotated password).
   */
  readonly reason: 'initial' | 'refresh' | 'expired' | 'rejected'
  /** How long the source took. */
  readonly durationMs: number
}

/**
 * An endpoint's server stopped answering: a statement ran longer than `pool.probeAfterMs` and a ping
 * over a separate connection got no reply within `pool.probeTimeoutMs`. Its statements in flight
 * were failed with `ServerUnresponsiveError`, and new ones fail at once until it answers again.
 *
 * @example
 * ```ts
 * db.on('endpoint-unresponsive', (e) => console.error(`${e.endpoint} (${e.role}) stopped answering`))
 * ```
 */
export interface EndpointUnresponsiveEvent {
  readonly endpoint: string
  readonly role: 'writer' | 'reader'
  /** Statements in flight that were failed. */
  readonly statementsFailed: number
  /** The probe deadline that was missed, in milliseconds. */
  readonly probeTimeoutMs: number
}

/**
 * An endpoint that was unresponsive answers a ping again.
 *
 * @example
 * ```ts
 * db.on('endpoint-responsive', (e) => console.info(`${e.endpoint} answers again after ${e.downForMs} ms`))
 * ```
 */
export interface EndpointResponsiveEvent {
  readonly endpoint: string
  readonly role: 'writer' | 'reader'
  /** How long it did not answer, in milliseconds. */
  readonly downForMs: number
}

/**
 * Every event `db.on(...)` can listen to, with its payload.
 *
 * @example
 * ```ts
 * const events: Array<keyof ResilientEventMap> = ['retry', 'failover', 'reader-ejected', 'credentials-refreshed', 'error']
 * ```
 */
export interface ResilientEventMap {
  retry: RetryEvent
  failover: FailoverEvent
  'reader-ejected': ReaderEjectedEvent
  'reader-restored': ReaderRestoredEvent
  'credentials-refreshed': CredentialsRefreshedEvent
  'endpoint-unresponsive': EndpointUnresponsiveEvent
  'endpoint-responsive': EndpointResponsiveEvent
  error: ResilientErrorEvent
}

/**
 * A listener for one event.
 *
 * @example
 * ```ts
 * const onRetry: ResilientEventListener<'retry'> = (e) => console.warn(e.endpoint, e.category)
 * db.on('retry', onRetry)
 * db.off('retry', onRetry)
 * ```
 */
export type ResilientEventListener<K extends keyof ResilientEventMap> = (event: ResilientEventMap[K]) => void

/**
 * A small typed emitter. Unlike Node's EventEmitter, an `'error'` event without a listener does not
 * throw, and a listener that throws cannot break the query that triggered the event.
 */
export class ResilientEvents {
  readonly #listeners = new Map<keyof ResilientEventMap, Set<(event: never) => void>>()

  on<K extends keyof ResilientEventMap>(event: K, listener: ResilientEventListener<K>): void {
    let set = this.#listeners.get(event)
    if (set === undefined) {
      set = new Set()
      this.#listeners.set(event, set)
    }
    set.add(listener as (event: never) => void)
  }

  off<K extends keyof ResilientEventMap>(event: K, listener: ResilientEventListener<K>): void {
    this.#listeners.get(event)?.delete(listener as (event: never) => void)
  }

  emit<K extends keyof ResilientEventMap>(event: K, payload: ResilientEventMap[K]): void {
    // The same payload for diagnostics_channel subscribers (APMs that do not use db.on).
    const published = eventChannel(event)
    if (published.hasSubscribers) published.publish(payload)
    const set = this.#listeners.get(event)
    if (set === undefined) return
    for (const listener of [...set]) {
      try {
        ;(listener as ResilientEventListener<K>)(
          Object.freeze({ ...payload }) as unknown as ResilientEventMap[K],
        )
      } catch (error) {
        // A broken listener is the app's bug; report it without failing the database call.
        process.emitWarning(`kysely-resilient: a '${event}' listener threw: ${String(error)}`)
      }
    }
  }
}
