import type { ResolvedPoolOptions } from '../config/pool-options.js'
import { CONNECT_CHANNEL } from '../diagnostics/channels.js'
import { ConnectTimeoutError, DatabaseDestroyedError, PoolTimeoutError } from '../errors.js'
import { classifyError, isSessionRefusal, markConnectPhase } from '../retry/classify-error.js'
import { withDeadline } from '../retry/deadline.js'

/** Opens and closes the raw driver connections of one endpoint. */
export interface PoolConnector<C> {
  /** Opens one connection; must give up after the pool's `connectTimeoutMs`. */
  connect(): Promise<C>
  /** Closes a connection. Must not throw: a connection being thrown away may already be dead. */
  close(connection: C): Promise<void>
  /** True once the connection's socket errored or ended: it must never be handed out again. */
  isBroken(connection: C): boolean
  /** Marks a connection unusable (it failed with a connection-level error) and destroys its socket now. */
  destroy(connection: C): void
  /**
   * Checks with a cheap round trip that the server still serves the connection; rejects if not. The
   * pool calls it (bounded by `connectTimeoutMs`) only on a connection idle longer than
   * `validateAfterIdleMs`.
   */
  validate?(connection: C): Promise<void>
  /** Set by the pool; the connector calls it as soon as a connection's socket errors or ends. */
  onBroken?: ((connection: C) => void) | undefined
}

/** Connection counts of one pool at one instant. */
export interface PoolCounts {
  /** Open connections plus connections being opened. */
  readonly total: number
  /** Open connections waiting in the pool. */
  readonly idle: number
  /** Connections handed out to callers. */
  readonly inUse: number
  /** Callers waiting for a connection (a release, or one being opened for them). */
  readonly waiting: number
  /** Connections being opened right now. */
  readonly connecting: number
}

/** Why a connection left the pool. */
export type RemovalReason =
  | 'broken'
  | 'discarded'
  | 'evicted'
  | 'expired'
  | 'idle'
  | 'pool-ended'
  | 'failed-validation'
  | 'given-back'

/**
 * Sees connections leave the pool, e.g. a test or a metric. Called synchronously, as a close starts;
 * the pool never depends on what it does.
 */
export interface PoolObserver<C> {
  readonly onRemove?: (connection: C, reason: RemovalReason) => void
  /**
   * Runs on each new connection before it is handed out, inside the connect deadline (the endpoint
   * finds its platform on its first connection). A rejection fails the open like a connect error.
   */
  readonly onOpen?: (connection: C) => Promise<void> | undefined
}

/**
 * Times a pool's connections for OpenTelemetry (telemetry/db-telemetry.ts): set only while metrics
 * or spans are recorded, so without them the pool reads no clock for them.
 */
export interface PoolInstruments {
  /** Opens one connection through `open` (bounded by `connectTimeoutMs`): its span and create time. */
  connect<C>(open: () => Promise<C>): Promise<C>
  /** A caller waited `ms` for a connection (`db.client.connection.wait_time`). */
  waited(ms: number): void
  /** A caller held a connection `ms` before giving it back (`db.client.connection.use_time`). */
  used(ms: number): void
}

interface Entry<C> {
  readonly connection: C
  readonly expiresAt: number
  /** When it was last put back in the pool. */
  idleSince: number
  /** While idle: when the reaper closes it (`idleTimeoutMs` after `idleSince`, shorter when saturated). */
  idleUntil: number
  /** With instruments: when it was handed out (performance.now()). */
  acquiredAt?: number
}

interface Waiter<C> {
  readonly resolve: (connection: C) => void
  readonly reject: (error: unknown) => void
  /** When it gives up (`Date.now()`): acquireTimeoutMs after it started waiting. */
  readonly deadline: number
}

/**
 * Growth pause after the server refused a session while the pool holds connections: the ceiling of
 * the first pause; it doubles with each refusal in a row up to the maximum, and each pause is drawn
 * between half its ceiling and the ceiling ("equal jitter"), so the processes refused together do
 * not come back together, and none comes back sooner than half the ceiling.
 */
const HOLDING_PAUSE_MS = 3_000
const MAX_HOLDING_PAUSE_MS = 16_000
/**
 * The same when the pool holds no connection, so its callers have nothing to wait for: shorter, and
 * drawn between 0 and the ceiling ("full jitter"), because only a new session can serve them.
 */
const EMPTY_PAUSE_MS = 100
const MAX_EMPTY_PAUSE_MS = 1_000
/**
 * While the server is short of slots, a pool holding more than one connection gives one back (closes
 * it on release) this long after the last refusal or give-back, so that a process holding none can
 * get one. When nobody took the freed slot (the pool got it back at once), the interval doubles up to
 * the maximum; when somebody did (the pool's own reopen was refused), it starts over.
 */
const GIVE_BACK_AFTER_MS = 5_000
const MAX_GIVE_BACK_AFTER_MS = 60_000
/**
 * A connection idle at least this long waits one turn of the event loop before it is handed out, so
 * that a close which reached the socket while the process was busy is seen first (see #settled).
 * Connections reused at once, as under load, never wait.
 */
const SETTLE_AFTER_IDLE_MS = 50
/** While the server is short of slots, an idle connection is closed after this long (or idleTimeoutMs if shorter). */
const SATURATED_IDLE_TIMEOUT_MS = 1_000
/** The server counts as short of slots until this long after its last refusal. */
const SATURATION_MEMORY_MS = 30_000

/**
 * A connection pool with the same semantics for every driver: bounded size, a bounded wait for a
 * free connection, bounded connection age, idle reaping, and connections that broke are never
 * handed out again.
 *
 * Idle connections are reused last-in first-out: a burst's extra connections sit at the bottom of
 * the stack and are the ones the idle timeout reaps, so the pool shrinks back after the burst.
 *
 * Connections are opened for waiting callers, never more at once than a limit that starts at one
 * and grows by one per round of successful opens, so a cold pool does not flood a server that has a
 * few slots left. When the server refuses a session for lack of slots (see `isSessionRefusal`), the
 * pool stops growing for a jittered, growing pause and serves its callers from the connections it
 * holds; a refused open fails nobody (callers wait until their `acquireTimeoutMs`). Other open
 * failures (unreachable, timed out, credentials rejected) fail the longest-waiting caller at once,
 * so the routing layer can retry elsewhere.
 */
export class ConnectionPool<C> {
  readonly name: string
  readonly options: ResolvedPoolOptions
  readonly #connector: PoolConnector<C>
  readonly #observer: PoolObserver<C>
  readonly #idle: Entry<C>[] = []
  readonly #inUse = new Map<C, Entry<C>>()
  readonly #waiters: Waiter<C>[] = []
  #timeouts = 0
  #connecting = 0
  /**
   * Opens and closes in flight, each removed once settled: end() awaits them instead of polling
   * counters. An open is tracked until its connection is placed, so a close it starts (the pool
   * ended meanwhile) is tracked before the open leaves the set.
   */
  readonly #pending = new Set<Promise<unknown>>()
  #ended = false
  #used = false
  /** How many opens may run at once; a fraction grows to the next integer over one round. */
  #openLimit = 1
  /** Sessions the server refused for lack of slots, since the pool was made (metrics). */
  #sessionRefusals = 0
  /** Refusals in a row, for the pause's growth; reset when the pool grows past `#ceiling`. */
  #refusals = 0
  #growthTimer: NodeJS.Timeout | undefined
  /** Connections held when the server last refused one; undefined when it has room. */
  #ceiling: number | undefined
  #saturatedUntil = 0
  /** The acquire-timeout timer of the waiting callers (see #waitersChanged). */
  #waitTimer: NodeJS.Timeout | undefined
  /** The idle reaper (see #armReaper) and when it fires. */
  #reaper: NodeJS.Timeout | undefined
  #reaperAt = 0
  #lastRefusal: unknown
  #giveBackAfterMs = GIVE_BACK_AFTER_MS
  #nextGiveBackAt = 0
  /** A connection was given back and the reopen that follows will tell whether somebody took its slot. */
  #gaveBack = false
  #instruments: PoolInstruments | undefined

  constructor(
    name: string,
    connector: PoolConnector<C>,
    options: ResolvedPoolOptions,
    observer: PoolObserver<C> = {},
  ) {
    this.name = name
    this.#connector = connector
    this.options = options
    this.#observer = observer
    connector.onBroken = (connection) => this.#dropIdle(connection)
  }

  /** Times connections from now on for `instruments`; `undefined` stops. */
  instrument(instruments: PoolInstruments | undefined): void {
    this.#instruments = instruments
  }

  /** Hands out a connection: an idle one if possible, else a new one, else waits for a release. */
  acquire(signal?: AbortSignal): Promise<C> {
    const instruments = this.#instruments
    if (instruments === undefined) return this.#acquire(signal)
    const startedAt = performance.now()
    return this.#acquire(signal).then((connection) => {
      const now = performance.now()
      instruments.waited(now - startedAt)
      const entry = this.#inUse.get(connection)
      if (entry !== undefined) entry.acquiredAt = now
      return connection
    })
  }

  /**
   * The most recently used idle connection, handed out without a promise, when it is ready at once:
   * reused within SETTLE_AFTER_IDLE_MS, no validation due, not broken or expired, and `accept`ed by
   * the caller. Otherwise `undefined`, with the pool unchanged: {@link acquire} does the rest. This is
   * the common case of every statement under steady traffic, where a promise per acquire is most of
   * the pool's cost.
   */
  takeReady(accept: (connection: C) => boolean): C | undefined {
    const entry = this.#idle.at(-1)
    if (entry === undefined || this.#ended) return undefined
    const now = Date.now()
    const idleMs = now - entry.idleSince
    const validateAfter = this.options.validateAfterIdleMs
    if (idleMs >= SETTLE_AFTER_IDLE_MS || (validateAfter !== undefined && idleMs > validateAfter))
      return undefined
    if (this.#unusableReason(entry, now) !== undefined || !accept(entry.connection)) return undefined
    this.#idle.pop()
    this.#used = true
    this.#inUse.set(entry.connection, entry)
    const instruments = this.#instruments
    if (instruments !== undefined) {
      instruments.waited(0)
      entry.acquiredAt = performance.now()
    }
    return entry.connection
  }

  async #acquire(signal?: AbortSignal): Promise<C> {
    if (this.#ended) throw new DatabaseDestroyedError()
    this.#used = true

    let entry = this.#idle.pop()
    while (entry !== undefined) {
      const reason = this.#unusableReason(entry)
      if (reason === undefined) {
        this.#inUse.set(entry.connection, entry)
        const idleMs = Date.now() - entry.idleSince
        const validateAfter = this.options.validateAfterIdleMs
        // Checked inline so a connection reused at once (the hot path) costs no extra await.
        if (validateAfter !== undefined && idleMs > validateAfter) return this.#validated(entry)
        if (idleMs >= SETTLE_AFTER_IDLE_MS) return this.#settled(entry)
        return entry.connection
      }
      this.#close(entry, reason)
      entry = this.#idle.pop()
    }

    if (signal?.aborted) throw signal.reason
    return new Promise<C>((resolve, reject) => {
      // A caller that gave up leaves the queue at once rather than at acquireTimeoutMs: the
      // connection it would have got goes to the next waiter.
      const onAbort = () => {
        const index = this.#waiters.indexOf(waiter)
        if (index !== -1) this.#waiters.splice(index, 1)
        this.#waitersChanged()
        reject(signal?.reason)
      }
      const waiter: Waiter<C> = {
        resolve:
          signal === undefined
            ? resolve
            : (connection) => {
                signal.removeEventListener('abort', onAbort)
                resolve(connection)
              },
        reject:
          signal === undefined
            ? reject
            : (error) => {
                signal.removeEventListener('abort', onAbort)
                reject(error)
              },
        deadline: Date.now() + this.options.acquireTimeoutMs,
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#waiters.push(waiter)
      this.#waitersChanged()
      this.#grow()
    })
  }

  /**
   * Gives a connection back. `discard` closes it instead of keeping it (the caller saw it fail).
   * Releasing a connection twice, or one the pool does not know, is a no-op.
   */
  release(connection: C, discard = false): void {
    const entry = this.#inUse.get(connection)
    if (entry === undefined) return
    this.#inUse.delete(connection)
    if (entry.acquiredAt !== undefined) {
      this.#instruments?.used(performance.now() - entry.acquiredAt)
      entry.acquiredAt = undefined
    }

    const reason = this.#ended
      ? 'pool-ended'
      : discard
        ? 'discarded'
        : (this.#unusableReason(entry) ?? this.#giveBackReason())
    if (reason !== undefined) {
      this.#close(entry, reason)
      this.#grow()
      return
    }
    this.#handOff(entry)
  }

  /**
   * Closes every idle connection now (after a failover they point at the old primary). Connections
   * in use are left to finish; the next acquire opens fresh ones, resolving DNS again.
   */
  evictIdle(): number {
    const evicted = this.#idle.splice(0)
    for (const entry of evicted) this.#close(entry, 'evicted')
    return evicted.length
  }

  /**
   * Fails every waiting caller with `error` now (the server stopped answering: a connection being
   * opened for them would only reach its connect timeout). Opens in flight go on; what they open
   * goes idle or to later callers.
   */
  rejectWaiters(error: unknown): void {
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error)
    this.#waitersChanged()
  }

  /** Callers that gave up waiting for a connection (acquireTimeoutMs) since the pool was made. */
  get timeouts(): number {
    return this.#timeouts
  }

  /** Sessions the server refused for lack of slots (each one pauses the pool's growth), since the pool was made. */
  get sessionRefusals(): number {
    return this.#sessionRefusals
  }

  /** Current counts. */
  counts(): PoolCounts {
    return {
      total: this.#idle.length + this.#inUse.size + this.#connecting,
      idle: this.#idle.length,
      inUse: this.#inUse.size,
      waiting: this.#waiters.length,
      connecting: this.#connecting,
    }
  }

  /**
   * Closes the pool: waiting callers are rejected, idle connections closed, connections in use are
   * closed when released. Resolves once every idle connection and every connection being opened
   * has been closed. Never waits for a caller that holds a connection.
   */
  async end(): Promise<void> {
    if (this.#ended) return
    this.#ended = true
    for (const waiter of this.#waiters.splice(0)) waiter.reject(new DatabaseDestroyedError())
    clearTimeout(this.#waitTimer)
    this.#waitTimer = undefined
    clearTimeout(this.#growthTimer)
    this.#growthTimer = undefined
    clearTimeout(this.#reaper)
    this.#reaper = undefined
    for (const entry of this.#idle.splice(0)) this.#close(entry, 'pool-ended')
    // Settling one may start another (an open that completes now closes its connection): go again.
    while (this.#pending.size > 0) await Promise.allSettled(this.#pending)
  }

  /** Whether the server refused a session for lack of slots within the last 30 s. */
  get saturated(): boolean {
    return this.#ceiling !== undefined && Date.now() < this.#saturatedUntil
  }

  #size(): number {
    return this.#idle.length + this.#inUse.size + this.#connecting
  }

  #unusableReason(entry: Entry<C>, now = Date.now()): RemovalReason | undefined {
    if (this.#connector.isBroken(entry.connection)) return 'broken'
    if (this.options.maxLifetimeMs > 0 && now >= entry.expiresAt) return 'expired'
    return undefined
  }

  async #open(): Promise<Entry<C>> {
    const connection = await this.#connectWithDeadline()
    // A little jitter so connections opened together are not all recycled together.
    const lifetime = this.options.maxLifetimeMs * (1 - Math.random() * 0.1)
    return { connection, expiresAt: Date.now() + lifetime, idleSince: 0, idleUntil: 0 }
  }

  /**
   * The drivers have connect timeouts of their own, but not for every phase (TLS, authentication,
   * session setup), and each reports it differently: this deadline is the one every caller can rely on.
   */
  #connectWithDeadline(): Promise<C> {
    const timeoutMs = this.options.connectTimeoutMs
    const onOpen = this.#observer.onOpen
    const connect = () =>
      this.#connector
        .connect()
        .then(
          onOpen === undefined
            ? undefined
            : async (connection: C) => {
                try {
                  await onOpen(connection)
                } catch (error) {
                  await this.#connector.close(connection)
                  throw error
                }
                return connection
              },
        )
        .catch((error: unknown) => {
          // Nothing of the caller's was sent: whoever classifies this error later must know.
          markConnectPhase(error)
          throw error
        })
    const traced = CONNECT_CHANNEL.hasSubscribers
      ? () => CONNECT_CHANNEL.tracePromise(connect, { endpoint: this.name })
      : connect
    const bounded = () =>
      withDeadline(
        traced,
        timeoutMs,
        () => {
          throw new ConnectTimeoutError(this.name, timeoutMs)
        },
        // Too late: the caller has its error already. Do not leak the connection.
        (connection) => this.#track(this.#connector.close(connection)),
      )
    const instruments = this.#instruments
    return instruments === undefined ? bounded() : instruments.connect(bounded)
  }

  /**
   * The connection sat idle long enough that the server (or a NAT, or a proxy) may have closed it
   * without this process noticing, e.g. while a Lambda container was frozen. Ping it; if that fails,
   * destroy it and acquire again, so the caller only ever sees a connection that just answered.
   */
  async #validated(entry: Entry<C>): Promise<C> {
    try {
      await this.#validateWithDeadline(entry.connection)
      return entry.connection
    } catch {
      // The caller does not care why: it gets another connection, or the error of opening one.
      if (this.#inUse.delete(entry.connection)) {
        this.#connector.destroy(entry.connection)
        this.#close(entry, 'failed-validation')
      }
      return this.#acquire()
    }
  }

  /**
   * The connection sat idle a while: its server may have closed it while this process was too busy
   * to notice (a long GC pause, a CPU-starved container, a blocked event loop), the close waiting
   * unread in the socket. A turn of the event loop lets such pending socket events land; a
   * connection that turns out closed is dropped and the caller gets another. Costs two macrotask
   * hops, and only on a connection idle for SETTLE_AFTER_IDLE_MS or more.
   */
  async #settled(entry: Entry<C>): Promise<C> {
    // Two hops: called from an I/O callback, the first runs in the same loop iteration, before the
    // next poll for socket events; the second runs after it.
    await new Promise<void>((resolve) => setImmediate(resolve))
    await new Promise<void>((resolve) => setImmediate(resolve))
    if (!this.#connector.isBroken(entry.connection)) return entry.connection
    if (this.#inUse.delete(entry.connection)) this.#close(entry, 'broken')
    return this.#acquire()
  }

  /** A dead peer may never answer the ping: bound it like opening a connection, by connectTimeoutMs. */
  #validateWithDeadline(connection: C): Promise<void> {
    const connector = this.#connector
    const validate = connector.validate
    if (validate === undefined) return Promise.resolve()
    const timeoutMs = this.options.connectTimeoutMs
    return withDeadline(
      () => validate.call(connector, connection),
      timeoutMs,
      () => {
        throw new ConnectTimeoutError(this.name, timeoutMs)
      },
    )
  }

  #pushIdle(entry: Entry<C>): void {
    const now = Date.now()
    entry.idleSince = now
    this.#idle.push(entry)
    const idleTimeoutMs = this.options.idleTimeoutMs
    if (idleTimeoutMs <= 0) return
    // A server short of slots needs them more than this pool needs an idle connection: another
    // process may be waiting for one. (`min` still holds: #reapIdle keeps the floor.)
    entry.idleUntil =
      now + (this.saturated ? Math.min(idleTimeoutMs, SATURATED_IDLE_TIMEOUT_MS) : idleTimeoutMs)
    if (this.#reaper === undefined || entry.idleUntil < this.#reaperAt) this.#armReaper(entry.idleUntil, now)
  }

  /**
   * One timer for the whole idle list rather than one per idle connection: every statement releases
   * its connection, and arming and clearing a timer on each release and acquire cost more than the
   * rest of the pool's work per statement (V8 profile, bench/overhead/profile.ts). The timer fires at
   * the earliest deadline and re-arms for the next.
   */
  #armReaper(at: number, now: number): void {
    clearTimeout(this.#reaper)
    this.#reaperAt = at
    this.#reaper = setTimeout(() => this.#reapIdle(), Math.max(1, at - now))
    this.#reaper.unref()
  }

  /** An idle connection broke (its server went away): close it now, so counts() and `min` see the truth. */
  #dropIdle(connection: C): void {
    const index = this.#idle.findIndex((entry) => entry.connection === connection)
    if (index === -1) return
    const [entry] = this.#idle.splice(index, 1) as [Entry<C>]
    this.#close(entry, 'broken')
    this.#fillToMin()
  }

  /** Closes the connections idle past their deadline, keeping the floor of `min`. */
  #reapIdle(): void {
    this.#reaper = undefined
    if (this.#ended) return
    const now = Date.now()
    let next = Number.POSITIVE_INFINITY
    let closed = false
    // Longest idle first: the list is a stack, its bottom has waited longest.
    for (const entry of [...this.#idle]) {
      if (entry.idleUntil > now) {
        next = Math.min(next, entry.idleUntil)
        continue
      }
      const index = this.#idle.indexOf(entry)
      if (index === -1) continue
      const keep = this.#size() <= this.options.min && this.#unusableReason(entry) === undefined
      this.#idle.splice(index, 1)
      if (keep) {
        // The floor of `min` connections: look again after another idle period (#pushIdle re-arms).
        this.#pushIdle(entry)
        continue
      }
      this.#close(entry, 'idle')
      closed = true
    }
    if (closed) this.#fillToMin()
    if (next !== Number.POSITIVE_INFINITY && (this.#reaper === undefined || next < this.#reaperAt)) {
      this.#armReaper(next, now)
    }
  }

  #close(entry: Entry<C>, reason: RemovalReason): void {
    this.#observer.onRemove?.(entry.connection, reason)
    this.#track(this.#connector.close(entry.connection))
  }

  /** Keeps `work` in `#pending` until it settles, for end() to await. */
  #track(work: Promise<unknown>): void {
    this.#pending.add(work)
    const forget = (): void => {
      this.#pending.delete(work)
    }
    work.then(forget, forget)
  }

  /** Gives a connection that is ready for use to the longest-waiting caller, or keeps it idle. */
  #handOff(entry: Entry<C>): void {
    const waiter = this.#waiters.shift()
    if (waiter === undefined) {
      this.#pushIdle(entry)
      return
    }
    if (this.#waiters.length === 0) this.#waitersChanged()
    this.#inUse.set(entry.connection, entry)
    waiter.resolve(entry.connection)
  }

  /**
   * Keeps the one acquire-timeout timer right after the queue changed: armed (and holding the process
   * open, as a caller waiting for a connection should) while anyone waits, for the longest waiter's
   * deadline; unreferenced once nobody does. One timer for the queue rather than one per waiting
   * caller: under load most acquires wait briefly, and arming and clearing a timer for each was a
   * cost of its own. Every waiter has the same timeout, so the queue is in deadline order.
   */
  #waitersChanged(): void {
    const head = this.#waiters[0]
    const timer = this.#waitTimer
    if (head === undefined) {
      timer?.unref()
      return
    }
    if (timer !== undefined) {
      timer.ref()
      return
    }
    this.#waitTimer = setTimeout(() => this.#expireWaiters(), Math.max(1, head.deadline - Date.now()))
  }

  /** Fails the callers that waited acquireTimeoutMs, then re-arms for the next deadline. */
  #expireWaiters(): void {
    this.#waitTimer = undefined
    const now = Date.now()
    while (this.#waiters.length > 0 && (this.#waiters[0] as Waiter<C>).deadline <= now) {
      const waiter = this.#waiters.shift() as Waiter<C>
      this.#timeouts++
      waiter.reject(this.#timeoutError())
    }
    this.#waitersChanged()
  }

  /**
   * Opens connections while callers wait for more than are being opened, within `max`, the open
   * limit, and not during a growth pause.
   */
  #grow(): void {
    if (this.#ended || this.#growthTimer !== undefined) return
    while (
      this.#waiters.length > this.#connecting &&
      this.#size() < this.options.max &&
      this.#connecting < Math.floor(this.#openLimit) &&
      // Past the size at which the server last refused, one open at a time tests for room.
      (this.#ceiling === undefined || this.#size() < this.#ceiling || this.#connecting === 0)
    ) {
      this.#openOne()
    }
  }

  /**
   * Opens one connection, for whoever waits once it is open (not necessarily the caller it was opened
   * for: that one may have timed out or been served by a release), else kept idle.
   */
  #openOne(): void {
    // Past the ceiling, this open tests whether the server has room again.
    const beyondCeiling = this.#ceiling !== undefined && this.#size() >= this.#ceiling
    // Counted until the connection is placed (handed out or idle), in the same tick: a release in
    // between must not see a free slot that is about to be filled.
    this.#connecting++
    const opening = this.#open().then(
      (entry) => {
        this.#connecting--
        // Checked here, in the tick the connection is placed: end() may have run since it opened.
        if (this.#ended) {
          this.#close(entry, 'pool-ended')
          return
        }
        if (this.#gaveBack) {
          // The slot given back was still free: nobody was waiting for it.
          this.#gaveBack = false
          this.#giveBackAfterMs = Math.min(MAX_GIVE_BACK_AFTER_MS, this.#giveBackAfterMs * 2)
          this.#nextGiveBackAt = Date.now() + jittered(this.#giveBackAfterMs)
        }
        if (beyondCeiling) {
          // The server has room again: grow as from a cold start.
          this.#ceiling = undefined
          this.#refusals = 0
        }
        // One more open at once per round of successes: +1/limit per success. Not during a pause: an
        // open that was in flight with the refused ones must not widen the next try.
        if (this.#growthTimer === undefined) {
          this.#openLimit = Math.min(this.options.max, this.#openLimit + 1 / Math.floor(this.#openLimit))
        }
        this.#handOff(entry)
        this.#grow()
        this.#fillToMin()
      },
      (error: unknown) => {
        this.#connecting--
        if (this.#ended) return
        if (isSessionRefusal(classifyError(error, { phase: 'connect' }))) {
          this.#pauseGrowth(error)
          return
        }
        // The server is unreachable, too slow or rejected us: the longest waiter learns it now rather
        // than at its deadline, and can be sent elsewhere; the others get another try.
        const waiter = this.#waiters.shift()
        if (waiter !== undefined) {
          this.#waitersChanged()
          waiter.reject(error)
        }
        this.#grow()
      },
    )
    this.#track(opening)
  }

  /**
   * The server refused a session for lack of slots. Waiting callers keep waiting (for a release, or
   * for the next open); the pool stops opening for a pause that grows with each refusal in a row, and
   * then opens one connection at a time again.
   */
  #pauseGrowth(error: unknown): void {
    this.#sessionRefusals++
    const held = this.#idle.length + this.#inUse.size
    this.#lastRefusal = error
    this.#saturatedUntil = Date.now() + SATURATION_MEMORY_MS
    this.#openLimit = 1
    if (this.#gaveBack) {
      // Somebody took the slot this pool gave back: keep giving back at the first pace.
      this.#gaveBack = false
      this.#giveBackAfterMs = GIVE_BACK_AFTER_MS
    }
    if (this.#ceiling === undefined) this.#nextGiveBackAt = Date.now() + jittered(this.#giveBackAfterMs)
    this.#ceiling = held
    // Opens that were in flight together fail together: one pause for them all.
    if (this.#growthTimer !== undefined) return
    this.#refusals++
    const delayMs =
      held > 0
        ? equalJitter(Math.min(MAX_HOLDING_PAUSE_MS, HOLDING_PAUSE_MS * 2 ** (this.#refusals - 1)))
        : Math.random() * Math.min(MAX_EMPTY_PAUSE_MS, EMPTY_PAUSE_MS * 2 ** (this.#refusals - 1))
    this.#growthTimer = setTimeout(() => {
      this.#growthTimer = undefined
      this.#grow()
    }, delayMs)
    this.#growthTimer.unref()
  }

  /**
   * While the server is short of slots, a pool holding more than one connection closes one on
   * release from time to time, so that a process holding none can get a session.
   */
  #giveBackReason(): RemovalReason | undefined {
    if (this.#ceiling === undefined || this.#gaveBack) return undefined
    const now = Date.now()
    if (now < this.#nextGiveBackAt || now >= this.#saturatedUntil) return undefined
    if (this.#idle.length + this.#inUse.size + 1 <= 1) return undefined
    this.#gaveBack = true
    return 'given-back'
  }

  #timeoutError(): PoolTimeoutError {
    const refusal = this.saturated
      ? { open: this.#idle.length + this.#inUse.size, error: this.#lastRefusal }
      : undefined
    return new PoolTimeoutError(this.name, this.options.acquireTimeoutMs, this.options.max, refusal)
  }

  #fillToMin(): void {
    if (!this.#used || this.#ended || this.#growthTimer !== undefined) return
    while (this.#size() < this.options.min && this.#connecting < Math.floor(this.#openLimit)) {
      // A failed top-up fails the longest waiter, if any, like every failed open; with nobody waiting
      // it is nobody's error, and the next acquire opens on demand.
      this.#openOne()
    }
  }
}

/** Uniform between half of `ceilingMs` and `ceilingMs`. */
function equalJitter(ceilingMs: number): number {
  return ceilingMs / 2 + (Math.random() * ceilingMs) / 2
}

/** `ms` stretched by up to half, so pools that saw the same refusal do not act in the same instant. */
function jittered(ms: number): number {
  return ms * (1 + Math.random() / 2)
}
