/** What the benchmark parent and its worker processes tell each other (over the fork IPC channel). */
import type { Engine } from '../../test/support/sql.js'
import type { HistogramData } from './histogram.js'
import type { Variant } from './settings.js'

/** Passed to a worker in the BENCH_STORM_WORKER environment variable, as JSON. */
export interface WorkerSpec {
  readonly engine: Engine
  readonly variant: Variant
  /** The app user's URL of the server, or of the PgBouncer in front of it. */
  readonly url: string
  /** 'pgbouncer' when `url` is a PgBouncer's: createDb gets `proxy: 'pgbouncer'`. */
  readonly proxy: 'pgbouncer' | undefined
  readonly poolMax: number
  readonly loops: number
  readonly durationMs: number
  /** Point SELECTs pick an id in 1..rows. */
  readonly rows: number
}

export const WORKER_SPEC_ENV = 'BENCH_STORM_WORKER'

export interface WorkerResult {
  /** Requests (one statement each) that succeeded / failed. */
  readonly ok: number
  readonly failed: number
  /** Failed requests by error label (see error-label.ts). */
  readonly failures: Record<string, number>
  /** The first message seen for each failure label, so a reader can tell what a code means. */
  readonly failureSamples: Record<string, string>
  /** TCP connects this process started (net.Socket#connect calls), refused or not. */
  readonly connectAttempts: number
  /** Of those, how many completed the TCP handshake (the server may still have refused the session). */
  readonly connectsEstablished: number
  /** createDb's 'retry' events, by error code; undefined for plain Kysely (it has none). */
  readonly retries: Record<string, number> | undefined
  /** Latency of successful requests, ms: from the call to its result, pool wait included. */
  readonly latency: HistogramData
  /** From 'go' until the last loop finished (requests started before the deadline are awaited). */
  readonly elapsedMs: number
  /**
   * Errors that reached process.on('uncaughtException' | 'unhandledRejection') (a driver emitting
   * 'error' with no listener), by label. An application would have crashed; the worker counts and goes on.
   */
  readonly uncaught: Record<string, number>
  /** db.destroy() did not finish in time; the process exited anyway. */
  readonly destroyTimedOut: boolean
}

export type WorkerMessage =
  | { readonly type: 'ready' }
  | { readonly type: 'result'; readonly result: WorkerResult }
  | { readonly type: 'failed'; readonly error: string }

export type ParentMessage = { readonly type: 'go' }
