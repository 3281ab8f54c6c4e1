import { describe, expect, it } from 'vitest'
import { decodeToken, encodeToken } from '../../src/consistency/consistency-token.js'
import {
  covers,
  formatLsn,
  later,
  parseGtidPosition,
  parseLsn,
  reachableInsertLsn,
  timelineOfWalFile,
  writerIdentity,
} from '../../src/consistency/replication-position.js'
import { InvalidConsistencyTokenError } from '../../src/index.js'

// The arithmetic read-your-writes stands on, without a server: a wrong comparison here is a stale
// read (or a read that never leaves the writer) there.

describe('PostgreSQL positions', () => {
  it('parses and prints LSNs as PostgreSQL does, comparing them as numbers, not text', () => {
    const small = parseLsn('0/FFFFFFFF') as bigint
    const big = parseLsn('1/0') as bigint
    expect(big).toBeGreaterThan(small)
    expect(formatLsn(parseLsn('16/B374D848') as bigint)).toBe('16/B374D848')
    expect(parseLsn('not/an-lsn')).toBeUndefined()
    expect(parseLsn('123456789/0')).toBeUndefined()
  })

  it('an insert location just past a page header stands for the page boundary a replica reports', () => {
    const page = 8192
    const segment = 16 * 1024 * 1024
    // Past a short header (24 bytes) in the middle of a segment.
    expect(reachableInsertLsn(BigInt(3 * page + 24), page, segment)).toBe(BigInt(3 * page))
    // Past a long header (40 bytes) at the start of a segment.
    expect(reachableInsertLsn(BigInt(2 * segment + 40), page, segment)).toBe(BigInt(2 * segment))
    // Anywhere else the location is a record's end already.
    expect(reachableInsertLsn(BigInt(3 * page + 200), page, segment)).toBe(BigInt(3 * page + 200))
    expect(reachableInsertLsn(BigInt(2 * segment + 24), page, segment)).toBe(BigInt(2 * segment + 24))
  })

  it('reads the timeline from a WAL file name', () => {
    expect(timelineOfWalFile('000000020000000000000003')).toBe(2)
    expect(timelineOfWalFile('0000000A00000001000000FF')).toBe(10)
    expect(timelineOfWalFile('garbage')).toBeUndefined()
  })

  it('a replica covers a writer position once it has replayed up to it', () => {
    const required = { engine: 'postgres', lsn: 1000n, timeline: 1 } as const
    expect(covers({ engine: 'postgres', lsn: 999n }, required)).toBe(false)
    expect(covers({ engine: 'postgres', lsn: 1000n }, required)).toBe(true)
    expect(covers({ engine: 'postgres', lsn: 5000n }, required)).toBe(true)
  })

  it('positions of another timeline are another writer', () => {
    expect(writerIdentity({ engine: 'postgres', lsn: 1n, timeline: 1 })).not.toBe(
      writerIdentity({ engine: 'postgres', lsn: 1n, timeline: 2 }),
    )
    expect(writerIdentity({ engine: 'postgres', lsn: 1n })).toBeUndefined()
  })
})

describe('MariaDB positions', () => {
  it('keeps the highest sequence number of each domain', () => {
    expect(parseGtidPosition('0-1-42,1-2-7')).toEqual(
      new Map([
        [0, 42n],
        [1, 7n],
      ]),
    )
    expect(parseGtidPosition('0-1-42,0-2-50')).toEqual(new Map([[0, 50n]]))
    expect(parseGtidPosition('')).toEqual(new Map())
    expect(parseGtidPosition('0-1')).toBeUndefined()
  })

  it('compares domain by domain, like MASTER_GTID_WAIT, whichever server wrote the transaction', () => {
    const required = { engine: 'mariadb', domains: parseGtidPosition('0-1-42,1-1-7')!, serverId: 1 } as const
    const replica = (text: string) => ({ engine: 'mariadb', domains: parseGtidPosition(text)! }) as const
    expect(covers(replica('0-1-42,1-1-7'), required)).toBe(true)
    expect(covers(replica('0-2-60,1-1-9'), required)).toBe(true)
    expect(covers(replica('0-1-41,1-1-7'), required)).toBe(false)
    // A domain the replica has never seen: it has none of that domain's writes.
    expect(covers(replica('0-1-42'), required)).toBe(false)
    // Nothing written yet: any replica covers it.
    expect(covers(replica(''), { engine: 'mariadb', domains: new Map(), serverId: 1 })).toBe(true)
  })

  it('merges positions domain by domain', () => {
    const a = { engine: 'mariadb', domains: parseGtidPosition('0-1-42,1-1-3')!, serverId: 1 } as const
    const b = { engine: 'mariadb', domains: parseGtidPosition('0-1-40,1-1-9,2-1-1')!, serverId: 1 } as const
    expect(later(a, b)).toEqual({ ...a, domains: parseGtidPosition('0-1-42,1-1-9,2-1-1') })
  })
})

describe('consistency tokens', () => {
  it('round-trip a writer position, in characters safe for a cookie or a header', () => {
    const pg = { engine: 'postgres', lsn: parseLsn('16/B374D848')!, timeline: 3 } as const
    const pgToken = encodeToken(pg)
    expect(pgToken).toMatch(/^[A-Za-z0-9_.-]+$/)
    expect(decodeToken(pgToken, 'postgres')).toEqual(pg)

    const maria = { engine: 'mariadb', domains: parseGtidPosition('0-1-42,5-1-7')!, serverId: 12 } as const
    const mariaToken = encodeToken(maria)
    expect(mariaToken).toMatch(/^[A-Za-z0-9_.-]+$/)
    expect(decodeToken(mariaToken, 'mysql')).toEqual(maria)
  })

  it('anything else is an InvalidConsistencyTokenError that says what is wrong', () => {
    const pgToken = encodeToken({ engine: 'postgres', lsn: 1n, timeline: 1 })
    const reject = (token: unknown, dialect: 'postgres' | 'mysql', message: RegExp) => {
      let thrown: unknown
      try {
        decodeToken(token, dialect)
      } catch (error) {
        thrown = error
      }
      expect(thrown).toBeInstanceOf(InvalidConsistencyTokenError)
      expect((thrown as InvalidConsistencyTokenError).code).toBe('INVALID_CONSISTENCY_TOKEN')
      expect((thrown as Error).message).toMatch(message)
    }
    reject(pgToken, 'mysql', /made by a PostgreSQL database.*dialect is 'mysql'/)
    reject(pgToken.slice(0, -3), 'postgres', /not what db.consistencyToken\(\) makes/)
    reject('hello', 'postgres', /does not start with 'rw1.'/)
    reject('rw1.not base64!', 'postgres', /base64url/)
    reject(42, 'postgres', /expected a string, got number/)
    reject(
      `rw1.${Buffer.from(JSON.stringify({ e: 'pg', w: 1, p: 'zz' })).toString('base64url')}`,
      'postgres',
      /WAL location is malformed/,
    )
  })
})
