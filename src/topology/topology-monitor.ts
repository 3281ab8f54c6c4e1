import type { EndpointSettings } from '../config/endpoint-settings.js'
import { instanceAddress, type ResolvedTopology } from '../config/topology-options.js'
import type { DatabasePlatform, TopologyInstance } from '../dialect/topology-queries.js'
import type { Endpoint } from '../endpoint/endpoint.js'
import type { ResilientEvents } from '../events/resilient-events.js'
import { classifyError } from '../retry/classify-error.js'
import { withDeadline } from '../retry/deadline.js'
import type { ReaderHealth } from './reader-health.js'
import type { WriterTracker } from './writer-tracker.js'

/** How soon the view is read again while it disagrees with the writer in use. */
const READ_AGAIN_AFTER_MS = 1_000

/** What the monitor changes and where it opens endpoints; the cluster's parts. */
export interface TopologyTargets {
  readonly writers: WriterTracker
  readonly health: ReaderHealth
  /** Puts the readers in rotation (the cluster's list, which `db.stats()` reports). */
  setReaders(readers: ReadonlyArray<Endpoint>): void
  /** Opens an endpoint for an instance (pool, driver), like the configured ones. */
  open(settings: EndpointSettings): Promise<Endpoint>
  /** The configured readers: in rotation until the topology is known; asked for it when no instance answers. */
  readonly seedReaders: ReadonlyArray<Endpoint>
}

/**
 * The cluster as its topology view was last read, in `db.stats().topology` (topology discovery only).
 *
 * @example
 * ```ts
 * const { topology } = db.stats()
 * for (const instance of topology?.instances ?? []) console.log(instance.id, instance.role, instance.address)
 * ```
 */
export interface TopologySnapshot {
  readonly platform: DatabasePlatform
  /** The instances the view listed: id, role, and the address they are reached at. */
  readonly instances: ReadonlyArray<{
    readonly id: string
    readonly role: 'writer' | 'reader'
    readonly address: string
  }>
  /** When the view was last read (ms since the epoch). */
  readonly readAt: number
}

/**
 * Reads the cluster's topology from its own view (see dialect/topology-queries.ts) and keeps the
 * endpoints in line with it: every instance is a writer candidate, reached at its instance endpoint
 * (so writer discovery finds a promoted instance without waiting for the cluster endpoint's DNS),
 * the non-writer instances are the readers in rotation, and instances that appear or disappear are
 * added or dropped. Read every `refreshIntervalMs`, at once when the writer is suspected, and again
 * when a discovery ends.
 *
 * The topology never routes a write by itself: writes move to an instance only after a fresh
 * connection to it says it accepts writes (writer discovery, or {@link WriterTracker.adopt}), and a
 * read that began before the last discovery ended may not move them at all.
 */
export class TopologyMonitor {
  readonly #config: ResolvedTopology
  readonly #template: EndpointSettings
  readonly #targets: TopologyTargets
  readonly #events: ResilientEvents
  /** One writer-role endpoint per instance id. */
  readonly #writerEndpoints = new Map<string, Endpoint>()
  /** One reader-role endpoint per non-writer instance id. */
  readonly #readerEndpoints = new Map<string, Endpoint>()
  #timer: NodeJS.Timeout | undefined
  /** A read scheduled ahead of the interval, while the view and the writer in use disagree. */
  #soon: NodeJS.Timeout | undefined
  #refreshing: Promise<void> | undefined
  /** Another refresh was asked for while one ran: run once more after it. */
  #again = false
  #snapshot: TopologySnapshot | undefined
  #unsupportedReported = false
  #closed = false

  constructor(
    config: ResolvedTopology,
    template: EndpointSettings,
    targets: TopologyTargets,
    events: ResilientEvents,
  ) {
    this.#config = config
    this.#template = template
    this.#targets = targets
    this.#events = events
  }

  get snapshot(): TopologySnapshot | undefined {
    return this.#snapshot
  }

  /** Starts the periodic reads after a first one; resolves when the first read has been applied (or failed). */
  async start(): Promise<void> {
    await this.refresh()
    if (this.#closed) return
    this.#timer = setInterval(() => void this.refresh(), this.#config.refreshIntervalMs)
    this.#timer.unref()
  }

  /** Reads the topology now (once more after the read in progress, if one is). */
  refresh(): Promise<void> {
    if (this.#closed) return Promise.resolve()
    if (this.#refreshing !== undefined) {
      this.#again = true
      return this.#refreshing
    }
    this.#refreshing = this.#readAndApply().finally(() => {
      this.#refreshing = undefined
      if (this.#again && !this.#closed) {
        this.#again = false
        void this.refresh()
      }
    })
    return this.#refreshing
  }

  /** Endpoints opened for instances, to destroy with the cluster. */
  endpoints(): ReadonlyArray<Endpoint> {
    return [...this.#writerEndpoints.values(), ...this.#readerEndpoints.values()]
  }

  close(): void {
    this.#closed = true
    clearInterval(this.#timer)
    clearTimeout(this.#soon)
  }

  async #readAndApply(): Promise<void> {
    try {
      await this.#readAndApplyOnce()
    } catch (error) {
      // Opening an instance's endpoint failed (its TLS CA could not be loaded, say): reported, and
      // the next refresh tries again.
      const { category, code } = classifyError(error)
      this.#events.emit('error', {
        endpoint: this.#targets.writers.current.name,
        category,
        code,
        reason: 'applying the topology failed; the last topology is kept',
      })
    }
  }

  async #readAndApplyOnce(): Promise<void> {
    const generation = this.#targets.writers.generation
    const read = await this.#read()
    if (read === undefined || this.#closed) return
    const { platform, instances } = read
    if (instances === undefined) {
      if (!this.#unsupportedReported) {
        this.#unsupportedReported = true
        this.#events.emit('error', {
          endpoint: this.#targets.writers.current.name,
          category: 'fatal',
          code: undefined,
          reason: `topology discovery is on, but the server is ${platform}, which has no topology view; the configured endpoints are used as they are`,
        })
      }
      this.close()
      return
    }
    await this.#apply(platform, instances, generation)
  }

  /**
   * The topology from the first endpoint that answers: the current writer, the other candidates,
   * then the readers (any instance of a cluster sees the whole topology). Each read is bounded.
   */
  async #read(): Promise<
    { platform: DatabasePlatform; instances: ReadonlyArray<TopologyInstance> | undefined } | undefined
  > {
    const { writers } = this.#targets
    const sources = [
      writers.current,
      ...writers.candidates.filter((candidate) => candidate !== writers.current),
      ...this.#readerEndpoints.values(),
      ...this.#targets.seedReaders,
    ]
    let lastError: unknown
    for (const source of sources) {
      if (this.#closed) return undefined
      if (source.unresponsive) continue
      const timeoutMs = source.settings.pool.connectTimeoutMs * 2
      try {
        return await withDeadline(
          () => source.readTopology(),
          timeoutMs,
          () => {
            throw new Error(`topology read from ${source.name} took longer than ${timeoutMs} ms`)
          },
        )
      } catch (error) {
        lastError = error
      }
    }
    if (lastError !== undefined) {
      const { category, code } = classifyError(lastError, { phase: 'connect' })
      this.#events.emit('error', {
        endpoint: writers.current.name,
        category,
        code,
        reason: 'topology read failed on every endpoint; the last topology is kept',
      })
    }
    return undefined
  }

  async #apply(
    platform: DatabasePlatform,
    instances: ReadonlyArray<TopologyInstance>,
    generation: number,
  ): Promise<void> {
    const { writers, health } = this.#targets
    const listed = new Set(instances.map((instance) => instance.id))
    // New instances: a writer-role endpoint for each (any instance may be promoted), and a
    // reader-role one for each reader.
    await Promise.all(
      instances.map(async (instance) => {
        if (!this.#writerEndpoints.has(instance.id)) {
          const endpoint = await this.#targets.open(this.#settingsFor(instance, 'writer'))
          if (this.#closed) return void endpoint.destroy()
          endpoint.assumePlatform(platform)
          this.#writerEndpoints.set(instance.id, endpoint)
          writers.addCandidate(endpoint)
        }
        if (!instance.writer && !this.#readerEndpoints.has(instance.id)) {
          const endpoint = await this.#targets.open(this.#settingsFor(instance, 'reader'))
          if (this.#closed) return void endpoint.destroy()
          endpoint.assumePlatform(platform)
          this.#readerEndpoints.set(instance.id, endpoint)
        }
      }),
    )
    if (this.#closed) return
    // Gone instances (deleted, or scaled in), and readers that became the writer: out of rotation
    // first, then closed once their statements in flight are done (a pool ends after its releases).
    const retired: Endpoint[] = []
    for (const [id, endpoint] of this.#readerEndpoints) {
      const instance = instances.find((candidate) => candidate.id === id)
      if (instance === undefined || instance.writer) {
        this.#readerEndpoints.delete(id)
        retired.push(endpoint)
      }
    }
    for (const [id, endpoint] of this.#writerEndpoints) {
      if (listed.has(id)) continue
      if (writers.removeCandidate(endpoint)) {
        this.#writerEndpoints.delete(id)
        retired.push(endpoint)
      }
    }
    const readers = [...this.#readerEndpoints.values()]
    this.#targets.setReaders(readers)
    health.setReaders(readers)
    for (const endpoint of retired) void endpoint.destroy()

    this.#snapshot = Object.freeze({
      platform,
      instances: Object.freeze(
        instances.map((instance) => {
          const endpoint = this.#writerEndpoints.get(instance.id)
          return Object.freeze({
            id: instance.id,
            role: instance.writer ? ('writer' as const) : ('reader' as const),
            address: endpoint?.settings.address ?? instance.id,
          })
        }),
      ),
      readAt: Date.now(),
    })

    // Writes: the topology only proposes. From a configured endpoint (the cluster endpoint) to the
    // writer's instance endpoint once a fresh connection confirms it; from one instance to another
    // only through a discovery, which probes every candidate.
    const writerId = instances.find((instance) => instance.writer)?.id
    const proposed = writerId === undefined ? undefined : this.#writerEndpoints.get(writerId)
    if (proposed === undefined || proposed === writers.current) return
    // From here on the view and the writer in use disagree: read it again soon (a view can trail a
    // failover the probes already found), not only at the next interval.
    this.#readAgainSoon()
    if (generation !== writers.generation || writers.discovering) return
    const fromInstance = [...this.#writerEndpoints.values()].includes(writers.current)
    if (!fromInstance) {
      await writers.adopt(proposed, generation)
      return
    }
    // The view names another writer than the one writes go to: a failover the library has not seen
    // fail yet (a switchover with no error on this side), or a view ahead of the instances. Only if
    // the proposed instance says it accepts writes is the current writer suspected (a discovery
    // then probes every instance); otherwise the next read looks again, and no discovery loops on a
    // view that is wrong for a while.
    const role = await proposed.probeRole().catch(() => undefined)
    if (role !== 'writer' || this.#closed) return
    if (generation !== writers.generation || writers.discovering) return
    writers.suspect(writers.current, 'topology')
  }

  #readAgainSoon(): void {
    if (this.#soon !== undefined || this.#closed) return
    this.#soon = setTimeout(
      () => {
        this.#soon = undefined
        void this.refresh()
      },
      Math.min(READ_AGAIN_AFTER_MS, this.#config.refreshIntervalMs),
    )
    this.#soon.unref()
  }

  #settingsFor(instance: TopologyInstance, role: 'writer' | 'reader'): EndpointSettings {
    const template = this.#template
    const address =
      instance.host === undefined
        ? instanceAddress(this.#config.instanceHostPattern, instance.id, template.port)
        : { host: instance.host, port: instance.port ?? template.port }
    return template.forInstance({ name: instance.id, role, ...address })
  }
}
