import { describe, expect, it } from 'vitest'
import { settingKeys } from '../../src/validation/setting-keys.js'

// settingKeys is checked by the compiler: `npm run typecheck` fails if a @ts-expect-error below stops
// being an error, i.e. if a list with a missing or unknown name were accepted.

interface Example {
  readonly alpha?: number
  readonly beta?: string
}

describe('settingKeys', () => {
  it('returns the complete list, frozen', () => {
    const keys = settingKeys<Example>()('alpha', 'beta')
    expect(keys).toEqual(['alpha', 'beta'])
    expect(Object.isFrozen(keys)).toBe(true)
  })

  it('does not compile with a name missing or a name the interface lacks', () => {
    // @ts-expect-error: 'beta' is a key of Example and is not listed
    const missing = settingKeys<Example>()('alpha')
    // @ts-expect-error: 'gamma' is not a key of Example
    const unknown = settingKeys<Example>()('alpha', 'beta', 'gamma')
    expect([missing, unknown].map((keys) => keys.length)).toEqual([1, 3])
  })
})
