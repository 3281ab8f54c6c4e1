import { expect } from 'vitest'
import { ConfigError, type CreateDbConfig, createDb } from '../../src/index.js'

/** Runs `createDb` on a config that must be rejected and returns the ConfigError it threw. */
export function configError(config: unknown): ConfigError {
  let thrown: unknown
  try {
    createDb(config as CreateDbConfig)
  } catch (error) {
    thrown = error
  }
  expect(thrown, 'createDb accepted an invalid config').toBeInstanceOf(ConfigError)
  return thrown as ConfigError
}
