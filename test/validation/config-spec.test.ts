import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/errors.js'
import { boolean, oneOf } from '../../src/validation/check.js'
import { type ConfigSpec, checkObject, withDefaults } from '../../src/validation/config-spec.js'
import { integer } from '../../src/validation/number-setting.js'

// A table is held to its interface by the compiler: `npm run typecheck` fails if a @ts-expect-error
// below stops being an error, i.e. if a table with a key missing or a key too many were accepted.

interface Example {
  readonly size?: number
  readonly mode?: 'fast' | 'safe'
  readonly verbose?: boolean
}

const EXAMPLE_SPEC = {
  size: integer({ min: 1 }),
  mode: oneOf('fast', 'safe'),
  verbose: boolean,
} satisfies ConfigSpec<Example>

function thrown(run: () => unknown): ConfigError {
  try {
    run()
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return error as ConfigError
  }
  throw new Error('expected a ConfigError')
}

describe('ConfigSpec', () => {
  it('does not compile with a key of the interface missing from the table', () => {
    // @ts-expect-error: 'verbose' is a key of Example and has no check
    const missing = { size: integer({ min: 1 }), mode: oneOf('fast', 'safe') } satisfies ConfigSpec<Example>
    expect(Object.keys(missing)).toEqual(['size', 'mode'])
  })

  it('does not compile with a key the interface lacks', () => {
    const extra = {
      size: integer({ min: 1 }),
      mode: oneOf('fast', 'safe'),
      verbose: boolean,
      // @ts-expect-error: 'colour' is not a key of Example
      colour: oneOf('red'),
    } satisfies ConfigSpec<Example>
    expect(Object.keys(extra)).toHaveLength(4)
  })
})

describe('checkObject', () => {
  it('returns each row as its check returned it, unset rows as undefined', () => {
    const checked = checkObject({ size: 3, verbose: false }, 'example', EXAMPLE_SPEC)
    expect(checked).toEqual({ size: 3, mode: undefined, verbose: false })
    // The return type is inferred from the checks.
    const mode: 'fast' | 'safe' | undefined = checked.mode
    expect(mode).toBeUndefined()
  })

  it('refuses what is not an object, naming the setting and describing the value', () => {
    for (const [input, got] of [
      ['fast', "'fast'"],
      [null, 'null'],
      [[1], 'an array'],
      [undefined, 'undefined'],
    ] as const) {
      const error = thrown(() => checkObject(input, 'example', EXAMPLE_SPEC))
      expect(error.setting).toBe('example')
      expect(error.detail).toBe(`expected an object, got ${got}`)
    }
    expect(
      thrown(() => checkObject(5, 'example', EXAMPLE_SPEC, { expected: 'an options object' })).detail,
    ).toBe('expected an options object, got 5')
  })

  it('refuses a key the table lacks, listing the known ones and never the value', () => {
    const error = thrown(() => checkObject({ size: 1, password: 'Sup3r-S3cret' }, 'example', EXAMPLE_SPEC))
    expect(error.setting).toBe('example.password')
    expect(error.detail).toBe('unknown setting (known: size, mode, verbose)')
    expect(error.message).not.toContain('Sup3r')
    const worded = thrown(() =>
      checkObject({ colour: 1 }, 'example', EXAMPLE_SPEC, {
        unknownKey: (key, known) => `no ${key} here (${known.length} known)`,
      }),
    )
    expect(worded.detail).toBe('no colour here (3 known)')
  })

  it('names each row by its dotted path, and the root config without a prefix', () => {
    expect(thrown(() => checkObject({ size: 0 }, 'readers[1].pool', EXAMPLE_SPEC)).setting).toBe(
      'readers[1].pool.size',
    )
    expect(thrown(() => checkObject({ mode: 'slow' }, '', EXAMPLE_SPEC)).message).toBe(
      "Invalid kysely-resilient config: mode: expected 'fast' or 'safe', got 'slow'",
    )
    expect(thrown(() => checkObject('x', '', EXAMPLE_SPEC)).setting).toBe('config')
  })

  it('runs the rows in the order of the table', () => {
    const error = thrown(() => checkObject({ verbose: 'yes', size: -1 }, 'example', EXAMPLE_SPEC))
    expect(error.setting).toBe('example.size')
  })
})

describe('withDefaults', () => {
  it('takes each given value over its default, and freezes the result', () => {
    const defaults = { size: 10, mode: 'safe' as 'fast' | 'safe', limit: undefined as number | undefined }
    const resolved = withDefaults({ size: undefined, mode: 'fast', limit: 5 }, defaults)
    expect(resolved).toEqual({ size: 10, mode: 'fast', limit: 5 })
    expect(Object.isFrozen(resolved)).toBe(true)
    expect(defaults.mode).toBe('safe')
  })
})
