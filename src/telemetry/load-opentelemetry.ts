import type { MetricsAPI } from '@opentelemetry/api'

/** `@opentelemetry/api`'s module namespace: its `trace`, `context` and `metrics` APIs. */
export type OpenTelemetryApi = typeof import('@opentelemetry/api')

/**
 * `@opentelemetry/api` when the application has it installed, else `undefined`: it is an optional
 * peer, and without it the library records nothing and costs nothing. Loaded once, on the first db to
 * open.
 */
export function loadOpenTelemetry(): Promise<OpenTelemetryApi | undefined> {
  loading ??= import('@opentelemetry/api').then(
    (api) => api as OpenTelemetryApi,
    () => undefined,
  )
  return loading
}

/** The metrics API of {@link loadOpenTelemetry}, or `undefined` without `@opentelemetry/api`. */
export async function loadOpenTelemetryMetrics(): Promise<MetricsAPI | undefined> {
  return (await loadOpenTelemetry())?.metrics
}

let loading: Promise<OpenTelemetryApi | undefined> | undefined
