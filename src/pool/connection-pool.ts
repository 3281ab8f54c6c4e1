import { EventEmitter } from 'node:events'
import type { ResolvedPoolOptions } from '../config/pool-options.js'
import { ConnectTimeoutError, DatabaseDestroyedError, PoolTimeoutError } from '../errors.js'
import { markConnectPhase } from '../retry/classify-error.js'

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
  /** Callers waiting for a connection. */
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

interface Entry<C> {
  readonly connection: C
  readonly expiresAt: number
  idleTimer: NodeJS.Timeout | undefined
  /** When it was last put back in the pool; only tracked when `validateAfterIdleMs` is set. */
  idleSince: number
}

interface Waiter<C> {
  readonly resolve: (connection: C) => void
  readonly reject: (error: unknown) => void
  readonly timer: NodeJS.Timeout
}

/**
 * A connection pool with the same semantics for every driver: bounded size, a bounded wait for a
 * free connection, bounded connection age, idle reaping, and connections that broke are never
 * handed out again.
 *
 * Idle connections are reused last-in first-out: a burst's extra connections sit at the bottom of
 * the stack and are the ones the idle timeout reaps, so the pool shrinks back after the burst.
 */
export class ConnectionPool<C> extends EventEmitter<{
  connect: [connection: C]
  remove: [connection: C, reason: RemovalReason]
}> {
  readonly name: string
  readonly options: ResolvedPoolOptions
  readonly #connector: PoolConnector<C>
  readonly #idle: Entry<C>[] = []
  readonly #inUse = new Map<C, Entry<C>>()
  readonly #waiters: Waiter<C>[] = []
  #connecting = 0
  #closing = 0
  #ended = false
  #used = false

  constructor(name: string, connector: PoolConnector<C>, options: ResolvedPoolOptions) {
    super()
    this.name = name
    this.#connector = connector
    this.options = options
    connector.onBroken = (connection) => this.#dropIdle(connection)
  }

  /** Hands out a connection: an idle one if possible, else a new one, else waits for a release. */
  async acquire(): Promise<C> {
    if (this.#ended) throw new DatabaseDestroyedError()
    this.#used = true

    let entry = this.#idle.pop()
    while (entry !== undefined) {
      clearTimeout(entry.idleTimer)
      entry.idleTimer = undefined
      const reason = this.#unusableReason(entry)
      if (reason === undefined) {
        this.#inUse.set(entry.connection, entry)
        const validateAfter = this.options.validateAfterIdleMs
        // Checked inline so a fresh connection (or an unset option) costs no extra await.
        if (validateAfter !== undefined && Date.now() - entry.idleSince > validateAfter) {
          return this.#validated(entry)
        }
        return entry.connection
      }
      this.#close(entry, reason)
      entry = this.#idle.pop()
    }

    if (this.#size() < this.options.max) {
      let opened: Entry<C>
      try {
        opened = await this.#open()
      } catch (error) {
        // The slot this caller reserved is free again: let the longest waiter use it.
        this.#serveWaiters()
        throw error
      }
      this.#inUse.set(opened.connection, opened)
      this.#fillToMin()
      return opened.connection
    }

    return new Promise<C>((resolve, reject) => {
      const waiter: Waiter<C> = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const index = this.#waiters.indexOf(waiter)
          if (index !== -1) this.#waiters.splice(index, 1)
          reject(new PoolTimeoutError(this.name, this.options.acquireTimeoutMs, this.options.max))
        }, this.options.acquireTimeoutMs),
      }
      this.#waiters.push(waiter)
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

    const reason = this.#ended ? 'pool-ended' : discard ? 'discarded' : this.#unusableReason(entry)
    if (reason !== undefined) {
      this.#close(entry, reason)
      this.#serveWaiters()
      return
    }

    const waiter = this.#waiters.shift()
    if (waiter !== undefined) {
      clearTimeout(waiter.timer)
      this.#inUse.set(connection, entry)
      waiter.resolve(connection)
      return
    }
    this.#pushIdle(entry)
  }

  /**
   * Closes every idle connection now (after a failover they point at the old primary). Connections
   * in use are left to finish; the next acquire opens fresh ones, resolving DNS again.
   */
  evictIdle(): number {
    const evicted = this.#idle.splice(0)
    for (const entry of evicted) {
      clearTimeout(entry.idleTimer)
      this.#close(entry, 'evicted')
    }
    return evicted.length
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
    for (const waiter of this.#waiters.splice(0)) {
      clearTimeout(waiter.timer)
      waiter.reject(new DatabaseDestroyedError())
    }
    for (const entry of this.#idle.splice(0)) {
      clearTimeout(entry.idleTimer)
      this.#close(entry, 'pool-ended')
    }
    while (this.#connecting > 0 || this.#closing > 0) {
      await new Promise((resolve) => setImmediate(resolve))
    }
  }

  #size(): number {
    return this.#idle.length + this.#inUse.size + this.#connecting
  }

  #unusableReason(entry: Entry<C>): RemovalReason | undefined {
    if (this.#connector.isBroken(entry.connection)) return 'broken'
    if (this.options.maxLifetimeMs > 0 && Date.now() >= entry.expiresAt) return 'expired'
    return undefined
  }

  async #open(): Promise<Entry<C>> {
    this.#connecting++
    let connection: C
    try {
      connection = await this.#connectWithDeadline()
    } finally {
      this.#connecting--
    }
    // A little jitter so connections opened together are not all recycled together.
    const lifetime = this.options.maxLifetimeMs * (1 - Math.random() * 0.1)
    const entry: Entry<C> = {
      connection,
      expiresAt: Date.now() + lifetime,
      idleTimer: undefined,
      idleSince: 0,
    }
    if (this.#ended) {
      this.#close(entry, 'pool-ended')
      throw new DatabaseDestroyedError()
    }
    this.emit('connect', connection)
    return entry
  }

  /**
   * The drivers have connect timeouts of their own, but not for every phase (TLS, authentication,
   * session setup), and each reports it differently: this deadline is the one every caller can rely on.
   */
  #connectWithDeadline(): Promise<C> {
    const timeoutMs = this.options.connectTimeoutMs
    return new Promise<C>((resolve, reject) => {
      let timedOut = false
      const timer = setTimeout(() => {
        timedOut = true
        reject(new ConnectTimeoutError(this.name, timeoutMs))
      }, timeoutMs)
      this.#connector.connect().then(
        (connection) => {
          clearTimeout(timer)
          if (timedOut) {
            // Too late: the caller has its error already. Do not leak the connection.
            this.#closing++
            void this.#connector.close(connection).finally(() => {
              this.#closing--
            })
            return
          }
          resolve(connection)
        },
        (error: unknown) => {
          clearTimeout(timer)
          // Nothing of the caller's was sent: whoever classifies this error later must know.
          markConnectPhase(error)
          if (!timedOut) reject(error)
        },
      )
    })
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
      return this.acquire()
    }
  }

  /** A dead peer may never answer the ping: bound it like opening a connection, by connectTimeoutMs. */
  #validateWithDeadline(connection: C): Promise<void> {
    const connector = this.#connector
    const validate = connector.validate
    if (validate === undefined) return Promise.resolve()
    const timeoutMs = this.options.connectTimeoutMs
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new ConnectTimeoutError(this.name, timeoutMs)), timeoutMs)
      validate.call(connector, connection).then(
        () => {
          clearTimeout(timer)
          resolve()
        },
        (error: unknown) => {
          clearTimeout(timer)
          reject(error)
        },
      )
    })
  }

  #pushIdle(entry: Entry<C>): void {
    if (this.options.validateAfterIdleMs !== undefined) entry.idleSince = Date.now()
    if (this.options.idleTimeoutMs > 0) {
      entry.idleTimer = setTimeout(() => this.#reapIdle(entry), this.options.idleTimeoutMs)
      entry.idleTimer.unref()
    }
    this.#idle.push(entry)
  }

  /** An idle connection broke (its server went away): close it now, so counts() and `min` see the truth. */
  #dropIdle(connection: C): void {
    const index = this.#idle.findIndex((entry) => entry.connection === connection)
    if (index === -1) return
    const [entry] = this.#idle.splice(index, 1) as [Entry<C>]
    clearTimeout(entry.idleTimer)
    this.#close(entry, 'broken')
    this.#fillToMin()
  }

  #reapIdle(entry: Entry<C>): void {
    entry.idleTimer = undefined
    const index = this.#idle.indexOf(entry)
    if (index === -1) return
    if (this.#size() <= this.options.min && this.#unusableReason(entry) === undefined) {
      // Keep the floor of `min` connections; look again after another idle period.
      this.#idle.splice(index, 1)
      this.#pushIdle(entry)
      return
    }
    this.#idle.splice(index, 1)
    this.#close(entry, 'idle')
    this.#fillToMin()
  }

  #close(entry: Entry<C>, reason: RemovalReason): void {
    this.#closing++
    this.emit('remove', entry.connection, reason)
    void this.#connector.close(entry.connection).finally(() => {
      this.#closing--
    })
  }

  /** A connection slot was freed: open a connection for the longest-waiting caller. */
  #serveWaiters(): void {
    if (this.#waiters.length === 0 || this.#ended || this.#size() >= this.options.max) return
    this.#open().then(
      (entry) => {
        const waiter = this.#waiters.shift()
        if (waiter === undefined) {
          this.#pushIdle(entry)
          return
        }
        clearTimeout(waiter.timer)
        this.#inUse.set(entry.connection, entry)
        waiter.resolve(entry.connection)
      },
      (error: unknown) => {
        // The server refused or timed out: fail the first waiter now rather than at its deadline.
        const waiter = this.#waiters.shift()
        if (waiter !== undefined) {
          clearTimeout(waiter.timer)
          waiter.reject(error)
        }
        this.#serveWaiters()
      },
    )
  }

  #fillToMin(): void {
    if (!this.#used || this.#ended) return
    while (this.#size() < this.options.min) {
      this.#open().then(
        (entry) => {
          const waiter = this.#waiters.shift()
          if (waiter !== undefined) {
            clearTimeout(waiter.timer)
            this.#inUse.set(entry.connection, entry)
            waiter.resolve(entry.connection)
          } else {
            this.#pushIdle(entry)
          }
        },
        // A background top-up failing is not anyone's error: the next acquire opens on demand.
        () => this.#serveWaiters(),
      )
    }
  }
}
