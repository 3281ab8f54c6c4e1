import { describe, expect, expectTypeOf, test } from 'vitest'
import {
  AuthenticationFailedError,
  ConfigError,
  ConnectionHookTimeoutError,
  ConnectTimeoutError,
  CredentialSourceError,
  DatabaseDestroyedError,
  InvalidConsistencyTokenError,
  MissingDriverError,
  NoReaderAvailableError,
  PoolTimeoutError,
  QueryTimeoutError,
  ReplicationPositionUnavailableError,
  ResilientError,
  type ResilientErrorCode,
  ServerUnresponsiveError,
} from '../src/index.js'

/**
 * One error per code, built the way the library builds it. A Record over the union: a code added to
 * the union without an error here, or an error here whose code the union lacks, fails to compile;
 * the test below checks each error really carries its key at run time.
 */
const ERROR_BY_CODE: Record<ResilientErrorCode, ResilientError> = {
  CONFIG_INVALID: new ConfigError('pool.max', 'must be a positive integer'),
  DRIVER_MISSING: new MissingDriverError('pg', "the 'postgres' dialect", new Error('not found')),
  DB_DESTROYED: new DatabaseDestroyedError(),
  POOL_ACQUIRE_TIMEOUT: new PoolTimeoutError('writer', 1_000, 10),
  CONNECT_TIMEOUT: new ConnectTimeoutError('writer', 1_000),
  CONNECTION_HOOK_TIMEOUT: new ConnectionHookTimeoutError('writer', 'onCreateConnection', 1_000),
  NO_READER_AVAILABLE: new NoReaderAvailableError(),
  QUERY_TIMEOUT: new QueryTimeoutError('writer', 1_000),
  SERVER_UNRESPONSIVE: new ServerUnresponsiveError('writer', 1_000),
  CREDENTIALS_UNAVAILABLE: new CredentialSourceError('writer', 'iam', 'throttled', true),
  CREDENTIALS_FAILED: new CredentialSourceError('writer', 'secret', 'access denied', false),
  AUTH_REJECTED: new AuthenticationFailedError('writer', 'iam', 'app'),
  INVALID_CONSISTENCY_TOKEN: new InvalidConsistencyTokenError('it is empty'),
  REPLICATION_POSITION_UNAVAILABLE: new ReplicationPositionUnavailableError(
    'writer',
    'the binary log is off',
  ),
}

/** Compiles only while every code has a case: the `never` assignment fails once one is missing. */
function retryable(code: ResilientErrorCode): boolean {
  switch (code) {
    case 'POOL_ACQUIRE_TIMEOUT':
    case 'CONNECT_TIMEOUT':
    case 'CONNECTION_HOOK_TIMEOUT':
    case 'NO_READER_AVAILABLE':
    case 'SERVER_UNRESPONSIVE':
    case 'CREDENTIALS_UNAVAILABLE':
      return true
    case 'CONFIG_INVALID':
    case 'DRIVER_MISSING':
    case 'DB_DESTROYED':
    case 'QUERY_TIMEOUT':
    case 'CREDENTIALS_FAILED':
    case 'AUTH_REJECTED':
    case 'INVALID_CONSISTENCY_TOKEN':
    case 'REPLICATION_POSITION_UNAVAILABLE':
      return false
    default: {
      const unhandled: never = code
      throw new Error(`unhandled code ${String(unhandled)}`)
    }
  }
}

describe('ResilientErrorCode', () => {
  test('every error class carries the code it is listed under, typed as the union', () => {
    for (const [code, error] of Object.entries(ERROR_BY_CODE)) {
      expect(error).toBeInstanceOf(ResilientError)
      expect(error.code).toBe(code)
      expectTypeOf(error.code).toEqualTypeOf<ResilientErrorCode>()
    }
    expectTypeOf<ResilientError['code']>().toEqualTypeOf<ResilientErrorCode>()
    // A plain string is no longer a code, in either direction of the constructor.
    expectTypeOf<string>().not.toExtend<ResilientErrorCode>()
    expectTypeOf<ConstructorParameters<typeof ResilientError>[0]>().toEqualTypeOf<ResilientErrorCode>()
  })

  test('a switch on the code is checked by the compiler', () => {
    const code: ResilientErrorCode = new QueryTimeoutError('writer', 1_000).code
    expect(retryable(code)).toBe(false)
    expect(retryable(ERROR_BY_CODE.CONNECT_TIMEOUT.code)).toBe(true)

    switch (code) {
      // @ts-expect-error: a misspelt code is not comparable to the union
      case 'QUERY_TIMEOUTS':
        break
    }
    // @ts-expect-error: a code the library does not have
    expect(() => new ResilientError('NOT_A_CODE', 'message')).not.toThrow()
  })
})
