import type { EndpointSettings } from '../config/endpoint-settings.js'
import type { ResolvedConfig } from '../config/resolve-config.js'
import { DatabaseDestroyedError } from '../errors.js'
import { Endpoint, type EndpointStats, loadDrivers } from './endpoint.js'
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
  /** The writer's counters. */
  readonly writer: EndpointStats
  /** Each reader's counters, in config order. Empty when there are no readers. */
  readonly readers: ReadonlyArray<EndpointStats>
}

interface Endpoints {
  readonly writer: Endpoint
  readonly readers: ReadonlyArray<Endpoint>
}

/**
 * The endpoints behind one `createDb` call, shared by `db`, `db.writer` and `db.reader`. Drivers
 * are loaded and pools created on first use, so `createDb` itself never touches the network.
 */
export class Cluster {
  readonly config: ResolvedConfig
  readonly #selector: ReaderSelector
  #endpoints: Endpoints | undefined
  #opening: Promise<Endpoints> | undefined
  #destroyed = false

  constructor(config: ResolvedConfig) {
    this.config = config
    this.#selector = new ReaderSelector(config.readerStrategy)
  }

  get destroyed(): boolean {
    return this.#destroyed
  }

  /** Resolves once drivers are loaded and pools exist. A failure is retried on the next call. */
  async open(): Promise<Endpoints> {
    if (this.#destroyed) throw new DatabaseDestroyedError()
    if (this.#endpoints) return this.#endpoints
    this.#opening ??= this.#openEndpoints().then(
      (endpoints) => {
        this.#endpoints = endpoints
        return endpoints
      },
      (error: unknown) => {
        this.#opening = undefined
        throw error
      },
    )
    return this.#opening
  }

  /** The writer. Only valid after `open()`. */
  writer(): Endpoint {
    return this.#opened().writer
  }

  /** The reader for the next read, or the writer when there are no readers. Only valid after `open()`. */
  reader(): Endpoint {
    const { writer, readers } = this.#opened()
    return readers.length === 0 ? writer : this.#selector.pick(readers)
  }

  stats(): DbStats {
    const endpoints = this.#endpoints
    if (endpoints === undefined) {
      return { writer: idleStats(this.config.writer), readers: this.config.readers.map(idleStats) }
    }
    return { writer: endpoints.writer.stats(), readers: endpoints.readers.map((reader) => reader.stats()) }
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return
    this.#destroyed = true
    const endpoints = await this.#opening?.catch(() => undefined)
    if (endpoints === undefined) return
    await Promise.all([endpoints.writer, ...endpoints.readers].map((endpoint) => endpoint.destroy()))
  }

  #opened(): Endpoints {
    if (this.#endpoints === undefined) throw new Error('kysely-resilient: cluster used before open()')
    return this.#endpoints
  }

  async #openEndpoints(): Promise<Endpoints> {
    const drivers = await loadDrivers(this.config.dialect)
    const [writer, ...readers] = await Promise.all(
      [this.config.writer, ...this.config.readers].map((settings) => Endpoint.open(settings, drivers)),
    )
    return { writer: writer as Endpoint, readers }
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
