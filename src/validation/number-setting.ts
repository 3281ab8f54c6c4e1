import { ConfigError } from '../errors.js'
import { describeValue } from './describe-value.js'

/**
 * The longest delay Node.js timers accept: 2^31 - 1 ms, about 24.8 days. `setTimeout` (and
 * `setInterval`) with a longer delay fires after 1 ms instead, with only a TimeoutOverflowWarning,
 * so a too-long timeout would expire at once. Every millisecond setting is capped here.
 *
 * It is also the lowest server limit of the settings sent to a server (measured on PostgreSQL 15 and
 * MariaDB 10.11): PostgreSQL's `statement_timeout` and `idle_session_timeout` are int milliseconds
 * with exactly this maximum (a larger startup parameter fails the connection); MariaDB's
 * `max_statement_time` and MySQL/MariaDB's `wait_timeout` go up to 31536000 s (larger values are
 * silently truncated), MySQL's `max_execution_time` to 2^32 - 1 ms.
 */
export const MAX_TIMER_MS = 2_147_483_647

/** What a number setting must be. */
export interface NumberRule {
  readonly min: number
  /** Default: `MAX_TIMER_MS` for milliseconds, otherwise no upper bound (any safe integer). */
  readonly max?: number
  /** A time in milliseconds: at most `MAX_TIMER_MS` unless `max` is lower, and the message says so. */
  readonly milliseconds?: boolean
  /** Accept fractions (withRetry's delays); otherwise only integers. */
  readonly fractions?: boolean
}

/**
 * The one check of a number setting (createDb's pool, routing, retry and auth settings, withRetry's
 * options). `undefined` stays `undefined`, so the caller's default applies. Anything else that breaks
 * the rule is a `ConfigError` naming the setting; a value that is not a number is described by its
 * type only, so a secret put in the wrong place is never repeated.
 */
export function numberSetting(value: unknown, setting: string, rule: NumberRule): number | undefined {
  if (value === undefined) return undefined
  const max = Math.min(rule.max ?? Number.MAX_SAFE_INTEGER, rule.milliseconds ? MAX_TIMER_MS : Infinity)
  const isNumber = rule.fractions ? Number.isFinite : Number.isSafeInteger
  if (typeof value === 'number' && isNumber(value) && value >= rule.min && value <= max) return value
  const range = max === Number.MAX_SAFE_INTEGER ? `>= ${rule.min}` : `from ${rule.min} to ${max}`
  const unit = !rule.milliseconds
    ? ''
    : max === MAX_TIMER_MS
      ? ' (milliseconds; about 24.8 days, the longest delay a Node.js timer accepts)'
      : ' (milliseconds)'
  throw new ConfigError(
    setting,
    `expected ${rule.fractions ? 'a number' : 'an integer'} ${range}${unit}, got ${
      typeof value === 'string' ? 'a string' : describeValue(value)
    }`,
  )
}
