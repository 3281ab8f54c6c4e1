import { OPERATION_SPANS, traceOperation } from '../diagnostics/operation-spans.js'
import type { Endpoint } from '../endpoint/endpoint.js'
import type { ResilientEvents } from '../events/resilient-events.js'
import { classifyError } from '../retry/classify-error.js'
import { withDeadline } from '../retry/deadline.js'

/**
 * How soon discovery probes again while no candidate accepts writes; doubles up to the maximum, so
 * a promotion is found within ~500 ms of happening, however long the outage lasted, while a writer
 * misconfigured for good is probed at most twice a second, for at most GIVE_UP_AFTER_MS.
 */
const FIRST_PROBE_INTERVAL_MS = 100
const MAX_PROBE_INTERVAL_MS = 500
/** After this long without a writer, discovery stops until the next failure restarts it. */
const GIVE_UP_AFTER_MS = 60_000

/**
 * Knows which writer candidate accepts writes, and finds it again when the writer fails, like
 * libpq's `target_session_attrs=read-write`: all candidates are probed at once, each over a fresh
 * connection (so DNS is resolved again) bounded by its connect timeout.
 *
 * A failure only *suspects* the writer. One discovery runs at a time; while no candidate accepts
 * writes (the old primary is down and the replica not yet promoted) it probes with a growing interval
 * (100 ms, 200 ms, 400 ms, then every 500 ms), so a promotion is found soon after it happens.
 */
export class WriterTracker {
  /** The configured writers, then (with topology discovery) one per instance of the cluster. */
  readonly #candidates: Endpoint[]
  /** The candidates topology discovery added: instances reached directly, not through DNS. */
  readonly #instances = new Set<Endpoint>()
  readonly #events: ResilientEvents
  #current: Endpoint
  #discovery: Promise<void> | undefined
  /** Counts finished discoveries: a topology read that began before one is too old to route writes by. */
  #generation = 0
  #closed = false
  /** Told when a discovery starts (the writer is suspected) and when it ends; set by the cluster. */
  onDiscovery: ((phase: 'started' | 'ended') => void) | undefined

  constructor(candidates: ReadonlyArray<Endpoint>, events: ResilientEvents) {
    this.#candidates = [...candidates]
    this.#events = events
    this.#current = candidates[0] as Endpoint
  }

  /** The endpoint writes go to now. */
  get current(): Endpoint {
    return this.#current
  }

  get candidates(): ReadonlyArray<Endpoint> {
    return this.#candidates
  }

  /**
   * Increases each time a discovery ends: a topology read that started under an older generation
   * was read before the last failover (or during it) and must not move writes.
   */
  get generation(): number {
    return this.#generation
  }

  /** True while a discovery is running (the writer is suspected). */
  get discovering(): boolean {
    return this.#discovery !== undefined
  }

  /** A new instance of the cluster: probed like the others from the next discovery on. */
  addCandidate(endpoint: Endpoint): void {
    if (!this.#candidates.includes(endpoint)) this.#candidates.push(endpoint)
    this.#instances.add(endpoint)
  }

  /** An instance left the cluster. The current writer is never removed: it leaves by a discovery. */
  removeCandidate(endpoint: Endpoint): boolean {
    const index = this.#candidates.indexOf(endpoint)
    if (index < 0 || endpoint === this.#current) return false
    this.#candidates.splice(index, 1)
    this.#instances.delete(endpoint)
    return true
  }

  /**
   * Moves writes to `endpoint` (the topology's writer instance, reached directly) after a fresh
   * connection confirms it accepts writes. Only from a configured endpoint (the cluster endpoint,
   * resolved by DNS) and only if no discovery ran or is running since `generation` was read: the
   * same server by a direct route, so it is no failover and no event says so.
   */
  async adopt(endpoint: Endpoint, generation: number): Promise<boolean> {
    const previous = this.#current
    if (this.#closed || endpoint === previous || this.#discovery !== undefined) return false
    if (generation !== this.#generation) return false
    const role = await endpoint.probeRole().catch(() => undefined)
    if (role !== 'writer' || this.#closed || this.#current !== previous) return false
    if (this.#discovery !== undefined || generation !== this.#generation) return false
    this.#current = endpoint
    endpoint.stopDraining()
    previous.drain()
    return true
  }

  /** Probes for the writer before the first write when there is more than one candidate. */
  async initialize(): Promise<void> {
    if (this.#candidates.length > 1) {
      this.suspect(this.#current, 'startup')
      await this.settled(this.#candidates[0]?.settings.pool.connectTimeoutMs ?? 5_000)
    }
  }

  /**
   * Resolves when no discovery is running, or after `maxWaitMs`, whichever is first: a caller about
   * to retry waits a little for the writer to be found rather than failing on the old one again.
   */
  async settled(maxWaitMs: number): Promise<void> {
    const discovery = this.#discovery
    if (discovery === undefined) return
    await withDeadline(discovery, maxWaitMs, () => undefined)
  }

  /**
   * The writer `endpoint` failed in a way that may mean it is no longer the writer (a read-only
   * error, a lost connection, a refused connection). Its idle connections are closed: they may
   * point at a demoted primary. Then discovery starts, unless it is running already.
   */
  suspect(endpoint: Endpoint, reason: string): void {
    if (this.#closed || endpoint !== this.#current) return
    // A read-only error says the node changed role: none of its connections may be reused until the
    // writer is found. After a lost connection only the idle ones are suspect (a broken one is never
    // pooled anyway).
    if (reason === 'read-only') endpoint.drain()
    else if (reason !== 'startup') endpoint.evictIdle()
    if (this.#discovery !== undefined) return
    this.#discovery = traceOperation(
      OPERATION_SPANS.writerDiscovery,
      () => ({ 'kysely_resilient.endpoint.name': endpoint.name, 'kysely_resilient.reason': reason }),
      () => this.#discover(reason),
    ).finally(() => {
      this.#discovery = undefined
      this.#generation++
      // Connections of the writer found (or kept) are good again; the others may lead to a demoted one.
      for (const candidate of this.#candidates) {
        if (candidate === this.#current) candidate.stopDraining()
        else candidate.drain()
      }
      this.onDiscovery?.('ended')
    })
    this.onDiscovery?.('started')
  }

  close(): void {
    this.#closed = true
  }

  async #discover(reason: string): Promise<void> {
    const started = performance.now()
    const deadline = started + GIVE_UP_AFTER_MS
    let intervalMs = FIRST_PROBE_INTERVAL_MS
    while (!this.#closed) {
      const writer = await this.#probeAll()
      if (writer !== undefined) {
        const previous = this.#current
        if (writer !== previous) {
          this.#current = writer
          previous.drain()
          if (reason !== 'startup') {
            this.#events.emit('failover', {
              from: previous.name,
              to: writer.name,
              durationMs: Math.round(performance.now() - started),
              reason,
            })
          }
        }
        return
      }
      if (performance.now() >= deadline) return
      await new Promise<void>((resolve) => setTimeout(resolve, intervalMs).unref())
      intervalMs = Math.min(MAX_PROBE_INTERVAL_MS, intervalMs * 2)
    }
  }

  /**
   * Probes every candidate at once; the first to answer 'writer' wins. With topology discovery, an
   * instance reached directly wins over a configured endpoint (the cluster endpoint, whose DNS may
   * still lead to the old writer or, once it caught up, to the same server by a longer way): a
   * configured endpoint's 'writer' is taken only once no instance probe can answer 'writer' any more.
   */
  #probeAll(): Promise<Endpoint | undefined> {
    return new Promise((resolve) => {
      // A copy: topology discovery may add or remove candidates while a round runs.
      const candidates = [...this.#candidates]
      let pending = candidates.length
      let instancesPending = candidates.filter((candidate) => this.#instances.has(candidate)).length
      let found = false
      let indirect: Endpoint | undefined
      const settle = (endpoint: Endpoint | undefined): void => {
        if (found) return
        found = true
        resolve(endpoint)
      }
      for (const candidate of candidates) {
        const direct = this.#instances.has(candidate)
        candidate
          .probeRole()
          .then(
            (role) => {
              if (role !== 'writer') return
              if (direct || this.#instances.size === 0) settle(candidate)
              else indirect ??= candidate
            },
            (error: unknown) => {
              const { category, code } = classifyError(error, { phase: 'connect' })
              this.#events.emit('error', {
                endpoint: candidate.name,
                category,
                code,
                reason: 'writer probe failed',
              })
            },
          )
          .finally(() => {
            pending--
            if (direct) instancesPending--
            if (indirect !== undefined && instancesPending === 0) settle(indirect)
            if (pending === 0) settle(indirect)
          })
      }
      if (pending === 0) settle(undefined)
    })
  }
}
