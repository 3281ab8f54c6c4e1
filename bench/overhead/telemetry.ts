/**
 * The OpenTelemetry SDK as an application installs it, for the benchmark's instrumented variant: a
 * global meter provider whose reader is never collected while the rounds run, a global tracer
 * provider whose one span processor only counts the spans it is given (no exporter, no batching), and
 * the AsyncLocalStorage context manager that `@opentelemetry/sdk-node` registers (without one, making a
 * span active costs nothing and nests nothing, which no traced application runs with).
 */
import { context, metrics, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'
import { BasicTracerProvider, type SpanProcessor } from '@opentelemetry/sdk-trace-base'

/** A reader that collects only when asked: the benchmark asks once, after the rounds. */
class IdleReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

export interface OpenTelemetrySdk {
  /** Spans started so far through the tracer provider (by any db: see the check line in run.ts). */
  spansStarted(): number
  /** Collects the metrics once and counts their data points from the library's meter. */
  libraryDataPoints(): Promise<number>
  /** Shuts both providers down and unregisters them, so the next engine's dbs open without them. */
  shutdown(): Promise<void>
}

/**
 * Registers the SDK's meter and tracer providers and a context manager globally. A db takes its meter from the global
 * provider when it opens, so only dbs opened after this call record metrics through the SDK. Throws
 * if providers are already registered (the API would keep those and ignore these).
 */
export function registerOpenTelemetrySdk(): OpenTelemetrySdk {
  // BENCH_OTEL_SIGNALS=traces (or metrics) registers only that provider: what each signal costs.
  const signals = (process.env.BENCH_OTEL_SIGNALS ?? 'traces,metrics').split(',').map((s) => s.trim())
  let spans = 0
  // What NoopSpanProcessor does, plus a count: the cost measured is the SDK's, not an exporter's.
  const counting: SpanProcessor = {
    onStart: () => {
      spans++
    },
    onEnd: () => {},
    forceFlush: async () => {},
    shutdown: async () => {},
  }
  const reader = new IdleReader()
  const meterProvider = new MeterProvider({ readers: [reader] })
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [counting] })
  const contextManager = new AsyncLocalStorageContextManager().enable()
  if (
    (signals.includes('metrics') && !metrics.setGlobalMeterProvider(meterProvider)) ||
    (signals.includes('traces') && !trace.setGlobalTracerProvider(tracerProvider)) ||
    !context.setGlobalContextManager(contextManager)
  ) {
    throw new Error('an OpenTelemetry meter or tracer provider or context manager is already registered')
  }
  return {
    spansStarted: () => spans,
    libraryDataPoints: async () => {
      const { resourceMetrics } = await reader.collect()
      return resourceMetrics.scopeMetrics
        .filter((scope) => scope.scope.name === 'kysely-resilient')
        .flatMap((scope) => scope.metrics)
        .reduce((sum, metric) => sum + metric.dataPoints.length, 0)
    },
    shutdown: async () => {
      await Promise.allSettled([meterProvider.shutdown(), tracerProvider.shutdown()])
      metrics.disable()
      trace.disable()
      context.disable()
    },
  }
}
