/**
 * The setting names of a config interface, as a list the compiler holds to the interface: every
 * listed name must be a key of `T`, and every key of `T` must be listed. So a new option added to an
 * interface cannot be forgotten by the validation that rejects unknown keys (it would reject the new
 * option as unknown), nor can a name be listed that the interface lacks.
 *
 * Called in two steps (`settingKeys<PoolConfig>()('max', 'min', ...)`) so `T` is given and the
 * names are inferred.
 *
 * @example
 * ```ts
 * const RETRY_KEYS = settingKeys<AutoRetryConfig>()('retries', 'minDelayMs', 'maxDelayMs', 'maxElapsedMs')
 * ```
 */
export function settingKeys<T extends object>() {
  return <const K extends ReadonlyArray<keyof T & string>>(
    ...keys: K &
      ([Exclude<keyof T, K[number]>] extends [never] ? unknown : MissingKeys<Exclude<keyof T, K[number]>>)
  ): K => Object.freeze(keys) as K
}

/** What the compiler reports when names are missing: the names themselves. */
interface MissingKeys<Missing> {
  readonly 'these keys of the interface are not listed': Missing
}
