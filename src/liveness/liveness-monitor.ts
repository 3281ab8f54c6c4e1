import { ServerUnresponsiveError } from '../errors.js'
import { classifyError, isSessionRefusal } from '../retry/classify-error.js'
import { withDeadline } from '../retry/deadline.js'

/** How the monitor reaches the server, over a connection of its own (never a pooled one). */
export interface LivenessProbe<C> {
  /** Opens a connection; the monitor bounds it by its own deadline. */
  connect(): Promise<C>
  /** One cheap round trip (`select 1` / `COM_PING`). */
  ping(connection: C): Promise<void>
  /** Destroys the connection now; must not throw. */
  destroy(connection: C): void
}

/** When the monitor probes and what it calls unresponsive; see `PoolConfig.probeAfterMs`. */
export interface LivenessOptions {
  /** A statement running longer than this starts a probe; `undefined` turns the monitor off. */
  readonly probeAfterMs: number | undefined
  /** A probe not answered within this declares the server unresponsive. */
  readonly probeTimeoutMs: number
}

/** What the monitor tells its endpoint. */
export interface LivenessListener {
  /** The server stopped answering; `failed` statements in flight were failed with `error`. */
  unresponsive(error: Error, failed: number): void
  /** The server answers again, after `downForMs`. */
  responsive(downForMs: number): void
}

/** One statement in flight: when it started, and how to fail it if its server stops answering. */
export interface Watched {
  readonly startedAt: number
  readonly fail: (error: Error) => void
}

/** How long the probe connection is kept once no statement needs it. */
const PROBE_CONNECTION_IDLE_MS = 30_000

/**
 * Tells a slow statement from a server that stopped answering (a frozen VM, stuck storage, a network
 * partition where the kernel still acknowledges): TCP keepalive and the drivers see nothing wrong
 * there, and a statement would wait forever.
 *
 * Statements in flight are tracked in start order. While any has run longer than `probeAfterMs`,
 * the monitor pings the server over a connection of its own, at most once per `probeAfterMs`. A ping
 * not answered within `probeTimeoutMs`, when no statement of the endpoint completed meanwhile, makes
 * the server unresponsive: every statement in flight is failed, new ones fail at once, and the probe
 * repeats until the server answers again. A server that answers with an error (too many connections,
 * bad credentials) is alive. A legitimately slow statement on a healthy server is never cut short.
 * The hot path pays a Set insertion and deletion per statement; the ticker runs only while
 * statements are in flight. (The AWS Advanced NodeJS Wrapper's host monitoring plugin does the same
 * with a failure-detection time of tens of seconds by default.)
 */
export class LivenessMonitor<C> {
  readonly #probe: LivenessProbe<C>
  readonly #options: LivenessOptions
  readonly #listener: LivenessListener
  readonly #name: string
  readonly #running = new Set<Watched>()
  readonly #tickMs: number
  #ticker: NodeJS.Timeout | undefined
  #probing = false
  #lastProbeAt = 0
  /** Statements that settled so far: a probe compares it before and after (cheaper than a clock). */
  #completed = 0
  /** The ticker's clock, good to a tick while it runs; read by {@link now} on the hot path. */
  #clock = 0
  #downSince: number | undefined
  #connection: C | undefined
  #connectionTimer: NodeJS.Timeout | undefined
  #closed = false

  constructor(name: string, probe: LivenessProbe<C>, options: LivenessOptions, listener: LivenessListener) {
    this.#name = name
    this.#probe = probe
    this.#options = options
    this.#listener = listener
    this.#tickMs = Math.max(20, Math.min(100, (options.probeAfterMs ?? 100) / 4))
  }

  /** True while the server is known not to answer. */
  get unresponsive(): boolean {
    return this.#downSince !== undefined
  }

  get enabled(): boolean {
    return this.#options.probeAfterMs !== undefined
  }

  /**
   * The time to give {@link Watched.startedAt}: the ticker's clock while it runs (statements are
   * judged to a tick, 100 ms at most, which saves a clock read per statement), else the real one.
   */
  now(): number {
    return this.#ticker === undefined ? performance.now() : this.#clock
  }

  /** A statement started. Call {@link end} when it settles. */
  start(watched: Watched): void {
    this.#running.add(watched)
    if (this.#ticker === undefined && !this.#closed) {
      this.#clock = watched.startedAt
      this.#ticker = setInterval(() => this.#tick(), this.#tickMs)
      this.#ticker.unref()
    }
  }

  /** A statement settled (answered, failed, or was failed by the monitor). */
  end(watched: Watched): void {
    if (this.#running.delete(watched)) this.#completed++
  }

  close(): void {
    this.#closed = true
    clearInterval(this.#ticker)
    this.#ticker = undefined
    this.#dropConnection()
  }

  #tick(): void {
    const now = performance.now()
    this.#clock = now
    if (this.#closed || this.#probing) return
    if (this.#downSince === undefined) {
      const oldest = this.#running.values().next().value
      if (oldest === undefined) {
        clearInterval(this.#ticker)
        this.#ticker = undefined
        return
      }
      const probeAfterMs = this.#options.probeAfterMs ?? Number.POSITIVE_INFINITY
      if (now - oldest.startedAt < probeAfterMs || now - this.#lastProbeAt < probeAfterMs) return
    }
    void this.#runProbe(now)
  }

  async #runProbe(startedAt: number): Promise<void> {
    this.#probing = true
    this.#lastProbeAt = startedAt
    const completedBefore = this.#completed
    let answered: boolean
    try {
      answered = await this.#ping()
    } finally {
      this.#probing = false
    }
    if (this.#closed) return
    if (answered) {
      const downSince = this.#downSince
      if (downSince !== undefined) {
        this.#downSince = undefined
        this.#listener.responsive(Math.round(performance.now() - downSince))
      }
      return
    }
    // A statement that completed while the probe waited proves the server works; the probe's own
    // connection is what failed.
    if (this.#downSince !== undefined || this.#completed !== completedBefore) return
    this.#downSince = startedAt
    const error = new ServerUnresponsiveError(this.#name, this.#options.probeTimeoutMs)
    const inFlight = [...this.#running]
    this.#running.clear()
    for (const watched of inFlight) watched.fail(error)
    this.#listener.unresponsive(error, inFlight.length)
  }

  /** Pings over the monitor's connection, opening it first if needed. False: no answer in time. */
  #ping(): Promise<boolean> {
    const answered = this.#pingOnce().then(
      () => true,
      (error: unknown) => {
        this.#dropConnection()
        return serverAnswered(error)
      },
    )
    return withDeadline(answered, this.#options.probeTimeoutMs, () => {
      this.#dropConnection()
      return false
    })
  }

  async #pingOnce(): Promise<void> {
    clearTimeout(this.#connectionTimer)
    const kept = this.#connection
    if (kept !== undefined) {
      try {
        await this.#probe.ping(kept)
        this.#keepConnection()
        return
      } catch {
        // The kept connection may have died on its own (a NAT timeout, a frozen Lambda container):
        // that says nothing about the server. Try once more over a fresh one, within the same deadline.
        if (this.#connection === kept) this.#dropConnection()
      }
    }
    let connection: C = await this.#probe.connect()
    if (this.#closed || this.#connection !== undefined) {
      this.#probe.destroy(connection)
      if (this.#connection === undefined) return
      connection = this.#connection
    } else {
      this.#connection = connection
    }
    await this.#probe.ping(connection)
    this.#keepConnection()
  }

  /** Kept for the next probe, closed once no statement has needed one for a while. */
  #keepConnection(): void {
    this.#connectionTimer = setTimeout(() => this.#dropConnection(), PROBE_CONNECTION_IDLE_MS)
    this.#connectionTimer.unref()
  }

  #dropConnection(): void {
    clearTimeout(this.#connectionTimer)
    const connection = this.#connection
    this.#connection = undefined
    if (connection !== undefined) this.#probe.destroy(connection)
  }
}

/**
 * The probe failed with the server's own answer (bad credentials, too many connections): the server
 * is alive. A failing credential source says nothing about the server either.
 */
function serverAnswered(error: unknown): boolean {
  const verdict = classifyError(error, { phase: 'connect' })
  if (verdict.code === 'CREDENTIALS_UNAVAILABLE' || verdict.code === 'CREDENTIALS_FAILED') return true
  return isSessionRefusal(verdict) || (verdict.category !== 'unavailable' && verdict.category !== 'ambiguous')
}
