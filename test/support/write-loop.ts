import { type Kysely, sql } from 'kysely'
import { withRetry } from '../../src/index.js'
import { pollUntil } from './poll.js'

/** One acknowledged write of a {@link IdempotentWriteLoop}: its key, when it returned, and the server that ran it. */
export interface AcknowledgedWrite {
  readonly id: number
  readonly at: number
  /** The port of the server that ran it, as the write reported it. */
  readonly port: number
}

/** Writes running steadily through a fault, and what became of them. */
export interface IdempotentWriteLoop {
  readonly successes: ReadonlyArray<AcknowledgedWrite>
  /** Errors that reached the caller: every retry given up. */
  readonly errors: ReadonlyArray<unknown>
  /** Resolves once `count` writes were acknowledged (after `since`, if given). */
  acknowledged(count: number, what: string, since?: number): Promise<void>
  /** The first write acknowledged after `since`. */
  firstAfter(since: number, what: string): Promise<AcknowledgedWrite>
  stop(): Promise<void>
}

/**
 * Idempotent writes (the caller's `write` must be an upsert by `id`, returning the port of the
 * server that ran it) one after another, each retried by withRetry with `idempotent: true` through
 * an outage: the failover tests' load.
 */
export function idempotentWriteLoop(
  write: (id: number) => Promise<number>,
  firstId = 1_000,
): IdempotentWriteLoop {
  let nextId = firstId
  const successes: AcknowledgedWrite[] = []
  const errors: unknown[] = []
  let running = true
  const done = (async () => {
    while (running) {
      const id = nextId++
      try {
        const port = await withRetry(() => write(id), {
          idempotent: true,
          retries: 100,
          maxElapsedMs: 30_000,
        })
        successes.push({ id, at: performance.now(), port })
      } catch (error) {
        errors.push(error)
      }
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  })()
  return {
    successes,
    errors,
    acknowledged: async (count, what, since = Number.NEGATIVE_INFINITY) => {
      await pollUntil(
        async () => (successes.filter((write) => write.at > since).length >= count ? true : undefined),
        { timeoutMs: 10_000, what },
      )
    },
    firstAfter: (since, what) =>
      pollUntil(async () => successes.find((write) => write.at > since), {
        timeoutMs: 20_000,
        intervalMs: 5,
        what,
      }),
    stop: async () => {
      running = false
      await done
    },
  }
}

/** The table the MySQL failover tests write to. */
export interface BeatDatabase {
  beat: { id: number; note: string }
}

/**
 * The MySQL failover tests' write for {@link idempotentWriteLoop}: an upsert of `id` into `beat` in a
 * transaction, returning the port (`@@port`) of the server that ran it.
 */
export function mysqlBeatWrite(db: Kysely<BeatDatabase>): (id: number) => Promise<number> {
  return (id) =>
    db.transaction().execute(async (trx) => {
      await trx
        .insertInto('beat')
        .values({ id, note: 'steady' })
        .onDuplicateKeyUpdate({ note: 'steady' })
        .execute()
      const row = await trx.selectNoFrom(sql<number>`@@port`.as('port')).executeTakeFirstOrThrow()
      return Number(row.port)
    })
}
