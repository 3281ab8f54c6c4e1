import { describe, expect, it } from 'vitest'
import type { ErrorCategory, ErrorClassification } from '../../src/index.js'
import { isRetryableCategory, mayRetry, type RetryScope } from '../../src/retry/retry-policy.js'

// The one retry decision, as a table: every category in every scope, and the codes that change it.
// withRetry, createDb's statement retries and ErrorClassification.retryable all read it.

const verdict = (category: ErrorCategory, code?: string): ErrorClassification => ({
  category,
  code,
  reason: 'test',
  retryable: isRetryableCategory(category),
  connectionLost: false,
})

const SCOPES: Record<string, RetryScope> = {
  withRetry: { kind: 'unit-of-work', idempotent: false },
  'withRetry idempotent': { kind: 'unit-of-work', idempotent: true },
  'statement read': { kind: 'statement', read: true },
  'statement write': { kind: 'statement', read: false },
}

// Columns in SCOPES order.
const TABLE: Array<[ErrorCategory, string | undefined, boolean, boolean, boolean, boolean]> = [
  ['unavailable', undefined, true, true, true, true],
  ['unavailable', 'ECONNREFUSED', true, true, true, true],
  // The caller's acquireTimeoutMs is spent: a statement retry would double it; a unit of work starts over.
  ['unavailable', 'POOL_ACQUIRE_TIMEOUT', true, true, false, false],
  // routing.fallback 'error': fail at once.
  ['unavailable', 'NO_READER_AVAILABLE', true, true, false, false],
  ['read-only', undefined, true, true, true, true],
  // A deadlock rolled the transaction back: redo the unit of work, not one statement of it.
  ['conflict', '40P01', true, true, false, false],
  // May have committed: only reads, or work the caller calls idempotent.
  ['ambiguous', undefined, false, true, true, false],
  ['ambiguous', 'QUERY_TIMEOUT', false, true, false, false],
  ['fatal', undefined, false, false, false, false],
  ['fatal', 'ABORT_ERR', false, false, false, false],
]

describe('mayRetry', () => {
  it.each(TABLE)('%s (%s)', (category, code, ...expected) => {
    const actual = Object.values(SCOPES).map((scope) => mayRetry(verdict(category, code), scope))
    expect(Object.fromEntries(Object.keys(SCOPES).map((name, i) => [name, actual[i]]))).toEqual(
      Object.fromEntries(Object.keys(SCOPES).map((name, i) => [name, expected[i]])),
    )
  })

  it('the table has a row for every category (a new category fails to compile here until it is added)', () => {
    const categories: Record<ErrorCategory, true> = {
      unavailable: true,
      'read-only': true,
      conflict: true,
      ambiguous: true,
      fatal: true,
    }
    expect(new Set(TABLE.map(([category]) => category))).toEqual(new Set(Object.keys(categories)))
  })

  it('ErrorClassification.retryable is what withRetry retries without idempotent', () => {
    for (const category of ['unavailable', 'read-only', 'conflict', 'ambiguous', 'fatal'] as const) {
      expect(isRetryableCategory(category)).toBe(mayRetry(verdict(category), SCOPES.withRetry as RetryScope))
    }
  })
})
