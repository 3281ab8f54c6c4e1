import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import {
  boolean,
  type Check,
  checkedByItsResolver,
  func,
  list,
  oneOf,
  orFalse,
  required,
  text,
} from '../../src/validation/check.js'
import { describeType, describeValue } from '../../src/validation/describe-value.js'
import { duration, integer, MAX_TIMER_MS } from '../../src/validation/number-setting.js'

/** The detail of the ConfigError `check` throws for `value` at setting 's', which it must name. */
function detail(check: Check<unknown>, value: unknown): string {
  try {
    check(value, 's')
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).setting).toBe('s')
    return (error as ConfigError).detail
  }
  throw new Error(`accepted ${String(value)}`)
}

const TIMER_NOTE = '(milliseconds; about 24.8 days, the longest delay a Node.js timer accepts)'

describe('integer and duration: the one number check', () => {
  it('passes undefined through for the caller’s default, and returns a valid value', () => {
    expect(integer({ min: 1 })(undefined, 's')).toBeUndefined()
    expect(integer({ min: 1 })(7, 's')).toBe(7)
    expect(duration({ min: 0 })(MAX_TIMER_MS, 's')).toBe(MAX_TIMER_MS)
  })

  it('says the range, the unit and the timer cap, and describes a string by its type only', () => {
    expect(detail(integer({ min: 1 }), 0)).toBe('expected an integer >= 1, got 0')
    expect(detail(integer({ min: 1 }), 1.5)).toBe('expected an integer >= 1, got 1.5')
    expect(detail(integer({ min: 1 }), 'Sup3r-S3cret')).toBe('expected an integer >= 1, got a string')
    expect(detail(integer({ min: 0, orInfinity: true }), -1)).toBe(
      'expected an integer >= 0 or Infinity, got -1',
    )
    expect(detail(integer({ min: 1, max: 65_535, expected: 'a TCP port' }), 70_000)).toBe(
      'expected a TCP port from 1 to 65535, got 70000',
    )
    expect(detail(duration({ min: 1 }), MAX_TIMER_MS + 1)).toBe(
      `expected an integer from 1 to 2147483647 ${TIMER_NOTE}, got 2147483648`,
    )
    expect(detail(duration({ min: 1_000, max: 5_000 }), 999)).toBe(
      'expected an integer from 1000 to 5000 (milliseconds), got 999',
    )
    expect(detail(duration({ min: 0, fractions: true }), Number.NaN)).toBe(
      `expected a number from 0 to 2147483647 ${TIMER_NOTE}, got NaN`,
    )
  })

  it('accepts Infinity only when asked, and a compared-only budget past the timer cap', () => {
    expect(detail(integer({ min: 0 }), Infinity)).toBe('expected an integer >= 0, got Infinity')
    expect(integer({ min: 0, orInfinity: true })(Infinity, 's')).toBe(Infinity)
    const budget = duration({ min: 0, fractions: true, orInfinity: true, comparedOnly: true })
    expect(budget(2 ** 40 + 0.5, 's')).toBe(2 ** 40 + 0.5)
    expect(budget(Infinity, 's')).toBe(Infinity)
    expect(detail(budget, -5)).toBe('expected a number >= 0 (milliseconds) or Infinity, got -5')
  })
})

describe('the other checks', () => {
  it('oneOf lists the values, strings quoted', () => {
    expect(oneOf('a', 'b')('b', 's')).toBe('b')
    expect(oneOf('a', 'b')(undefined, 's')).toBeUndefined()
    expect(detail(oneOf('a', 'b'), 'c')).toBe("expected 'a' or 'b', got 'c'")
    expect(detail(oneOf('pgbouncer', 'rds-proxy', false), true)).toBe(
      "expected 'pgbouncer', 'rds-proxy' or false, got true",
    )
    expect(detail(boolean, 'yes')).toBe("expected true or false, got 'yes'")
  })

  it('text refuses the empty string unless allowed, and keeps a secret out of the message', () => {
    expect(text()('x', 's')).toBe('x')
    expect(detail(text(), '')).toBe("expected a non-empty string, got ''")
    expect(text({ empty: true })('', 's')).toBe('')
    expect(detail(text({ secret: true }), 42)).toBe('expected a non-empty string, got a number')
    expect(detail(text({ empty: true, secret: true }), null)).toBe('expected a string, got null')
    expect(detail(text({ expected: 'a host name' }), 5)).toBe('expected a host name, got 5')
  })

  it('func says how it is called, and describes a secret by its type only', () => {
    const run = () => undefined
    expect(func<() => void>()(run, 's')).toBe(run)
    expect(detail(func(), 'x')).toBe("expected a function, got 'x'")
    expect(detail(func({ expected: 'a function () => string', secret: true }), 'tok-S3cret')).toBe(
      'expected a function () => string, got a string',
    )
  })

  it('list checks each element at its index, and returns a frozen copy', () => {
    const names = list('an array of names', text({ expected: 'a non-empty name' }))
    const input = ['a', 'b']
    const checked = names(input, 's')
    expect(checked).toEqual(['a', 'b'])
    expect(checked).not.toBe(input)
    expect(Object.isFrozen(checked)).toBe(true)
    expect(detail(names, 'a')).toBe("expected an array of names, got 'a'")
    expect(() => names(['a', ''], 's')).toThrow(
      expect.objectContaining({ setting: 's[1]', detail: "expected a non-empty name, got ''" }),
    )
  })

  it('required, orFalse and the escape hatch', () => {
    expect(detail(required(text(), 'is required: the name'), undefined)).toBe('is required: the name')
    expect(required(text(), 'is required')('x', 's')).toBe('x')
    expect(orFalse(integer({ min: 1 }))(false, 's')).toBe(false)
    expect(detail(orFalse(integer({ min: 1 })), true)).toBe('expected an integer >= 1, got true')
    const value = { any: 'thing' }
    expect(checkedByItsResolver(value, 's')).toBe(value)
  })

  it('values are described by type where they may be secret, and shortly otherwise', () => {
    expect([null, undefined, [], {}, 'x', 1, () => 1].map(describeType)).toEqual([
      'null',
      'undefined',
      'an array',
      'an object',
      'a string',
      'a number',
      'a function',
    ])
    expect(describeValue('x'.repeat(41))).toBe(`'${'x'.repeat(40)}...'`)
    expect(describeValue({ password: 'p' })).toBe('an object')
  })
})
