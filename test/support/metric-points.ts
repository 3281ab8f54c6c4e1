import { type DataPoint, MetricReader } from '@opentelemetry/sdk-metrics'
import { recordTelemetry } from './leak-watch.js'

/** A metric reader that collects only when a test asks (no export interval). */
export class CollectingReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/** One data point of the library's meter, as a test compares it. */
export interface MetricPoint {
  readonly name: string
  readonly attributes: Record<string, unknown>
  readonly value: unknown
}

/**
 * Collects `reader` once and returns the data points of the library's meter (`kysely-resilient`);
 * every point also goes to the suite's leak watch, which looks for secrets in them.
 */
export async function collectLibraryPoints(reader: MetricReader): Promise<MetricPoint[]> {
  const { resourceMetrics } = await reader.collect()
  const points = resourceMetrics.scopeMetrics
    .filter((scope) => scope.scope.name === 'kysely-resilient')
    .flatMap((scope) => scope.metrics)
    .flatMap((metric) =>
      (metric.dataPoints as DataPoint<unknown>[]).map((point) => ({
        name: metric.descriptor.name,
        attributes: point.attributes as Record<string, unknown>,
        value: point.value,
      })),
    )
  const text = JSON.stringify(points)
  recordTelemetry('metric points', () => text)
  return points
}
