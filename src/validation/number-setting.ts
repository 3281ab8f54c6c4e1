import { ConfigError } from '../errors.js'
import type { Check } from './check.js'
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

/** What a count setting must be: an integer from `min`, at most `max` (default: any safe integer). */
export interface IntegerRule {
  readonly min: number
  readonly max?: number
  /** Also accept `Infinity` ("no limit"), and say so in the message. */
  readonly orInfinity?: boolean
  /** What the message says is expected instead of "an integer", e.g. `'a TCP port'`. */
  readonly expected?: string
}

/** What a millisecond setting must be: from `min`, at most `max` and never above `MAX_TIMER_MS`. */
export interface DurationRule {
  readonly min: number
  readonly max?: number
  /** Accept fractions (withRetry's delays, as setTimeout takes them); otherwise only integers. */
  readonly fractions?: boolean
  /** Also accept `Infinity` ("no limit"), and say so in the message. */
  readonly orInfinity?: boolean
  /**
   * A budget compared with elapsed time and never handed to a timer (withRetry's `maxElapsedMs`): no
   * `MAX_TIMER_MS` cap, as a longer budget cannot make a timer fire early.
   */
  readonly comparedOnly?: boolean
}

/** A count setting (`pool.max`, `retry.retries`); `undefined` stays `undefined` for the caller's default. */
export function integer(rule: IntegerRule): Check<number | undefined> {
  return (value, setting) => checkNumber(value, setting, { ...rule, unit: 'none' })
}

/**
 * A setting in milliseconds, capped at `MAX_TIMER_MS` (the message names the cap and why) unless
 * `comparedOnly`; `undefined` stays `undefined` for the caller's default.
 */
export function duration(rule: DurationRule): Check<number | undefined> {
  return (value, setting) =>
    checkNumber(value, setting, { ...rule, unit: rule.comparedOnly ? 'milliseconds' : 'timer' })
}

/**
 * The one number check behind `integer` and `duration`. Anything that breaks the rule is a
 * `ConfigError` naming the setting; a value that is not a number is described by its type only, so a
 * secret put in the wrong place is never repeated.
 */
function checkNumber(
  value: unknown,
  setting: string,
  rule: DurationRule & { readonly expected?: string; readonly unit: 'none' | 'milliseconds' | 'timer' },
): number | undefined {
  if (value === undefined) return undefined
  if (value === Infinity && rule.orInfinity) return value
  const max = Math.min(rule.max ?? Infinity, rule.unit === 'timer' ? MAX_TIMER_MS : Infinity)
  const isNumber: (value: unknown) => boolean = rule.fractions ? Number.isFinite : Number.isSafeInteger
  if (typeof value === 'number' && isNumber(value) && value >= rule.min && value <= max) return value
  const range = max === Infinity ? `>= ${rule.min}` : `from ${rule.min} to ${max}`
  const unit =
    rule.unit === 'none'
      ? ''
      : max === MAX_TIMER_MS
        ? ' (milliseconds; about 24.8 days, the longest delay a Node.js timer accepts)'
        : ' (milliseconds)'
  const expected = rule.expected ?? (rule.fractions ? 'a number' : 'an integer')
  throw new ConfigError(
    setting,
    `expected ${expected} ${range}${unit}${rule.orInfinity ? ' or Infinity' : ''}, got ${
      typeof value === 'string' ? 'a string' : describeValue(value)
    }`,
  )
}
