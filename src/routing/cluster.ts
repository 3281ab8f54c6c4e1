import type { EndpointSettings } from '../config/endpoint-settings.js'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { ResolvedTopology } from '../config/topology-options.js'
import { type ConsistencyScope, ReadYourWrites } from '../consistency/read-your-writes.js'
import { setOperationTracer } from '../diagnostics/operation-spans.js'
import type { LagSource } from '../dialect/lag-queries.js'
import { type LoadedDrivers, loadDrivers } from '../dialect/load-driver.js'
import { Endpoint, type EndpointStats } from '../endpoint/endpoint.js'
import { DatabaseDestroyedError, NoReaderAvailableError } from '../errors.js'
import { ResilientEvents } from '../events/resilient-events.js'
import { classifyError, isSessionRefusal } from '../retry/classify-error.js'
import { withDeadline } from '../retry/deadline.js'
import type { ErrorClassification } from '../retry/error-classification.js'
import { recordClusterMetrics } from '../telemetry/cluster-metrics.js'
import { DbTelemetry, operationTracer, registeredTracer } from '../telemetry/db-telemetry.js'
import { loadOpenTelemetry, type OpenTelemetryApi } from '../telemetry/load-opentelemetry.js'
import { ReaderHealth } from '../topology/reader-health.js'
import { TopologyMonitor, type TopologySnapshot } from '../topology/topology-monitor.js'
import { WriterTracker } from '../topology/writer-tracker.js'
import { type WriterTables, writerTables } from './classify-statement.js'
import { ReaderSelector } from './reader-selector.js'

/**
 * Connection counts for every endpoint, as returned by `db.stats()`: what a health endpoint or a
 * CloudWatch metric reads.
 *
 * @example
 * ```ts
 * app.get('/health', (_req, res) => res.json(db.stats()))
 * ```
 */
export interface DbStats {
  /** The current writer's counters. */
  readonly writer: EndpointStats
  /** Every writer candidate's counters, in config order (one entry for a single writer). */
  readonly writers: ReadonlyArray<EndpointStats>
  /**
   * Each reader's counters, in config order (with topology discovery: the cluster's reader
   * instances, in the view's order). Empty when there are no readers.
   */
  readonly readers: ReadonlyArray<ReaderStats>
  /**
   * With topology discovery (`topology`), the cluster as its view last listed it: the platform, each
   * instance's id, role and address, and when it was read. Absent without discovery, and until the
   * first read.
   */
  readonly topology?: TopologySnapshot
}

/**
 * One reader's counters in `db.stats()`.
 *
 * @example
 * ```ts
 * for (const reader of db.stats().readers) console.log(reader.name, reader.healthy, reader.replayPosition)
 * ```
 */
export interface ReaderStats extends EndpointStats {
  /** False while the reader is out of rotation (unreachable, or lagging past `maxReplicaLagMs`). */
  readonly healthy: boolean
  /**
   * The replication position this reader last reported (PostgreSQL: the replayed WAL location, such
   * as `'0/3000148'`; MariaDB: `@@gtid_slave_pos`, such as `'0-1-42'`). Read only while
   * read-your-writes needs it; undefined until then.
   */
  readonly replayPosition?: string
  /**
   * The reader's replay lag in milliseconds at the last lag check (`routing.maxReplicaLagMs`;
   * undefined without it, and while the reader reports no lag). `Infinity` while its replication is
   * stopped with changes pending.
   */
  readonly lagMs?: number
  /**
   * Where the lag comes from, found on the first lag check: `'postgres'` (WAL replay),
   * `'aurora-postgres'` (`aurora_replica_status()`), `'mysql-replica'` / `'mysql-slave'` (`SHOW
   * REPLICA STATUS` / `SHOW SLAVE STATUS`), `'aurora-mysql'` (`replica_host_status`).
   */
  readonly lagSource?: LagSource
}

interface Topology {
  readonly writers: WriterTracker
  readers: ReadonlyArray<Endpoint>
  readonly health: ReaderHealth
  /** The configured readers (with topology discovery, replaced in rotation by the instances). */
  readonly seedReaders: ReadonlyArray<Endpoint>
  /** Topology discovery (Aurora, Multi-AZ clusters); undefined when off. */
  monitor: TopologyMonitor | undefined
}

/**
 * The endpoints behind one `createDb` call, shared by `db`, `db.writer` and `db.reader`. Drivers
 * are loaded and pools created on first use, so `createDb` itself never touches the network.
 */
export class Cluster {
  readonly config: ResolvedConfig
  /** Kysely's migration tables plus `routing.writerTables`: SELECTs from them read the writer. */
  readonly writerTables: WriterTables
  readonly events = new ResilientEvents()
  /** Read-your-writes: scopes, tokens and the positions behind them. */
  readonly consistency: ReadYourWrites<Endpoint>
  readonly #selector: ReaderSelector
  #topology: Topology | undefined
  #opening: Promise<Topology> | undefined
  /** Stops recording OpenTelemetry metrics; set once they are recorded. */
  #stopMetrics: (() => void) | undefined
  /** Spans and time histograms; undefined without `@opentelemetry/api` or without an SDK registered. */
  #telemetry: DbTelemetry | undefined
  #destroyed = false
  readonly #drivers: LoadedDrivers | undefined

  /**
   * @param drivers - Driver modules to open the endpoints with instead of loading `pg` or `mysql2`.
   *   A seam for the server-free unit tests only (test/support/fake-pg.ts): `createDb` never passes
   *   it, and the package does not export `Cluster`.
   */
  constructor(config: ResolvedConfig, drivers?: LoadedDrivers) {
    this.config = config
    this.writerTables = writerTables(config.writerTables)
    this.#drivers = drivers
    this.#selector = new ReaderSelector(config.readerStrategy)
    this.consistency = new ReadYourWrites<Endpoint>(config.dialect, config.consistency, {
      writer: () => this.writer(),
      reader: () => this.reader(),
      healthyReaders: () => this.#opened().health.healthy(),
      pick: (readers) => this.#selector.pick(readers),
      positionFailed: (endpoint, error) => {
        const classification = classifyError(error, { phase: 'connect' })
        // A reader that cannot be reached leaves rotation like after a failed read, so reads waiting
        // for it go to the writer at once instead of each waiting out consistency.maxWaitMs.
        if (classification.connectionLost || classification.category === 'unavailable') {
          this.reportFailure(endpoint, classification)
          return
        }
        const { category, code } = classification
        this.events.emit('error', {
          endpoint: endpoint.name,
          category,
          code,
          reason: 'replay position check failed',
        })
      },
    })
    this.events.on('failover', () => {
      // Positions of the old writer's history are not compared with the new one's.
      this.consistency.writerChanged()
      // A configured endpoint is a name that DNS may now resolve to another server: its platform is
      // found again on its next lag check or topology read.
      for (const endpoint of this.#topology?.writers.candidates ?? []) {
        if (this.config.writers.includes(endpoint.settings)) endpoint.forgetPlatform()
      }
    })
  }

  get destroyed(): boolean {
    return this.#destroyed
  }

  /** What statements report to OpenTelemetry; undefined (one test on the hot path) when nothing records. */
  get telemetry(): DbTelemetry | undefined {
    return this.#telemetry
  }

  /** True once `open()` has succeeded: lets the hot path skip an await. */
  get isOpen(): boolean {
    return this.#topology !== undefined
  }

  /** Resolves once drivers are loaded and pools exist. A failure is retried on the next call. */
  async open(): Promise<void> {
    if (this.#destroyed) throw new DatabaseDestroyedError()
    if (this.#topology) return
    this.#opening ??= this.#openTopology().then(
      (topology) => {
        this.#topology = topology
        return topology
      },
      (error: unknown) => {
        this.#opening = undefined
        throw error
      },
    )
    await this.#opening
  }

  /** The current writer. Only valid after `open()`. */
  writer(): Endpoint {
    return this.#opened().writers.current
  }

  /**
   * Whether a read may go anywhere but the writer: readers are configured or discovered. Without,
   * a statement's read/write verdict only matters after it failed (may it be retried?), so the
   * statement path skips classifying it.
   */
  get hasReaders(): boolean {
    return this.#opened().readers.length > 0
  }

  /**
   * The reader for the next read: a healthy reader by the configured strategy; with none healthy,
   * the writer (`routing.fallback: 'writer'`) or a `NoReaderAvailableError`. Without readers at all,
   * the writer. Only valid after `open()`.
   */
  reader(): Endpoint {
    const { writers, readers, health } = this.#opened()
    if (readers.length === 0) return writers.current
    const healthy = health.healthy()
    if (healthy.length === 0) {
      if (this.config.fallback === 'error') throw new NoReaderAvailableError()
      return writers.current
    }
    return this.#selector.pick(healthy)
  }

  /**
   * The endpoint for a read that must see what `scope` wrote or was given: a reader that has replayed
   * it, or the writer (see `consistency.whenBehind`). Only valid after `open()`.
   */
  consistentReader(scope: ConsistencyScope): Endpoint | Promise<Endpoint> {
    return this.consistency.readerFor(scope)
  }

  /** Waits (at most `maxWaitMs`) for a writer discovery in progress, before a retry. */
  async writerSettled(maxWaitMs: number): Promise<void> {
    await this.#topology?.writers.settled(maxWaitMs)
  }

  /**
   * An endpoint failed. A writer that lost a connection, refused one or turned read-only is
   * suspected (its idle connections are evicted and discovery starts); a reader that cannot be
   * reached is ejected for the cooldown.
   */
  reportFailure(endpoint: Endpoint, classification: ErrorClassification): void {
    const topology = this.#topology
    if (topology === undefined) return
    const { category, code } = classification
    if (code === 'CREDENTIALS_UNAVAILABLE' || code === 'CREDENTIALS_FAILED') {
      // The credential source failed, not the endpoint: suspecting the writer would start discovery,
      // whose probes would fetch credentials again every few hundred ms (a throttled Secrets Manager
      // made worse), and a reader would leave rotation for a problem it does not have.
      this.events.emit('error', {
        endpoint: endpoint.name,
        category,
        code,
        reason: 'credential source failed',
      })
      return
    }
    if (code === 'POOL_ACQUIRE_TIMEOUT' || isSessionRefusal(classification)) {
      // Overload: the endpoint answers but has no session (or no pooled connection) to spare.
      // Suspecting the writer would close its idle connections and open discovery probes, more
      // sessions against a server that is out of them; ejecting a reader would move its load onto
      // the others. Neither is lost.
      return
    }
    if (classification.connectionLost || category === 'unavailable') {
      this.events.emit('error', {
        endpoint: endpoint.name,
        category,
        code,
        reason: category === 'read-only' ? 'writer is read-only' : 'connection failed',
      })
    }
    if (topology.writers.candidates.includes(endpoint)) {
      if (category === 'read-only') topology.writers.suspect(endpoint, 'read-only')
      else if (category === 'unavailable' || classification.connectionLost) {
        topology.writers.suspect(endpoint, 'connection-lost')
      }
      return
    }
    if (category === 'unavailable') topology.health.unreachable(endpoint)
  }

  stats(): DbStats {
    const topology = this.#topology
    if (topology === undefined) {
      const writers = this.config.writers.map(idleStats)
      return {
        writer: writers[0] as EndpointStats,
        writers,
        readers: this.config.readers.map((settings) => ({ ...idleStats(settings), healthy: true })),
      }
    }
    const snapshot = topology.monitor?.snapshot
    return {
      ...(snapshot === undefined ? {} : { topology: snapshot }),
      writer: topology.writers.current.stats(),
      writers: topology.writers.candidates.map((endpoint) => endpoint.stats()),
      readers: topology.readers.map((reader) => {
        const replayPosition = this.consistency.replayPosition(reader)
        const lagMs = topology.health.lagMs(reader)
        const lagSource = reader.lagSource
        return {
          ...reader.stats(),
          healthy: !topology.health.isEjected(reader),
          ...(replayPosition === undefined ? {} : { replayPosition }),
          ...(lagMs === undefined ? {} : { lagMs }),
          ...(lagSource === undefined ? {} : { lagSource }),
        }
      }),
    }
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return
    this.#destroyed = true
    this.#stopMetrics?.()
    this.#stopMetrics = undefined
    this.consistency.close()
    const topology = await this.#opening?.catch(() => undefined)
    if (topology === undefined) return
    topology.monitor?.close()
    topology.writers.close()
    topology.health.close()
    const endpoints = new Set([
      ...topology.writers.candidates,
      ...topology.readers,
      ...topology.seedReaders,
      ...(topology.monitor?.endpoints() ?? []),
    ])
    await Promise.all([...endpoints].map((endpoint) => endpoint.destroy()))
  }

  /**
   * With `@opentelemetry/api` installed, records this db's metrics through the application's meter
   * provider (telemetry/cluster-metrics.ts) and, with an SDK registered, its spans and time histograms
   * (telemetry/db-telemetry.ts); without it, nothing. The pool gauges are read from `stats()` when the
   * metric reader collects, so the statement path pays nothing for them.
   */
  #recordTelemetry(api: OpenTelemetryApi | undefined, endpoints: ReadonlyArray<Endpoint>): void {
    if (api === undefined || this.#destroyed || this.#stopMetrics !== undefined) return
    // Process-wide, like the tracer provider: writer discovery and credential fetches are traced through it.
    const tracer = registeredTracer(api)
    setOperationTracer(tracer === undefined ? undefined : operationTracer(api, tracer))
    const telemetry = DbTelemetry.create(api, {
      dialect: this.config.dialect,
      endpoints: endpoints.map((endpoint) => endpoint.settings),
      statementText: this.config.telemetry.statementText,
    })
    this.#telemetry = telemetry
    if (telemetry !== undefined)
      for (const endpoint of endpoints) endpoint.instrumentPool(telemetry.pool(endpoint.settings))
    this.#stopMetrics = recordClusterMetrics(
      {
        dialect: this.config.dialect,
        endpoints: () => {
          const topology = this.#topology
          if (topology === undefined) return [...this.config.writers, ...this.config.readers]
          return [...topology.writers.candidates, ...topology.readers].map((endpoint) => endpoint.settings)
        },
        events: this.events,
        sample: () => {
          const topology = this.#topology
          if (topology === undefined) return []
          const { writers, readers } = this.stats()
          const more = (endpoint: Endpoint) => ({
            acquireTimeouts: endpoint.acquireTimeouts,
            sessionRefusals: endpoint.sessionRefusals,
            backingOff: endpoint.backingOff,
            settings: endpoint.settings,
          })
          return [
            ...writers.map((stats, i) => ({ ...stats, ...more(topology.writers.candidates[i] as Endpoint) })),
            ...readers.map((stats, i) => ({ ...stats, ...more(topology.readers[i] as Endpoint) })),
          ]
        },
      },
      api.metrics,
    )
  }

  #opened(): Topology {
    if (this.#topology === undefined) throw new Error('kysely-resilient: cluster used before open()')
    return this.#topology
  }

  async #openTopology(): Promise<Topology> {
    const [drivers, api] = await Promise.all([
      this.#drivers ?? loadDrivers(this.config.dialect),
      loadOpenTelemetry(),
    ])
    const all = await Promise.all(
      [...this.config.writers, ...this.config.readers].map((settings) =>
        Endpoint.open(settings, drivers, this.events),
      ),
    )
    this.#recordTelemetry(api, all)
    const writers = new WriterTracker(all.slice(0, this.config.writers.length), this.events)
    const readers = all.slice(this.config.writers.length)
    for (const endpoint of all) this.#watchResponsiveness(endpoint, writers)
    const health = new ReaderHealth(readers, this.events, {
      cooldownMs: this.config.readerCooldownMs,
      maxReplicaLagMs: this.config.maxReplicaLagMs,
      lagCheckIntervalMs: this.config.lagCheckIntervalMs,
      caughtUp: () => this.consistency.caughtUp(),
    })
    await writers.initialize()
    const topology: Topology = { writers, readers, health, seedReaders: readers, monitor: undefined }
    if (this.config.topology !== undefined)
      await this.#discoverTopology(topology, drivers, this.config.topology)
    return topology
  }

  /**
   * A server that stopped answering: a writer (candidate) starts writer discovery, a reader leaves
   * rotation. For the configured endpoints and the instances topology discovery adds alike.
   */
  #watchResponsiveness(endpoint: Endpoint, writers: WriterTracker): void {
    endpoint.onUnresponsive =
      endpoint.role === 'writer'
        ? (unresponsive) => writers.suspect(unresponsive, 'unresponsive')
        : (unresponsive) => this.#topology?.health.unreachable(unresponsive)
  }

  /**
   * Topology discovery: reads the cluster's instances before the first statement (bounded: a view
   * that cannot be read leaves the configured endpoints in use, and the next refresh tries again),
   * then keeps them current; a suspected writer reads it again at once.
   */
  async #discoverTopology(
    topology: Topology,
    drivers: LoadedDrivers,
    config: ResolvedTopology,
  ): Promise<void> {
    const { writers, health } = topology
    const template = this.config.writers[0] as EndpointSettings
    const monitor = new TopologyMonitor(
      config,
      template,
      {
        writers,
        health,
        seedReaders: topology.seedReaders,
        setReaders: (readers) => {
          topology.readers = readers
        },
        open: async (settings) => {
          const endpoint = await Endpoint.open(settings, drivers, this.events)
          const telemetry = this.#telemetry
          if (telemetry !== undefined) endpoint.instrumentPool(telemetry.pool(settings))
          this.#watchResponsiveness(endpoint, writers)
          return endpoint
        },
      },
      this.events,
    )
    topology.monitor = monitor
    writers.onDiscovery = () => void monitor.refresh()
    const timeoutMs = template.pool.connectTimeoutMs * 2
    await withDeadline(monitor.start(), timeoutMs, () => undefined)
  }
}

function idleStats(settings: EndpointSettings): EndpointStats {
  return {
    name: settings.name,
    role: settings.role,
    address: settings.address,
    queries: 0,
    total: 0,
    idle: 0,
    inUse: 0,
    waiting: 0,
    connecting: 0,
  }
}
