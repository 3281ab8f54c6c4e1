import {
  covers,
  NoPositionError,
  type ReadPosition,
  type ReplicationPosition,
  writerIdentity,
} from './replication-position.js'

/** What the tracker needs of an endpoint: reading its positions. */
export interface PositionSource {
  readonly name: string
  writerPosition(): Promise<ReadPosition>
  replayPosition(writerServerId: number | undefined): Promise<ReadPosition | undefined>
}

/** Where the tracker finds the writer and the readers in rotation, and reports failed reads. */
export interface PositionHost<E extends PositionSource> {
  writer(): E
  healthyReaders(): ReadonlyArray<E>
  pick(readers: ReadonlyArray<E>): E
  positionFailed(endpoint: E, error: unknown): void
}

interface WriterFetch {
  /** Writes noted up to this number completed before the fetch was sent, so it covers them. */
  readonly startSeq: number
  readonly generation: number
  pending: boolean
  promise: Promise<ReplicationPosition>
}

interface Waiter<E> {
  readonly required: ReadonlyArray<ReplicationPosition>
  readonly resolve: (reader: E | undefined) => void
}

/**
 * The replication positions behind read-your-writes, shared by every request of one db:
 *
 * - the writer's position, read once per batch of writes rather than once per write: a fetch sent
 *   after a write completed covers it, so everyone whose writes completed before a fetch was sent
 *   shares that fetch, and at most one fetch runs at a time (the next covers all writes before it);
 * - each reader's replayed position, polled only while some read needs a position that no reader
 *   is known to have (every `pollIntervalMs` at most, one statement per reader), never per read.
 *
 * A failover starts a new generation: what the old writer said is forgotten.
 */
export class PositionTracker<E extends PositionSource> {
  readonly #host: PositionHost<E>
  readonly #pollIntervalMs: number
  #writeSeq = 0
  #generation = 0
  #current: WriterFetch | undefined
  #queued: Promise<ReplicationPosition> | undefined
  #latest: ReplicationPosition | undefined
  #unsupported: NoPositionError | undefined
  readonly #replayed = new Map<E, ReadPosition>()
  readonly #waiters = new Set<Waiter<E>>()
  /** The poll in flight, if any. */
  #inFlight: Promise<void> | undefined
  #pollTimer: NodeJS.Timeout | undefined
  #lastPollAt = Number.NEGATIVE_INFINITY
  #closed = false

  constructor(host: PositionHost<E>, pollIntervalMs: number) {
    this.#host = host
    this.#pollIntervalMs = pollIntervalMs
  }

  /** Counts a completed write; returns its number, which a position must cover. */
  noteWrite(): number {
    return ++this.#writeSeq
  }

  /** Set once the writer said it keeps no comparable position (until the next failover). */
  get unsupported(): NoPositionError | undefined {
    return this.#unsupported
  }

  /** Which writer the latest position came from; undefined before the first fetch of a generation. */
  get writerIdentity(): string | undefined {
    return this.#latest === undefined ? undefined : writerIdentity(this.#latest)
  }

  /** The latest writer position read in this generation. */
  get latestWriterPosition(): ReplicationPosition | undefined {
    return this.#latest
  }

  /** A writer position that covers every write numbered `seq` or lower. */
  writerPositionCovering(seq: number): Promise<ReplicationPosition> {
    const current = this.#current
    if (current !== undefined && current.generation === this.#generation) {
      if (current.startSeq >= seq) return current.promise
      if (current.pending) {
        // One fetch at a time: the next one is sent when this one ends, and covers every write before.
        this.#queued ??= current.promise
          .then(
            () => undefined,
            () => undefined,
          )
          .then(() => {
            this.#queued = undefined
            return this.#fetch().promise
          })
        return this.#queued
      }
    }
    return this.#fetch().promise
  }

  /** A writer position read after this call: it covers every write committed before it. */
  freshWriterPosition(): Promise<ReplicationPosition> {
    return this.writerPositionCovering(this.noteWrite())
  }

  /** The position last read from `reader`, for `db.stats()`. */
  replayedBy(reader: E): ReadPosition | undefined {
    return this.#replayed.get(reader)
  }

  /** The readers in rotation known to have replayed every position in `required`. */
  covering(required: ReadonlyArray<ReplicationPosition>): E[] {
    const ready: E[] = []
    for (const reader of this.#host.healthyReaders()) {
      const replayed = this.#replayed.get(reader)
      if (replayed !== undefined && required.every((position) => covers(replayed.position, position))) {
        ready.push(reader)
      }
    }
    return ready
  }

  /** Asks for the readers' positions to be read again, soon: at most once per `pollIntervalMs`. */
  requestPoll(): void {
    if (this.#closed || this.#inFlight !== undefined || this.#pollTimer !== undefined) return
    const waitMs = this.#lastPollAt + this.#pollIntervalMs - performance.now()
    if (waitMs > 0) {
      this.#pollTimer = setTimeout(() => {
        this.#pollTimer = undefined
        this.#poll()
      }, waitMs)
      this.#pollTimer.unref()
      return
    }
    this.#poll()
  }

  /**
   * Resolves with a reader in rotation that has replayed `required`, as soon as a poll finds one,
   * or with undefined after `timeoutMs`.
   */
  waitFor(required: ReadonlyArray<ReplicationPosition>, timeoutMs: number): Promise<E | undefined> {
    // No reader in rotation: nothing to wait for.
    if (this.#host.healthyReaders().length === 0) return Promise.resolve(undefined)
    return new Promise((resolve) => {
      const timer = setTimeout(() => waiter.resolve(undefined), timeoutMs)
      const waiter: Waiter<E> = {
        required,
        resolve: (reader) => {
          clearTimeout(timer)
          this.#waiters.delete(waiter)
          resolve(reader)
        },
      }
      this.#waiters.add(waiter)
      this.requestPoll()
    })
  }

  /** The writer changed: positions from the old one say nothing about the new history. */
  reset(): void {
    this.#generation++
    this.#current = undefined
    this.#latest = undefined
    this.#unsupported = undefined
    this.#replayed.clear()
  }

  close(): void {
    this.#closed = true
    clearTimeout(this.#pollTimer)
    for (const waiter of [...this.#waiters]) waiter.resolve(undefined)
  }

  #fetch(): WriterFetch {
    const generation = this.#generation
    const fetch: WriterFetch = {
      startSeq: this.#writeSeq,
      generation,
      pending: true,
      promise: Promise.resolve() as unknown as Promise<ReplicationPosition>,
    }
    fetch.promise = this.#host
      .writer()
      .writerPosition()
      .then(
        ({ position }) => {
          fetch.pending = false
          if (generation === this.#generation) {
            this.#unsupported = undefined
            // Fetches may end out of order; keep the one sent last.
            if (this.#current === fetch || this.#latest === undefined) this.#latest = position
          }
          return position
        },
        (error: unknown) => {
          fetch.pending = false
          if (this.#current === fetch) this.#current = undefined
          if (error instanceof NoPositionError && generation === this.#generation) this.#unsupported = error
          throw error
        },
      )
    this.#current = fetch
    return fetch
  }

  /**
   * Reads every reader's replay position now, whatever the poll interval (the lag check's round,
   * which has its own interval); shares a poll already in flight.
   */
  pollNow(): Promise<void> {
    if (this.#closed) return Promise.resolve()
    if (this.#inFlight !== undefined) return this.#inFlight
    clearTimeout(this.#pollTimer)
    this.#pollTimer = undefined
    this.#poll()
    return this.#inFlight ?? Promise.resolve()
  }

  #poll(): void {
    if (this.#closed) return
    const generation = this.#generation
    const latest = this.#latest
    const writerServerId = latest?.engine === 'mariadb' ? latest.serverId : undefined
    this.#inFlight = Promise.all(
      this.#host.healthyReaders().map(async (reader) => {
        try {
          const read = await reader.replayPosition(writerServerId)
          if (generation !== this.#generation) return
          if (read === undefined) this.#replayed.delete(reader)
          else this.#replayed.set(reader, read)
        } catch (error) {
          this.#replayed.delete(reader)
          this.#host.positionFailed(reader, error)
        }
      }),
    ).then(() => {
      this.#inFlight = undefined
      this.#lastPollAt = performance.now()
      // Readers that failed the poll may have left rotation: with none left, waiting is pointless.
      const none = this.#host.healthyReaders().length === 0
      for (const waiter of [...this.#waiters]) {
        const ready = none ? [] : this.covering(waiter.required)
        if (ready.length > 0) waiter.resolve(this.#host.pick(ready))
        else if (none) waiter.resolve(undefined)
      }
      if (this.#waiters.size > 0) this.requestPoll()
    })
  }
}
