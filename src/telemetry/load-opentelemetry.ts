import type { MetricsAPI } from '@opentelemetry/api'

/**
 * `@opentelemetry/api`'s metrics API when the application has it installed, else `undefined`: it is
 * an optional peer, and without it the library records nothing and costs nothing. Loaded once, on
 * the first db to open.
 */
export function loadOpenTelemetryMetrics(): Promise<MetricsAPI | undefined> {
  loading ??= import('@opentelemetry/api').then(
    (api) => (api as { metrics?: MetricsAPI }).metrics,
    () => undefined,
  )
  return loading
}

let loading: Promise<MetricsAPI | undefined> | undefined
