import type { IncomingMessage, ServerResponse } from 'node:http'
import { metrics } from '@opentelemetry/api'
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus'
import { MeterProvider } from '@opentelemetry/sdk-metrics'

/** The service's OpenTelemetry metrics, read by Prometheus through `GET /metrics`. */
export interface Metrics {
  /**
   * Answers a scrape: every metric in the Prometheus text format, collected now. Collection is what
   * reads the pools (`db.client.connection.*`), so between scrapes the statements pay nothing for it.
   */
  readonly handle: (request: IncomingMessage, response: ServerResponse) => void
  /** Stops collecting and unregisters the global meter provider. */
  shutdown(): Promise<void>
}

/**
 * Registers a global OpenTelemetry meter provider whose only reader is the Prometheus exporter, with
 * its own HTTP server off (`preventServerStart`): the app serves the scrape on its own port instead.
 *
 * Call it once, before `createDatabase`: the library takes its meter from the global provider when
 * the db opens (its first statement), and a db that opened before the provider was registered records
 * nothing. Throws if another meter provider is already registered (the OpenTelemetry API keeps the
 * first one and would silently ignore this one).
 */
export function startMetrics(): Metrics {
  const exporter = new PrometheusExporter({ preventServerStart: true })
  const provider = new MeterProvider({ readers: [exporter] })
  if (!metrics.setGlobalMeterProvider(provider)) {
    throw new Error('an OpenTelemetry meter provider is already registered; startMetrics() must run once')
  }
  let stopping: Promise<void> | undefined
  return {
    handle: (request, response) => exporter.getMetricsRequestHandler(request, response),
    shutdown: () => {
      stopping ??= provider.shutdown().finally(() => metrics.disable())
      return stopping
    },
  }
}
