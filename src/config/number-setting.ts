import { ConfigError } from '../errors.js'
import { describeValue } from './describe-value.js'

/** What a number setting must be. */
export interface NumberRule {
  readonly min: number
  /** Default: no upper bound (any safe integer). */
  readonly max?: number
  /** A time in milliseconds: the message says so. */
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
  const max = rule.max ?? Number.MAX_SAFE_INTEGER
  const isNumber = rule.fractions ? Number.isFinite : Number.isSafeInteger
  if (typeof value === 'number' && isNumber(value) && value >= rule.min && value <= max) return value
  const range = max === Number.MAX_SAFE_INTEGER ? `>= ${rule.min}` : `from ${rule.min} to ${max}`
  throw new ConfigError(
    setting,
    `expected ${rule.fractions ? 'a number' : 'an integer'} ${range}${rule.milliseconds ? ' (milliseconds)' : ''}, got ${
      typeof value === 'string' ? 'a string' : describeValue(value)
    }`,
  )
}
