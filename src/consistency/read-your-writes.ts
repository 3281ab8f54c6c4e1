import { AsyncLocalStorage } from 'node:async_hooks'
import type { SqlDialect } from '../config/create-db-config.js'
import type { ResolvedConsistency } from '../config/resolve-config.js'
import { ReplicationPositionUnavailableError } from '../errors.js'
import { withDeadline } from '../retry/deadline.js'
import { decodeToken, encodeToken } from './consistency-token.js'
import { type PositionHost, type PositionSource, PositionTracker } from './position-tracker.js'
import { later, NoPositionError, type ReplicationPosition, writerIdentity } from './replication-position.js'

/** Where the db's reads normally go: what read-your-writes falls back on. */
export interface ConsistencyHost<E extends PositionSource> extends PositionHost<E> {
  /** The reader normal routing picks (a healthy reader, or the writer when there is none). */
  reader(): E
}

/**
 * What the reads of one unit of work must see: the positions of the tokens it was given and of its
 * own writes. A write is noted as a number (`pendingSeq`) when it completes; the writer position
 * that covers it is read lazily, by the first read that needs it, and shared with other scopes.
 */
export class ConsistencyScope {
  readonly parent: ConsistencyScope | undefined
  /** Positions every read must see; usually one (several only across a failover). */
  required: ReplicationPosition[] = []
  /** The number of the latest write not yet covered by `required`; 0 when there is none. */
  pendingSeq = 0
  /** Reads since the latest write that ran on the writer because its position was not read yet. */
  readsOnWriter = 0
  resolving: Promise<void> | undefined

  constructor(parent: ConsistencyScope | undefined) {
    this.parent = parent
  }

  /** Adds a position reads must see, merged with one of the same writer. */
  require(position: ReplicationPosition): void {
    const identity = writerIdentity(position)
    const index = this.required.findIndex((known) => writerIdentity(known) === identity)
    if (index === -1) this.required.push(position)
    else this.required[index] = later(this.required[index] as ReplicationPosition, position)
  }
}

/**
 * Read-your-writes for one db. A read in a scope that wrote (or was given a token) runs on a reader
 * known to have replayed the scope's writes; when none is, it runs on the writer at once
 * (`whenBehind: 'writer'`) or waits up to `maxWaitMs` for one (`'wait'`). With no scope, and in no
 * scope that needs anything, routing is exactly as without this: one flag test per statement.
 */
export class ReadYourWrites<E extends PositionSource> {
  readonly #dialect: SqlDialect
  readonly #options: ResolvedConsistency
  readonly #host: ConsistencyHost<E>
  readonly #tracker: PositionTracker<E>
  readonly #storage = new AsyncLocalStorage<ConsistencyScope>()
  readonly #process: ConsistencyScope | undefined
  /** False until the first scope: until then no statement pays for a storage lookup. */
  #active: boolean

  constructor(dialect: SqlDialect, options: ResolvedConsistency, host: ConsistencyHost<E>) {
    this.#dialect = dialect
    this.#options = options
    this.#host = host
    this.#tracker = new PositionTracker(host, options.pollIntervalMs)
    this.#process = options.readYourWrites === 'process' ? new ConsistencyScope(undefined) : undefined
    this.#active = this.#process !== undefined
  }

  /** The scope of the statement being routed, or undefined when it needs nothing. */
  current(): ConsistencyScope | undefined {
    if (!this.#active) return undefined
    return this.#storage.getStore() ?? this.#process
  }

  /** Runs `fn` in a new scope nested in the current one, whose reads also see `after`'s positions. */
  run<T>(fn: () => T | Promise<T>, after: ReadonlyArray<unknown>): Promise<T> {
    const scope = new ConsistencyScope(this.current())
    // Decoded before anything runs, so a bad token fails the call, not some later read.
    for (const token of after) scope.require(decodeToken(token, this.#dialect))
    this.#active = true
    return this.#storage.run(scope, async () => fn())
  }

  /** A write of `scope` completed (or failed after it was sent: it may have committed). */
  noteWrite(scope: ConsistencyScope): void {
    const seq = this.#tracker.noteWrite()
    for (let current: ConsistencyScope | undefined = scope; current; current = current.parent) {
      current.pendingSeq = seq
      current.readsOnWriter = 0
    }
  }

  /** A token covering every write committed on the writer before this call. */
  async token(): Promise<string> {
    try {
      return encodeToken(await this.#tracker.freshWriterPosition())
    } catch (error) {
      if (error instanceof NoPositionError) {
        throw new ReplicationPositionUnavailableError(this.#host.writer().name, `${error.message}.`, {
          cause: error,
        })
      }
      throw error
    }
  }

  /** Where a read of `scope` runs. Synchronous unless it waits for a reader (`whenBehind: 'wait'`). */
  readerFor(scope: ConsistencyScope): E | Promise<E> {
    let needs = false
    for (let current: ConsistencyScope | undefined = scope; current; current = current.parent) {
      if (current.pendingSeq > 0 || current.required.length > 0) {
        needs = true
        break
      }
    }
    if (!needs) return this.#host.reader()
    // No comparable positions (MySQL): once a scope wrote, its reads stay on the writer.
    if (this.#tracker.unsupported !== undefined) return this.#host.writer()
    if (this.#options.whenBehind === 'wait') return this.#waitForReader(scope)
    const required = this.#required(scope)
    if (required === undefined) return this.#host.writer()
    const ready = this.#tracker.covering(required)
    if (ready.length > 0) return this.#host.pick(ready)
    this.#tracker.requestPoll()
    return this.#host.writer()
  }

  /**
   * The readers in rotation that have replayed everything the writer had written when this was
   * called: their lag is zero, exactly, whatever a time-based measure says. Reads the writer's
   * position, then every reader's (which read-your-writes reuses). Empty when the engine keeps no
   * comparable positions.
   */
  async caughtUp(): Promise<ReadonlySet<E>> {
    let position: ReplicationPosition
    try {
      position = await this.#tracker.freshWriterPosition()
    } catch {
      return new Set()
    }
    await this.#tracker.pollNow()
    return new Set(this.#tracker.covering([position]))
  }

  /** The replay position last read from `reader`, for `db.stats()`. */
  replayPosition(reader: E): string | undefined {
    return this.#tracker.replayedBy(reader)?.text
  }

  /** The writer changed (failover): forget its positions; scopes are re-anchored on the new one. */
  writerChanged(): void {
    this.#tracker.reset()
  }

  close(): void {
    this.#tracker.close()
  }

  /**
   * Every position the reads of `scope` must see, or undefined when one is not known yet: a write
   * whose position is still being read (started here, in the background), or a position of another
   * writer than the current one, which cannot be compared.
   */
  #required(scope: ConsistencyScope): ReplicationPosition[] | undefined {
    let required: ReplicationPosition[] = []
    let known = true
    for (let current: ConsistencyScope | undefined = scope; current; current = current.parent) {
      if (current.pendingSeq > 0) {
        known = false
        // The first read after a write runs on the writer without asking for its position: a replica
        // rarely has a write that fresh, and a request that writes, reads once and ends (the common
        // one) would pay a statement on the writer for nothing. From the second read on, the position
        // is worth it: it lets the scope's later reads go back to the replicas.
        if (++current.readsOnWriter > 1) {
          this.#resolve(current).catch(() => {
            // The read runs on the writer meanwhile; the next read tries again.
          })
        }
        continue
      }
      if (!this.#anchor(current)) {
        known = false
        continue
      }
      required = required.concat(current.required)
    }
    return known ? required : undefined
  }

  /**
   * Makes `scope`'s positions comparable with the current writer's. A position of another writer
   * (one from before a failover, or a token from another history) is replaced by the current
   * writer's latest position, read after the change: it holds whatever of the old one survived.
   * False while the current writer's position is unknown (its read is started here).
   */
  #anchor(scope: ConsistencyScope): boolean {
    if (scope.required.length === 0) return true
    const identity = this.#tracker.writerIdentity
    if (identity === undefined) {
      this.#tracker.writerPositionCovering(0).catch(() => {
        // Retried by the next read that needs it.
      })
      return false
    }
    if (scope.required.every((position) => writerIdentity(position) === identity)) return true
    const latest = this.#tracker.latestWriterPosition as ReplicationPosition
    scope.required = scope.required.filter((position) => writerIdentity(position) === identity)
    scope.require(latest)
    return true
  }

  /** Reads the writer position that covers `scope`'s writes; one read at a time per scope. */
  #resolve(scope: ConsistencyScope): Promise<void> {
    scope.resolving ??= (async () => {
      try {
        while (scope.pendingSeq > 0) {
          const seq = scope.pendingSeq
          const position = await this.#tracker.writerPositionCovering(seq)
          const identity = writerIdentity(position)
          // A position of a new writer covers what survived of the old one's: it replaces them.
          scope.required = scope.required.filter((known) => writerIdentity(known) === identity)
          scope.require(position)
          if (scope.pendingSeq === seq) scope.pendingSeq = 0
        }
      } finally {
        scope.resolving = undefined
      }
    })()
    return scope.resolving
  }

  async #waitForReader(scope: ConsistencyScope): Promise<E> {
    const deadline = performance.now() + this.#options.maxWaitMs
    const resolved = await this.#beforeDeadline(this.#resolveChain(scope), this.#options.maxWaitMs)
    if (!resolved || this.#tracker.unsupported !== undefined) return this.#host.writer()
    let required = this.#required(scope)
    if (required === undefined) {
      // The current writer's position was unknown (after a failover): its read was started above.
      const left = deadline - performance.now()
      await this.#beforeDeadline(this.#tracker.writerPositionCovering(0), left)
      required = this.#required(scope)
      if (required === undefined) return this.#host.writer()
    }
    const ready = this.#tracker.covering(required)
    if (ready.length > 0) return this.#host.pick(ready)
    const left = deadline - performance.now()
    if (left <= 0) return this.#host.writer()
    return (await this.#tracker.waitFor(required, left)) ?? this.#host.writer()
  }

  async #resolveChain(scope: ConsistencyScope): Promise<void> {
    for (let current: ConsistencyScope | undefined = scope; current; current = current.parent) {
      if (current.pendingSeq > 0) await this.#resolve(current)
    }
  }

  /** True when `work` succeeded within `timeoutMs`; false when it failed or took longer. */
  #beforeDeadline(work: Promise<unknown>, timeoutMs: number): Promise<boolean> {
    if (timeoutMs <= 0) return Promise.resolve(false)
    const succeeded = work.then(
      () => true,
      () => false,
    )
    return withDeadline(succeeded, timeoutMs, () => false)
  }
}
