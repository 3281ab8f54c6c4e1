import { ConfigError } from '../errors.js'
import { describeType, describeValue } from './describe-value.js'

/**
 * One setting's check, a row of a config object's table (see `ConfigSpec`): returns the value as its
 * resolver uses it, or throws a `ConfigError` naming `setting`, the setting's dotted path
 * (`'readers[1].pool.max'`). An unset setting (`undefined`) passes as `undefined`, so the resolver
 * applies its default or inherits, unless the check is `required`.
 */
export type Check<T> = (value: unknown, setting: string) => T

type Literal = string | number | boolean

/**
 * One of `values`; the message lists them with strings quoted: "expected 'writer' or 'error', got 'x'",
 * "expected 'pgbouncer', 'rds-proxy' or false, got 1".
 */
export function oneOf<const V extends ReadonlyArray<Literal>>(...values: V): Check<V[number] | undefined> {
  const shown = values.map((value) => (typeof value === 'string' ? `'${value}'` : String(value)))
  const expected = shown.length < 2 ? shown.join('') : `${shown.slice(0, -1).join(', ')} or ${shown.at(-1)}`
  return (value, setting) => {
    if (value === undefined || (values as ReadonlyArray<unknown>).includes(value)) {
      return value as V[number] | undefined
    }
    throw new ConfigError(setting, `expected ${expected}, got ${describeValue(value)}`)
  }
}

/** `true` or `false`. */
export const boolean: Check<boolean | undefined> = oneOf(true, false)

/** What a string setting must be. */
export interface TextRule {
  /** Accept `''`. Default: no. */
  readonly empty?: boolean
  /** What the message says is expected. Default: `'a non-empty string'` (`'a string'` with `empty`). */
  readonly expected?: string
  /** Describe a wrong value by its type only: the setting may hold a secret (a password, a region next to one). */
  readonly secret?: boolean
}

/** A string setting. */
export function text(rule: TextRule = {}): Check<string | undefined> {
  const expected = rule.expected ?? (rule.empty ? 'a string' : 'a non-empty string')
  const describe = rule.secret ? describeType : describeValue
  return (value, setting) => {
    if (value === undefined || (typeof value === 'string' && (rule.empty || value !== ''))) return value
    throw new ConfigError(setting, `expected ${expected}, got ${describe(value)}`)
  }
}

/** What a function setting must be. */
export interface FuncRule {
  /** What the message says is expected: how it is called. Default: `'a function'`. */
  readonly expected?: string
  /** Describe a wrong value by its type only: a token passed where its getter belongs. */
  readonly secret?: boolean
}

/**
 * A function setting (a hook, a callback). `F` is the caller's declared type: only `typeof` can be
 * checked before the function is called.
 */
export function func<F>(rule: FuncRule = {}): Check<F | undefined> {
  const describe = rule.secret ? describeType : describeValue
  return (value, setting) => {
    if (value === undefined || typeof value === 'function') return value as F | undefined
    throw new ConfigError(setting, `expected ${rule.expected ?? 'a function'}, got ${describe(value)}`)
  }
}

/** An array, each element checked by `element` as `setting[index]`; returned as a frozen copy. */
export function list<T = unknown>(expected: string, element?: Check<T>): Check<ReadonlyArray<T> | undefined> {
  return (value, setting) => {
    if (value === undefined) return undefined
    if (!Array.isArray(value))
      throw new ConfigError(setting, `expected ${expected}, got ${describeValue(value)}`)
    return Object.freeze(
      value.map((item: unknown, index) => (element ? element(item, `${setting}[${index}]`) : (item as T))),
    )
  }
}

/** `check`, but `undefined` is a `ConfigError` with `detail` (say what the setting is for). */
export function required<T>(check: Check<T | undefined>, detail: string): Check<T> {
  return (value, setting) => {
    const checked = check(value, setting)
    if (checked === undefined) throw new ConfigError(setting, detail)
    return checked
  }
}

/** `check`, or `false` to turn the feature off (`pool.probeAfterMs: false`). */
export function orFalse<T>(check: Check<T>): Check<T | false> {
  return (value, setting) => (value === false ? false : check(value, setting))
}

/**
 * The escape hatch: a setting whose check needs what its own row cannot see (the dialect, the
 * writer's host, the inherited defaults), so its resolver checks it after `checkObject`, naming the
 * resolver in a comment at the row. It is still a row, so the table stays complete and the key known.
 */
export const checkedByItsResolver: Check<unknown> = (value) => value
