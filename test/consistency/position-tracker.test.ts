import { afterEach, describe, expect, it } from 'vitest'
import type { ResolvedConsistency } from '../../src/config/resolve-config.js'
import { encodeToken } from '../../src/consistency/consistency-token.js'
import type { PositionSource } from '../../src/consistency/position-tracker.js'
import { ReadYourWrites } from '../../src/consistency/read-your-writes.js'
import {
  NoPositionError,
  type PostgresPosition,
  type ReadPosition,
} from '../../src/consistency/replication-position.js'

// The read-your-writes logic without a server: which endpoint a read gets, how many position
// statements it costs, and what a failover does to positions. Endpoints are fakes whose positions the
// test sets; the servers' own behaviour is tested in read-your-writes.test.ts.

class FakeEndpoint implements PositionSource {
  writerFetches = 0
  replayReads = 0
  /** The writer's position as it would answer now (PostgreSQL: LSN and timeline). */
  lsn = 100n
  timeline = 1
  /** What a reader answers for its replay position. */
  replayed: bigint | undefined = 0n
  /** Holds writer fetches until released, to see what runs concurrently. */
  gate: Promise<void> | undefined
  failWith: Error | undefined

  constructor(readonly name: string) {}

  async writerPosition(): Promise<ReadPosition> {
    this.writerFetches++
    const sentAt = this.lsn
    await this.gate
    if (this.failWith !== undefined) throw this.failWith
    const position: PostgresPosition = { engine: 'postgres', lsn: sentAt, timeline: this.timeline }
    return { position, text: String(sentAt) }
  }

  async replayPosition(): Promise<ReadPosition | undefined> {
    this.replayReads++
    const lsn = this.replayed
    return lsn === undefined ? undefined : { position: { engine: 'postgres', lsn }, text: String(lsn) }
  }
}

const DEFAULTS: ResolvedConsistency = {
  readYourWrites: 'scoped',
  whenBehind: 'writer',
  maxWaitMs: 1_000,
  pollIntervalMs: 10,
}

const opened: Array<ReadYourWrites<FakeEndpoint>> = []
afterEach(() => {
  for (const ryw of opened.splice(0)) ryw.close()
})

function setup(options: Partial<ResolvedConsistency> = {}) {
  const writer = new FakeEndpoint('writer')
  const reader = new FakeEndpoint('reader-0')
  let healthy = true
  const ryw = new ReadYourWrites<FakeEndpoint>(
    'postgres',
    { ...DEFAULTS, ...options },
    {
      writer: () => writer,
      reader: () => (healthy ? reader : writer),
      healthyReaders: () => (healthy ? [reader] : []),
      pick: (readers) => readers[0] as FakeEndpoint,
      positionFailed: () => {},
    },
  )
  opened.push(ryw)
  const setHealthy = (value: boolean) => {
    healthy = value
  }
  return { ryw, writer, reader, setHealthy }
}

/** Lets pending promise callbacks and zero-delay timers run. */
const settle = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms))

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + 2_000
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await settle(2)
  }
}

describe('read-your-writes routing', () => {
  it('costs nothing until a scope is used: no scope, reads go where routing sends them', () => {
    const { ryw, reader } = setup()
    expect(ryw.current()).toBeUndefined()
    expect(reader.replayReads).toBe(0)
  })

  it('a read after a write goes to the writer until a reader is known to have replayed it', async () => {
    const { ryw, writer, reader } = setup()
    await ryw.run(async () => {
      const scope = ryw.current()!
      expect(ryw.readerFor(scope)).toBe(reader) // nothing written yet
      ryw.noteWrite(scope)
      writer.lsn = 150n
      // The first read after the write: to the writer, and no position asked for (a request that
      // writes, reads once and ends would pay for it in vain).
      expect(ryw.readerFor(scope)).toBe(writer)
      await settle(5)
      expect(writer.writerFetches).toBe(0)
      expect(ryw.readerFor(scope)).toBe(writer) // the second: the position is read in the background
      await until(() => writer.writerFetches === 1, 'the writer position read')
      await settle()
      reader.replayed = 149n
      expect(ryw.readerFor(scope)).toBe(writer) // asks for a poll
      await until(() => reader.replayReads === 1, 'a replay poll')
      expect(ryw.readerFor(scope)).toBe(writer) // 149 < 150
      reader.replayed = 150n
      await settle(15)
      ryw.readerFor(scope)
      await until(() => ryw.replayPosition(reader) === '150', 'the next poll')
      expect(ryw.readerFor(scope)).toBe(reader)
    }, [])
  })

  it('one writer position read covers the writes of every scope that completed before it was sent', async () => {
    const { ryw, writer } = setup()
    let release!: () => void
    writer.gate = new Promise((resolve) => {
      release = resolve
    })
    const scopes = await Promise.all(
      Array.from({ length: 20 }, () =>
        ryw.run(async () => {
          const scope = ryw.current()!
          ryw.noteWrite(scope)
          return scope
        }, []),
      ),
    )
    for (const scope of scopes) {
      ryw.readerFor(scope)
      ryw.readerFor(scope)
    }
    expect(writer.writerFetches).toBe(1)
    // A write noted while that read is in flight needs a later one; only one runs at a time.
    const late = await ryw.run(async () => {
      const scope = ryw.current()!
      ryw.noteWrite(scope)
      return scope
    }, [])
    ryw.readerFor(late)
    ryw.readerFor(late)
    expect(writer.writerFetches).toBe(1)
    release()
    await until(() => writer.writerFetches === 2, 'the queued read')
    await settle(5)
    expect(writer.writerFetches).toBe(2)
  })

  it('polls readers only while a read needs a newer position, at most once per pollIntervalMs', async () => {
    const { ryw, writer, reader } = setup({ pollIntervalMs: 50 })
    await ryw.run(async () => {
      const scope = ryw.current()!
      ryw.noteWrite(scope)
      ryw.readerFor(scope)
      ryw.readerFor(scope)
      await until(() => writer.writerFetches === 1, 'the writer position read')
      await settle()
      reader.replayed = 0n
      const startedAt = performance.now()
      while (performance.now() - startedAt < 120) {
        expect(ryw.readerFor(scope)).toBe(writer)
        await settle(1)
      }
      // About 120 / 50 + 1 polls, whatever the number of reads.
      expect(reader.replayReads).toBeGreaterThanOrEqual(2)
      expect(reader.replayReads).toBeLessThanOrEqual(4)
      // A poll asked for by the last reads may still be due; after it, nobody asks and nobody polls.
      await settle(60)
      const polls = reader.replayReads
      await settle(150)
      expect(reader.replayReads).toBe(polls)
    }, [])
  })

  it("'wait' holds the read until a poll finds a reader that replayed it, else until maxWaitMs", async () => {
    const { ryw, writer, reader } = setup({ whenBehind: 'wait', maxWaitMs: 200 })
    await ryw.run(async () => {
      const scope = ryw.current()!
      ryw.noteWrite(scope)
      writer.lsn = 500n
      reader.replayed = 400n
      setTimeout(() => {
        reader.replayed = 500n
      }, 60)
      const startedAt = performance.now()
      expect(await ryw.readerFor(scope)).toBe(reader)
      const waited = performance.now() - startedAt
      // Not before the reader had it (60 ms); and a reader, not the writer, so before maxWaitMs.
      expect(waited).toBeGreaterThanOrEqual(50)

      ryw.noteWrite(scope)
      writer.lsn = 900n
      const timedAt = performance.now()
      expect(await ryw.readerFor(scope)).toBe(writer)
      // maxWaitMs (200) plus scheduling slack on a busy machine; without the bound it would never end.
      expect(performance.now() - timedAt).toBeLessThan(1_000)
    }, [])
  })

  it("'wait' is bounded also when the writer's position cannot be read", async () => {
    const { ryw, writer } = setup({ whenBehind: 'wait', maxWaitMs: 100 })
    writer.gate = new Promise(() => {}) // a writer that never answers
    await ryw.run(async () => {
      const scope = ryw.current()!
      ryw.noteWrite(scope)
      const startedAt = performance.now()
      expect(await ryw.readerFor(scope)).toBe(writer)
      expect(performance.now() - startedAt).toBeLessThan(1_000)
    }, [])
  })

  it('after a failover, a position of the old writer is replaced by the new writer’s, not compared', async () => {
    const { ryw, writer, reader } = setup()
    await ryw.run(async () => {
      const scope = ryw.current()!
      writer.lsn = 1_000n
      ryw.noteWrite(scope)
      ryw.readerFor(scope)
      ryw.readerFor(scope)
      await until(() => writer.writerFetches === 1, 'the writer position read')
      await settle()
      // The promoted server's history: timeline 2, and less WAL than the old writer had written.
      ryw.writerChanged()
      writer.timeline = 2
      writer.lsn = 600n
      reader.replayed = 650n
      expect(ryw.readerFor(scope)).toBe(writer) // the new writer's position is not known yet
      await until(() => writer.writerFetches === 2, "the new writer's position read")
      await settle()
      ryw.readerFor(scope)
      await until(() => reader.replayReads > 0, 'a replay poll')
      await settle()
      // 650 >= 600 on the new history: the reader serves, instead of waiting for LSN 1000 forever.
      expect(ryw.readerFor(scope)).toBe(reader)
    }, [])
  })

  it('a token from another timeline is anchored on the current writer', async () => {
    const { ryw, writer, reader } = setup()
    writer.timeline = 3
    writer.lsn = 300n
    reader.replayed = 300n
    const oldToken = encodeToken({ engine: 'postgres', lsn: 10_000n, timeline: 2 })
    await ryw.run(async () => {
      const scope = ryw.current()!
      expect(ryw.readerFor(scope)).toBe(writer)
      await until(() => writer.writerFetches === 1, "the writer's position read")
      await settle()
      ryw.readerFor(scope)
      await until(() => reader.replayReads > 0, 'a replay poll')
      await settle()
      expect(ryw.readerFor(scope)).toBe(reader)
    }, [oldToken])
  })

  it('an engine without comparable positions keeps a scope that wrote on the writer', async () => {
    const { ryw, writer, reader } = setup()
    writer.failWith = new NoPositionError('the server is not MariaDB')
    await ryw.run(async () => {
      const scope = ryw.current()!
      ryw.noteWrite(scope)
      expect(ryw.readerFor(scope)).toBe(writer)
      expect(ryw.readerFor(scope)).toBe(writer)
      await until(() => writer.writerFetches === 1, 'the writer position read')
      await settle()
      reader.replayed = 1n << 40n
      for (let i = 0; i < 5; i++) expect(ryw.readerFor(scope)).toBe(writer)
      expect(writer.writerFetches).toBe(1)
      await expect(ryw.token()).rejects.toMatchObject({ code: 'REPLICATION_POSITION_UNAVAILABLE' })
    }, [])
  })

  it("'process' mode: every read sees earlier writes, without any scope", async () => {
    const { ryw, writer, reader } = setup({ readYourWrites: 'process' })
    const scope = ryw.current()!
    expect(scope).toBeDefined()
    expect(ryw.readerFor(scope)).toBe(reader)
    ryw.noteWrite(scope)
    expect(ryw.readerFor(scope)).toBe(writer)
    // A nested scope's write is also the process's.
    await ryw.run(async () => ryw.noteWrite(ryw.current()!), [])
    expect(scope.pendingSeq).toBe(2)
  })

  it('scopes are per async context: a scope that wrote does not send other scopes to the writer', async () => {
    const { ryw, writer, reader } = setup()
    const results = await Promise.all([
      ryw.run(async () => {
        ryw.noteWrite(ryw.current()!)
        await settle(1)
        return ryw.readerFor(ryw.current()!)
      }, []),
      ryw.run(async () => {
        await settle(1)
        return ryw.readerFor(ryw.current()!)
      }, []),
    ])
    expect(results).toEqual([writer, reader])
  })
})
