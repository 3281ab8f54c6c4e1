import { ConfigError } from '../errors.js'
import type { Check } from './check.js'
import { describeValue } from './describe-value.js'

/**
 * The validation table of a config interface `C`: one `Check` per key. Declare it
 * `satisfies ConfigSpec<C>`, so the compiler fails when `C` gains an option the table lacks (it would
 * otherwise be rejected as unknown, or never checked) and when the table names a key `C` lacks.
 */
export type ConfigSpec<C extends object> = { readonly [K in keyof Required<C>]-?: Check<unknown> }

/** What `checkObject` returns for a table: each key's value as its check returned it. */
export type Checked<S> = { readonly [K in keyof S]: S[K] extends Check<infer T> ? T : never }

/** How `checkObject` words the two errors it raises itself. */
export interface ObjectRule {
  /** What the object was expected to be, after "expected". Default: `'an object'`. */
  readonly expected?: string
  /** The detail for a key the table lacks. Default: `unknown setting (known: <the table's keys>)`. */
  readonly unknownKey?: (key: string, known: ReadonlyArray<string>) => string
}

/** `ObjectRule.unknownKey` for the objects whose keys their docs call options (withRetry's, topology). */
export function unknownOption(_key: string, known: ReadonlyArray<string>): string {
  return `unknown option (known: ${known.join(', ')})`
}

/**
 * Checks a config object against its table: not an object is a `ConfigError` on `setting`; a key the
 * table lacks is one on that key (its value is never shown: it may be a password in the wrong
 * place); then every row runs, in the table's order, on `setting.key`. `setting` `''` is the config
 * itself: the object is called `'config'` and its keys go without a prefix. Rules between fields
 * (one needs another, one bounds another) are the caller's, after this.
 */
export function checkObject<S extends Readonly<Record<string, Check<unknown>>>>(
  input: unknown,
  setting: string,
  spec: S,
  rule: ObjectRule = {},
): Checked<S> {
  if (!isPlainObject(input)) {
    throw new ConfigError(
      setting === '' ? 'config' : setting,
      `expected ${rule.expected ?? 'an object'}, got ${describeValue(input)}`,
    )
  }
  const known = Object.keys(spec)
  const path = (key: string) => (setting === '' ? key : `${setting}.${key}`)
  for (const key of Object.keys(input)) {
    if (!Object.hasOwn(spec, key)) {
      throw new ConfigError(
        path(key),
        rule.unknownKey?.(key, known) ?? `unknown setting (known: ${known.join(', ')})`,
      )
    }
  }
  const checked: Record<string, unknown> = {}
  for (const key of known) checked[key] = (spec[key] as Check<unknown>)(input[key], path(key))
  return checked as Checked<S>
}

/** An object that holds settings: not `null`, not an array. */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Each of `defaults`' keys: the checked value where one was given, else the default; frozen. */
export function withDefaults<D extends object>(
  checked: { readonly [K in keyof D]?: D[K] | undefined },
  defaults: D,
): D {
  const resolved = { ...defaults }
  for (const key of Object.keys(defaults) as Array<keyof D>) {
    const value = checked[key]
    if (value !== undefined) resolved[key] = value as D[keyof D]
  }
  return Object.freeze(resolved)
}
