import type { Attributes, MetricsAPI, Observable } from '@opentelemetry/api'
import type { SqlDialect } from '../config/create-db-config.js'
import type { EndpointSettings } from '../config/endpoint-settings.js'
import type { ResilientEvents } from '../events/resilient-events.js'

/** One endpoint's counters at the moment the metric reader asks (a slice of `db.stats()`). */
export interface EndpointSample {
  readonly name: string
  /** The endpoint's settings: its attributes and pool limits (instances found by topology discovery too). */
  readonly settings: EndpointSettings
  readonly idle: number
  readonly inUse: number
  readonly waiting: number
  /** Callers that waited `pool.acquireTimeoutMs` in vain, since the db was made. */
  readonly acquireTimeouts: number
  /** Sessions the server refused for lack of slots, since the db was made. */
  readonly sessionRefusals: number
  /** True while the pool holds back its growth after such a refusal. */
  readonly backingOff: boolean
  /** Readers only: in rotation. */
  readonly healthy?: boolean
  /** Readers only, with `maxReplicaLagMs`: the lag at the last check. */
  readonly lagMs?: number
}

/** What the metrics read from a db: its endpoints' settings, its events, and its counters on demand. */
export interface MetricsSource {
  readonly dialect: SqlDialect
  /** Every endpoint now: the configured ones, and the instances topology discovery added. */
  endpoints(): ReadonlyArray<EndpointSettings>
  readonly events: ResilientEvents
  /** The endpoints' counters now; empty before the db has opened. */
  sample(): ReadonlyArray<EndpointSample>
}

const METER_NAME = 'kysely-resilient'

/** `db.system.name` of a dialect, as the OpenTelemetry conventions spell it (MariaDB reports `mysql` too). */
export function dbSystemName(dialect: SqlDialect): 'postgresql' | 'mysql' {
  return dialect === 'postgres' ? 'postgresql' : 'mysql'
}

/**
 * What every metric point of an endpoint carries: `db.system.name`, the endpoint's name as
 * `db.client.connection.pool.name`, its role, `server.address` and `server.port`; never a user name
 * or a secret.
 */
export function endpointMetricAttributes(endpoint: EndpointSettings): Attributes {
  return {
    'db.system.name': dbSystemName(endpoint.dialect),
    'db.client.connection.pool.name': endpoint.name,
    'kysely_resilient.endpoint.role': endpoint.role,
    ...(endpoint.host === undefined ? {} : { 'server.address': endpoint.host }),
    'server.port': endpoint.port,
  }
}

/**
 * Records a db's metrics through the application's OpenTelemetry meter provider:
 *
 * - the OpenTelemetry database client semantic conventions' connection pool metrics, read from the
 *   pools when the metric reader collects (nothing on the statement path): `db.client.connection.count`
 *   by `db.client.connection.state` (`idle` / `used`), `db.client.connection.idle.min`,
 *   `db.client.connection.max`, `db.client.connection.pending_requests`,
 *   `db.client.connection.timeouts`;
 * - the library's own, from its events: `kysely_resilient.retries`, `kysely_resilient.failovers` and
 *   `kysely_resilient.failover.duration`, `kysely_resilient.reader.ejections` /
 *   `kysely_resilient.reader.restores`, `kysely_resilient.reader.healthy`,
 *   `kysely_resilient.replica.lag`, `kysely_resilient.credential.refreshes`,
 *   `kysely_resilient.endpoint.unresponsive`, `kysely_resilient.errors` (by category and code),
 *   `kysely_resilient.credential.failures`, and the storm back-off: `kysely_resilient.pool.session_refusals`
 *   and `kysely_resilient.pool.backing_off`.
 *
 * Attributes name the endpoint (`db.client.connection.pool.name`), its role, `db.system.name`,
 * `server.address` and `server.port`: never a user name, password or token. Returns the function
 * that stops recording.
 */
export function recordClusterMetrics(source: MetricsSource, api: MetricsAPI): () => void {
  const meter = api.getMeter(METER_NAME)
  const system = dbSystemName(source.dialect)
  // Events name their endpoint only: its attributes are those of the endpoint by that name (an
  // instance's writer-role and reader-role endpoints share it; events about either take the first).
  const attributesOf = (name: string): Attributes | undefined => {
    const endpoint = source.endpoints().find((candidate) => candidate.name === name)
    return endpoint === undefined ? undefined : endpointMetricAttributes(endpoint)
  }
  const attributes = (endpoint: string, extra?: Attributes): Attributes => ({
    ...(attributesOf(endpoint) ?? {
      'db.system.name': system,
      'db.client.connection.pool.name': endpoint,
    }),
    ...extra,
  })

  const count = meter.createObservableUpDownCounter('db.client.connection.count', {
    description: 'Connections in each state (idle, used), per endpoint',
    unit: '{connection}',
  })
  const idleMin = meter.createObservableUpDownCounter('db.client.connection.idle.min', {
    description: 'Idle connections the pool keeps open (pool.min)',
    unit: '{connection}',
  })
  const max = meter.createObservableUpDownCounter('db.client.connection.max', {
    description: 'Most connections the pool opens (pool.max)',
    unit: '{connection}',
  })
  const pending = meter.createObservableUpDownCounter('db.client.connection.pending_requests', {
    description: 'Callers waiting for a connection',
    unit: '{request}',
  })
  const timeouts = meter.createObservableCounter('db.client.connection.timeouts', {
    description: 'Callers that waited pool.acquireTimeoutMs for a connection in vain',
    unit: '{timeout}',
  })
  const healthy = meter.createObservableGauge('kysely_resilient.reader.healthy', {
    description: '1 while the reader is in rotation, 0 while it is ejected',
    unit: '1',
  })
  const lag = meter.createObservableGauge('kysely_resilient.replica.lag', {
    description: "The reader's replay lag at the last check (routing.maxReplicaLagMs)",
    unit: 's',
  })
  const refusals = meter.createObservableCounter('kysely_resilient.pool.session_refusals', {
    description:
      'Sessions the server refused for lack of slots (53300, 1040); the pool backs off its growth after each',
    unit: '{refusal}',
  })
  const backingOff = meter.createObservableUpDownCounter('kysely_resilient.pool.backing_off', {
    description:
      '1 while the pool holds back opening connections after a refused session (storm back-off), else 0',
    unit: '1',
  })
  const observables: Observable[] = [
    count,
    idleMin,
    max,
    pending,
    timeouts,
    healthy,
    lag,
    refusals,
    backingOff,
  ]
  const observe: Parameters<typeof meter.addBatchObservableCallback>[0] = (result) => {
    for (const sample of source.sample()) {
      const base = endpointMetricAttributes(sample.settings)
      result.observe(count, sample.idle, { ...base, 'db.client.connection.state': 'idle' })
      result.observe(count, sample.inUse, { ...base, 'db.client.connection.state': 'used' })
      result.observe(pending, sample.waiting, base)
      result.observe(timeouts, sample.acquireTimeouts, base)
      result.observe(refusals, sample.sessionRefusals, base)
      result.observe(backingOff, sample.backingOff ? 1 : 0, base)
      result.observe(idleMin, sample.settings.pool.min, base)
      result.observe(max, sample.settings.pool.max, base)
      if (sample.healthy !== undefined) result.observe(healthy, sample.healthy ? 1 : 0, base)
      if (sample.lagMs !== undefined && Number.isFinite(sample.lagMs))
        result.observe(lag, sample.lagMs / 1000, base)
    }
  }
  meter.addBatchObservableCallback(observe, observables)

  const retries = meter.createCounter('kysely_resilient.retries', {
    description: 'Statements run again after a failure the classification calls safe to retry',
    unit: '{retry}',
  })
  const failovers = meter.createCounter('kysely_resilient.failovers', {
    description: 'Times the writer changed to another endpoint',
    unit: '{failover}',
  })
  const failoverDuration = meter.createHistogram('kysely_resilient.failover.duration', {
    description: 'From the old writer failing to the new one found',
    unit: 's',
  })
  const ejections = meter.createCounter('kysely_resilient.reader.ejections', {
    description: 'Readers taken out of rotation, by reason (unreachable, lagging, lag-unknown)',
    unit: '{ejection}',
  })
  const restores = meter.createCounter('kysely_resilient.reader.restores', {
    description: 'Ejected readers back in rotation',
    unit: '{restore}',
  })
  const refreshes = meter.createCounter('kysely_resilient.credential.refreshes', {
    description: 'Credentials fetched from the auth source, by reason (initial, refresh, expired, rejected)',
    unit: '{refresh}',
  })
  const unresponsive = meter.createCounter('kysely_resilient.endpoint.unresponsive', {
    description: 'Times an endpoint was declared unresponsive by the liveness probe',
    unit: '{event}',
  })
  const credentialFailures = meter.createCounter('kysely_resilient.credential.failures', {
    description:
      'Credential fetches that failed (IAM signer, Secrets Manager, token function), in the background or for a new connection',
    unit: '{failure}',
  })
  const errors = meter.createCounter('kysely_resilient.errors', {
    description:
      "Failures the library reported on 'error' (probes, discovery, credential fetches), by category",
    unit: '{error}',
  })

  const { events } = source
  const listeners = {
    retry: (event: { endpoint: string; category: string; statement: string }) =>
      retries.add(
        1,
        attributes(event.endpoint, {
          'error.type': event.category,
          'kysely_resilient.statement': event.statement,
        }),
      ),
    failover: (event: { to: string; durationMs: number }) => {
      failovers.add(1, attributes(event.to))
      failoverDuration.record(event.durationMs / 1000, attributes(event.to))
    },
    'reader-ejected': (event: { endpoint: string; reason: string }) =>
      ejections.add(1, attributes(event.endpoint, { 'kysely_resilient.reason': event.reason })),
    'reader-restored': (event: { endpoint: string }) => restores.add(1, attributes(event.endpoint)),
    'credentials-refreshed': (event: { endpoint: string; reason: string }) =>
      refreshes.add(1, attributes(event.endpoint, { 'kysely_resilient.reason': event.reason })),
    'endpoint-unresponsive': (event: { endpoint: string }) => unresponsive.add(1, attributes(event.endpoint)),
    error: (event: { endpoint: string; category: string; code?: string | undefined; reason: string }) => {
      const code = event.code === undefined ? {} : { 'kysely_resilient.error.code': event.code }
      errors.add(1, attributes(event.endpoint, { 'error.type': event.category, ...code }))
      if (event.code?.startsWith('CREDENTIALS_') === true || /credential/.test(event.reason)) {
        credentialFailures.add(1, attributes(event.endpoint, { 'error.type': event.category, ...code }))
      }
    },
  } as const
  for (const [name, listener] of Object.entries(listeners)) {
    events.on(name as 'retry', listener as never)
  }
  return () => {
    meter.removeBatchObservableCallback(observe, observables)
    for (const [name, listener] of Object.entries(listeners)) events.off(name as 'retry', listener as never)
  }
}
