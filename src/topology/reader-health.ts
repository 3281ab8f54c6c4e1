import type { Endpoint } from '../endpoint/endpoint.js'
import type { ReaderEjectedEvent, ResilientEvents } from '../events/resilient-events.js'
import { classifyError } from '../retry/classify-error.js'

/** How reader health is watched; see `RoutingConfig`. */
export interface ReaderHealthOptions {
  readonly cooldownMs: number
  readonly maxReplicaLagMs: number | undefined
  readonly lagCheckIntervalMs: number
  /**
   * The readers that have replayed everything the writer had written (compared by replication
   * position): their lag is 0 without asking them for a time-based one.
   */
  readonly caughtUp?: () => Promise<ReadonlySet<Endpoint>>
}

interface Ejection {
  readonly since: number
  timer: NodeJS.Timeout | undefined
}

/**
 * Takes readers out of rotation and brings them back. A reader that fails to connect is ejected
 * for `cooldownMs`, then probed over a fresh connection and restored if it answers (and, with
 * `maxReplicaLagMs`, if it is not lagging). With `maxReplicaLagMs`, every reader's replay lag is
 * also checked every `lagCheckIntervalMs` and a lagging reader ejected, as is a replica that reports
 * no lag at all (`'lag-unknown'`): it could be any distance behind.
 */
export class ReaderHealth {
  #readers: ReadonlyArray<Endpoint>
  readonly #events: ResilientEvents
  readonly #options: ReaderHealthOptions
  readonly #ejected = new Map<Endpoint, Ejection>()
  /** Each reader's replay lag as last measured, for `db.stats()`. */
  readonly #lagMs = new Map<Endpoint, number>()
  #lagTimer: NodeJS.Timeout | undefined
  #closed = false

  constructor(readers: ReadonlyArray<Endpoint>, events: ResilientEvents, options: ReaderHealthOptions) {
    this.#readers = readers
    this.#events = events
    this.#options = options
    this.#startLagChecks()
  }

  /**
   * The readers changed (topology discovery found instances added or removed): the removed ones
   * leave rotation with their ejection and lag state; new ones start healthy, like at startup.
   */
  setReaders(readers: ReadonlyArray<Endpoint>): void {
    for (const [reader, ejection] of this.#ejected) {
      if (readers.includes(reader)) continue
      clearTimeout(ejection.timer)
      this.#ejected.delete(reader)
    }
    for (const reader of this.#lagMs.keys()) if (!readers.includes(reader)) this.#lagMs.delete(reader)
    this.#readers = readers
    this.#startLagChecks()
  }

  #startLagChecks(): void {
    const { maxReplicaLagMs, lagCheckIntervalMs } = this.#options
    if (maxReplicaLagMs === undefined || this.#readers.length === 0 || this.#lagTimer !== undefined) return
    if (this.#closed) return
    this.#lagTimer = setInterval(() => void this.#checkLag(), lagCheckIntervalMs)
    this.#lagTimer.unref()
  }

  /** The readers currently in rotation. */
  healthy(): ReadonlyArray<Endpoint> {
    if (this.#ejected.size === 0) return this.#readers
    return this.#readers.filter((reader) => !this.#ejected.has(reader))
  }

  isEjected(reader: Endpoint): boolean {
    return this.#ejected.has(reader)
  }

  /** The reader's replay lag at the last check (only measured with `maxReplicaLagMs`). */
  lagMs(reader: Endpoint): number | undefined {
    return this.#lagMs.get(reader)
  }

  #noteLag(reader: Endpoint, lagMs: number | undefined): void {
    if (lagMs === undefined) this.#lagMs.delete(reader)
    else this.#lagMs.set(reader, lagMs)
  }

  /** A connection to `reader` could not be opened: take it out of rotation. */
  unreachable(reader: Endpoint): void {
    this.#eject(reader, 'unreachable', undefined)
  }

  close(): void {
    this.#closed = true
    clearInterval(this.#lagTimer)
    for (const ejection of this.#ejected.values()) clearTimeout(ejection.timer)
    this.#ejected.clear()
  }

  #eject(reader: Endpoint, reason: ReaderEjectedEvent['reason'], lagMs: number | undefined): void {
    if (this.#closed || this.#ejected.has(reader)) return
    reader.evictIdle()
    const ejection: Ejection = { since: performance.now(), timer: undefined }
    this.#ejected.set(reader, ejection)
    this.#events.emit('reader-ejected', {
      endpoint: reader.name,
      reason,
      lagMs,
      cooldownMs: this.#options.cooldownMs,
    })
    this.#scheduleProbe(reader, ejection)
  }

  #scheduleProbe(reader: Endpoint, ejection: Ejection): void {
    ejection.timer = setTimeout(() => void this.#probe(reader, ejection), this.#options.cooldownMs)
    ejection.timer.unref()
  }

  async #probe(reader: Endpoint, ejection: Ejection): Promise<void> {
    if (this.#closed || this.#ejected.get(reader) !== ejection) return
    try {
      const max = this.#options.maxReplicaLagMs
      // Without a lag limit only reachability matters (the lag query may need privileges).
      if (max === undefined) await reader.probeReachable()
      else {
        const lagMs = await reader.probeLag()
        this.#noteLag(reader, lagMs)
        // Unknown is not within the limit: it stays out until it says.
        if (lagMs === undefined || lagMs > max) {
          this.#scheduleProbe(reader, ejection)
          return
        }
      }
    } catch (error) {
      const { category, code } = classifyError(error, { phase: 'connect' })
      this.#events.emit('error', { endpoint: reader.name, category, code, reason: 'reader probe failed' })
      // A reader that answered with an error (no privilege to read its lag) is reachable.
      if (!answered(error)) {
        if (!this.#closed) this.#scheduleProbe(reader, ejection)
        return
      }
    }
    if (this.#closed || this.#ejected.get(reader) !== ejection) return
    this.#ejected.delete(reader)
    this.#events.emit('reader-restored', {
      endpoint: reader.name,
      ejectedForMs: Math.round(performance.now() - ejection.since),
    })
  }

  async #checkLag(): Promise<void> {
    const max = this.#options.maxReplicaLagMs
    if (max === undefined || this.#closed) return
    // Positions first: exact where they say "caught up" (a time-based lag has MariaDB's whole
    // seconds, and PostgreSQL's cannot see WAL not yet received). Time measures the others.
    const caughtUp = (await this.#options.caughtUp?.().catch(() => undefined)) ?? new Set<Endpoint>()
    if (this.#closed) return
    await Promise.all(
      this.#readers
        .filter((reader) => !this.#ejected.has(reader))
        .map(async (reader) => {
          if (caughtUp.has(reader)) {
            this.#lagMs.set(reader, 0)
            return
          }
          try {
            const lagMs = await reader.probeLag()
            this.#noteLag(reader, lagMs)
            // A replica that reports no lag may be any distance behind: never taken for 0.
            if (lagMs === undefined) this.#eject(reader, 'lag-unknown', undefined)
            else if (lagMs > max) this.#eject(reader, 'lagging', lagMs)
          } catch (error) {
            const { category, code } = classifyError(error, { phase: 'connect' })
            this.#events.emit('error', { endpoint: reader.name, category, code, reason: 'lag check failed' })
            // The reader answered but would not say its lag (e.g. no SLAVE MONITOR): it is reachable.
            if (!answered(error)) this.#eject(reader, 'unreachable', undefined)
          }
        }),
    )
  }
}

/** The server answered the statement with an error of its own: it is up, the connection is fine. */
function answered(error: unknown): boolean {
  const { category, connectionLost } = classifyError(error)
  return category === 'fatal' && !connectionLost
}
