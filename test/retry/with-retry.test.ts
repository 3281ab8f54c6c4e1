import { sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConfigError, createDb, type ResilientDb } from '../../src/index.js'
import { fullJitterDelay } from '../../src/retry/backoff.js'
import {
  getErrorClassification,
  WITH_RETRY_DEFAULTS,
  type WithRetryInfo,
  withRetry,
} from '../../src/retry/with-retry.js'
import { describeEngines } from '../support/database.js'
import { pollUntil } from '../support/poll.js'
import { getFreePort } from '../support/ports.js'
import { queryOnce } from '../support/sql.js'

// Every error withRetry sees here comes from a real server or a real socket: deadlocks and
// serialization failures between real transactions, a session killed by an administrator, a port
// nothing listens on.

interface Database {
  wr_deadlock: { id: number; v: number }
  wr_serial: { id: number; v: number }
  wr_fatal: { id: number; v: number }
  wr_ambiguous: { id: number; v: number }
}

type Table = keyof Database

/** The rejection of `operation`; fails the test if it succeeds. */
async function failure(operation: Promise<unknown>): Promise<unknown> {
  try {
    await operation
  } catch (error) {
    return error
  }
  throw new Error('expected the operation to fail, but it succeeded')
}

/** A promise plus the function that resolves it, to line two transactions up. */
function signal(): { readonly promise: Promise<void>; readonly fire: () => void } {
  let fire = () => {}
  const promise = new Promise<void>((resolve) => {
    fire = resolve
  })
  return { promise, fire }
}

/** The engine's URL with the port swapped for one nothing listens on: connecting gets ECONNREFUSED. */
async function deadUrl(url: string): Promise<string> {
  const parsed = new URL(url)
  parsed.host = '127.0.0.1'
  parsed.port = String(await getFreePort())
  return parsed.toString()
}

const CLASSIFICATION_KEY = Symbol.for('kysely-resilient.errorClassification')

describe('withRetry without a database server', () => {
  // Port on which nothing listens: every statement fails at once with a real ECONNREFUSED.
  let dead: ResilientDb<Database>

  beforeAll(async () => {
    dead = createDb<Database>({
      dialect: 'postgres',
      writer: await deadUrl('postgres://app:secret@127.0.0.1:5432/app'),
      retry: false,
    })
  })

  afterAll(async () => {
    await dead?.destroy()
  })

  const refused = () => dead.selectNoFrom(sql.lit(1).as('one')).execute()

  it('draws full-jitter delays: uniform in [0, min(max, min * 2^(attempt - 1))]', () => {
    const { minDelayMs, maxDelayMs } = WITH_RETRY_DEFAULTS
    for (let attempt = 1; attempt <= 8; attempt++) {
      const ceiling = Math.min(maxDelayMs, minDelayMs * 2 ** (attempt - 1))
      const delays = Array.from({ length: 500 }, () => fullJitterDelay(attempt, minDelayMs, maxDelayMs))
      for (const delayMs of delays) {
        expect(Number.isInteger(delayMs)).toBe(true)
        expect(delayMs).toBeGreaterThanOrEqual(0)
        expect(delayMs).toBeLessThanOrEqual(ceiling)
      }
      expect(new Set(delays).size).toBeGreaterThan(10)
      // Full jitter, not "ceiling times 1 to 2" (p-retry's randomize) nor "half plus jitter": the
      // lower half of the range is used as much as the upper half.
      expect(delays.filter((delayMs) => delayMs < ceiling / 2).length).toBeGreaterThan(150)
    }
  })

  it('has frozen defaults', () => {
    expect(WITH_RETRY_DEFAULTS).toEqual({ retries: 3, minDelayMs: 50, maxDelayMs: 2_000, idempotent: false })
    expect(Object.isFrozen(WITH_RETRY_DEFAULTS)).toBe(true)
  })

  it('stops after `retries` retries and throws the last original error with its verdict', async () => {
    const thrown: unknown[] = []
    const infos: WithRetryInfo[] = []
    const error = await failure(
      withRetry(
        async (attempt) => {
          expect(attempt).toBe(thrown.length + 1)
          return refused().catch((err: unknown) => {
            thrown.push(err)
            throw err
          })
        },
        { retries: 4, minDelayMs: 5, maxDelayMs: 20, onRetry: (info) => infos.push(info) },
      ),
    )
    expect(thrown).toHaveLength(5)
    expect(error).toBe(thrown[4])
    expect((error as { code?: unknown }).code).toBe('ECONNREFUSED')
    expect(getErrorClassification(error)).toMatchObject({ category: 'unavailable', code: 'ECONNREFUSED' })
    expect(infos.map((info) => info.attempt)).toEqual([1, 2, 3, 4])
    for (const info of infos) {
      expect(info.error).toBe(thrown[info.attempt - 1])
      expect(info.delayMs).toBeGreaterThanOrEqual(0)
      expect(info.delayMs).toBeLessThanOrEqual(Math.min(20, 5 * 2 ** (info.attempt - 1)))
    }
  })

  it('runs once with `retries: 0`', async () => {
    let calls = 0
    await failure(
      withRetry(
        () => {
          calls++
          return refused()
        },
        { retries: 0 },
      ),
    )
    expect(calls).toBe(1)
  })

  it('does not start a retry whose wait would end past `maxElapsedMs`', async () => {
    const infos: WithRetryInfo[] = []
    const startedAt = performance.now()
    const error = await failure(
      withRetry(refused, {
        retries: Infinity,
        minDelayMs: 40,
        maxDelayMs: 40,
        maxElapsedMs: 300,
        onRetry: (info) => infos.push(info),
      }),
    )
    const elapsedMs = performance.now() - startedAt
    expect((error as { code?: unknown }).code).toBe('ECONNREFUSED')
    expect(infos.length).toBeGreaterThan(2)
    for (const info of infos) expect(info.elapsedMs + info.delayMs).toBeLessThanOrEqual(300)
    // The last wait ended within the budget; only the last attempt (a refused connect) can run past it.
    expect(elapsedMs).toBeLessThan(300 + 200)
  })

  it('rejects promptly with the abort reason when the signal aborts during a wait', async () => {
    const controller = new AbortController()
    const reason = new Error('the request was cancelled')
    let calls = 0
    const startedAt = performance.now()
    const error = await failure(
      withRetry(
        () => {
          calls++
          return refused()
        },
        {
          // Waits of up to 30 s: only the abort can end this test quickly.
          minDelayMs: 30_000,
          maxDelayMs: 30_000,
          signal: controller.signal,
          // onRetry runs just before the wait starts; the microtask runs once it has.
          onRetry: () => queueMicrotask(() => controller.abort(reason)),
        },
      ),
    )
    expect(error).toBe(reason)
    expect(calls).toBe(1)
    expect(performance.now() - startedAt).toBeLessThan(1_000)
  })

  it('never calls fn when the signal is already aborted', async () => {
    const reason = new Error('too late')
    let calls = 0
    const error = await failure(
      withRetry(
        async () => {
          calls++
        },
        { signal: AbortSignal.abort(reason) },
      ),
    )
    expect(error).toBe(reason)
    expect(calls).toBe(0)
  })

  it('rejects invalid options with a ConfigError naming the option', async () => {
    const run = async () => 1
    for (const [options, setting] of [
      [{ retries: -1 }, 'withRetry.retries'],
      [{ retries: 1.5 }, 'withRetry.retries'],
      [{ minDelayMs: Number.NaN }, 'withRetry.minDelayMs'],
      [{ minDelayMs: 100, maxDelayMs: 10 }, 'withRetry.maxDelayMs'],
      [{ maxElapsedMs: -5 }, 'withRetry.maxElapsedMs'],
      [{ retry: 3 }, 'withRetry.retry'],
    ] as const) {
      const error = await failure(withRetry(run, options as never))
      expect(error).toBeInstanceOf(ConfigError)
      expect((error as ConfigError).setting).toBe(setting)
    }
    expect(await withRetry(run, { retries: Infinity, minDelayMs: 5_000 })).toBe(1)
  })

  it('rejects a signal that is not an AbortSignal with a ConfigError, before calling fn', async () => {
    let calls = 0
    const run = async () => ++calls
    for (const signal of ['x', 5_000, {}, { aborted: false }, () => undefined, null]) {
      const error = await failure(withRetry(run, { signal } as never))
      expect(error).toBeInstanceOf(ConfigError)
      expect(error).not.toBeInstanceOf(TypeError)
      expect((error as ConfigError).setting).toBe('withRetry.signal')
      expect((error as ConfigError).detail).toMatch(/^expected an AbortSignal \(/)
    }
    expect(((await failure(withRetry(run, { signal: 'x' } as never))) as ConfigError).detail).toMatch(
      / got 'x'$/,
    )
    expect(calls).toBe(0)
    // A real one is accepted, and so is one of another implementation (another realm's, such as a
    // test environment's AbortController): what withRetry uses of it is checked, not its class.
    const foreign = Object.assign(new EventTarget(), { aborted: false, throwIfAborted: () => undefined })
    expect(foreign).not.toBeInstanceOf(AbortSignal)
    expect(await withRetry(run, { signal: new AbortController().signal })).toBe(1)
    expect(await withRetry(run, { signal: foreign as unknown as AbortSignal })).toBe(2)
  })

  it('rejects delays longer than a Node.js timer accepts, naming the option and the maximum', async () => {
    const run = async () => 1
    // 2^31 ms would make setTimeout fire after 1 ms: the backoff would be skipped altogether.
    for (const [options, setting] of [
      [{ minDelayMs: 2 ** 31 }, 'withRetry.minDelayMs'],
      [{ maxDelayMs: 2 ** 31 }, 'withRetry.maxDelayMs'],
      [{ minDelayMs: 10, maxDelayMs: 2_147_483_647.5 }, 'withRetry.maxDelayMs'],
    ] as const) {
      const error = await failure(withRetry(run, options))
      expect(error).toBeInstanceOf(ConfigError)
      expect((error as ConfigError).setting).toBe(setting)
      expect((error as ConfigError).detail).toMatch(
        /^expected a number from 0 to 2147483647 \(milliseconds; about 24\.8 days, the longest delay a Node\.js timer accepts\), got /,
      )
    }
    // The maximum itself is fine, and so is any total budget: maxElapsedMs is compared, never waited for.
    expect(await withRetry(run, { minDelayMs: 2_147_483_647, maxElapsedMs: 2 ** 40 })).toBe(1)
  })
})

describeEngines('withRetry', (engine, info) => {
  const isPostgres = engine === 'postgres'
  let db: ResilientDb<Database>

  const recreate = async (table: Table, rows: ReadonlyArray<readonly [number, number]>) => {
    await queryOnce(engine, info.writerUrl, `DROP TABLE IF EXISTS ${table}`)
    await queryOnce(
      engine,
      info.writerUrl,
      `CREATE TABLE ${table} (id integer PRIMARY KEY, v integer NOT NULL)`,
    )
    const values = rows.map(([id, v]) => `(${id}, ${v})`).join(', ')
    if (values !== '')
      await queryOnce(engine, info.writerUrl, `INSERT INTO ${table} (id, v) VALUES ${values}`)
  }
  const rowsOf = async (table: Table) =>
    (await queryOnce(engine, info.writerUrl, `SELECT id, v FROM ${table} ORDER BY id`)).map((row) => ({
      id: Number(row.id),
      v: Number(row.v),
    }))

  beforeAll(() => {
    // Writer only: the final state is read on the server that committed it.
    db = createDb<Database>({ dialect: engine, writer: info.writerUrl })
  })

  afterAll(async () => {
    await db?.destroy()
  })

  it('re-runs the deadlock victim’s whole transaction; each transaction applies exactly once', async () => {
    await recreate('wr_deadlock', [
      [1, 0],
      [2, 0],
    ])
    const infos: WithRetryInfo[] = []
    const options = { minDelayMs: 10, maxDelayMs: 50, onRetry: (info: WithRetryInfo) => infos.push(info) }
    const firstLocks = { a: signal(), b: signal() }
    const attempts = { a: 0, b: 0 }

    // A adds 1 to rows 1 then 2, B adds 10 to rows 2 then 1: opposite order, each waiting until the
    // other holds its first row, so the server must pick a victim. The barrier is resolved once and
    // for all, so the victim's second run simply waits for the winner's locks.
    const transfer = (name: 'a' | 'b', order: readonly [number, number], amount: number) =>
      withRetry(
        () =>
          db.transaction().execute(async (trx) => {
            attempts[name]++
            const bump = (id: number) =>
              trx
                .updateTable('wr_deadlock')
                .set((eb) => ({ v: eb('v', '+', amount) }))
                .where('id', '=', id)
                .execute()
            await bump(order[0])
            firstLocks[name].fire()
            await firstLocks[name === 'a' ? 'b' : 'a'].promise
            await bump(order[1])
          }),
        options,
      )

    await Promise.all([transfer('a', [1, 2], 1), transfer('b', [2, 1], 10)])

    expect([attempts.a, attempts.b].sort()).toEqual([1, 2])
    expect(infos).toHaveLength(1)
    expect(infos[0]?.attempt).toBe(1)
    expect(infos[0]?.classification).toMatchObject({
      category: 'conflict',
      code: isPostgres ? '40P01' : '1213',
    })
    expect(await rowsOf('wr_deadlock')).toEqual([
      { id: 1, v: 11 },
      { id: 2, v: 11 },
    ])
  })

  if (isPostgres) {
    it('re-runs a SERIALIZABLE transaction after a real serialization failure', async () => {
      await recreate('wr_serial', [[1, 0]])
      const infos: WithRetryInfo[] = []
      const read = { a: signal(), b: signal() }
      let attempts = 0

      // Read-then-write on the same row: without the retry one increment would be lost or fail.
      const increment = (name: 'a' | 'b') =>
        withRetry(
          () =>
            db
              .transaction()
              .setIsolationLevel('serializable')
              .execute(async (trx) => {
                attempts++
                const row = await trx
                  .selectFrom('wr_serial')
                  .select('v')
                  .where('id', '=', 1)
                  .executeTakeFirstOrThrow()
                read[name].fire()
                await read[name === 'a' ? 'b' : 'a'].promise
                await trx
                  .updateTable('wr_serial')
                  .set({ v: row.v + 1 })
                  .where('id', '=', 1)
                  .execute()
              }),
          { minDelayMs: 10, maxDelayMs: 50, onRetry: (info) => infos.push(info) },
        )

      await Promise.all([increment('a'), increment('b')])

      expect(attempts).toBe(3)
      expect(infos.map((info) => info.classification.code)).toEqual(['40001'])
      expect(await rowsOf('wr_serial')).toEqual([{ id: 1, v: 2 }])
    })
  }

  it('does not retry a fatal error (unique violation); throws the original with its verdict', async () => {
    await recreate('wr_fatal', [[1, 0]])
    let calls = 0
    let thrown: unknown
    const error = await failure(
      withRetry(
        () =>
          db
            .transaction()
            .execute(async (trx) => {
              calls++
              await trx.insertInto('wr_fatal').values({ id: 1, v: 1 }).execute()
            })
            .catch((err: unknown) => {
              thrown = err
              throw err
            }),
        { retries: 5, minDelayMs: 1, maxDelayMs: 1 },
      ),
    )
    expect(calls).toBe(1)
    expect(error).toBe(thrown)
    expect(error).toBeInstanceOf(Error)
    if (isPostgres) {
      expect(error).toBeInstanceOf(pg.DatabaseError)
      expect((error as { code?: unknown }).code).toBe('23505')
    } else {
      expect(error).toMatchObject({ code: 'ER_DUP_ENTRY', errno: 1062 })
    }
    expect(getErrorClassification(error)).toMatchObject({
      category: 'fatal',
      code: isPostgres ? '23505' : '1062',
      retryable: false,
    })
    // Attached but invisible to logging and serialization.
    const descriptor = Object.getOwnPropertyDescriptor(error, CLASSIFICATION_KEY)
    expect(descriptor?.enumerable).toBe(false)
    expect(Object.keys(error as object)).not.toContain('category')
    expect(JSON.stringify(error)).not.toContain('retryable')
    expect(await rowsOf('wr_fatal')).toEqual([{ id: 1, v: 0 }])
  })

  describe('a session killed mid-statement (ambiguous)', () => {
    const sessionIdSql = isPostgres ? sql<number>`pg_backend_pid()` : sql<number>`connection_id()`
    const sleepSql = isPostgres ? sql`SELECT pg_sleep(2)` : sql`SELECT SLEEP(2)`

    /** Kills session `id` from an administrator connection once it is running the sleep. */
    const killWhenSleeping = async (id: number) => {
      await pollUntil(
        async () => {
          const rows = isPostgres
            ? await queryOnce(
                engine,
                info.adminWriterUrl,
                `SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'`,
                [id],
              )
            : await queryOnce(
                engine,
                info.adminWriterUrl,
                `SELECT 1 FROM information_schema.processlist WHERE id = ? AND info LIKE '%SLEEP%'`,
                [id],
              )
          return rows.length > 0 ? true : undefined
        },
        { timeoutMs: 5_000, what: `session ${id} to run the sleep` },
      )
      await queryOnce(
        engine,
        info.adminWriterUrl,
        isPostgres ? `SELECT pg_terminate_backend(${id})` : `KILL ${id}`,
      )
    }

    /** Sets row 1 to 5 (idempotent), and on the first attempt gets killed during a 2 s sleep. */
    const work = (calls: { count: number }, killer: { done?: Promise<void> }) => () =>
      db.transaction().execute(async (trx) => {
        calls.count++
        await trx.updateTable('wr_ambiguous').set({ v: 5 }).where('id', '=', 1).execute()
        if (calls.count > 1) return
        const { id } = await trx.selectNoFrom(sessionIdSql.as('id')).executeTakeFirstOrThrow()
        killer.done = killWhenSleeping(Number(id))
        await sleepSql.execute(trx)
      })

    it('is not retried without `idempotent`', async () => {
      await recreate('wr_ambiguous', [[1, 0]])
      const calls = { count: 0 }
      const killer: { done?: Promise<void> } = {}
      const startedAt = performance.now()
      const error = await failure(withRetry(work(calls, killer), { minDelayMs: 1, maxDelayMs: 1 }))
      await killer.done
      expect(calls.count).toBe(1)
      expect(performance.now() - startedAt).toBeLessThan(2_000)
      expect(getErrorClassification(error)).toMatchObject({ category: 'ambiguous', connectionLost: true })
      // The kill rolled the transaction back (the server ended the session before COMMIT).
      expect(await rowsOf('wr_ambiguous')).toEqual([{ id: 1, v: 0 }])
    })

    it('is retried with `idempotent: true`, and succeeds', async () => {
      await recreate('wr_ambiguous', [[1, 0]])
      const calls = { count: 0 }
      const killer: { done?: Promise<void> } = {}
      const infos: WithRetryInfo[] = []
      await withRetry(work(calls, killer), {
        idempotent: true,
        minDelayMs: 1,
        maxDelayMs: 1,
        onRetry: (info) => infos.push(info),
      })
      await killer.done
      expect(calls.count).toBe(2)
      expect(infos.map((info) => info.classification.category)).toEqual(['ambiguous'])
      expect(await rowsOf('wr_ambiguous')).toEqual([{ id: 1, v: 5 }])
    })
  })

  it('retries unavailable (a real ECONNREFUSED) and succeeds on the third attempt', async () => {
    const dead = createDb<Database>({ dialect: engine, writer: await deadUrl(info.writerUrl), retry: false })
    try {
      const infos: WithRetryInfo[] = []
      const attempts: number[] = []
      const maxDelayMs = 40
      const result = await withRetry(
        async (attempt) => {
          attempts.push(attempt)
          const target = attempt <= 2 ? dead : db
          return target.transaction().execute(async (trx) => {
            const row = await trx.selectNoFrom(sql<number>`1`.as('one')).executeTakeFirstOrThrow()
            return Number(row.one)
          })
        },
        { minDelayMs: 20, maxDelayMs, onRetry: (info) => infos.push(info) },
      )
      expect(result).toBe(1)
      expect(attempts).toEqual([1, 2, 3])
      expect(infos.map((info) => [info.attempt, info.classification.category])).toEqual([
        [1, 'unavailable'],
        [2, 'unavailable'],
      ])
      for (const info of infos) {
        expect((info.error as { code?: unknown }).code).toBe('ECONNREFUSED')
        expect(info.delayMs).toBeGreaterThanOrEqual(0)
        expect(info.delayMs).toBeLessThanOrEqual(maxDelayMs)
      }
    } finally {
      await dead.destroy()
    }
  })
})
