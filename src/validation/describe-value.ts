/**
 * A value as a config error shows it after "got": short strings and scalars as they are, anything
 * else by its kind only (an object may hold secrets, and is too long to read in one line anyway).
 * Callers never pass settings that may be secrets (passwords, keys); those use {@link describeType}.
 */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return `'${value.length > 40 ? `${value.slice(0, 40)}...` : value}'`
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  return describeType(value)
}

/**
 * A value by its kind only ('a string', 'a number', 'an object', 'null'): for a setting that may hold a
 * secret (a password, a token put where a function belongs), whose value must never be repeated.
 */
export function describeType(value: unknown): string {
  if (value === null || value === undefined) return String(value)
  if (Array.isArray(value)) return 'an array'
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`
}
