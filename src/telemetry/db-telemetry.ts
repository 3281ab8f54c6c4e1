import type {
  Attributes,
  Context,
  Exception,
  Histogram,
  Meter,
  Span,
  Tracer,
  TracerProvider,
} from '@opentelemetry/api'
import type { CompiledQuery } from 'kysely'
import type { SqlDialect } from '../config/create-db-config.js'
import type { EndpointSettings } from '../config/endpoint-settings.js'
import { operationOf } from '../diagnostics/operation.js'
import {
  OPERATION_SPANS,
  type OperationFields,
  type OperationTracer,
} from '../diagnostics/operation-spans.js'
import { ResilientError } from '../errors.js'
import type { PoolInstruments } from '../pool/connection-pool.js'
import { classifyError } from '../retry/classify-error.js'
import type { ErrorClassification } from '../retry/error-classification.js'
import { dbSystemName, endpointMetricAttributes } from './cluster-metrics.js'
import type { OpenTelemetryApi } from './load-opentelemetry.js'

const INSTRUMENTATION_NAME = 'kysely-resilient'
/** The semantic conventions' advice for `db.client.operation.duration`, used for the pool times too. */
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10]
const MAX_CACHED_OPERATIONS = 64

/** What a db's telemetry is made from: its dialect, endpoints and `telemetry` settings. */
export interface DbTelemetrySource {
  readonly dialect: SqlDialect
  readonly endpoints: ReadonlyArray<EndpointSettings>
  /** `telemetry.statementText`: put Kysely's compiled SQL (placeholders, no values) in `db.query.text`. */
  readonly statementText: boolean
}

/**
 * The tracer of the tracer provider the application registered, or `undefined` while only the API's
 * no-op provider is there: then nothing is traced and the statement path pays one test. Looked at
 * when a db opens, so a provider must be registered before the db's first statement (as the SDKs'
 * setup guides say anyway). Duck-typed, not `instanceof`: the application's copy of the API may be
 * another module instance than ours (CommonJS and ESM).
 */
export function registeredTracer(api: OpenTelemetryApi): Tracer | undefined {
  const provider = api.trace.getTracerProvider() as TracerProvider & {
    getDelegateTracer?: (name: string) => Tracer | undefined
  }
  return typeof provider.getDelegateTracer === 'function'
    ? provider.getDelegateTracer(INSTRUMENTATION_NAME)
    : provider.getTracer(INSTRUMENTATION_NAME)
}

/**
 * Traces the library's background operations (writer discovery, credential fetches) for
 * diagnostics/operation-spans.ts, nested under whatever span is active when they start.
 */
export function operationTracer(api: OpenTelemetryApi, tracer: Tracer): OperationTracer {
  return {
    trace<T>(name: string, fields: OperationFields, run: () => Promise<T>): Promise<T> {
      const span = tracer.startSpan(name, { kind: api.SpanKind.INTERNAL, attributes: fields })
      return api.context.with(api.trace.setSpan(api.context.active(), span), run).then(
        (value) => {
          span.end()
          return value
        },
        (error: unknown) => {
          failSpan(api, span, error, classifyError(error))
          span.end()
          throw error
        },
      )
    },
  }
}

/**
 * One db's spans and time histograms: a span per statement (its retries included) and per connection
 * opened, `db.client.operation.duration`, and the pools' `db.client.connection.create_time`,
 * `.wait_time` and `.use_time`. Made when the db opens, and only when there is something to record
 * to: a registered tracer provider, or a meter provider that is not the API's no-op one.
 *
 * Statement spans do not replace a driver instrumentation's (`@opentelemetry/instrumentation-pg`,
 * `-mysql2`): those nest under them, one per attempt, and both are kept (README, "OpenTelemetry
 * traces"): suppressing theirs would need their private context key, and ours carry what theirs
 * cannot know (the routing decision, the retries, the time spent waiting for a connection).
 */
export class DbTelemetry {
  readonly #api: OpenTelemetryApi
  readonly #tracer: Tracer | undefined
  readonly #operationDuration: Histogram | undefined
  readonly #createTime: Histogram | undefined
  readonly #waitTime: Histogram | undefined
  readonly #useTime: Histogram | undefined
  readonly #statementText: boolean
  readonly #system: 'postgresql' | 'mysql'
  /** The database every endpoint names, for span names; undefined when they differ or a secret names it. */
  readonly #namespace: string | undefined
  readonly #spanAttributes = new Map<EndpointSettings, Attributes>()
  readonly #metricAttributes = new Map<EndpointSettings, Attributes>()
  /**
   * `db.client.operation.duration`'s attributes of a statement that succeeded, per endpoint and
   * operation: made once, as the SDK keys its series by them on every record.
   */
  readonly #operationAttributes = new Map<EndpointSettings | undefined, Map<string, Attributes>>()

  private constructor(
    api: OpenTelemetryApi,
    source: DbTelemetrySource,
    tracer: Tracer | undefined,
    histograms: TimeHistograms | undefined,
  ) {
    this.#api = api
    this.#tracer = tracer
    this.#statementText = source.statementText
    this.#system = dbSystemName(source.dialect)
    const databases = new Set(source.endpoints.map((endpoint) => endpoint.database))
    this.#namespace = databases.size === 1 ? [...databases][0] : undefined
    for (const endpoint of source.endpoints) {
      this.#spanAttributes.set(endpoint, {
        ...(endpoint.database === undefined ? {} : { 'db.namespace': endpoint.database }),
        ...(endpoint.host === undefined ? {} : { 'server.address': endpoint.host }),
        'server.port': endpoint.port,
        'kysely_resilient.endpoint.name': endpoint.name,
        'kysely_resilient.endpoint.role': endpoint.role,
      })
      this.#metricAttributes.set(endpoint, endpointMetricAttributes(endpoint))
    }
    this.#operationDuration = histograms?.operationDuration
    this.#createTime = histograms?.createTime
    this.#waitTime = histograms?.waitTime
    this.#useTime = histograms?.useTime
  }

  /**
   * The db's telemetry, or `undefined` when neither a tracer provider nor a meter provider is
   * registered (the API alone, without an SDK): then statements and pools are not touched at all.
   */
  static create(api: OpenTelemetryApi, source: DbTelemetrySource): DbTelemetry | undefined {
    const tracer = registeredTracer(api)
    const histograms = timeHistograms(api.metrics.getMeter(INSTRUMENTATION_NAME))
    // The API's no-op meter hands out one shared no-op instrument: a meter that returns it records nothing.
    const recording = histograms.operationDuration !== api.createNoopMeter().createHistogram('noop')
    if (tracer === undefined && !recording) return undefined
    return new DbTelemetry(api, source, tracer, recording ? histograms : undefined)
  }

  /** Starts observing one statement, in the caller's context (its active span becomes the parent). */
  statement(compiledQuery: CompiledQuery): StatementTrace {
    const operation = operationOf(compiledQuery)
    const api = this.#api
    let span: Span | undefined
    let context: Context | undefined
    const tracer = this.#tracer
    if (tracer !== undefined) {
      const active = api.context.active()
      span = tracer.startSpan(
        this.#namespace === undefined ? operation : `${operation} ${this.#namespace}`,
        {
          kind: api.SpanKind.CLIENT,
          attributes: {
            'db.system': this.#system,
            'db.system.name': this.#system,
            'db.operation.name': operation,
            ...(this.#namespace === undefined ? {} : { 'db.namespace': this.#namespace }),
            ...(this.#statementText ? { 'db.query.text': compiledQuery.sql } : {}),
          },
        },
        active,
      )
      context = api.trace.setSpan(active, span)
    }
    return new StatementTrace(this, operation, span, context)
  }

  /** The pool timings of one endpoint, or `undefined` when there is nothing to record them to. */
  pool(endpoint: EndpointSettings): PoolInstruments | undefined {
    const createTime = this.#createTime
    const waitTime = this.#waitTime
    const useTime = this.#useTime
    const tracer = this.#tracer
    if (tracer === undefined && createTime === undefined) return undefined
    const api = this.#api
    const attributes = this.#metricAttributes.get(endpoint) ?? endpointMetricAttributes(endpoint)
    const spanAttributes = {
      'db.system': this.#system,
      'db.system.name': this.#system,
      ...this.#spanAttributes.get(endpoint),
    }
    return {
      connect<C>(open: () => Promise<C>): Promise<C> {
        const startedAt = performance.now()
        const span = tracer?.startSpan(OPERATION_SPANS.connect, {
          kind: api.SpanKind.CLIENT,
          attributes: spanAttributes,
        })
        const run =
          span === undefined ? open() : api.context.with(api.trace.setSpan(api.context.active(), span), open)
        return run.then(
          (connection) => {
            createTime?.record((performance.now() - startedAt) / 1000, attributes)
            span?.end()
            return connection
          },
          (error: unknown) => {
            const classification = classifyError(error, { phase: 'connect' })
            createTime?.record((performance.now() - startedAt) / 1000, {
              ...attributes,
              'error.type': errorType(error, classification),
            })
            if (span !== undefined) {
              failSpan(api, span, error, classification)
              span.end()
            }
            throw error
          },
        )
      },
      waited: (ms) => waitTime?.record(ms / 1000, attributes),
      used: (ms) => useTime?.record(ms / 1000, attributes),
    }
  }

  /** @internal StatementTrace's access to what it records with. */
  get api(): OpenTelemetryApi {
    return this.#api
  }

  /** @internal */
  get operationDuration(): Histogram | undefined {
    return this.#operationDuration
  }

  /** @internal */
  spanAttributesOf(endpoint: EndpointSettings): Attributes {
    return this.#spanAttributes.get(endpoint) ?? {}
  }

  /** @internal The attributes of `db.client.operation.duration` for a statement that succeeded. */
  operationAttributesOf(endpoint: EndpointSettings | undefined, operation: string): Attributes {
    let byOperation = this.#operationAttributes.get(endpoint)
    if (byOperation === undefined) {
      byOperation = new Map()
      this.#operationAttributes.set(endpoint, byOperation)
    }
    let attributes = byOperation.get(operation)
    if (attributes === undefined) {
      attributes = {
        ...(endpoint === undefined
          ? { 'db.system.name': this.#system }
          : (this.#metricAttributes.get(endpoint) ?? endpointMetricAttributes(endpoint))),
        ...(endpoint?.database === undefined ? {} : { 'db.namespace': endpoint.database }),
        'db.operation.name': operation,
      }
      // Raw statements' first keywords are few; a bound keeps a pathological mix from growing it.
      if (byOperation.size < MAX_CACHED_OPERATIONS) byOperation.set(operation, attributes)
    }
    return attributes
  }
}

interface TimeHistograms {
  readonly operationDuration: Histogram
  readonly createTime: Histogram
  readonly waitTime: Histogram
  readonly useTime: Histogram
}

/** The semantic conventions' time histograms, in seconds, with their advised buckets. */
function timeHistograms(meter: Meter): TimeHistograms {
  const histogram = (name: string, description: string): Histogram =>
    meter.createHistogram(name, {
      description,
      unit: 's',
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    })
  return {
    operationDuration: histogram(
      'db.client.operation.duration',
      'Duration of each statement, its automatic retries included',
    ),
    createTime: histogram('db.client.connection.create_time', 'The time it took to open a connection'),
    waitTime: histogram(
      'db.client.connection.wait_time',
      'The time it took to obtain a connection from the pool',
    ),
    useTime: histogram(
      'db.client.connection.use_time',
      'The time between taking a connection from the pool and giving it back',
    ),
  }
}

/** One retry of a statement, as its span's `kysely_resilient.retry` event records it. */
export interface RetryNote {
  readonly attempt: number
  readonly endpoint: string
  readonly classification: ErrorClassification
  readonly delayMs: number
}

/**
 * One statement being observed: its span (with a tracer) and its start time (with a meter). The
 * routing layer tells it where each attempt went and why, and each retry; `end` closes both.
 */
export class StatementTrace {
  readonly #telemetry: DbTelemetry
  readonly #operation: string
  readonly #span: Span | undefined
  /** False without a tracer, and for a span the sampler dropped: then no attribute or event is built. */
  readonly #recording: boolean
  readonly #context: Context | undefined
  readonly #startedAt: number | undefined
  #endpoint: EndpointSettings | undefined

  constructor(
    telemetry: DbTelemetry,
    operation: string,
    span: Span | undefined,
    context: Context | undefined,
  ) {
    this.#telemetry = telemetry
    this.#operation = operation
    this.#span = span
    // A span the sampler dropped still carries the trace context to the spans nested under it, and
    // is still ended, but records nothing.
    this.#recording = span?.isRecording() === true
    this.#context = context
    this.#startedAt = telemetry.operationDuration === undefined ? undefined : performance.now()
  }

  /**
   * Runs the statement with its span active, so the spans started inside (connections opened,
   * credential fetches, and the driver's own, e.g. `@opentelemetry/instrumentation-pg`'s) nest under it.
   */
  within<T>(run: () => Promise<T>): Promise<T> {
    const context = this.#context
    return context === undefined ? run() : this.#telemetry.api.context.with(context, run)
  }

  /** Whether the statement's span records (see {@link route}'s reason). */
  get recording(): boolean {
    return this.#recording
  }

  /**
   * An attempt goes to `endpoint` (the histogram's attributes), for `reason`: with a recording span,
   * a `kysely_resilient.route` event and the endpoint's attributes (callers give the reason only
   * then: see {@link recording}).
   */
  route(endpoint: EndpointSettings, reason: string | undefined): void {
    this.#endpoint = endpoint
    const span = this.#span
    if (span === undefined || !this.#recording || reason === undefined) return
    span.setAttributes(this.#telemetry.spanAttributesOf(endpoint))
    span.addEvent('kysely_resilient.route', {
      'kysely_resilient.endpoint.name': endpoint.name,
      'kysely_resilient.endpoint.role': endpoint.role,
      'kysely_resilient.route.reason': reason,
    })
  }

  /** An attempt failed and the statement runs again after `delayMs`: a `kysely_resilient.retry` event. */
  retry(note: RetryNote): void {
    const span = this.#span
    if (span === undefined || !this.#recording) return
    const { classification } = note
    span.addEvent('kysely_resilient.retry', {
      'kysely_resilient.attempt': note.attempt,
      'kysely_resilient.endpoint.name': note.endpoint,
      'kysely_resilient.error.category': classification.category,
      ...(classification.code === undefined ? {} : { 'kysely_resilient.error.code': classification.code }),
      'kysely_resilient.retry.delay_ms': note.delayMs,
    })
  }

  /** The statement ended, with `error` when it failed: records its duration and ends its span. */
  end(failed: boolean, error?: unknown): void {
    const telemetry = this.#telemetry
    const classification = failed ? classifyError(error) : undefined
    const type = classification === undefined ? undefined : errorType(error, classification)
    const histogram = telemetry.operationDuration
    if (histogram !== undefined && this.#startedAt !== undefined) {
      const attributes = telemetry.operationAttributesOf(this.#endpoint, this.#operation)
      histogram.record(
        (performance.now() - this.#startedAt) / 1000,
        type === undefined ? attributes : { ...attributes, 'error.type': type },
      )
    }
    const span = this.#span
    if (span === undefined) return
    if (classification !== undefined && this.#recording) failSpan(telemetry.api, span, error, classification)
    span.end()
  }
}

/**
 * `error.type` as the conventions ask: the database's or driver's code (SQLSTATE, errno,
 * `ECONNREFUSED`, the library's `POOL_ACQUIRE_TIMEOUT`), else the error's class name, else `_OTHER`.
 */
function errorType(error: unknown, classification: ErrorClassification): string {
  if (classification.code !== undefined) return classification.code
  return error instanceof Error ? error.name : '_OTHER'
}

/**
 * Marks a span failed, with an exception event that holds no secret and no row data: the error's
 * class and code, and its message only when the library wrote it (a driver's may quote values, as
 * MySQL's "Duplicate entry 'x' for key" does); otherwise the classification's fixed reason.
 */
function failSpan(
  api: OpenTelemetryApi,
  span: Span,
  error: unknown,
  classification: ErrorClassification,
): void {
  const message =
    error instanceof ResilientError ? error.message : `${classification.category}: ${classification.reason}`
  const type = errorType(error, classification)
  const exception: Exception = {
    // The code says more than a driver's class name (pg's are all called 'error').
    name: type,
    message,
    ...(classification.code === undefined ? {} : { code: classification.code }),
  }
  span.recordException(exception)
  span.setAttributes({
    'error.type': type,
    'kysely_resilient.error.category': classification.category,
  })
  span.setStatus({ code: api.SpanStatusCode.ERROR, message })
}
