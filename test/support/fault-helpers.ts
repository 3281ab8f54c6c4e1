import { randomUUID } from 'node:crypto'
import { type RawBuilder, sql } from 'kysely'
import type { ResilientEventMap } from '../../src/index.js'
import type { Engine } from './sql.js'

/** Every event a ResilientDb emits, so a test can record them all and search them for secrets. */
export const EVENT_NAMES: ReadonlyArray<keyof ResilientEventMap> = [
  'retry',
  'failover',
  'reader-ejected',
  'reader-restored',
  'credentials-refreshed',
  'endpoint-unresponsive',
  'endpoint-responsive',
  'error',
]

/** The server-side id of the session that runs the statement. */
export function sessionId(engine: Engine): RawBuilder<number> {
  return engine === 'postgres' ? sql<number>`pg_backend_pid()` : sql<number>`connection_id()`
}

/** A server-side sleep usable in a SELECT list (so the statement stays a read). */
export function sleepExpr(engine: Engine, seconds: number): RawBuilder<unknown> {
  return engine === 'postgres' ? sql`pg_sleep(${sql.lit(seconds)})` : sql`sleep(${sql.lit(seconds)})`
}

/** A unique column alias, so the statement can be found in pg_stat_activity / the processlist. */
export function marker(prefix: string): string {
  return `${prefix}${randomUUID().replaceAll('-', '')}`
}

/** The error a promise rejects with; fails the test if it resolves. */
export async function failureOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected the statement to fail, but it succeeded')
    },
    (error: unknown) => error,
  )
}

/** Every event of one db, by name, in the order they were emitted. */
export type EventLog = { [K in keyof ResilientEventMap]: ResilientEventMap[K][] }

/** Something with `db.on` (any ResilientDb, whatever its schema). */
interface EventSource {
  on<K extends keyof ResilientEventMap>(event: K, listener: (event: ResilientEventMap[K]) => void): unknown
}

/** Listens to every event of `db` and keeps them, so a test can assert on them and search them for secrets. */
export function collectEvents(db: EventSource): EventLog {
  const events: EventLog = {
    retry: [],
    failover: [],
    'reader-ejected': [],
    'reader-restored': [],
    'credentials-refreshed': [],
    'endpoint-unresponsive': [],
    'endpoint-responsive': [],
    error: [],
  }
  for (const name of EVENT_NAMES) {
    db.on(name, (event) => {
      ;(events[name] as unknown[]).push(event)
    })
  }
  return events
}
