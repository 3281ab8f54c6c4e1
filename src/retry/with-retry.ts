import pRetry from 'p-retry'
import { ConfigError } from '../errors.js'
import { boolean, type Check, func } from '../validation/check.js'
import { type ConfigSpec, checkObject, unknownOption } from '../validation/config-spec.js'
import { describeValue } from '../validation/describe-value.js'
import { duration, integer } from '../validation/number-setting.js'
import { backoffDelays, fullJitterDelay, sleep } from './backoff.js'
import { classifyError } from './classify-error.js'
import type { ErrorClassification } from './error-classification.js'
import { mayRetry } from './retry-policy.js'

/**
 * Options of {@link withRetry}. Every option is optional.
 *
 * @example
 * ```ts
 * import { withRetry, type WithRetryOptions } from 'kysely-resilient'
 *
 * const options: WithRetryOptions = { retries: 5, maxElapsedMs: 10_000, signal: request.signal }
 * await withRetry(() => db.transaction().execute((trx) => transfer(trx, from, to, amount)), options)
 * ```
 */
export interface WithRetryOptions {
  /**
   * Retries after the first attempt, so `fn` runs at most `retries + 1` times. `0` runs it once.
   * `Infinity` retries until `maxElapsedMs` or `signal` stops it.
   *
   * Default: `3`. Example: `5`.
   */
  readonly retries?: number
  /**
   * Ceiling of the wait after the first failed attempt; the ceiling doubles after each further one.
   * Each wait is drawn uniformly between 0 and its ceiling ("full jitter"), so clients that failed
   * together do not retry in lockstep. At most `2_147_483_647` (the longest delay a Node.js timer
   * accepts).
   *
   * Default: `50`. Example: `100`.
   */
  readonly minDelayMs?: number
  /**
   * Largest ceiling of one wait. Must be at least `minDelayMs`, and at most `2_147_483_647`.
   *
   * Default: `2_000`, or `minDelayMs` when that is larger. Example: `5_000`.
   */
  readonly maxDelayMs?: number
  /**
   * Total time budget, counted from the call. A retry whose wait would end past it is not made: the
   * last error is thrown at once instead. An attempt already running is never cut short.
   *
   * Default: unset (no limit). Example: `10_000`.
   */
  readonly maxElapsedMs?: number
  /**
   * Stops retrying. An abort during a wait rejects at once with `signal.reason`; a failed attempt after
   * the abort also rejects with `signal.reason`. A running attempt is not interrupted (pass the signal
   * to your queries too for that), and one that succeeds is returned: its work is done.
   *
   * Default: unset. Example: `AbortSignal.timeout(5_000)`.
   */
  readonly signal?: AbortSignal
  /**
   * Called after a failed attempt that will be retried, before the wait. If it throws, retrying stops
   * and `withRetry` rejects with what it threw.
   *
   * Default: unset. Example: `(info) => log.warn(info.classification.reason, { attempt: info.attempt })`.
   */
  readonly onRetry?: (info: WithRetryInfo) => void
  /**
   * Also retry `'ambiguous'` failures: the connection broke after the work was sent, so it may
   * already have committed. Set it only when running `fn` twice does no harm (an upsert, a
   * `SET balance = 100`, anything keyed by an idempotency key).
   *
   * Default: `false`. Example: `true`.
   */
  readonly idempotent?: boolean
}

/**
 * What {@link WithRetryOptions.onRetry} receives about a failed attempt that will be retried.
 *
 * @example
 * ```ts
 * import { withRetry, type WithRetryInfo } from 'kysely-resilient'
 *
 * const onRetry = (info: WithRetryInfo) =>
 *   console.warn(`attempt ${info.attempt} failed (${info.classification.category}); again in ${info.delayMs} ms`)
 * await withRetry(() => db.transaction().execute(work), { onRetry })
 * ```
 */
export interface WithRetryInfo {
  /** The attempt that failed, starting at 1. */
  readonly attempt: number
  /** What the attempt threw, untouched. */
  readonly error: unknown
  /** The verdict of `classifyError` on `error`. */
  readonly classification: ErrorClassification
  /** How long `withRetry` waits before the next attempt, in milliseconds. */
  readonly delayMs: number
  /** Milliseconds since `withRetry` was called. */
  readonly elapsedMs: number
}

/**
 * The defaults of {@link WithRetryOptions} (`maxElapsedMs` and `signal` are unset by default).
 *
 * @example
 * ```ts
 * import { WITH_RETRY_DEFAULTS, withRetry } from 'kysely-resilient'
 *
 * await withRetry(work, { retries: WITH_RETRY_DEFAULTS.retries * 2 })
 * ```
 */
export const WITH_RETRY_DEFAULTS: Readonly<{
  retries: number
  minDelayMs: number
  maxDelayMs: number
  idempotent: boolean
}> = Object.freeze({ retries: 3, minDelayMs: 50, maxDelayMs: 2_000, idempotent: false })

// Symbol.for, not a private Symbol: a second copy of this package (its ESM and CJS builds loaded side
// by side) must read what the other copy attached.
const CLASSIFICATION_KEY: unique symbol = Symbol.for('kysely-resilient.errorClassification')

/**
 * Runs `fn`, and runs it again while it fails with an error that is safe to retry: `'unavailable'`,
 * `'conflict'` and `'read-only'` always, `'ambiguous'` only with `idempotent: true`, `'fatal'` never
 * (see `classifyError` and `docs/error-classification.md`). Between attempts it waits with
 * exponential backoff and full jitter.
 *
 * Wrap the whole transaction, not a statement inside it: a deadlock or a serialization failure rolls
 * the whole transaction back, so only running it again from its start is correct.
 *
 * When it gives up, it rejects with the error `fn` threw last, the same object, so `instanceof` and
 * `err.code` keep working; {@link getErrorClassification} reads the verdict attached to it.
 *
 * @param fn - The work; receives the attempt number, starting at 1.
 * @param options - See {@link WithRetryOptions}.
 * @example
 * ```ts
 * import { withRetry } from 'kysely-resilient'
 *
 * const order = await withRetry(
 *   () =>
 *     db.transaction().execute(async (trx) => {
 *       await trx.updateTable('stock').set((eb) => ({ count: eb('count', '-', 1) })).where('sku', '=', sku).execute()
 *       return trx.insertInto('order').values({ sku }).returningAll().executeTakeFirstOrThrow()
 *     }),
 *   { retries: 5 },
 * )
 * ```
 */
export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  options: WithRetryOptions = {},
): Promise<T> {
  const settings = resolveOptions(options)
  const { signal, onRetry } = settings
  signal?.throwIfAborted()
  const startedAt = performance.now()

  try {
    return await pRetry(
      async (attempt) => {
        // An abort that lands just as a wait ends must not start another attempt.
        signal?.throwIfAborted()
        try {
          return await fn(attempt)
        } catch (error) {
          // Wrapped so that p-retry's own rules (it never retries a TypeError, and replaces a thrown
          // non-Error with one) cannot touch the caller's error; unwrapped below.
          throw new AttemptFailure(error, attach(error, classifyError(error)))
        }
      },
      {
        retries: settings.retries,
        // No wait of p-retry's own: with `minTimeout: 0` its delay is always 0 (`factor` is then
        // unused). Ours is full jitter, which p-retry's `randomize` (1x to 2x) is not, and it happens
        // in `shouldRetry`, the last callback before the next attempt.
        minTimeout: 0,
        factor: 1,
        // Not `signal`: p-retry would reject even after an attempt that succeeded, hiding committed work.
        shouldRetry: async ({ error, attemptNumber }) => {
          if (!(error instanceof AttemptFailure) || signal?.aborted) return false
          const { classification } = error
          if (!mayRetry(classification, { kind: 'unit-of-work', idempotent: settings.idempotent })) {
            return false
          }
          const delayMs = fullJitterDelay(attemptNumber, settings.minDelayMs, settings.maxDelayMs)
          const elapsedMs = Math.round(performance.now() - startedAt)
          if (elapsedMs + delayMs > settings.maxElapsedMs) return false
          onRetry?.({ attempt: attemptNumber, error: error.original, classification, delayMs, elapsedMs })
          await sleep(delayMs, signal)
          return true
        },
      },
    )
  } catch (error) {
    // The caller's decision outranks whatever the last attempt threw.
    if (signal?.aborted) throw signal.reason
    throw error instanceof AttemptFailure ? error.original : error
  }
}

/**
 * The verdict {@link withRetry} attached to the error it rejected with, or `undefined` when the error
 * did not come from `withRetry` (or is a primitive, which cannot carry one). It is stored as a
 * non-enumerable property, so logging or serializing the error does not show it.
 *
 * @param err - What `withRetry` rejected with.
 * @example
 * ```ts
 * import { getErrorClassification, withRetry } from 'kysely-resilient'
 *
 * try {
 *   await withRetry(() => db.transaction().execute(work))
 * } catch (err) {
 *   const verdict = getErrorClassification(err)
 *   if (verdict?.category === 'ambiguous') await checkWhetherItCommitted()
 *   throw err
 * }
 * ```
 */
export function getErrorClassification(err: unknown): ErrorClassification | undefined {
  if ((typeof err !== 'object' || err === null) && typeof err !== 'function') return undefined
  try {
    // Own property only: an object built with the error as its prototype was not what withRetry saw.
    const value: unknown = Object.getOwnPropertyDescriptor(err, CLASSIFICATION_KEY)?.value
    return isClassification(value) ? value : undefined
  } catch {
    // A hostile proxy must not turn error handling into a second failure.
    return undefined
  }
}

/** Carries the caller's error through p-retry untouched. */
class AttemptFailure extends Error {
  readonly original: unknown
  readonly classification: ErrorClassification

  constructor(original: unknown, classification: ErrorClassification) {
    super('kysely-resilient: attempt failed')
    this.original = original
    this.classification = classification
  }
}

function attach(error: unknown, classification: ErrorClassification): ErrorClassification {
  if ((typeof error === 'object' && error !== null) || typeof error === 'function') {
    try {
      // Configurable: the same error object may be thrown by several attempts.
      Object.defineProperty(error, CLASSIFICATION_KEY, {
        value: classification,
        enumerable: false,
        writable: false,
        configurable: true,
      })
    } catch {
      // A frozen error cannot carry it; the error itself matters more than the annotation.
    }
  }
  return classification
}

function isClassification(value: unknown): value is ErrorClassification {
  return (
    typeof value === 'object' &&
    value !== null &&
    'category' in value &&
    typeof value.category === 'string' &&
    'retryable' in value &&
    typeof value.retryable === 'boolean'
  )
}

interface ResolvedOptions {
  readonly retries: number
  readonly minDelayMs: number
  readonly maxDelayMs: number
  readonly maxElapsedMs: number
  readonly idempotent: boolean
  readonly signal: AbortSignal | undefined
  readonly onRetry: ((info: WithRetryInfo) => void) | undefined
}

const SIGNAL: Check<AbortSignal | undefined> = (value, setting) => {
  if (value === undefined || isAbortSignal(value)) return value
  throw new ConfigError(
    setting,
    `expected an AbortSignal (such as AbortSignal.timeout(5_000) or an AbortController's signal), got ${describeValue(value)}`,
  )
}

const OPTIONS_SPEC = {
  retries: integer({ min: 0, orInfinity: true }),
  // Fractions allowed, as setTimeout takes them.
  minDelayMs: duration({ min: 0, fractions: true }),
  maxDelayMs: duration({ min: 0, fractions: true }),
  // A budget compared with the time elapsed, never waited for: any length, or none.
  maxElapsedMs: duration({ min: 0, fractions: true, orInfinity: true, comparedOnly: true }),
  signal: SIGNAL,
  onRetry: func<(info: WithRetryInfo) => void>(),
  idempotent: boolean,
} satisfies ConfigSpec<WithRetryOptions>

// Same errors as createDb's configuration (ConfigError naming the setting), checked before any
// attempt so a typo does not surface only on the first failure.
function resolveOptions(options: unknown): ResolvedOptions {
  const checked = checkObject(options, 'withRetry', OPTIONS_SPEC, {
    expected: 'an options object',
    unknownKey: unknownOption,
  })
  return {
    retries: checked.retries ?? WITH_RETRY_DEFAULTS.retries,
    ...backoffDelays(checked, 'withRetry', WITH_RETRY_DEFAULTS),
    maxElapsedMs: checked.maxElapsedMs ?? Infinity,
    idempotent: checked.idempotent ?? WITH_RETRY_DEFAULTS.idempotent,
    signal: checked.signal,
    onRetry: checked.onRetry,
  }
}

/**
 * What withRetry uses of a signal. Checked by shape rather than `instanceof`, so a signal from another
 * realm (a VM context, a test environment's own AbortController) is accepted too.
 */
function isAbortSignal(value: unknown): value is AbortSignal {
  if (typeof value !== 'object' || value === null) return false
  const signal = value as Partial<Record<keyof AbortSignal, unknown>>
  return (
    typeof signal.aborted === 'boolean' &&
    typeof signal.throwIfAborted === 'function' &&
    typeof signal.addEventListener === 'function' &&
    typeof signal.removeEventListener === 'function'
  )
}
