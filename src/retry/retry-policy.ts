import type { ErrorCategory, ErrorClassification } from './error-classification.js'

/**
 * What is about to be run again, which decides what is safe to repeat:
 *
 * - `'unit-of-work'`: what the caller gave `withRetry` (a whole transaction, or any function). It
 *   started from scratch, so a deadlock or serialization failure (`'conflict'`) is safe to redo; a
 *   broken connection after the work was sent (`'ambiguous'`) only when the caller says running it
 *   twice does no harm.
 * - `'statement'`: one statement outside a transaction, retried inside `createDb`, or the opening
 *   of a connection for a session or a stream (nothing sent yet, so it is judged like a read). A
 *   read may run again after its connection broke; a write may not (it may have committed).
 */
export type RetryScope =
  | { readonly kind: 'unit-of-work'; readonly idempotent: boolean }
  | { readonly kind: 'statement'; readonly read: boolean }

/** The categories `withRetry` retries without `idempotent`: nothing was applied, or all was undone. */
const SAFE_FOR_A_UNIT_OF_WORK: ReadonlySet<ErrorCategory> = new Set(['unavailable', 'conflict', 'read-only'])

/**
 * The one answer to "may this failure be retried?", for `withRetry`, the statement retries of
 * `createDb`, and `ErrorClassification.retryable`. `'fatal'` never is.
 */
export function mayRetry(classification: ErrorClassification, scope: RetryScope): boolean {
  const { category, code } = classification
  if (scope.kind === 'unit-of-work') {
    return SAFE_FOR_A_UNIT_OF_WORK.has(category) || (category === 'ambiguous' && scope.idempotent)
  }
  switch (category) {
    case 'unavailable':
      // Waiting for a pooled connection already spent the caller's acquireTimeoutMs: a retry would
      // double it. NO_READER_AVAILABLE is routing.fallback 'error' asking to fail at once (the readers
      // stay ejected for their cooldown, so a retry would only delay the same error).
      return code !== 'POOL_ACQUIRE_TIMEOUT' && code !== 'NO_READER_AVAILABLE'
    case 'read-only':
      // The writer moved: the statement was refused, not applied, and discovery finds the new one.
      return true
    case 'ambiguous':
      // Only a read can safely run twice. Not after pool.queryTimeoutMs: that deadline bounds the
      // caller's wait, and a slow statement run again would only be slow again.
      return scope.read && code !== 'QUERY_TIMEOUT'
    default:
      // 'conflict' on a single statement: left to the caller's withRetry around the unit of work.
      return false
  }
}

/** `ErrorClassification.retryable`: what `withRetry` retries without `idempotent`. */
export function isRetryableCategory(category: ErrorCategory): boolean {
  return SAFE_FOR_A_UNIT_OF_WORK.has(category)
}
